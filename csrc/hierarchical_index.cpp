#include "hierarchical_index.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include "parallel.h"

namespace hashsearch {

HierarchicalIndex::HierarchicalIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits,
                                     const float* emb, size_t dim, int m)
    : flat_(codes, n, nwords, nbits), emb_(emb, emb + n * dim), dim_(dim) {
    if (dim == 0) throw std::invalid_argument("embeddings must have at least one column");
    if (m < 0) throw std::invalid_argument("m must be >= 0 (0: linear scan), got " + std::to_string(m));
    if (m > 0) mih_ = std::make_unique<MIHIndex>(codes, n, nwords, nbits, m);
}

void HierarchicalIndex::use_clusters(size_t nclusters, int num_threads) {
    if (mih_) throw std::invalid_argument("an index with MIH candidates cannot also use clusters");
    std::vector<uint64_t> all(flat_.size() * flat_.nwords());
    flat_.copy_codes(all.data());
    cluster_ = std::make_unique<ClusterIndex>(all.data(), flat_.size(), flat_.nwords(), flat_.nbits(), nclusters, 3,
                                              num_threads);
}

void HierarchicalIndex::use_clusters(const uint64_t* centroids, size_t nclusters, const uint32_t* labels) {
    if (mih_) throw std::invalid_argument("an index with MIH candidates cannot also use clusters");
    std::vector<uint64_t> all(flat_.size() * flat_.nwords());
    flat_.copy_codes(all.data());
    cluster_ = std::make_unique<ClusterIndex>(all.data(), flat_.size(), flat_.nwords(), flat_.nbits(), centroids,
                                              nclusters, labels);
}

void HierarchicalIndex::add(const uint64_t* codes, const float* emb, size_t count) {
    // Everything that can throw (a bad code, memory, an interrupt during a rebuild) comes
    // before the first change, so a failed add leaves the index as it was.
    flat_.check_codes(codes, count);
    const size_t nw = flat_.nwords(), n = flat_.size();
    std::unique_ptr<ClusterIndex> cluster = cluster_ ? cluster_->grown(codes, count, 0) : nullptr;
    std::unique_ptr<MIHIndex> mih;
    if (mih_) {
        std::vector<uint64_t> all((n + count) * nw);
        flat_.copy_codes(all.data());
        std::copy_n(codes, count * nw, all.data() + n * nw);
        mih = std::make_unique<MIHIndex>(all.data(), n + count, nw, flat_.nbits(), mih_->m());
    }
    emb_.reserve(emb_.size() + count * dim_);
    flat_.add(codes, count);  // (on bad_alloc it changes nothing)
    emb_.insert(emb_.end(), emb, emb + count * dim_);  // within the reserved capacity: no throw
    if (cluster) cluster_ = std::move(cluster);
    if (mih) mih_ = std::move(mih);
}

void HierarchicalIndex::hamming_topk(const uint64_t* queries, size_t nq, int k, const ExcludeList& exclude,
                                     int num_threads, int32_t* D, int64_t* I) const {
    if (mih_)
        mih_->topk(queries, nq, k, exclude, num_threads, D, I);
    else if (cluster_)
        cluster_->topk(queries, nq, k, exclude, num_threads, D, I);
    else
        flat_.topk(queries, nq, k, exclude, num_threads, D, I);
}

void HierarchicalIndex::topk(const uint64_t* queries, const float* query_emb, size_t nq, int k,
                             int candidates, const ExcludeList& exclude, int num_threads, float* S,
                             int64_t* I) const {
    if (k <= 0) throw std::invalid_argument("k must be positive, got " + std::to_string(k));
    if (candidates < k)
        throw std::invalid_argument("candidates must be >= k=" + std::to_string(k) + ", got " +
                                    std::to_string(candidates));
    const size_t nw = flat_.nwords();
    // Bounded batches keep the candidate buffers small for millions of queries.
    const size_t batch = 4096;
    std::vector<int32_t> cd;
    std::vector<int64_t> ci;
    for (size_t q0 = 0; q0 < nq; q0 += batch) {
        size_t nb = std::min(batch, nq - q0);
        cd.resize(nb * candidates);
        ci.resize(nb * candidates);
        ExcludeList ex = exclude;
        if (ex.indptr) ex.indptr += q0;
        hamming_topk(queries + q0 * nw, nb, candidates, ex, num_threads, cd.data(), ci.data());
        Kernels kern = active_kernels();
        parallel_for(nb, num_threads, [&](size_t b, size_t) {
            const float* qe = query_emb + (q0 + b) * dim_;
            const int64_t* ids = ci.data() + b * candidates;
            size_t valid = 0;
            while (valid < static_cast<size_t>(candidates) && ids[valid] >= 0) ++valid;
            thread_local std::vector<double> dots;
            dots.resize(valid);
            kern.inner_products(emb_.data(), dim_, ids, valid, qe, dots.data());
            std::vector<std::pair<double, int64_t>> scored(valid);
            for (size_t c = 0; c < valid; ++c) scored[c] = {-dots[c], ids[c]};
            size_t keep = std::min<size_t>(k, scored.size());
            // Selection then a sort of the k kept: cheaper than a heap-based partial sort.
            if (keep < scored.size()) std::nth_element(scored.begin(), scored.begin() + keep, scored.end());
            std::sort(scored.begin(), scored.begin() + keep);
            float* srow = S + (q0 + b) * k;
            int64_t* irow = I + (q0 + b) * k;
            for (size_t r = 0; r < static_cast<size_t>(k); ++r) {
                srow[r] = r < keep ? static_cast<float>(-scored[r].first)
                                   : -std::numeric_limits<float>::infinity();
                irow[r] = r < keep ? scored[r].second : -1;
            }
        });
    }
}

}  // namespace hashsearch
