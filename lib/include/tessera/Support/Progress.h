//===- Progress.h - progress of long commands on stderr ---------*- C++ -*-===//
//
// Commands that can run for more than a few seconds (reports at long
// lengths, pictures of long sequences, benchmarks) show how far they are on
// stderr, when stderr is a terminal: one line, rewritten at most ten times a
// second, cleared at the end. TESSERA_PROGRESS=0 turns it off;
// TESSERA_PROGRESS=1 turns it on also when stderr is not a terminal, then as
// whole lines (for logs and tests). Plain C++: the benchmarks use it too.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_SUPPORT_PROGRESS_H
#define TESSERA_SUPPORT_PROGRESS_H

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

namespace tessera {

class Progress {
public:
  /// `what` names the work ("attn-report"), `total` counts its steps.
  Progress(std::string what, int64_t total)
      : what(std::move(what)), total(total) {
    const char *env = std::getenv("TESSERA_PROGRESS");
    bool tty = isatty(2) == 1;
    if (env && env[0] == '0')
      enabled = false;
    else if (env && env[0] == '1')
      enabled = true, lines = !tty;
    else
      enabled = tty;
  }
  Progress(const Progress &) = delete;
  Progress &operator=(const Progress &) = delete;
  ~Progress() { finish(); }

  /// `done` of `total` steps are complete; `detail` says what comes next.
  /// The first and the last step are always shown.
  void step(int64_t done, const std::string &detail = "") {
    if (!enabled)
      return;
    auto now = std::chrono::steady_clock::now();
    if (shown && done < total && now - last < std::chrono::milliseconds(100))
      return;
    last = now;
    shown = true;
    double pct = total > 0 ? 100.0 * double(done) / double(total) : 100.0;
    std::fprintf(stderr, "%s[%s] %lld/%lld (%.0f%%)%s%s%s",
                 lines ? "" : "\r\033[K", what.c_str(), (long long)done,
                 (long long)total, pct, detail.empty() ? "" : " ",
                 detail.c_str(), lines ? "\n" : "");
    std::fflush(stderr);
  }

  /// Clears the line (on a terminal).
  void finish() {
    if (enabled && shown && !lines) {
      std::fputs("\r\033[K", stderr);
      std::fflush(stderr);
    }
    shown = false;
  }

  bool isEnabled() const { return enabled; }

private:
  std::string what;
  int64_t total;
  bool enabled = false, lines = false, shown = false;
  std::chrono::steady_clock::time_point last;
};

} // namespace tessera

#endif // TESSERA_SUPPORT_PROGRESS_H
