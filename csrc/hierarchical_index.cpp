#include "hierarchical_index.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

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

HierarchicalIndex::PendingAdd HierarchicalIndex::prepare_add(const uint64_t* codes, const float* emb,
                                                             size_t count) {
    flat_.check_codes(codes, count);
    const size_t nw = flat_.nwords(), n = flat_.size();
    PendingAdd p{codes, emb, count, cluster_ ? cluster_->grown(codes, count, 0) : nullptr, nullptr};
    if (mih_) {
        std::vector<uint64_t> all((n + count) * nw);
        flat_.copy_codes(all.data());
        std::copy_n(codes, count * nw, all.data() + n * nw);
        p.mih = std::make_unique<MIHIndex>(all.data(), n + count, nw, flat_.nbits(), mih_->m());
    }
    emb_.reserve(emb_.size() + count * dim_);
    flat_.reserve_for_add(count);
    return p;
}

void HierarchicalIndex::commit_add(PendingAdd& p) {
    flat_.add(p.codes, p.count);                               // checked, room reserved: no throw
    emb_.insert(emb_.end(), p.emb, p.emb + p.count * dim_);  // within the reserved capacity
    if (p.cluster) cluster_.swap(p.cluster);
    if (p.mih) mih_.swap(p.mih);
}

void HierarchicalIndex::undo_add(PendingAdd& p) {
    flat_.remove_last(p.count);
    emb_.resize(emb_.size() - p.count * dim_);
    if (p.cluster) cluster_.swap(p.cluster);
    if (p.mih) mih_.swap(p.mih);
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

namespace {

// A score as an integer key: keys ascend as scores descend, and -0.0 and +0.0, equal as
// doubles, get the same key (inner_products' sums start from +0.0 and are never -0.0,
// but the key order must not depend on that). Scores are finite: embeddings are checked.
inline uint64_t descending_key(double score) {
    score += 0.0;  // -0.0 -> +0.0
    uint64_t bits;
    std::memcpy(&bits, &score, sizeof bits);
    // Negative: all bits flipped; else the sign bit set. Branch-free: signs mix.
    const uint64_t flip = static_cast<uint64_t>(static_cast<int64_t>(bits) >> 63) | (uint64_t{1} << 63);
    return ~(bits ^ flip);
}

// Indices into keys/ids of the `keep` smallest (key, id) pairs among pool[0..n) (any
// order), written to out; returns how many (keep, or n when n < keep). `pool` is used
// as scratch. A radix select on the 8 bits below the keys' common prefix, repeated on
// the bucket holding the boundary: branch-free counting and partitioning instead of
// nth_element's unpredictable comparisons (which take half of HieS's time on ML-1M
// with 500 candidates).
size_t select_smallest(const uint64_t* keys, const int64_t* ids, uint32_t* pool, size_t n, size_t keep,
                       uint32_t* out) {
    size_t nout = 0;
    while (keep > 0) {
        if (keep >= n) {
            std::copy_n(pool, n, out + nout);
            return nout + n;
        }
        uint64_t lo = ~uint64_t{0}, hi = 0;
        for (size_t c = 0; c < n; ++c) {
            lo = std::min(lo, keys[pool[c]]);
            hi = std::max(hi, keys[pool[c]]);
        }
        if (lo == hi) {  // all tied: the smallest ids
            std::nth_element(pool, pool + keep, pool + n, [&](uint32_t a, uint32_t b) { return ids[a] < ids[b]; });
            std::copy_n(pool, keep, out + nout);
            return nout + keep;
        }
        const int top = 63 - __builtin_clzll(lo ^ hi);  // keys agree above this bit
        const int shift = std::max(0, top - 7);
        // Four sub-histograms: close scores share a bucket, and one counter would chain
        // their increments.
        uint32_t count[4][256] = {};
        size_t c = 0;
        for (; c + 4 <= n; c += 4)
            for (int r = 0; r < 4; ++r) ++count[r][(keys[pool[c + r]] >> shift) & 255];
        for (; c < n; ++c) ++count[0][(keys[pool[c]] >> shift) & 255];
        // The bucket holding the keep-th smallest: everything below it is in.
        uint32_t boundary = 0;
        size_t below = 0;
        for (;; ++boundary) {
            const size_t in_bucket = size_t{count[0][boundary]} + count[1][boundary] + count[2][boundary] + count[3][boundary];
            if (below + in_bucket >= keep) break;
            below += in_bucket;
        }
        size_t rest = 0;
        for (c = 0; c < n; ++c) {
            const uint32_t item = pool[c];
            const uint32_t bucket = static_cast<uint32_t>((keys[item] >> shift) & 255);
            out[nout] = item;
            nout += bucket < boundary;
            pool[rest] = item;  // rest <= c: already read
            rest += bucket == boundary;
        }
        n = rest;
        keep -= below;
    }
    return nout;
}

}  // namespace

void HierarchicalIndex::rerank(const Kernels& kern, const float* qe, const int64_t* ids, size_t count, int k,
                                float* srow, int64_t* irow) const {
    size_t valid = 0;
    while (valid < count && ids[valid] >= 0) ++valid;
    thread_local std::vector<double> dots;
    thread_local std::vector<uint64_t> keys;
    thread_local std::vector<uint32_t> pool, chosen;
    dots.resize(valid);
    kern.inner_products(emb_.data(), dim_, ids, valid, qe, dots.data());
    keys.resize(valid);
    pool.resize(valid);
    chosen.resize(valid);
    for (size_t c = 0; c < valid; ++c) {
        keys[c] = descending_key(dots[c]);
        pool[c] = static_cast<uint32_t>(c);
    }
    const size_t keep = std::min<size_t>(k, valid);
    uint32_t* best = chosen.data();
    select_smallest(keys.data(), ids, pool.data(), valid, keep, best);
    const uint64_t* key = keys.data();
    std::sort(best, best + keep, [&](uint32_t a, uint32_t b) {
        return key[a] < key[b] || (key[a] == key[b] && ids[a] < ids[b]);
    });
    for (size_t r = 0; r < static_cast<size_t>(k); ++r) {
        srow[r] = r < keep ? static_cast<float>(dots[best[r]]) : -std::numeric_limits<float>::infinity();
        irow[r] = r < keep ? ids[best[r]] : -1;
    }
}

void HierarchicalIndex::topk(const uint64_t* queries, const float* query_emb, size_t nq, int k,
                             int candidates, const ExcludeList& exclude, int num_threads, float* S,
                             int64_t* I) const {
    if (k <= 0) throw std::invalid_argument("k must be positive, got " + std::to_string(k));
    if (candidates < k)
        throw std::invalid_argument("candidates must be >= k=" + std::to_string(k) + ", got " +
                                    std::to_string(candidates));
    const size_t nw = flat_.nwords(), nc = static_cast<size_t>(candidates), kk = static_cast<size_t>(k);
    const Kernels kern = active_kernels();
    if (!mih_ && !cluster_ && nq >= 2 * static_cast<size_t>(resolve_threads(num_threads))) {
        // The scan's candidates: each thread takes a few queries at a time through both
        // stages, so their candidate lists are re-ranked while still in cache (one
        // batched Hamming stage wrote 4,096 x C ids and distances, then read them back:
        // 24 MB at C = 500). The scan answers any batch of queries the same.
        constexpr size_t kFusedQueries = 8;
        parallel_for((nq + kFusedQueries - 1) / kFusedQueries, num_threads, [&](size_t blk, size_t) {
            const size_t q0 = blk * kFusedQueries, nb = std::min(kFusedQueries, nq - q0);
            thread_local std::vector<int32_t> cd;
            thread_local std::vector<int64_t> ci;
            cd.resize(nb * nc);
            ci.resize(nb * nc);
            ExcludeList ex = exclude;
            if (ex.indptr) ex.indptr += q0;
            flat_.topk(queries + q0 * nw, nb, candidates, ex, 1, cd.data(), ci.data());
            for (size_t b = 0; b < nb; ++b)
                rerank(kern, query_emb + (q0 + b) * dim_, ci.data() + b * nc, nc, k, S + (q0 + b) * kk,
                       I + (q0 + b) * kk);
        });
        return;
    }
    // Bounded batches keep the candidate buffers small for millions of queries.
    const size_t batch = 4096;
    std::vector<int32_t> cd;
    std::vector<int64_t> ci;
    for (size_t q0 = 0; q0 < nq; q0 += batch) {
        size_t nb = std::min(batch, nq - q0);
        cd.resize(nb * nc);
        ci.resize(nb * nc);
        ExcludeList ex = exclude;
        if (ex.indptr) ex.indptr += q0;
        hamming_topk(queries + q0 * nw, nb, candidates, ex, num_threads, cd.data(), ci.data());
        parallel_for(nb, num_threads, [&](size_t b, size_t) {
            rerank(kern, query_emb + (q0 + b) * dim_, ci.data() + b * nc, nc, k, S + (q0 + b) * kk,
                   I + (q0 + b) * kk);
        });
    }
}

}  // namespace hashsearch
