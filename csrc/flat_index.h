// Exact Hamming top-k by linear scan over packed codes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "huge_alloc.h"
#include "kernels/kernels.h"
#include "topk.h"

namespace hashsearch {

// A query's scan is split over threads (when fewer query blocks than threads) only from
// this many code words on: handing half a scan to a pool thread costs ~10-25 us even while
// it polls for work (parallel.h), ~50 us once it sleeps. Measured, learned-like 64-bit, one
// query, 1 vs 2 threads with the polling: 40,981 items 31 vs 42 us, 100k 80 vs 63 us, 200k
// 110 vs 84 us, 300k 155 vs 107 us (without it 40,981 24 vs 78, 200k 101 vs 116).
constexpr size_t kSplitMinWords = size_t{1} << 17;
// The threshold in force: kSplitMinWords unless tests lowered it to cover the split paths
// on small inputs.
size_t split_min_words();
void set_split_min_words(size_t words);

// Per-query id lists to leave out, CSR with ids sorted within each row.
// indptr == nullptr means no exclusion.
struct ExcludeList {
    const int64_t* indptr = nullptr;
    const int64_t* indices = nullptr;
    const int64_t* begin(size_t query) const { return indptr ? indices + indptr[query] : nullptr; }
    const int64_t* end(size_t query) const { return indptr ? indices + indptr[query + 1] : nullptr; }
    ExcludeCursor cursor(size_t query) const {
        if (indptr == nullptr) return ExcludeCursor();
        return ExcludeCursor(indices + indptr[query], indices + indptr[query + 1]);
    }
};

// Checks CSR exclusion arrays before a search may read them: `indptr` (nq + 1 offsets) must
// run from 0 to nnz without decreasing (all checked before any id is read, as an offset out of
// order would point the reads past `indices`), and each query's ids must be sorted, in [0, n).
// std::invalid_argument naming the first problem.
void check_exclude(const int64_t* indptr, size_t nq, const int64_t* indices, size_t nnz, size_t n);

class FlatIndex {
public:
    FlatIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits);

    // D (nq, k) int32 and I (nq, k) int64, sorted by (distance, id), -1 padded.
    void topk(const uint64_t* queries, size_t nq, int k, const ExcludeList& exclude, int num_threads,
              int32_t* D, int64_t* I) const;

    // Every item within Hamming distance `radius` of each query (faiss-style
    // range search): lims (nq + 1) delimits each query's results in D/I, which
    // are sorted by (distance, id). Excluded ids are left out.
    void range_search(const uint64_t* queries, size_t nq, int radius, const ExcludeList& exclude,
                      int num_threads, std::vector<int64_t>& lims, std::vector<int32_t>& D,
                      std::vector<int64_t>& I) const;

    // Appends `count` codes of nwords() words each; they get ids size() .. size() + count - 1.
    // Validates every code first, so a bad one leaves the index as it was.
    void add(const uint64_t* codes, size_t count);
    // Makes room for `count` more codes, so that add() of that many cannot throw.
    void reserve_for_add(size_t count);
    // Drops the last `count` codes (undoes an add of that many).
    void remove_last(size_t count);
    // std::invalid_argument if a code has bits set above nbits (what add() checks first).
    void check_codes(const uint64_t* codes, size_t count) const;

    size_t size() const { return n_; }
    size_t nwords() const { return nwords_; }
    int nbits() const { return nbits_; }
    // Codes of at most 32 bits are held as uint32 (half the memory and traffic).
    bool compact() const { return !half_.empty() || (n_ == 0 && nbits_ <= 32); }
    const uint32_t* data32() const { return half_.data(); }  // when compact()
    const uint64_t* data64() const { return codes_.data(); }  // when !compact()
    // Copies code `id` into `out` (nwords uint64 words). Inline: MIH calls it per candidate.
    void load_code(size_t id, uint64_t* out) const {
        if (compact()) {
            out[0] = half_[id];
        } else {
            const uint64_t* p = codes_.data() + id * nwords_;
            for (size_t w = 0; w < nwords_; ++w) out[w] = p[w];
        }
    }
    // Offers the items [begin, min(end, size())) to cols[i] for query queries[i]
    // (i < count <= 8 or so): the queries share each tile of codes while it is in L1.
    void scan_block(const Kernels& kern, const uint64_t* const* queries, size_t count,
                    TopKCollector* cols, ExcludeCursor* cursors, size_t begin = 0,
                    size_t end = SIZE_MAX) const;
    void copy_codes(uint64_t* out) const;
    // Reorders the items: new item i is old item order[i] (a permutation of [0, n)).
    void permute(const std::vector<uint32_t>& order);
    size_t memory_bytes() const { return codes_.size() * sizeof(uint64_t) + half_.size() * sizeof(uint32_t); }

private:
    void topk_by_query(const Kernels& kern, const uint64_t* queries, size_t nq, int k,
                       const ExcludeList& exclude, int threads, int32_t* D, int64_t* I) const;
    void topk_two_pass(const Kernels& kern, const uint64_t* queries, size_t nq, int k,
                       const ExcludeList& exclude, int threads, int32_t* D, int64_t* I) const;
    void topk_by_item(const Kernels& kern, const uint64_t* queries, size_t nq, int k,
                      const ExcludeList& exclude, int threads, int32_t* D, int64_t* I) const;

    HugeVector<uint64_t> codes_;  // nbits > 32
    HugeVector<uint32_t> half_;   // nbits <= 32
    size_t n_;
    size_t nwords_;
    int nbits_;
};

}  // namespace hashsearch
