// Exact Hamming top-k by linear scan over packed codes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "topk.h"

namespace hashsearch {

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

// Kernels of the SIMD level in force now.
Kernels active_kernels();

class FlatIndex {
public:
    FlatIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits);

    // D (nq, k) int32 and I (nq, k) int64, sorted by (distance, id), -1 padded.
    void topk(const uint64_t* queries, size_t nq, int k, const ExcludeList& exclude, int num_threads,
              int32_t* D, int64_t* I) const;

    size_t size() const { return n_; }
    size_t nwords() const { return nwords_; }
    int nbits() const { return nbits_; }
    const uint64_t* data() const { return codes_.data(); }
    size_t memory_bytes() const { return codes_.size() * sizeof(uint64_t); }

private:
    void topk_by_query(const Kernels& kern, const uint64_t* queries, size_t nq, int k,
                       const ExcludeList& exclude, int threads, int32_t* D, int64_t* I) const;
    void topk_two_pass(const Kernels& kern, const uint64_t* queries, size_t nq, int k,
                       const ExcludeList& exclude, int threads, int32_t* D, int64_t* I) const;
    void topk_by_item(const Kernels& kern, const uint64_t* queries, size_t nq, int k,
                      const ExcludeList& exclude, int threads, int32_t* D, int64_t* I) const;

    std::vector<uint64_t> codes_;
    size_t n_;
    size_t nwords_;
    int nbits_;
};

}  // namespace hashsearch
