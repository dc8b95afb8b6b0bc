// Top-k selection over small integer (Hamming) distances.
//
// Items reach a collector in increasing id order, so an item whose distance
// equals the current k-th distance can never displace an earlier one (ties go
// to the smaller id). That lets the collector keep a plain threshold `bound`
// (accept iff d < bound) and compact its buffer with a counting pass instead
// of a heap: O(1) per rejected item, which is nearly every item.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace hashsearch {

// Entries past a byte select's output that its vector stores may write (16 uint32 ids).
constexpr size_t kSelectSlack = 16;

// The `hist` entries of any two-pass function (TwoPassFn, TwoPassBytesFn, SelectBytesFn)
// for nbits-bit codes and k results.
inline size_t two_pass_hist_entries(int nbits, int k) {
    return 4 * (static_cast<size_t>(nbits) + 2) + static_cast<size_t>(k) + kSelectSlack;
}

class TopKCollector {
public:
    // keep_ties: keep every item tied with the k-th distance too (the buffer
    // grows as needed), for callers whose ids do not arrive in increasing order.
    TopKCollector(int k, int nbits, bool keep_ties = false)
        : k_(k), nbits_(nbits), cap_(std::max<size_t>(2 * static_cast<size_t>(k), 64)),
          dist_(cap_), ids_(cap_), hist_(nbits + 2), keep_ties_(keep_ties) {
        reset();
    }

    // A collector for range search: keeps every item offered with distance
    // <= radius (the buffer grows), so the scan kernels' SIMD filter serves it.
    static TopKCollector within(int radius, int nbits) {
        TopKCollector col(64, nbits);
        col.radius_ = radius;
        col.reset();
        return col;
    }

    // The items held (unordered): all with distance < bound() that were offered
    // once keep_ties is set.
    size_t size() const { return size_; }
    uint32_t dist_at(size_t i) const { return dist_[i]; }
    int64_t id_at(size_t i) const { return ids_[i]; }

    void reset() {
        size_ = 0;
        compact_at_ = cap_;
        bound_ = static_cast<uint32_t>(radius_ >= 0 ? std::min(radius_, nbits_) : nbits_) + 1;
    }

    // Accept iff d < bound(); callers filter on bound() first.
    uint32_t bound() const { return bound_; }

    void push(uint32_t d, int64_t id) {
        dist_[size_] = d;
        ids_[size_] = id;
        if (++size_ == compact_at_) compact();
    }

    // Writes up to k results sorted by (distance, id); pads with -1.
    void finish(int32_t* out_d, int64_t* out_i) {
        if (size_ > static_cast<size_t>(k_)) compact();
        // Stable counting sort by distance keeps id order within a distance.
        std::fill(hist_.begin(), hist_.end(), 0);
        for (size_t i = 0; i < size_; ++i) ++hist_[dist_[i] + 1];
        for (size_t b = 1; b < hist_.size(); ++b) hist_[b] += hist_[b - 1];
        for (size_t i = 0; i < size_; ++i) {
            size_t pos = hist_[dist_[i]]++;
            out_d[pos] = static_cast<int32_t>(dist_[i]);
            out_i[pos] = ids_[i];
        }
        for (size_t i = size_; i < static_cast<size_t>(k_); ++i) {
            out_d[i] = -1;
            out_i[i] = -1;
        }
    }

private:
    // Keeps exactly k items: all with d < t and the earliest with d == t,
    // where t is the k-th smallest distance; then only d < t can enter.
    void compact() {
        if (radius_ >= 0) {  // range search: keep everything
            cap_ *= 2;
            compact_at_ = cap_;
            dist_.resize(cap_);
            ids_.resize(cap_);
            return;
        }
        std::fill(hist_.begin(), hist_.end(), 0);
        for (size_t i = 0; i < size_; ++i) ++hist_[dist_[i]];
        size_t below = 0;
        uint32_t t = 0;
        while (below + hist_[t] < static_cast<size_t>(k_)) below += hist_[t++];
        if (keep_ties_) {
            size_t out = 0;
            for (size_t i = 0; i < size_; ++i) {
                if (dist_[i] <= t) {
                    dist_[out] = dist_[i];
                    ids_[out] = ids_[i];
                    ++out;
                }
            }
            size_ = out;
            bound_ = t + 1;
            // The next compaction comes after about k more pushes, as without ties, however
            // many ties are held: a later one would leave bound() stale and let more items in.
            compact_at_ = size_ + std::max<size_t>(static_cast<size_t>(k_), 32);
            if (compact_at_ > cap_) {
                cap_ = std::max(compact_at_, 2 * cap_);
                dist_.resize(cap_);
                ids_.resize(cap_);
            }
            return;
        }
        size_t ties_left = static_cast<size_t>(k_) - below;
        size_t out = 0;
        for (size_t i = 0; i < size_; ++i) {
            uint32_t d = dist_[i];
            if (d < t || (d == t && ties_left > 0)) {
                if (d == t) --ties_left;
                dist_[out] = d;
                ids_[out] = ids_[i];
                ++out;
            }
        }
        size_ = out;
        bound_ = t;
    }

    int k_;
    int nbits_;
    size_t cap_;
    size_t compact_at_ = 0;  // size at which push() compacts (<= cap_)
    size_t size_ = 0;
    uint32_t bound_ = 0;
    std::vector<uint32_t> dist_;
    std::vector<int64_t> ids_;
    std::vector<size_t> hist_;
    bool keep_ties_ = false;
    int radius_ = -1;  // >= 0: a range-search collector (see within())
};

// Calls fn(i), in increasing i, for every i < n with bytes[i] <= t.
template <class F>
inline void for_each_byte_at_most(const uint8_t* bytes, size_t n, uint8_t t, F&& fn) {
    size_t i = 0;
    if (t < 127) {
        // Eight bytes at a time: (b | 0x80) - (t + 1) keeps its high bit iff b > t, for every
        // byte b < 128 and without borrows; bytes >= 128 may be flagged and are rechecked.
        const uint64_t ones = 0x0101010101010101ull, highs = ones * 0x80, below = ones * (t + 1u);
        for (; i + 8 <= n; i += 8) {
            uint64_t x;
            std::memcpy(&x, bytes + i, 8);
            for (uint64_t hit = ~((x | highs) - below) & highs; hit != 0; hit &= hit - 1) {
                const size_t j = i + static_cast<size_t>(__builtin_ctzll(hit)) / 8;
                if (bytes[j] <= t) fn(j);
            }
        }
    }
    for (; i < n; ++i)
        if (bytes[i] <= t) fn(i);
}

// Sorted ids one query must not return; queried with non-decreasing ids.
class ExcludeCursor {
public:
    ExcludeCursor() = default;
    ExcludeCursor(const int64_t* begin, const int64_t* end) : cur_(begin), end_(end) {}
    bool excluded(int64_t id) {
        while (cur_ != end_ && *cur_ < id) ++cur_;
        return cur_ != end_ && *cur_ == id;
    }

private:
    const int64_t* cur_ = nullptr;
    const int64_t* end_ = nullptr;
};

// The scans' sink for one item: pushes (d, id) if d is below `bound` (the caller's copy of
// col.bound(), kept in a register) and id is not excluded, and refreshes the copy.
inline void push_if_closer(TopKCollector& col, ExcludeCursor& ex, uint32_t d, int64_t id, uint32_t& bound) {
    if (d < bound && !ex.excluded(id)) {
        col.push(d, id);
        bound = col.bound();
    }
}

}  // namespace hashsearch
