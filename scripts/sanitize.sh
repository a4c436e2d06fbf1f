#!/usr/bin/env bash
# Builds everything with AddressSanitizer and UndefinedBehaviorSanitizer in
# build-asan/ and runs the whole test suite there. The two tests that load the
# runtime into an uninstrumented host process (Python, the installed example
# engine) need the sanitizer runtimes preloaded; they are run that way.
set -euo pipefail
cd "$(dirname "$0")/.."
# LLVM's allocators poison unused slab memory under ASan in our inlined code,
# while the uninstrumented libMLIR.so allocates from the same slabs: user
# poisoning is off (real heap errors still show).
export ASAN_OPTIONS=allow_user_poisoning=0
# configure DIR COMPILE_FLAGS LINK_FLAGS
configure() {
  cmake -G Ninja -S . -B "$1" -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit \
    "-DCMAKE_CXX_FLAGS=$2" "-DCMAKE_C_FLAGS=$2" \
    "-DCMAKE_EXE_LINKER_FLAGS=$3" "-DCMAKE_SHARED_LINKER_FLAGS=$3" >/dev/null
}
configure build-asan "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
  "-fsanitize=address,undefined"
ninja -C build-asan attn-opt attn-viz attn-translate attn-nvrtc-check \
  TesseraUnitTests TesseraEmulatorTests attn-docs tessera_runtime \
  tessera-test-bundles
preload="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export UBSAN_OPTIONS=print_stacktrace=1
/usr/lib/llvm-22/bin/lit -sv build-asan/test build-asan/test/Unit \
  --filter-out 'Packaging|Python'
LD_PRELOAD=$preload ASAN_OPTIONS=detect_leaks=0:allow_user_poisoning=0 \
  /usr/lib/llvm-22/bin/lit -sv build-asan/test --filter 'Packaging|Python'

# ThreadSanitizer on the threaded parts: the CPU executor's workers, the
# runtime loading and launching from several threads, the kernel cache's
# concurrent compiles.
# GCC 12's libtsan crashes while the dynamic loader resolves its ifuncs on
# this kernel; clang-22's runtime works (it is installed by make fuzz, or:
# apt-get install clang-22 libclang-rt-22-dev).
CC=clang-22 CXX=clang++-22 \
  configure build-tsan "-fsanitize=thread -fno-omit-frame-pointer" \
    "-fsanitize=thread -shared-libsan -Wl,-rpath,$(dirname "$(clang++-22 -print-file-name=libclang_rt.tsan-x86_64.so)")"
ninja -C build-tsan TesseraUnitTests
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  build-tsan/test/Unit/TesseraUnitTests \
  --gtest_filter='RuntimeConcurrency.*:CacheTest.*:ExecutorTest.*:RuntimeCpu.*:Limits.*'
