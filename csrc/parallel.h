// Minimal fork-join loop: tasks are handed out dynamically; the first
// exception thrown by any worker is rethrown in the caller.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace hashsearch {

inline int resolve_threads(int requested) {
    if (requested > 0) return requested;
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
}

// Calls fn(task, worker) for task in [0, ntasks), worker in [0, threads).
template <class F>
void parallel_for(size_t ntasks, int threads, F&& fn) {
    size_t nworkers = std::min<size_t>(static_cast<size_t>(resolve_threads(threads)), ntasks);
    if (nworkers <= 1) {
        for (size_t t = 0; t < ntasks; ++t) fn(t, 0);
        return;
    }
    std::atomic<size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto worker = [&](size_t wid) {
        try {
            for (size_t t = next++; t < ntasks; t = next++) fn(t, wid);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next = ntasks;  // stop handing out work
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(nworkers - 1);
    for (size_t w = 1; w < nworkers; ++w) pool.emplace_back(worker, w);
    worker(0);
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace hashsearch
