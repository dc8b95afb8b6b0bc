// Hierarchical search (HieS, HashGNN paper Sec. 4.4): Hamming top-C candidates
// by linear scan, re-ranked by the inner product of continuous embeddings.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "flat_index.h"

namespace hashsearch {

class HierarchicalIndex {
public:
    HierarchicalIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits, const float* emb,
                      size_t dim);

    // S (nq, k) float32 scores, descending (ties: smaller id first), I (nq, k);
    // padding is (-inf, -1). Scores are accumulated in double.
    void topk(const uint64_t* queries, const float* query_emb, size_t nq, int k, int candidates,
              const ExcludeList& exclude, int num_threads, float* S, int64_t* I) const;

    const FlatIndex& flat() const { return flat_; }
    size_t dim() const { return dim_; }
    const float* embeddings() const { return emb_.data(); }
    size_t memory_bytes() const { return flat_.memory_bytes() + emb_.size() * sizeof(float); }

private:
    FlatIndex flat_;
    std::vector<float> emb_;
    size_t dim_;
};

}  // namespace hashsearch
