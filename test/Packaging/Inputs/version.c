/* Links against the installed runtime through pkg-config only. */
#include <tessera/tessera.h>
#include <stdio.h>

int main(void) {
  tessera_context *c;
  tessera_status s = tessera_context_create(TESSERA_DEVICE_CPU, 0, &c);
  printf("api %u, header %d, cpu context %s\n", tessera_api_version(),
         TESSERA_API_VERSION, tessera_status_string(s));
  return s == TESSERA_OK ? tessera_context_destroy(c) : 1;
}
