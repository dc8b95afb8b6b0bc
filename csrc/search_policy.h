// Whether an index's recent queries kept falling back to its scan (codes its
// structure cannot prune, e.g. uniform ones), shared by MIHIndex and
// ClusterIndex: each query that fell back adds 1 to a score, each the structure
// answered takes kAnsweredWeight off (so skipping pays once more than ~4 in 5
// fall back, each costing the attempt and the scan; a caller whose answered queries
// save less over the scan passes a smaller weight). From kSkipScore on, callers
// send queries to the scan untried, letting a few retry so the score can fall.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace hashsearch {

class FallbackScore {
public:
    static constexpr uint32_t kRetryEvery = 32;  // while skipping: one call in this many retries a query

    bool skipping() const { return score_.load() >= kSkipScore; }
    // While skipping: whether this call is the one in kRetryEvery that lets a query try.
    bool retry_this_call() const { return calls_.fetch_add(1) % kRetryEvery == 0; }
    static constexpr int kAnsweredWeight = 4;
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

}  // namespace hashsearch
