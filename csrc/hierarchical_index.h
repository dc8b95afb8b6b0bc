// Hierarchical search (HieS, HashGNN paper Sec. 4.4): Hamming top-C candidates
// by linear scan (or by multi-index hashing, m > 0, or by cluster pruning),
// re-ranked by the inner product of continuous embeddings.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "cluster_index.h"
#include "flat_index.h"
#include "mih_index.h"

namespace hashsearch {

class HierarchicalIndex {
public:
    // m > 0: candidates by an MIHIndex of m substrings (identical output, its
    // own copy of the codes and tables); m == 0: by the linear scan.
    HierarchicalIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits, const float* emb,
                      size_t dim, int m = 0);

    // S (nq, k) float32 scores, descending (ties: smaller id first), I (nq, k);
    // padding is (-inf, -1). Scores are accumulated in double.
    void topk(const uint64_t* queries, const float* query_emb, size_t nq, int k, int candidates,
              const ExcludeList& exclude, int num_threads, float* S, int64_t* I) const;

    // The Hamming stage alone (HamR over this index's codes): exact top-k by the
    // candidate index (MIH, clusters or the scan; the same output as FlatIndex::topk).
    void hamming_topk(const uint64_t* queries, size_t nq, int k, const ExcludeList& exclude, int num_threads,
                      int32_t* D, int64_t* I) const;

    // Candidates by a ClusterIndex of the codes instead (identical output, its own
    // copy of the codes): built here, or from saved clusters (see ClusterIndex).
    // Only for an index without MIH.
    void use_clusters(size_t nclusters, int num_threads);
    void use_clusters(const uint64_t* centroids, size_t nclusters, const uint32_t* labels);
    const ClusterIndex* clusters() const { return cluster_.get(); }

    // Appends `count` codes with their embeddings (count x dim floats); ids
    // continue from size(). MIH candidate tables are rebuilt (O(n)); with
    // cluster candidates the new codes join their nearest centroid and the
    // layout is rebuilt (O(n)). A bad code leaves the index unchanged.
    void add(const uint64_t* codes, const float* emb, size_t count) {
        PendingAdd pending = prepare_add(codes, emb, count);
        commit_add(pending);
    }

    // add() in steps, for a caller that may abandon it (an interrupt): prepare_add does all
    // that can throw (checks, rebuilds, allocation) and changes nothing; commit_add applies it
    // without throwing, keeping what it replaced in `pending`, so that undo_add (right after,
    // nothing else changed between) puts the index back as it was. `codes` and `emb` must
    // live until the commit.
    struct PendingAdd {
        const uint64_t* codes;
        const float* emb;
        size_t count;
        std::unique_ptr<ClusterIndex> cluster;
        std::unique_ptr<MIHIndex> mih;
    };
    PendingAdd prepare_add(const uint64_t* codes, const float* emb, size_t count);
    void commit_add(PendingAdd& pending);
    void undo_add(PendingAdd& pending);

    const FlatIndex& flat() const { return flat_; }
    size_t dim() const { return dim_; }
    const float* embeddings() const { return emb_.data(); }
    int m() const { return mih_ ? mih_->m() : 0; }
    size_t memory_bytes() const {
        return flat_.memory_bytes() + emb_.size() * sizeof(float) +
               (mih_ ? mih_->code_bytes() + mih_->table_bytes() : 0) +
               (cluster_ ? cluster_->code_bytes() + cluster_->extra_bytes() : 0);
    }

private:
    // One query's re-rank: the `count` candidate ids (-1 padded) by inner product with
    // qe, the k best into srow / irow.
    void rerank(const Kernels& kern, const float* qe, const int64_t* ids, size_t count, int k, float* srow,
                int64_t* irow) const;

    FlatIndex flat_;
    std::unique_ptr<MIHIndex> mih_;
    std::unique_ptr<ClusterIndex> cluster_;
    std::vector<float> emb_;
    size_t dim_;
};

}  // namespace hashsearch
