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
// Holds up to 2k candidates; a histogram of their distances gives the k-th
// distance without a selection (distances are small integers), and the buffer
// is trimmed to the k best only when it fills.
class UnorderedTopK {
public:
    void reset(size_t k) {
        k_ = k;
        buf_.clear();
        buf_.reserve(2 * k + 1);
        std::fill(hist_.begin(), hist_.end(), 0);
        full_ = false;
        bound_ = std::numeric_limits<uint32_t>::max();
        worst_ = {std::numeric_limits<uint32_t>::max(), std::numeric_limits<int64_t>::max()};
    }
    // Largest distance that can still enter (equal distances then go by id).
    uint32_t threshold() const { return full_ ? bound_ : std::numeric_limits<uint32_t>::max(); }
    bool full() const { return full_; }
    // worst_ is the k-th held candidate as of the last trim: later arrivals only improve
    // the true k-th, so what does not beat it cannot enter.
    bool admits(uint32_t d, int64_t id) const {
        return !full_ || d < bound_ || (d == bound_ && Candidate{d, id} < worst_);
    }
    void push(uint32_t d, int64_t id) {
        // Fields stored in place: a Candidate built on the stack and copied is two narrow
        // stores read back as one 16-byte load, which store forwarding cannot serve.
        buf_.emplace_back();
        buf_.back().d = d;
        buf_.back().id = id;
        if (d >= hist_.size()) hist_.resize(d + 1, 0);
        ++hist_[d];
        if (buf_.size() >= 2 * k_) shrink();
    }
    // k-th smallest distance, or -1 while fewer than k candidates are held.
    int64_t kth_distance() {
        if (buf_.size() < k_) return -1;
        size_t held = 0;
        uint32_t t = 0;
        while ((held += hist_[t]) < k_) ++t;  // the histogram sums to buf_.size() >= k
        bound_ = t;
        full_ = true;
        return t;
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
    // Keeps the k smallest by (distance, id): every candidate below the k-th distance t (the
    // histogram gives t without a selection), and of those at t the smallest ids. A selection
    // over all 2k candidates by (distance, id) cost ~5% more of a ClusterIndex query.
    void shrink() {
        uint32_t t = 0;
        size_t below = 0;
        while (below + hist_[t] < k_) below += hist_[t++];
        const size_t need = k_ - below;  // >= 1 candidates at distance t
        ties_.clear();
        size_t out = 0;
        for (const Candidate& c : buf_) {
            if (c.d < t) buf_[out++] = c;
            else if (c.d == t) ties_.push_back(c.id);
        }
        if (ties_.size() > need) {
            std::nth_element(ties_.begin(), ties_.begin() + static_cast<std::ptrdiff_t>(need - 1), ties_.end());
            ties_.resize(need);
        }
        const int64_t last = *std::max_element(ties_.begin(), ties_.end());
        for (int64_t id : ties_) {
            buf_[out].d = t;
            buf_[out].id = id;
            ++out;
        }
        buf_.resize(out);
        for (size_t d = t; d < hist_.size(); ++d) hist_[d] = 0;
        hist_[t] = static_cast<uint32_t>(need);
        worst_ = {t, last};
        bound_ = t;
        full_ = true;
    }
    std::vector<int64_t> ties_;  // shrink's scratch: ids at the k-th distance
    size_t k_ = 0;
    std::vector<Candidate> buf_;
    std::vector<uint32_t> hist_;  // distances of the held candidates
    Candidate worst_{0, 0};
    uint32_t bound_ = 0;
    bool full_ = false;
};

// The k nearest of the candidates [first, last) in (distance, id) order into D and I,
// padded with -1 when fewer qualify (the counting searches' last step).
inline void write_nearest(Candidate* first, Candidate* last, int k, int32_t* D, int64_t* I) {
    const size_t kk = std::min(static_cast<size_t>(k), static_cast<size_t>(last - first));
    // (distance, id) is a total order, so selecting then sorting gives partial_sort's rows.
    if (kk > 0 && first + kk < last) std::nth_element(first, first + (kk - 1), last);
    std::sort(first, first + kk);
    for (size_t r = 0; r < static_cast<size_t>(k); ++r) {
        D[r] = r < kk ? static_cast<int32_t>(first[r].d) : -1;
        I[r] = r < kk ? first[r].id : -1;
    }
}

// Whether `id` is in the sorted list [begin, end).
inline bool is_excluded(const int64_t* begin, const int64_t* end, int64_t id) {
    return begin != end && std::binary_search(begin, end, id);
}

}  // namespace hashsearch
