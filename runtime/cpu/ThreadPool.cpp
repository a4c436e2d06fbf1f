//===- ThreadPool.cpp - the CPU calls' persistent threads -----------------===//

#include "ThreadPool.h"

#include <algorithm>

using namespace tessera::cpu;

ThreadPool::~ThreadPool() {
  std::lock_guard<std::mutex> busy(busy_);
  stopAll();
}

int ThreadPool::started() {
  std::lock_guard<std::mutex> lock(state_);
  return int(threads_.size());
}

void ThreadPool::resize(int threads) {
  std::lock_guard<std::mutex> busy(busy_);
  // Threads are interchangeable, so shrinking joins them all; the next
  // call that wants threads starts as many as it needs.
  if (int(threads_.size()) > std::max(threads - 1, 0))
    stopAll();
}

/// Joins every thread; the caller holds busy_ (no call is running).
void ThreadPool::stopAll() {
  {
    std::lock_guard<std::mutex> lock(state_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread &t : threads_)
    t.join();
  std::lock_guard<std::mutex> lock(state_);
  threads_.clear();
  stop_ = false;
}

void ThreadPool::threadMain(int index) {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(state_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_)
      return;
    seen = generation_;
    if (index >= wanted_)
      continue; // a call that needs fewer threads than started
    Loop loop = loop_;
    void *arg = arg_;
    lock.unlock();
    loop(arg);
    lock.lock();
    if (--running_ == 0)
      finished_.notify_one();
  }
}

void ThreadPool::runErased(int threads, Loop loop, void *arg) {
  if (threads <= 1) {
    loop(arg);
    return;
  }
  // Busy: another call holds the pool (or this is a call from one of its
  // tasks); this one runs alone rather than wait or deadlock.
  std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
  if (!busy.owns_lock()) {
    loop(arg);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(state_);
    for (int i = int(threads_.size()); i < threads - 1; ++i)
      threads_.emplace_back([this, i] { threadMain(i); });
    loop_ = loop;
    arg_ = arg;
    wanted_ = running_ = threads - 1;
    ++generation_;
  }
  wake_.notify_all();
  loop(arg);
  std::unique_lock<std::mutex> lock(state_);
  finished_.wait(lock, [&] { return running_ == 0; });
}
