//===- ThreadPool.h - the CPU calls' persistent threads ---------*- C++ -*-===//
//
// A context's threads for CPU attention calls: started lazily the first
// time a call asks for them, reused by every later call, joined when the
// pool is resized or destroyed. A call runs one worker loop on n threads,
// the calling thread being one of them, so a one-thread call never wakes
// the pool. The work division is the caller's (an atomic task counter), so
// results never depend on which thread ran what.
//
// Thread safety: one call uses the pool at a time; a call that finds the
// pool busy (another thread's call on the same context, or a call from
// inside a pool task) runs its worker loop on its own thread alone, which
// gives the same results, only later. resize() waits for the running call.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_CPU_THREADPOOL_H
#define TESSERA_CPU_THREADPOOL_H

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace tessera::cpu {

class ThreadPool {
public:
  ThreadPool() = default;
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;
  ~ThreadPool();

  /// Calls `loop()` on `threads` threads (the caller's included) and
  /// returns when every call has returned. `loop` must not throw.
  template <typename F> void run(int threads, F &&loop) {
    using Callable = std::remove_reference_t<F>;
    runErased(
        threads, [](void *f) { (*static_cast<Callable *>(f))(); },
        const_cast<void *>(static_cast<const void *>(&loop)));
  }

  /// Joins the threads past `threads - 1` (waiting for a running call);
  /// later calls start them again if they ask for more.
  void resize(int threads);

  /// The pool threads started (the caller's thread not counted).
  int started();

private:
  using Loop = void (*)(void *);
  void runErased(int threads, Loop loop, void *arg);
  void threadMain(int index);
  void stopAll();

  std::mutex busy_;  ///< held by the call using the pool
  std::mutex state_; ///< guards everything below
  std::condition_variable wake_, finished_;
  std::vector<std::thread> threads_;
  uint64_t generation_ = 0; ///< bumped by each call that wakes threads
  int wanted_ = 0;          ///< pool threads that join this generation
  int running_ = 0;         ///< of those, still in the loop
  bool stop_ = false;
  Loop loop_ = nullptr;
  void *arg_ = nullptr;
};

} // namespace tessera::cpu

#endif // TESSERA_CPU_THREADPOOL_H
