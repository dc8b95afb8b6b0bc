// Top-k over candidates that arrive in any order (not by increasing id), for
// the indexes that read their codes in another order (MIH, cluster pruning).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace hashsearch {

struct Candidate {
    uint32_t d;
    int64_t id;
    bool operator<(const Candidate& o) const { return d != o.d ? d < o.d : id < o.id; }
};

// Top-k over candidates arriving in any order, ordered by (distance, id).
class UnorderedTopK {
public:
    void reset(size_t k) {
        k_ = k;
        buf_.clear();
        buf_.reserve(2 * k + 1);
        full_ = false;
    }
    // Largest distance that can still enter (equal distances then go by id).
    uint32_t threshold() const { return full_ ? worst_.d : std::numeric_limits<uint32_t>::max(); }
    bool full() const { return full_; }
    bool admits(uint32_t d, int64_t id) const { return !full_ || Candidate{d, id} < worst_; }
    void push(uint32_t d, int64_t id) {
        buf_.push_back({d, id});
        if (buf_.size() >= 2 * k_) shrink();
    }
    // k-th smallest distance, or -1 while fewer than k candidates are held.
    int64_t kth_distance() {
        if (buf_.size() < k_) return -1;
        shrink();
        return worst_.d;
    }
    void finish(int32_t* D, int64_t* I) {
        if (buf_.size() > k_) shrink();
        std::sort(buf_.begin(), buf_.end());
        for (size_t r = 0; r < k_; ++r) {
            D[r] = r < buf_.size() ? static_cast<int32_t>(buf_[r].d) : -1;
            I[r] = r < buf_.size() ? buf_[r].id : -1;
        }
    }

private:
    void shrink() {
        std::nth_element(buf_.begin(), buf_.begin() + (k_ - 1), buf_.end());
        buf_.resize(k_);
        worst_ = *std::max_element(buf_.begin(), buf_.end());
        full_ = true;
    }
    size_t k_ = 0;
    std::vector<Candidate> buf_;
    Candidate worst_{0, 0};
    bool full_ = false;
};

// Whether `id` is in the sorted list [begin, end).
inline bool is_excluded(const int64_t* begin, const int64_t* end, int64_t id) {
    return begin != end && std::binary_search(begin, end, id);
}

}  // namespace hashsearch
