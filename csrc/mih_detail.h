// Helpers shared by the multi-index hashing search (mih_index.cpp) and its joined
// batch search (mih_joined.cpp): substrings of packed codes, the counting top-k,
// ring enumeration and the cost constants both use.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/popcount.h"

namespace hashsearch {
namespace mih_detail {

// Bits [start, start+bits) of a packed code, bits <= 32.
inline uint32_t substring(const uint64_t* code, int start, int bits) {
    size_t w = static_cast<size_t>(start) >> 6;
    int off = start & 63;
    uint64_t v = code[w] >> off;
    if (off + bits > 64) v |= code[w + 1] << (64 - off);
    return static_cast<uint32_t>(v & ((uint64_t{1} << bits) - 1));
}

// Bits [start, start+bits) of a one-word code (start + bits <= 64, bits <= 32).
inline uint32_t substring64(uint64_t code, int start, int bits) {
    return static_cast<uint32_t>((code >> start) & ((uint64_t{1} << bits) - 1));
}

// The cache lines of the first `limit` bytes of a run of `bytes` bytes at p (the
// hardware prefetcher streams the rest): a run of a table starts with a cache miss.
inline void prefetch_lines(const void* p, size_t bytes, size_t limit) {
    const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t{63};
    const uintptr_t end = reinterpret_cast<uintptr_t>(p) + std::min(bytes, limit);
    for (uintptr_t line = first; line < end; line += 64) __builtin_prefetch(reinterpret_cast<const void*>(line));
}

// Bits set in a substring (swar_popcount: these files are built without -mpopcnt);
// only admitted candidates use it.
inline int popcount32(uint32_t x) { return static_cast<int>(swar_popcount(x)); }

// The k-th smallest distance from counts of distances alone: a candidate's id
// (a random read, or a binary search in table 0 for tables j >= 1) is only
// looked up if it is still within the k-th distance when the search ends, not
// each time it would enter a (distance, id) top-k that later drops it. (With
// ids, 15% of a 64-bit query's time went to those binary searches.)
class CountingTopK {
public:
    void reset(size_t k, int nbits) {
        k_ = k;
        counts_.assign(static_cast<size_t>(nbits) + 1, 0);
        total_ = within_ = 0;
        kth_ = std::numeric_limits<uint32_t>::max();
    }
    // Largest distance that can still be among the k nearest (ties included).
    uint32_t threshold() const { return kth_; }
    int64_t kth_distance() const { return total_ >= k_ ? static_cast<int64_t>(kth_) : -1; }
    size_t total() const { return total_; }
    size_t count_at(uint32_t d) const { return counts_[d]; }
    // Counts a candidate at distance d <= threshold().
    void add(uint32_t d) {
        ++counts_[d];
        ++total_;
        if (total_ < k_) return;
        if (total_ == k_) {  // the k-th distance, first known
            within_ = 0;
            kth_ = 0;
            while ((within_ += counts_[kth_]) < k_) ++kth_;
            return;
        }
        ++within_;
        while (within_ - counts_[kth_] >= k_) within_ -= counts_[kth_--];
    }

private:
    size_t k_ = 0, total_ = 0, within_ = 0;  // within_: candidates at distance <= kth_
    std::vector<size_t> counts_;
    uint32_t kth_ = 0;
};

constexpr double kSubProbeNs = 2.0;      // one sub-bucket of a sub-directory (a line already fetched)
constexpr int kMaxKeyBits = 18;          // directories of at most 2^18 buckets (1 MiB)
constexpr int kMaxSubBits = 5;           // sub-directories of at most 32 sub-buckets

// C(n, r) for n <= 64 from a table built once (the search's cost floor asks
// for it on every ring: computing it by divisions costs a tenth of a query).
inline double binomial(int n, int r) {
    struct Binomials {
        double c[65][65] = {};
        Binomials() {
            for (int a = 0; a <= 64; ++a) {
                c[a][0] = 1;
                for (int b = 1; b <= a; ++b) c[a][b] = c[a - 1][b - 1] + (b < a ? c[a - 1][b] : 0);
            }
        }
    };
    static const Binomials table;
    if (r < 0 || r > n || n > 64) return 0;
    return table.c[n][r];
}

// Calls fn(bucket) for every key of `key_bits` bits at distance exactly rho from
// `key`, stepping through the rho-bit masks with Gosper's hack.
template <class Fn>
void for_each_key_at(uint32_t key, int key_bits, int rho, Fn&& fn) {
    const uint64_t limit = uint64_t{1} << key_bits;
    uint64_t mask = rho == 0 ? 0 : (uint64_t{1} << rho) - 1;
    while (mask < limit) {
        fn(key ^ static_cast<uint32_t>(mask));
        if (rho == 0) break;
        const uint64_t c = mask & (~mask + 1);
        const uint64_t nx = mask + c;
        mask = (((nx ^ mask) >> 2) >> __builtin_ctzll(c)) | nx;  // c is a power of two: no divide
    }
}

inline uint64_t low_mask(int bits) { return bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1; }

// A one-word code with bits [s, s + kb) cut out (the higher bits move down).
inline uint64_t cut_key(uint64_t x, int s, int kb) {
    uint64_t high = s + kb >= 64 ? 0 : (x >> (s + kb)) << s;
    return (x & low_mask(s)) | high;
}

// Inverse of cut_key: puts `key` back at bits [s, s + kb).
inline uint64_t paste_key(uint64_t rest, uint64_t key, int s, int kb) {
    uint64_t high = s + kb >= 64 ? 0 : (rest >> s) << (s + kb);
    return (rest & low_mask(s)) | high | (key << s);
}

inline bool code_less(const uint64_t* a, const uint64_t* b, size_t nw) {
    for (size_t w = 0; w < nw; ++w)
        if (a[w] != b[w]) return a[w] < b[w];
    return false;
}

}  // namespace mih_detail
}  // namespace hashsearch
