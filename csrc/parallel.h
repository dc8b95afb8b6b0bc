// Fork-join loop over a persistent pool of worker threads.
//
// parallel_for(ntasks, threads, fn) calls fn(task, worker) for every task in
// [0, ntasks), handing tasks out dynamically to `threads` workers (the caller
// is worker 0); the first exception thrown by any worker is rethrown in the
// caller. Workers are created on first use and kept, so a search of one query
// does not pay for creating and joining threads (tens of microseconds each),
// and their thread_local scratch buffers survive from call to call.
//
// Between loops a worker polls for the next one for a short while (HASHSEARCH_SPIN_US,
// default 100 microseconds; 0: sleep at once; never while the pool holds more threads than
// cores) before it sleeps, and the caller polls for the workers' end the same way: waking
// a sleeping thread costs tens of microseconds (~50 on this 2-core VM), which a serving
// loop's next call, usually within that time, would otherwise pay twice. (OpenMP, which
// faiss uses, spins longer by default.)
//
// Interrupts: the thread that starts a loop may carry a check (interrupt_check, set by the
// Python bindings on the thread that called in, so that Ctrl-C reaches a long search or
// build). Between its tasks that thread calls it at most every 100 ms; when it says stop,
// no further tasks are handed out and the loop throws InterruptedError once the workers
// have finished the tasks they hold. Loops nested in pool threads never check.
//
// The pool runs one loop at a time. A loop started while it is busy (another
// Python thread searching with the GIL released, or a loop nested inside a
// worker) gets threads of its own for that call instead, so callers never
// wait on each other and nesting cannot deadlock. A process forked while the
// pool exists gets a new pool in the child (the parent's threads are gone).
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include <unistd.h>

namespace hashsearch {

// The core count, asked once: std::thread::hardware_concurrency() reads /sys on every call
// (~10 us here), and num_threads = 0 (all cores, the default) asks for it several times
// a search.
inline int hardware_threads() {
    static const int hw = [] {
        const unsigned h = std::thread::hardware_concurrency();
        return h == 0 ? 1 : static_cast<int>(h);
    }();
    return hw;
}

// The most threads a call uses: 4x the cores. More only adds switching, and the pool keeps
// every thread it creates for the life of the process.
inline int max_threads() { return 4 * hardware_threads(); }

// num_threads as used: 0 (or less) means all cores; above max_threads() it is capped there.
inline int resolve_threads(int requested) {
    return requested > 0 ? std::min(requested, max_threads()) : hardware_threads();
}

// Thrown when a thread cannot be created (the process's thread or memory limit): the
// call fails with this message rather than the bare errno text.
inline std::runtime_error thread_start_error(size_t started, size_t wanted, const std::system_error& e) {
    return std::runtime_error("hashsearch: could not start a worker thread (" + std::to_string(started) + " of " +
                              std::to_string(wanted) + " running): " + e.what() +
                              "; the process has hit its thread or memory limit, use fewer threads (num_threads)");
}

// Thrown out of parallel_for when the calling thread's interrupt check asked to stop.
struct InterruptedError : std::exception {
    const char* what() const noexcept override { return "hashsearch: interrupted"; }
};

// Returns true to stop the loop (see the top of this file); nullptr: never checked.
using InterruptCheck = bool (*)();
inline thread_local InterruptCheck interrupt_check = nullptr;

// Arms `check` on this thread for its lifetime, first called 100 ms from now (a short call
// never pays for it), then at most every 100 ms.
class InterruptScope {
  public:
    explicit InterruptScope(InterruptCheck check) : saved_(interrupt_check), saved_next_(next_check()) {
        interrupt_check = check;
        next_check() = std::chrono::steady_clock::now() + kInterval;
    }
    ~InterruptScope() {
        interrupt_check = saved_;
        next_check() = saved_next_;
    }
    InterruptScope(const InterruptScope&) = delete;
    InterruptScope& operator=(const InterruptScope&) = delete;

    static constexpr std::chrono::milliseconds kInterval{100};
    static std::chrono::steady_clock::time_point& next_check() {
        static thread_local std::chrono::steady_clock::time_point t;
        return t;
    }

  private:
    InterruptCheck saved_;
    std::chrono::steady_clock::time_point saved_next_;
};

// Calls this thread's interrupt check if one is armed and due; throws InterruptedError if it
// says stop. Long single-threaded phases (MIH's table build) call it between steps.
inline void poll_interrupt() {
    if (interrupt_check == nullptr) return;
    const auto now = std::chrono::steady_clock::now();
    auto& next = InterruptScope::next_check();
    if (now < next) return;
    next = now + InterruptScope::kInterval;
    if (interrupt_check()) throw InterruptedError();
}

// Calls this thread's interrupt check now, whenever it last ran: a change that is about to be
// committed asks first, so that an interrupt which arrived during its preparation cancels it.
inline void poll_interrupt_now() {
    if (interrupt_check == nullptr) return;
    InterruptScope::next_check() = std::chrono::steady_clock::now() + InterruptScope::kInterval;
    if (interrupt_check()) throw InterruptedError();
}

namespace detail {

// HASHSEARCH_SPIN_US (nullptr or empty: the default, 100): an integer in [0, 100000];
// std::invalid_argument naming the value otherwise.
inline std::chrono::microseconds parse_spin_us(const char* env) {
    if (env == nullptr || *env == '\0') return std::chrono::microseconds(100);
    char* end = nullptr;
    errno = 0;
    const long us = std::strtol(env, &end, 10);
    if (end == env || *end != '\0' || errno != 0 || us < 0 || us > 100000)
        throw std::invalid_argument(std::string("HASHSEARCH_SPIN_US must be an integer number of microseconds in "
                                                "[0, 100000], got '") + env + "'");
    return std::chrono::microseconds(us);
}

// How long an idle worker (or a caller waiting for its workers) polls before sleeping. Never
// throws (workers call it): a bad value means the default here, and the Python module refuses
// it at import (check_environment in the bindings).
inline std::chrono::microseconds spin_time() {
    static const std::chrono::microseconds t = [] {
        try {
            return parse_spin_us(std::getenv("HASHSEARCH_SPIN_US"));
        } catch (const std::invalid_argument&) {
            return std::chrono::microseconds(100);
        }
    }();
    return t;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// Polls until done() or the spin time has passed; true if done.
template <class Done>
bool spin_until(Done done) {
    if (done()) return true;
    const auto t = spin_time();
    if (t.count() == 0) return false;
    const auto deadline = std::chrono::steady_clock::now() + t;
    for (;;) {
        for (int i = 0; i < 64; ++i) {
            if (done()) return true;
            cpu_relax();
        }
        if (std::chrono::steady_clock::now() >= deadline) return done();
    }
}

// One loop's shared state: tasks are claimed with an atomic counter.
struct LoopJob {
    void (*call)(void* fn, size_t task, size_t worker) = nullptr;
    void* fn = nullptr;
    size_t ntasks = 0;
    std::atomic<size_t> next{0};
    std::mutex error_mutex;
    std::exception_ptr error;

    // Worker 0 is the thread that started the loop: only it checks for interrupts.
    void run(size_t worker) {
        try {
            for (size_t t = next++; t < ntasks; t = next++) {
                call(fn, t, worker);
                if (worker == 0) poll_interrupt();
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next = ntasks;  // stop handing out work
        }
    }
};

// Set in pool workers (and in threads spawned for a busy pool's overflow) so a
// loop nested inside a loop does not wait on the pool it is running in.
inline thread_local bool in_parallel_worker = false;

class ThreadPool {
  public:
    // The process's pool; a new one after fork() (the old one is leaked on
    // purpose: its threads do not exist in the child and its mutex may be held).
    static ThreadPool& instance() {
        static std::atomic<ThreadPool*> pool{nullptr};
        static std::mutex create_mutex;
        ThreadPool* p = pool.load(std::memory_order_acquire);
        if (p != nullptr && p->pid_ == ::getpid()) return *p;
        std::lock_guard<std::mutex> lock(create_mutex);
        p = pool.load(std::memory_order_acquire);
        if (p == nullptr || p->pid_ != ::getpid()) {
            // Never destroyed: workers may outlive static destruction at exit.
            p = new ThreadPool();
            pool.store(p, std::memory_order_release);
        }
        return *p;
    }

    // Runs job with nworkers workers (the caller plus nworkers - 1 pool
    // threads); false if the pool is busy with another loop.
    bool try_run(LoopJob& job, size_t nworkers) {
        std::unique_lock<std::mutex> busy(busy_mutex_, std::try_to_lock);
        if (!busy.owns_lock()) return false;
        ensure_workers(nworkers - 1);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = &job;
            wanted_ = nworkers - 1;
            active_ = nworkers - 1;
            ++generation_;
        }
        wake_.notify_all();
        job.run(0);
        if (!oversubscribed_.load()) spin_until([&] { return active_.load() == 0; });
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [&] { return active_.load() == 0; });
        job_ = nullptr;
        return true;
    }

  private:
    ThreadPool() : pid_(::getpid()) {}

    // The pool stays usable when a thread cannot be created: the workers made so far are kept.
    void ensure_workers(size_t count) {
        if (workers_ >= count) return;
        try {
            while (workers_ < count) {
                std::thread(&ThreadPool::worker_loop, this, workers_ + 1).detach();
                ++workers_;
            }
        } catch (const std::system_error& e) {
            update_oversubscribed();
            throw thread_start_error(workers_ + 1, count + 1, e);
        }
        update_oversubscribed();
    }

    // More threads than cores (num_threads above them): polling threads would take the
    // cores from those with work, so everyone sleeps at once instead.
    void update_oversubscribed() { oversubscribed_ = workers_ + 1 > static_cast<size_t>(hardware_threads()); }

    void worker_loop(size_t worker) {
        in_parallel_worker = true;
        uint64_t seen = 0;
        bool worked = false;  // in the last loop: only then poll (one sitting loops out would
                              // take a core from those working, on a machine with few)
        for (;;) {
            if (worked && !oversubscribed_.load()) spin_until([&] { return generation_.load() != seen; });
            LoopJob* job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_.load() != seen; });
                seen = generation_.load();
                // Workers beyond this loop's count sit it out.
                worked = worker <= wanted_;
                if (!worked) continue;
                job = job_;
            }
            job->run(worker);
            std::lock_guard<std::mutex> lock(mutex_);
            if (--active_ == 0) done_.notify_one();
        }
    }

    const pid_t pid_;
    std::mutex busy_mutex_;  // held by the loop using the pool
    std::mutex mutex_;       // guards the fields below
    std::condition_variable wake_, done_;
    LoopJob* job_ = nullptr;
    // Changed under mutex_; atomic so that idle threads can poll them without it.
    std::atomic<uint64_t> generation_{0};
    std::atomic<size_t> active_{0};
    std::atomic<bool> oversubscribed_{false};  // the pool holds more threads than cores
    size_t wanted_ = 0;
    size_t workers_ = 0;  // only touched under busy_mutex_
};

// The plain fork-join: threads created for this loop and joined at its end. If one cannot be
// created, those started are stopped and joined (a joinable std::thread destroyed would abort
// the process) and the loop throws.
inline void run_with_new_threads(LoopJob& job, size_t nworkers) {
    std::vector<std::thread> threads;
    threads.reserve(nworkers - 1);
    try {
        for (size_t w = 1; w < nworkers; ++w)
            threads.emplace_back([&job, w] {
                in_parallel_worker = true;
                job.run(w);
            });
    } catch (const std::system_error& e) {
        job.next = job.ntasks;  // the started threads take no further task
        for (auto& th : threads) th.join();
        throw thread_start_error(threads.size() + 1, nworkers, e);
    }
    job.run(0);
    for (auto& th : threads) th.join();
}

}  // namespace detail

// Calls fn(task, worker) for task in [0, ntasks), worker in [0, threads).
template <class F>
void parallel_for(size_t ntasks, int threads, F&& fn) {
    size_t nworkers = std::min<size_t>(static_cast<size_t>(resolve_threads(threads)), ntasks);
    if (nworkers <= 1) {
        for (size_t t = 0; t < ntasks; ++t) {
            fn(t, 0);
            poll_interrupt();
        }
        return;
    }
    using Fn = std::remove_reference_t<F>;
    detail::LoopJob job;
    job.fn = const_cast<void*>(static_cast<const void*>(&fn));
    job.call = [](void* f, size_t task, size_t worker) { (*static_cast<Fn*>(f))(task, worker); };
    job.ntasks = ntasks;
    if (detail::in_parallel_worker || !detail::ThreadPool::instance().try_run(job, nworkers))
        detail::run_with_new_threads(job, nworkers);
    if (job.error) std::rethrow_exception(job.error);
}

}  // namespace hashsearch
