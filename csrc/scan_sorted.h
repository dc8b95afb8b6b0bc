// Exact top-k (and range search) by a linear scan over codes held in another
// order than their ids (MIH's table 0, ClusterIndex's clusters): the fallback of
// both for queries their structure does not help.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "flat_index.h"
#include "parallel.h"
#include "unordered_topk.h"

namespace hashsearch {

constexpr size_t kFallbackBlock = 8;    // fallback queries sharing one pass over the codes

// Answers the queries `which` (indices into queries / exclude / D / I) by
// scanning `sorted`; id_of(pos) gives the id at a position, prefetch_id(pos)
// fetches it ahead.
template <class IdOf, class PrefetchId>
void scan_sorted(const Kernels& kern, const FlatIndex& sorted, IdOf id_of, PrefetchId prefetch_id,
                 const uint64_t* queries, const std::vector<size_t>& which, int k, const ExcludeList& exclude,
                 int num_threads, int32_t* D, int64_t* I) {
    const size_t nw = sorted.nwords();
    // The SIMD scan offers items in position order, not id order,
    // so each collector keeps every tie with its k-th distance; excluded ids can
    // take at most |exclude| of its places. Ids are then looked up and ties
    // broken. Blocks of queries share each tile of codes, as in Index; fewer
    // blocks than threads (one query served alone) also split the items, each
    // part with its own collectors (their union holds every tie), as Index does.
    const size_t nq = which.size(), n = sorted.size();
    const size_t nblocks = (nq + kFallbackBlock - 1) / kFallbackBlock;
    const size_t workers = static_cast<size_t>(resolve_threads(num_threads));
    const size_t nparts = nblocks < workers && n * nw >= split_min_words() ? workers : 1;  // as Index
    const size_t part_items = (n + nparts - 1) / nparts;
    std::vector<TopKCollector> cols;  // part p of query i at p * nq + i
    cols.reserve(nparts * nq);
    for (size_t p = 0; p < nparts; ++p)
        for (size_t i = 0; i < nq; ++i) {
            const int nex = static_cast<int>(exclude.end(which[i]) - exclude.begin(which[i]));
            cols.emplace_back(k + nex, sorted.nbits(), /*keep_ties=*/true);
        }
    parallel_for(nblocks * nparts, num_threads, [&](size_t task, size_t) {
        const size_t block = task / nparts, p = task % nparts;
        const size_t i0 = block * kFallbackBlock, i1 = std::min(nq, i0 + kFallbackBlock);
        std::vector<ExcludeCursor> none(i1 - i0);
        std::vector<const uint64_t*> qs;
        for (size_t i = i0; i < i1; ++i) qs.push_back(queries + which[i] * nw);
        sorted.scan_block(kern, qs.data(), i1 - i0, cols.data() + p * nq + i0, none.data(), p * part_items,
                           (p + 1) * part_items);
    });
    parallel_for(nq, num_threads, [&](size_t i, size_t) {
        const size_t q = which[i];
        const int64_t *eb = exclude.begin(q), *ee = exclude.end(q);
        // Every answer is within the (k + |exclude|)-th smallest distance held over all parts:
        // only those items need their ids, each a likely cache miss (fetched ahead).
        thread_local std::vector<size_t> hist;
        thread_local std::vector<std::pair<uint32_t, uint32_t>> held;  // (distance, position)
        hist.assign(static_cast<size_t>(sorted.nbits()) + 2, 0);
        for (size_t p = 0; p < nparts; ++p) {
            const TopKCollector& col = cols[p * nq + i];
            for (size_t c = 0; c < col.size(); ++c) ++hist[col.dist_at(c)];
        }
        const size_t need = static_cast<size_t>(k) + static_cast<size_t>(ee - eb);
        uint32_t bound = 0;
        for (size_t below = 0; bound + 1 < hist.size() && below + hist[bound] < need;) below += hist[bound++];
        held.clear();
        for (size_t p = 0; p < nparts; ++p) {
            const TopKCollector& col = cols[p * nq + i];
            for (size_t c = 0; c < col.size(); ++c)
                if (col.dist_at(c) <= bound) {
                    const uint32_t pos = static_cast<uint32_t>(col.id_at(c));
                    held.push_back({col.dist_at(c), pos});
                    prefetch_id(pos);
                }
        }
        UnorderedTopK top;
        top.reset(static_cast<size_t>(k));
        for (const auto& [d, pos] : held) {
            const int64_t id = id_of(pos);
            if (!top.admits(d, id)) continue;
            if (is_excluded(eb, ee, id)) continue;
            top.push(d, id);
        }
        top.finish(D + q * k, I + q * k);
    });
}


// Range search hits of each query, (distance, id) pairs.
using RangeHits = std::vector<std::vector<std::pair<int32_t, int64_t>>>;

// The range search of the queries `which` by a scan of `sorted`: positions
// mapped to ids by id_of(pos), exclusions applied, each query's hits sorted.
template <class IdOf>
void range_scan_sorted(const FlatIndex& sorted, IdOf id_of, const uint64_t* queries, const std::vector<size_t>& which,
                       int radius, const ExcludeList& exclude, int num_threads, RangeHits& hits) {
    const size_t nw = sorted.nwords();
    std::vector<uint64_t> qs(which.size() * nw);
    for (size_t i = 0; i < which.size(); ++i) std::copy_n(queries + which[i] * nw, nw, qs.data() + i * nw);
    std::vector<int64_t> sl, si;
    std::vector<int32_t> sd;
    sorted.range_search(qs.data(), which.size(), radius, ExcludeList(), num_threads, sl, sd, si);
    parallel_for(which.size(), num_threads, [&](size_t i, size_t) {
        const size_t q = which[i];
        auto& out = hits[q];
        for (int64_t c = sl[i]; c < sl[i + 1]; ++c) {
            const int64_t id = id_of(static_cast<size_t>(si[c]));
            if (!is_excluded(exclude.begin(q), exclude.end(q), id)) out.emplace_back(sd[c], id);
        }
        std::sort(out.begin(), out.end());
    });
}

// Each query's sorted hits into faiss' CSR layout (lims, D, I).
inline void hits_to_csr(const RangeHits& hits, int num_threads, std::vector<int64_t>& lims, std::vector<int32_t>& D,
                        std::vector<int64_t>& I) {
    const size_t nq = hits.size();
    lims.assign(nq + 1, 0);
    for (size_t q = 0; q < nq; ++q) lims[q + 1] = lims[q] + static_cast<int64_t>(hits[q].size());
    D.resize(static_cast<size_t>(lims[nq]));
    I.resize(static_cast<size_t>(lims[nq]));
    parallel_for(nq, num_threads, [&](size_t q, size_t) {
        for (size_t c = 0; c < hits[q].size(); ++c) {
            D[static_cast<size_t>(lims[q]) + c] = hits[q][c].first;
            I[static_cast<size_t>(lims[q]) + c] = hits[q][c].second;
        }
    });
}

}  // namespace hashsearch
