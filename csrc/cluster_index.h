// Exact Hamming top-k by cluster pruning.
//
// The codes are grouped around C centroids (a few rounds of Hamming
// k-medians: nearest centroid, then the majority bit of each cluster) and held
// once, sorted by (cluster, r = distance to the centroid, id). By the triangle
// inequality d(q, x) >= |d(q, c) - r(x)|, so while tau is the current k-th
// distance only the items of cluster c with r in [d(q, c) - tau, d(q, c) + tau]
// can enter the top-k: one contiguous run, found from per-(cluster, r) offsets.
// Clusters are read nearest centroid first, so tau falls fast; a cluster whose
// radii miss the window is skipped unread. Every item within the final k-th
// distance is read, so results equal FlatIndex::topk exactly (ties by id).
// A query whose windows hold too many codes (uniform codes) is scanned instead, and so
// is every query of a small index (up to kSmallIndexItems codes), where the scan is cheaper.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "flat_index.h"
#include "search_policy.h"

namespace hashsearch {

class ClusterIndex {
public:
    // nclusters in [1, n]; rounds of k-medians after the seeded initial pick.
    ClusterIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits, size_t nclusters,
                 int rounds = 3, int num_threads = 0);

    // From a previous build's clusters (a saved index): centroids (nclusters, nwords) and
    // each item's cluster; skips the k-medians and the assignment. Labels must be below
    // nclusters; radii are recomputed, so any labels give exact results.
    ClusterIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits, const uint64_t* centroids,
                 size_t nclusters, const uint32_t* labels);

    // This index with `count` more codes (ids continuing from size()): they join their
    // nearest centroid (ties: the smaller), the centroids are kept. Validates the codes.
    std::unique_ptr<ClusterIndex> grown(const uint64_t* codes, size_t count, int num_threads) const;

    // Same output as FlatIndex::topk, bit for bit. Each query runs on one thread.
    void topk(const uint64_t* queries, size_t nq, int k, const ExcludeList& exclude, int num_threads,
              int32_t* D, int64_t* I) const;

    // Same output as FlatIndex::range_search: every item within `radius`, CSR (lims, D, I)
    // sorted by (distance, id); the clusters' runs within radius of the query's distance to
    // their centroid, or a scan when those runs hold over a quarter of the codes.
    void range_search(const uint64_t* queries, size_t nq, int radius, const ExcludeList& exclude,
                      int num_threads, std::vector<int64_t>& lims, std::vector<int32_t>& D,
                      std::vector<int64_t>& I) const;

    size_t size() const { return sorted_.size(); }
    size_t nwords() const { return sorted_.nwords(); }
    int nbits() const { return sorted_.nbits(); }
    size_t nclusters() const { return centroids_.size(); }
    // Codes in id order, (n, nwords) uint64 into `out`.
    void copy_codes(uint64_t* out) const;
    size_t code_bytes() const { return sorted_.memory_bytes(); }
    // The codes in id order as a FlatIndex (for scanning many queries).
    FlatIndex id_ordered_copy() const;
    // Centroids (nclusters, nwords) and each item's cluster, in id order (what the
    // second constructor takes).
    void copy_centroids(uint64_t* out) const;
    void copy_labels(uint32_t* out) const;
    // Bytes beside the one copy of the codes: ids, centroids, offsets, radius bounds.
    size_t extra_bytes() const;
    // Items compared and clusters read since construction (not synchronised
    // across concurrent calls).
    size_t items_read() const { return items_read_.load(); }
    size_t clusters_read() const { return clusters_read_.load(); }
    // Queries answered by a scan: their windows held too many codes (uniform codes), or
    // skipped: sent to the scan untried because recent queries fell back.
    size_t scanned() const { return scanned_.load(); }
    size_t skipped() const { return skipped_.load(); }
    // Whether small indexes scan every query (the default) or search their clusters
    // like large ones: tests turn it off to check the cluster search on small inputs.
    static void set_small_scan(bool enabled);
    static bool small_scan();

private:
    // Query indices [0, nq) sorted by their nearest centroid (ties: the smaller centroid),
    // stable.
    std::vector<uint32_t> by_nearest_centroid(const uint64_t* queries, size_t nq, int num_threads) const;
    struct Scratch;
    static Scratch& thread_scratch();  // the calling thread's
    // The query's distance to every centroid into s.dq (and the buffers sized).
    void centroid_distances(const Kernels& kern, const uint64_t* query, Scratch& s) const;
    // s.order: the clusters by increasing distance from the query to their centroid (s.dq).
    void order_clusters(Scratch& s) const;
    // Codes in the runs within tau of the clusters from order position j on, up to the
    // first whose centroid is beyond tau of every radius (as are all after it).
    size_t codes_in_reach(const Scratch& s, size_t j, uint32_t tau) const;
    // Whether some radius of cluster c lies within t of dqc, the query's distance to its centroid.
    bool cluster_reaches(uint32_t dqc, uint32_t c, uint32_t t) const;
    // The run of cluster c that can hold items within t, [b0, b1); false if empty.
    bool run_within(uint32_t dqc, uint32_t c, uint32_t t, uint32_t& b0, uint32_t& b1) const;
    // Sorts the codes by (cluster, radius, id) and fills the offsets and radius bounds.
    void arrange(const std::vector<uint32_t>& cluster, const std::vector<uint16_t>& radius);
    // One query's clusters shared among threads: this thread reads positions first,
    // first + stride, ... of the cluster order; tau is the threads' least k-th distance,
    // abort set when one of them chose the scan.
    struct Split {
        size_t first = 0, stride = 1;
        std::atomic<uint32_t>* tau = nullptr;
        std::atomic<bool>* abort = nullptr;
    };
    // False if the query's windows hold too many codes: the caller scans it instead.
    bool search_one(const Kernels& kern, const uint64_t* query, int k, const int64_t* ex_begin,
                    const int64_t* ex_end, int32_t* D, int64_t* I, Scratch& s, Split split) const;
    // One query on `threads` threads (each search_one over a share of the clusters), the
    // threads' top-k merged; false as for search_one.
    bool search_split(const Kernels& kern, const uint64_t* query, int k, const int64_t* ex_begin,
                      const int64_t* ex_end, size_t threads, int32_t* D, int64_t* I) const;

    FlatIndex sorted_;           // codes ordered by (cluster, r, id)
    FlatIndex centroids_;        // (C, nwords)
    std::vector<uint32_t> id_of_;  // position in sorted_ -> item id
    // Small indexes (up to kSmallIndexItems codes) only: the codes once more, in id order,
    // for Index's scan (at most 512 KiB a code word; empty otherwise).
    FlatIndex by_id_;
    // Where the items of (cluster c, radius r) start, relative to the cluster's start, at
    // c * (nbits + 2) + r (r = nbits + 1: the cluster's size); uint16 (half the bytes, so a
    // window's two ends share a cache line more often) unless a cluster holds over 65,535 codes.
    std::vector<uint16_t> rel16_;
    std::vector<uint32_t> rel32_;
    std::vector<uint32_t> cluster_start_;  // C + 1: where each cluster starts
    std::vector<uint16_t> rmin_, rmax_;  // least / largest radius per cluster (rmin > rmax: empty)
    uint32_t rmax_all_ = 0;              // the largest radius of all
    mutable std::atomic<size_t> items_read_{0};
    mutable std::atomic<size_t> clusters_read_{0};
    mutable std::atomic<size_t> scanned_{0};
    mutable std::atomic<size_t> skipped_{0};
    FallbackScore fall_score_;  // whether recent queries kept falling back to the scan
};

}  // namespace hashsearch
