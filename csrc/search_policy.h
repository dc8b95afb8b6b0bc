// When an index's structure (MIH's tables, ClusterIndex's clusters) answers a query and
// when the linear scan does: the scan's cost model, the fallback score of recent queries,
// the self-timed verdict of large batches, and the scan of a batch through an id-ordered
// copy of the codes. Both answer every query exactly; only the time differs.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "flat_index.h"
#include "kernels/simd.h"

namespace hashsearch {

// The linear scan's cost per item and code word (ns; fitted on an AVX2 core), which a
// query's search through the tables must stay under.
constexpr double kScanNsPerWord = 0.35;
// The scan's cost at the level in use relative to the fit: the AVX-512 scan (vpopcntq)
// takes 2.5-2.9x less time than the AVX2 one on a Zen 5 core (batches of 64-bit and
// 32-bit codes; 3.7x single queries), while the tables' costs stay those of memory.
inline double scan_cost_scale() { return current_simd_level() == SimdLevel::AVX512 ? 0.4 : 1.0; }

// From this many queries of a call, on more than kCopyScanMinItems codes, the queries
// left to the scan go through a temporary id-ordered copy of the codes (~3 ns a code),
// Index's own scan; scanning the structure's order must keep every tie with the k-th
// distance and look up ids.
constexpr size_t kCopyScanQueries = 128;
constexpr size_t kCopyScanMinItems = size_t{1} << 16;

// Whether an index's recent queries kept falling back to its scan (codes its structure
// cannot prune, e.g. uniform ones): each query that fell back adds 1 to a score, each
// the structure answered takes kAnsweredWeight off (so skipping pays once more than ~4
// in 5 fall back, each costing the attempt and the scan; a caller whose answered queries
// save less over the scan passes a smaller weight). From kSkipScore on, callers send
// queries to the scan untried, letting a few retry so the score can fall.
class FallbackScore {
public:
    static constexpr uint32_t kRetryEvery = 32;  // while skipping: one call in this many retries a query
    static constexpr int kAnsweredWeight = 4;

    bool skipping() const { return score_.load() >= kSkipScore; }
    // While skipping: whether this call is the one in kRetryEvery that lets a query try.
    bool retry_this_call() const { return calls_.fetch_add(1) % kRetryEvery == 0; }
    // How many of a call's nq queries (the first ones) try the structure: all unless
    // skipping; then one query in every kRetryEvery calls, or with share_large_calls
    // 1/kRetryEvery of a call of at least kRetryEvery queries.
    size_t queries_to_try(size_t nq, bool share_large_calls) const {
        if (!skipping()) return nq;
        if (share_large_calls && nq >= kRetryEvery) return nq / kRetryEvery;
        return retry_this_call() ? 1 : 0;
    }
    void record(size_t fell, size_t answered, int answered_weight = kAnsweredWeight) const {
        const int delta = static_cast<int>(fell) - answered_weight * static_cast<int>(answered);
        int score = score_.load();
        while (!score_.compare_exchange_weak(score, std::clamp(score + delta, 0, kMaxScore))) {
        }
    }

private:
    static constexpr int kSkipScore = 32;
    static constexpr int kMaxScore = 64;
    mutable std::atomic<int> score_{0};
    mutable std::atomic<uint32_t> calls_{0};
};

// Which way a large batch goes, the structure or the scan, chosen by timing both on the
// batch's first queries (the same ones: the cost of clustered queries varies several-fold,
// and timing each way on different queries picked the scan by chance). A cost model
// decides per query, but its constants are one machine's and some code distributions
// (uniform, or clustered ones at 1M items) make the tables slower than the scan even for
// queries they answer. The verdict is reused by the next large batches and re-timed
// every kRetimeEvery of them (load and query mix change), or every kRetimeEveryDecisive
// when one way took at most half the other's time (a re-timing scans the timed queries
// and copies the codes: 240 ms on top of a 135 ms call of 1,000 queries at 4.2M learned
// 64-bit MIH codes, 2 threads).
class BatchVerdict {
public:
    static constexpr int kUntimed = -1, kScanFaster = 0, kStructureFaster = 1;
    static constexpr uint32_t kRetimeEvery = 8, kRetimeEveryDecisive = 64;

    // A large call's way: the standing verdict, or kUntimed when this call times both.
    int for_this_call() const {
        const uint32_t call = large_calls_.fetch_add(1);
        const int verdict = verdict_.load();
        return verdict != kUntimed && call % retime_every_.load() != 0 ? verdict : kUntimed;
    }
    int verdict() const { return verdict_.load(); }
    // Tests: impose a verdict on the next kRetimeEvery - 1 (or more) large calls.
    void impose(int verdict) {
        verdict_ = verdict;
        large_calls_ = 1;
    }

    // Times structure(q0, q1) against scan(q0, q1) on queries [0, probe), and again on
    // [probe, 2 probe) if the scan won and `score` is not skipping: the scan must win
    // twice, as a first search through cold tables (or while another library's threads
    // still spin) can lose by chance, and the verdict holds for the next batches (once
    // while skipping: most timed queries fell back to the scan anyway, uniform codes). Both
    // write the same rows. prepare_scan() (the id-ordered copy) runs outside the timing,
    // which it would swamp on a few queries. Records the verdict, sets `answered` to the
    // queries answered (probe or 2 probe) and returns whether the structure was no slower.
    template <class Structure, class PrepareScan, class Scan>
    bool time_both_ways(size_t probe, const FallbackScore& score, Structure&& structure,
                        PrepareScan&& prepare_scan, Scan&& scan, size_t& answered) const {
        using clock = std::chrono::steady_clock;
        bool decisive = false;
        auto structure_wins = [&](size_t q0) {
            const auto t0 = clock::now();
            structure(q0, q0 + probe);
            const auto t1 = clock::now();
            prepare_scan();
            const auto t2 = clock::now();
            scan(q0, q0 + probe);
            const auto t3 = clock::now();
            const auto by_structure = t1 - t0, by_scan = t3 - t2;
            decisive = 2 * by_structure <= by_scan || 2 * by_scan <= by_structure;
            return by_structure <= by_scan;
        };
        answered = probe;
        bool faster = structure_wins(0);
        if (!faster && !score.skipping()) {
            faster = structure_wins(probe);
            answered = 2 * probe;
        }
        verdict_ = faster ? kStructureFaster : kScanFaster;
        retime_every_ = decisive ? kRetimeEveryDecisive : kRetimeEvery;
        return faster;
    }

private:
    mutable std::atomic<uint32_t> retime_every_{kRetimeEvery};
    mutable std::atomic<int> verdict_{kUntimed};
    mutable std::atomic<uint32_t> large_calls_{0};
};

// Queries [q0, q1) of a batch answered by `copy`, the codes in id order: rows q0..q1-1
// of D and I (k each), the exclusions of those queries.
void scan_query_range(const FlatIndex& copy, const uint64_t* queries, size_t q0, size_t q1, int k,
                      const ExcludeList& exclude, int num_threads, int32_t* D, int64_t* I);

}  // namespace hashsearch
