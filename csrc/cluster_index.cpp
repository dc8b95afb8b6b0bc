#include "cluster_index.h"

#include <algorithm>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>

#include "hamming.h"
#include "parallel.h"
#include "scan_sorted.h"
#include "unordered_topk.h"

namespace hashsearch {

namespace {
constexpr size_t kSliceItems = 256;  // items read per threshold update
constexpr size_t kAheadClusters = 8;  // clusters whose first codes are fetched ahead
constexpr size_t kSamplePerCluster = 256;  // codes a cluster in the k-medians rounds
// A query whose windows (at the current k-th distance, once k items are held) hold
// more than this share of the codes is scanned instead: reading a window costs a query's
// own pass over memory, while the scan shares each tile of codes among a block of queries.
// (Counting whole clusters in reach instead would send 2% of learned-like queries to the
// scan whose windows hold 5-10% of the codes: read through the clusters, they take a
// third of the scan's time.)
constexpr double kScanShare = 0.25;
// ... checked once a query has read 1/kCheckAfter of the codes (most clustered queries
// finish before: the check, a window per cluster, is not free).
constexpr size_t kCheckAfter = 32;
// Up to this many codes every query is answered by Index's scan over an id-ordered copy
// (by_id_): the clusters cost more there (measured crossover ~65-100k learned-like codes).
constexpr size_t kSmallIndexItems = size_t{1} << 16;
// From this many queries, a batch runs in the order of their nearest centroids, numbered
// along a chain of near centroids when built (up to kMaxChainClusters: the chain costs C^2).
constexpr size_t kOrderQueries = 256;
constexpr size_t kMaxChainClusters = 16384;
constexpr uint64_t kInitSeed = 0x9e3779b97f4a7c15ull;  // the initial centroids' pick: fixed, so builds repeat

// Nearest centroid of every code (ties: the smaller centroid) and its distance.
void assign(const FlatIndex& centroids, const uint64_t* codes, size_t n, int num_threads,
            std::vector<uint32_t>& cluster, std::vector<uint16_t>& radius) {
    std::vector<int32_t> d(n);
    std::vector<int64_t> c(n);
    centroids.topk(codes, n, 1, ExcludeList(), num_threads, d.data(), c.data());
    cluster.resize(n);
    radius.resize(n);
    for (size_t i = 0; i < n; ++i) {
        cluster[i] = static_cast<uint32_t>(c[i]);
        radius[i] = static_cast<uint16_t>(d[i]);
    }
}

// The C codes (nwords each) reordered along a nearest-neighbour chain from the first:
// each is the nearest not yet taken to the one before (ties: the smaller). O(C^2).
std::vector<uint64_t> chained(const std::vector<uint64_t>& codes, size_t C, size_t nwords) {
    std::vector<uint64_t> out(C * nwords);
    std::vector<uint8_t> taken(C, 0);
    size_t at = 0;
    for (size_t i = 0; i < C; ++i) {
        taken[at] = 1;
        std::copy_n(codes.data() + at * nwords, nwords, out.data() + i * nwords);
        size_t next = C;
        uint32_t best = UINT32_MAX;
        for (size_t c = 0; c < C; ++c) {
            if (taken[c]) continue;
            const uint32_t d = hamming(codes.data() + at * nwords, codes.data() + c * nwords, nwords);
            if (d < best) {
                best = d;
                next = c;
            }
        }
        at = next;
    }
    return out;
}

// Codes [b0, b1) of `codes` within distance thr of the query (positions and distances).
size_t select(const Kernels& kern, const FlatIndex& codes, size_t b0, size_t b1, const uint64_t* query,
              uint32_t thr, uint32_t* idx, uint32_t* dist) {
    if (codes.compact())
        return kern.select_within32(codes.data32(), b0, b1, static_cast<uint32_t>(query[0]), thr, idx, dist);
    return kern.select_within(codes.data64(), codes.nwords(), b0, b1, query, thr, idx, dist);
}
}  // namespace

struct ClusterIndex::Scratch {
    std::vector<uint32_t> idx, dist;  // kernel output, one slice (or every centroid)
    std::vector<uint32_t> order;       // clusters by distance to the query
    std::vector<uint32_t> start;       // counting sort by distance
    std::vector<uint32_t> dq;          // distance from the query to each centroid
    UnorderedTopK top;
};

namespace {
void check_sizes(size_t n, size_t nclusters) {
    if (n == 0) throw std::invalid_argument("ClusterIndex needs at least one code, got 0");
    if (nclusters < 1 || nclusters > n)
        throw std::invalid_argument("nclusters must be in [1, n=" + std::to_string(n) + "], got " +
                                    std::to_string(nclusters));
    if (n >= (size_t{1} << 32)) throw std::invalid_argument("ClusterIndex holds fewer than 2^32 codes");
}
}  // namespace

ClusterIndex::ClusterIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits, size_t nclusters,
                           int rounds, int num_threads)
    : sorted_(codes, n, nwords, nbits), centroids_(codes, 0, nwords, nbits), by_id_(codes, 0, nwords, nbits) {
    check_sizes(n, nclusters);
    const size_t C = nclusters, nb = static_cast<size_t>(nbits);
    // The k-medians rounds run on a sample of kSamplePerCluster codes a cluster (faiss'
    // k-means does the same), the first C of them the initial centroids; all codes are
    // assigned once at the end.
    const size_t S = std::min(n, C * kSamplePerCluster);
    std::vector<uint32_t> pick(n);
    for (size_t i = 0; i < n; ++i) pick[i] = static_cast<uint32_t>(i);
    std::mt19937_64 rng(kInitSeed);
    for (size_t i = 0; i < S; ++i) std::swap(pick[i], pick[i + rng() % (n - i)]);
    std::vector<uint64_t> sample(S * nwords), cent(C * nwords);
    for (size_t i = 0; i < S; ++i) sorted_.load_code(pick[i], sample.data() + i * nwords);
    std::copy_n(sample.data(), C * nwords, cent.data());
    std::vector<uint32_t> cluster;
    std::vector<uint16_t> radius;
    for (int round = 0; round < rounds; ++round) {
        assign(FlatIndex(cent.data(), C, nwords, nbits), sample.data(), S, num_threads, cluster, radius);
        // Each centroid becomes the majority bit of its cluster (an empty one stays).
        std::vector<uint32_t> ones(C * nb, 0), count(C, 0);
        for (size_t i = 0; i < S; ++i) {
            const uint32_t c = cluster[i];
            ++count[c];
            uint32_t* o = ones.data() + c * nb;
            for (size_t w = 0; w < nwords; ++w)
                for (uint64_t x = sample[i * nwords + w]; x; x &= x - 1) ++o[64 * w + static_cast<size_t>(__builtin_ctzll(x))];
        }
        for (size_t c = 0; c < C; ++c) {
            if (count[c] == 0) continue;
            uint64_t* out = cent.data() + c * nwords;
            std::fill(out, out + nwords, 0);
            for (size_t b = 0; b < nb; ++b)
                if (2 * ones[c * nb + b] > count[c]) out[b / 64] |= uint64_t{1} << (b % 64);
        }
    }
    // Numbered along a nearest-neighbour chain, so that queries taken in the order of their
    // nearest centroids (large batches, below) visit similar clusters one after another.
    if (C <= kMaxChainClusters) cent = chained(cent, C, nwords);
    centroids_ = FlatIndex(cent.data(), C, nwords, nbits);
    {
        std::vector<uint64_t> all(n * nwords);  // the codes as validated, in id order
        sorted_.copy_codes(all.data());
        assign(centroids_, all.data(), n, num_threads, cluster, radius);
    }
    arrange(cluster, radius);
}

ClusterIndex::ClusterIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits, const uint64_t* centroids,
                           size_t nclusters, const uint32_t* labels)
    : sorted_(codes, n, nwords, nbits), centroids_(centroids, nclusters, nwords, nbits), by_id_(codes, 0, nwords, nbits) {
    check_sizes(n, nclusters);
    std::vector<uint32_t> cluster(labels, labels + n);
    std::vector<uint16_t> radius(n);
    std::vector<uint64_t> code(nwords);
    for (size_t i = 0; i < n; ++i) {
        if (cluster[i] >= nclusters)
            throw std::invalid_argument("cluster label " + std::to_string(cluster[i]) + " of item " +
                                        std::to_string(i) + " is not below nclusters=" + std::to_string(nclusters));
        // The radius is recomputed, not trusted: pruning is exact for any assignment.
        sorted_.load_code(i, code.data());
        radius[i] = static_cast<uint16_t>(hamming(code.data(), centroids + cluster[i] * nwords, nwords));
    }
    arrange(cluster, radius);
}

void ClusterIndex::arrange(const std::vector<uint32_t>& cluster, const std::vector<uint16_t>& radius) {
    const size_t n = size(), C = nclusters(), nb = static_cast<size_t>(nbits());
    // Counting sort by (cluster, radius), ids ascending inside each.
    std::vector<uint32_t> offsets(C * (nb + 1) + 1, 0);
    for (size_t i = 0; i < n; ++i) ++offsets[cluster[i] * (nb + 1) + radius[i] + 1];
    for (size_t j = 1; j < offsets.size(); ++j) offsets[j] += offsets[j - 1];
    std::vector<uint32_t> next(offsets.begin(), offsets.end() - 1);
    id_of_.resize(n);
    for (size_t i = 0; i < n; ++i) id_of_[next[cluster[i] * (nb + 1) + radius[i]]++] = static_cast<uint32_t>(i);
    sorted_.permute(id_of_);
    by_id_ = n <= kSmallIndexItems ? id_ordered_copy() : FlatIndex(nullptr, 0, nwords(), nbits());
    cluster_start_.resize(C + 1);
    for (size_t c = 0; c <= C; ++c) cluster_start_[c] = offsets[c * (nb + 1)];
    // Offsets relative to the cluster's start, nbits + 2 a cluster (the last: its size).
    size_t largest = 0;
    for (size_t c = 0; c < C; ++c) largest = std::max<size_t>(largest, cluster_start_[c + 1] - cluster_start_[c]);
    const size_t row = nb + 2;
    std::vector<uint32_t> rel(C * row);
    for (size_t c = 0; c < C; ++c)
        for (size_t r = 0; r < row; ++r) rel[c * row + r] = offsets[c * (nb + 1) + r] - cluster_start_[c];
    if (largest <= UINT16_MAX) {
        rel16_.assign(rel.begin(), rel.end());
        rel32_.clear();
    } else {
        rel32_.assign(rel.begin(), rel.end());
        rel16_.clear();
    }
    rmin_.assign(C, static_cast<uint16_t>(nb + 1));
    rmax_.assign(C, 0);
    for (size_t i = 0; i < n; ++i) {
        rmin_[cluster[i]] = std::min(rmin_[cluster[i]], radius[i]);
        rmax_[cluster[i]] = std::max(rmax_[cluster[i]], radius[i]);
    }
    rmax_all_ = *std::max_element(rmax_.begin(), rmax_.end());
}

void ClusterIndex::copy_centroids(uint64_t* out) const {
    for (size_t c = 0; c < nclusters(); ++c) centroids_.load_code(c, out + c * nwords());
}

void ClusterIndex::copy_labels(uint32_t* out) const {
    for (size_t c = 0; c < nclusters(); ++c)
        for (uint32_t p = cluster_start_[c]; p < cluster_start_[c + 1]; ++p) out[id_of_[p]] = static_cast<uint32_t>(c);
}

std::unique_ptr<ClusterIndex> ClusterIndex::grown(const uint64_t* codes, size_t count, int num_threads) const {
    const size_t n = size(), nw = nwords(), C = nclusters();
    std::vector<uint64_t> all((n + count) * nw), centroids(C * nw);
    copy_codes(all.data());
    std::copy_n(codes, count * nw, all.data() + n * nw);
    copy_centroids(centroids.data());
    std::vector<uint32_t> labels(n + count);
    copy_labels(labels.data());
    if (count > 0) {
        std::vector<int32_t> d(count);
        std::vector<int64_t> c(count);
        centroids_.topk(codes, count, 1, ExcludeList(), num_threads, d.data(), c.data());
        for (size_t i = 0; i < count; ++i) labels[n + i] = static_cast<uint32_t>(c[i]);
    }
    return std::make_unique<ClusterIndex>(all.data(), n + count, nw, nbits(), centroids.data(), C, labels.data());
}

size_t ClusterIndex::extra_bytes() const {
    return id_of_.size() * 4 + by_id_.memory_bytes() + centroids_.memory_bytes() + rel16_.size() * 2 + (rel32_.size() + cluster_start_.size()) * 4 +
           (rmin_.size() + rmax_.size()) * 2;
}

std::vector<uint32_t> ClusterIndex::by_nearest_centroid(const uint64_t* queries, size_t nq, int num_threads) const {
    std::vector<int32_t> d(nq);
    std::vector<int64_t> c(nq);
    centroids_.topk(queries, nq, 1, ExcludeList(), num_threads, d.data(), c.data());
    std::vector<uint32_t> start(nclusters() + 1, 0), order(nq);
    for (size_t q = 0; q < nq; ++q) ++start[static_cast<size_t>(c[q]) + 1];
    for (size_t j = 1; j < start.size(); ++j) start[j] += start[j - 1];
    for (size_t q = 0; q < nq; ++q) order[start[static_cast<size_t>(c[q])]++] = static_cast<uint32_t>(q);
    return order;
}

FlatIndex ClusterIndex::id_ordered_copy() const {
    std::vector<uint64_t> ordered(size() * nwords());
    copy_codes(ordered.data());
    return FlatIndex(ordered.data(), size(), nwords(), nbits());
}

void ClusterIndex::copy_codes(uint64_t* out) const {
    const size_t nw = nwords();
    for (size_t p = 0; p < size(); ++p) sorted_.load_code(p, out + size_t{id_of_[p]} * nw);
}

void ClusterIndex::topk(const uint64_t* queries, size_t nq, int k, const ExcludeList& exclude, int num_threads,
                        int32_t* D, int64_t* I) const {
    if (k <= 0) throw std::invalid_argument("k must be positive, got " + std::to_string(k));
    if (size() == 0) throw std::invalid_argument("the index is empty");
    const Kernels kern = active_kernels();
    const size_t nw = nwords();
    if (by_id_.size() > 0 && small_scan()) {
        // A small index is scanned: over learned-like 64-bit codes, a batch through the
        // clusters took 5.6x the scan's time at 3,706 codes and 1.8x at 40,981 (about 1x at
        // 100k): a query's centroid distances and windows cost more than the codes they skip.
        scanned_ += nq;
        return by_id_.topk(queries, nq, k, exclude, num_threads, D, I);
    }
    // While recent queries fell back (codes too uniform to prune), only the first `tried`
    // queries try the clusters: 1/kRetryEvery of a large call's, one query in kRetryEvery
    // small calls; the rest go straight to the scan.
    const size_t tried = fall_score_.queries_to_try(nq, true);
    std::vector<uint8_t> fell(nq, 1);
    const size_t threads = static_cast<size_t>(resolve_threads(num_threads));
    if (threads > 1 && tried < threads) {
        // Fewer queries than threads (a single query, as when serving): each query's
        // clusters are shared among the threads instead.
        for (size_t q = 0; q < tried; ++q)
            fell[q] = !search_split(kern, queries + q * nw, k, exclude.begin(q), exclude.end(q), threads,
                                    D + q * static_cast<size_t>(k), I + q * static_cast<size_t>(k));
    } else {
        // A large batch runs in the order of its queries' nearest centroids: queries read one
        // after another then share most of their clusters while those are still cached.
        std::vector<uint32_t> order;
        if (tried >= kOrderQueries) order = by_nearest_centroid(queries, tried, num_threads);
        parallel_for(tried, num_threads, [&](size_t i, size_t) {
            const size_t q = order.empty() ? i : order[i];
            Scratch& scratch = thread_scratch();
            fell[q] = !search_one(kern, queries + q * nw, k, exclude.begin(q), exclude.end(q),
                                  D + q * static_cast<size_t>(k), I + q * static_cast<size_t>(k), scratch, Split{});
        });
    }
    const size_t fell_tried = static_cast<size_t>(std::count(fell.begin(), fell.begin() + static_cast<std::ptrdiff_t>(tried), 1));
    fall_score_.record(fell_tried, tried - fell_tried);
    skipped_ += nq - tried;
    size_t scan_from = nq;  // the skipped queries [tried, nq): scanned in id order below, when many
    if (nq - tried >= kCopyScanQueries && size() > kCopyScanMinItems) {
        scan_query_range(id_ordered_copy(), queries, tried, nq, k, exclude, num_threads, D, I);
        scanned_ += nq - tried;
        scan_from = tried;
    }
    std::vector<size_t> which;
    for (size_t q = 0; q < scan_from; ++q)
        if (fell[q]) which.push_back(q);
    if (which.empty()) return;
    scanned_ += which.size();
    scan_sorted(kern, sorted_, [&](uint32_t pos) { return static_cast<int64_t>(id_of_[pos]); },
                [&](uint32_t pos) { __builtin_prefetch(id_of_.data() + pos); }, queries, which, k, exclude,
                num_threads, D, I);
}

namespace {
std::atomic<bool>& small_scan_flag() {
    static std::atomic<bool> enabled{true};
    return enabled;
}
}  // namespace

void ClusterIndex::set_small_scan(bool enabled) { small_scan_flag() = enabled; }
bool ClusterIndex::small_scan() { return small_scan_flag().load(std::memory_order_relaxed); }

// Not inlined on purpose: with the thread_local in view, GCC specialised search_one for
// it and re-derived its address (a __tls_get_addr call) at every use inside the loops,
// ~6% of a query's time.
__attribute__((noinline)) ClusterIndex::Scratch& ClusterIndex::thread_scratch() {
    thread_local Scratch scratch;
    return scratch;
}

void ClusterIndex::centroid_distances(const Kernels& kern, const uint64_t* query, Scratch& s) const {
    const size_t C = nclusters();
    const size_t buf = std::max(C, kSliceItems);
    if (s.idx.size() < buf) {
        s.idx.resize(buf);
        s.dist.resize(buf);
    }
    // Every centroid is within nbits, so all C come back in centroid order: straight into dq.
    s.dq.resize(C);
    select(kern, centroids_, 0, C, query, static_cast<uint32_t>(nbits()), s.idx.data(), s.dq.data());
}

// Inlined (called for every cluster position a query passes; as calls, 3-4% of its time).
__attribute__((always_inline)) inline bool ClusterIndex::cluster_reaches(uint32_t dqc, uint32_t c, uint32_t t) const {
    const int d = static_cast<int>(dqc), ti = static_cast<int>(t);
    return d - static_cast<int>(rmax_[c]) <= ti && static_cast<int>(rmin_[c]) - d <= ti;
}

__attribute__((always_inline)) inline bool ClusterIndex::run_within(uint32_t dqc, uint32_t c, uint32_t t, uint32_t& b0,
                                                                   uint32_t& b1) const {
    if (!cluster_reaches(dqc, c, t)) return false;
    const int d = static_cast<int>(dqc), ti = static_cast<int>(t), nb = nbits();
    const size_t row = static_cast<size_t>(nb) + 2;
    const size_t lo = c * row + static_cast<size_t>(std::max(0, d - ti));
    const size_t end = c * row + static_cast<size_t>(std::min(nb, d + ti)) + 1;
    const uint32_t base = cluster_start_[c];
    if (rel32_.empty()) {
        b0 = base + rel16_[lo];
        b1 = base + rel16_[end];
    } else {
        b0 = base + rel32_[lo];
        b1 = base + rel32_[end];
    }
    return b1 > b0;
}

void ClusterIndex::range_search(const uint64_t* queries, size_t nq, int radius, const ExcludeList& exclude,
                                int num_threads, std::vector<int64_t>& lims, std::vector<int32_t>& D,
                                std::vector<int64_t>& I) const {
    if (radius < 0) throw std::invalid_argument("radius must be >= 0, got " + std::to_string(radius));
    if (size() == 0) throw std::invalid_argument("the index is empty");
    const Kernels kern = active_kernels();
    const size_t nw = nwords(), C = nclusters();
    const uint32_t r = static_cast<uint32_t>(std::min(radius, nbits()));
    RangeHits hits(nq);
    std::vector<uint8_t> scan(nq, 0);
    std::atomic<size_t> items{0}, clusters{0};
    parallel_for(nq, num_threads, [&](size_t q, size_t) {
        Scratch& s = thread_scratch();
        const uint64_t* query = queries + q * nw;
        centroid_distances(kern, query, s);
        // The windows hold many of the codes (uniform codes, a wide radius): the scan is cheaper.
        size_t total = 0;
        for (size_t c = 0; c < C; ++c) {
            uint32_t b0, b1;
            if (run_within(s.dq[c], static_cast<uint32_t>(c), r, b0, b1)) total += b1 - b0;
        }
        if (static_cast<double>(total) > kScanShare * static_cast<double>(size())) {
            scan[q] = 1;
            return;
        }
        const int64_t *eb = exclude.begin(q), *ee = exclude.end(q);
        auto& out = hits[q];
        size_t read = 0, touched = 0;
        for (size_t c = 0; c < C; ++c) {
            uint32_t b0, b1;
            if (!run_within(s.dq[c], static_cast<uint32_t>(c), r, b0, b1)) continue;
            ++touched;
            for (uint32_t a = b0; a < b1; a += kSliceItems) {
                const uint32_t e = std::min<uint32_t>(b1, a + static_cast<uint32_t>(kSliceItems));
                const size_t cnt = select(kern, sorted_, a, e, query, r, s.idx.data(), s.dist.data());
                read += e - a;
                for (size_t i = 0; i < cnt; ++i) {
                    const int64_t id = static_cast<int64_t>(id_of_[s.idx[i]]);
                    if (!is_excluded(eb, ee, id)) out.emplace_back(static_cast<int32_t>(s.dist[i]), id);
                }
            }
        }
        std::sort(out.begin(), out.end());
        items += read;
        clusters += touched;
    });
    // The scanned queries: sorted order, then ids, sorted by (distance, id).
    std::vector<size_t> which;
    for (size_t q = 0; q < nq; ++q)
        if (scan[q]) which.push_back(q);
    if (!which.empty()) {
        range_scan_sorted(sorted_, [&](size_t pos) { return static_cast<int64_t>(id_of_[pos]); }, queries, which,
                          radius, exclude, num_threads, hits);
        scanned_ += which.size();
    }
    hits_to_csr(hits, num_threads, lims, D, I);
    items_read_ += items.load();
    clusters_read_ += clusters.load();
}

bool ClusterIndex::search_split(const Kernels& kern, const uint64_t* query, int k, const int64_t* ex_begin,
                                const int64_t* ex_end, size_t threads, int32_t* D, int64_t* I) const {
    const size_t kk = static_cast<size_t>(k);
    std::atomic<uint32_t> tau{static_cast<uint32_t>(nbits())};
    std::atomic<bool> abort{false};
    std::vector<int32_t> dist(threads * kk);
    std::vector<int64_t> ids(threads * kk);
    parallel_for(threads, static_cast<int>(threads), [&](size_t t, size_t) {
        Scratch& scratch = thread_scratch();
        if (!search_one(kern, query, k, ex_begin, ex_end, dist.data() + t * kk, ids.data() + t * kk, scratch,
                        Split{t, threads, &tau, &abort}))
            abort = true;
    });
    if (abort) return false;
    // Each thread's top-k of its clusters, sorted by (distance, id) and padded with -1:
    // the k best of their union (disjoint: every cluster belongs to one thread).
    std::vector<size_t> at(threads, 0);
    for (size_t r = 0; r < kk; ++r) {
        size_t best = threads;
        for (size_t t = 0; t < threads; ++t) {
            if (at[t] == kk || ids[t * kk + at[t]] < 0) continue;
            const size_t i = t * kk + at[t];
            if (best == threads || std::make_pair(dist[i], ids[i]) < std::make_pair(dist[best * kk + at[best]],
                                                                                    ids[best * kk + at[best]]))
                best = t;
        }
        if (best == threads) {
            D[r] = -1;
            I[r] = -1;
            continue;
        }
        D[r] = dist[best * kk + at[best]];
        I[r] = ids[best * kk + at[best]];
        ++at[best];
    }
    return true;
}

void ClusterIndex::order_clusters(Scratch& s) const {
    const size_t C = nclusters();
    const std::vector<uint32_t>& dq = s.dq;
    s.start.assign(static_cast<size_t>(nbits()) + 2, 0);  // a counting sort by distance
    for (size_t c = 0; c < C; ++c) ++s.start[dq[c] + 1];
    for (size_t r = 1; r < s.start.size(); ++r) s.start[r] += s.start[r - 1];
    s.order.resize(C);
    for (size_t c = 0; c < C; ++c) s.order[s.start[dq[c]]++] = static_cast<uint32_t>(c);
}

size_t ClusterIndex::codes_in_reach(const Scratch& s, size_t j, uint32_t tau) const {
    size_t total = 0;
    for (size_t jj = j; jj < nclusters() && s.dq[s.order[jj]] <= tau + rmax_all_; ++jj) {
        uint32_t b0, b1;
        if (run_within(s.dq[s.order[jj]], s.order[jj], tau, b0, b1)) total += b1 - b0;
    }
    return total;
}

bool ClusterIndex::search_one(const Kernels& kern, const uint64_t* query, int k, const int64_t* ex_begin,
                              const int64_t* ex_end, int32_t* D, int64_t* I, Scratch& s, Split split) const {
    const size_t C = nclusters(), nb = static_cast<size_t>(nbits());
    centroid_distances(kern, query, s);
    order_clusters(s);
    const std::vector<uint32_t>& dq = s.dq;
    UnorderedTopK& top = s.top;
    top.reset(static_cast<size_t>(k));
    uint32_t tau = static_cast<uint32_t>(nb);  // distances above it cannot enter
    const size_t row = nb + 2;  // entries per cluster in rel16_ / rel32_
    auto window = [&](uint32_t c, uint32_t t, uint32_t& b0, uint32_t& b1) { return run_within(dq[c], c, t, b0, b1); };
    // Clusters come by increasing d(q, c): once d(q, c) - tau exceeds every radius, neither
    // the cluster at order position j nor any later one can hold an item within tau.
    auto beyond_all = [&](size_t j) { return dq[s.order[j]] > tau + rmax_all_; };
    // The runs prefetch() found, by position (a ring of kAheadClusters): the loop reuses a
    // run found at the same tau instead of looking it up again (6-8% of a query's time).
    struct Found {
        uint32_t tau, b0, b1;
        bool ok;
    };
    Found ring[kAheadClusters];
    for (Found& f : ring) f = Found{std::numeric_limits<uint32_t>::max(), 0, 0, true};  // never used: tau differs
    // Position j's slot: this thread reads every stride-th position, so j / stride counts its own.
    auto slot = [&](size_t j) -> Found& { return ring[(j / split.stride) % kAheadClusters]; };
    auto prefetch = [&](size_t j) {
        const uint32_t c = s.order[j];
        uint32_t b0 = 0, b1 = 0;
        const bool ok = window(c, tau, b0, b1);
        slot(j) = Found{tau, b0, b1, ok};
        if (!ok) return;
        if (sorted_.compact()) __builtin_prefetch(sorted_.data32() + b0);
        else __builtin_prefetch(sorted_.data64() + size_t{b0} * nwords());
        // (not the run's first ids: only the few items within tau need theirs, anywhere in
        // the run; fetching them cost 4-6% of a query's time)
    };
    size_t items = 0, clusters = 0, since_select = 0;
    bool checked = false;  // whether the scan check (below) has run
    // Two stages: a cluster's offsets 2 * kAheadClusters ahead, its first codes
    // kAheadClusters ahead (by then its offsets are in cache).
    auto prefetch_offsets = [&](size_t j) {
        const uint32_t c = s.order[j];
        if (!cluster_reaches(dq[c], c, tau)) return;  // (rmin_ / rmax_ are small and cached)
        const int d = static_cast<int>(dq[c]);
        const size_t at = c * row + static_cast<size_t>(std::max(0, d - static_cast<int>(tau)));
        if (rel32_.empty()) __builtin_prefetch(rel16_.data() + at);
        else __builtin_prefetch(rel32_.data() + at);
    };
    // Split: this thread reads clusters first, first + stride, ... of the order, and the
    // threads share the least of their k-th distances (each bounds the final one).
    const size_t first = split.first, stride = split.stride;
    const size_t ahead1 = kAheadClusters * stride, ahead2 = 2 * kAheadClusters * stride;
    for (size_t j = first; j < std::min(C, first + ahead2); j += stride) prefetch_offsets(j);
    for (size_t j = first; j < std::min(C, first + ahead1); j += stride) prefetch(j);
    for (size_t j = first; j < C; j += stride) {
        if (split.tau != nullptr) {
            if (split.abort->load(std::memory_order_relaxed)) return false;  // another thread chose the scan
            tau = std::min(tau, split.tau->load(std::memory_order_relaxed));
        }
        if (beyond_all(j)) break;  // (most clusters, on learned-like codes)
        if (!checked && top.full() && items * stride * kCheckAfter >= size()) {
            checked = true;
            // What is left to read (what was read is spent either way), every thread's
            // clusters from here on: a split query is scanned as a whole.
            if (static_cast<double>(codes_in_reach(s, j, tau)) > kScanShare * static_cast<double>(size())) {
                items_read_ += items;
                clusters_read_ += clusters;
                return false;  // the caller scans this query
            }
        }
        uint32_t b0, b1;
        const Found f = slot(j);  // (read before prefetch(j + ahead1) reuses the slot)
        if (j + ahead2 < C) prefetch_offsets(j + ahead2);
        if (j + ahead1 < C) prefetch(j + ahead1);
        if (!f.ok) continue;  // no run at the tau then, so none at this one (tau only falls)
        if (f.tau == tau) {
            b0 = f.b0;
            b1 = f.b1;
        } else if (!window(s.order[j], tau, b0, b1)) continue;
        ++clusters;
        for (uint32_t a = b0; a < b1; a += kSliceItems) {
            const uint32_t e = std::min<uint32_t>(b1, a + static_cast<uint32_t>(kSliceItems));
            // window() took tau when the run was found; a tighter tau filters the slice
            const size_t cnt = select(kern, sorted_, a, e, query, tau, s.idx.data(), s.dist.data());
            items += e - a;
            size_t pushed = 0;
            for (size_t i = 0; i < cnt; ++i) {
                const uint32_t d = s.dist[i];
                if (d > tau) continue;
                const int64_t id = static_cast<int64_t>(id_of_[s.idx[i]]);
                if (!top.admits(d, id) || is_excluded(ex_begin, ex_end, id)) continue;
                top.push(d, id);
                ++pushed;
            }
            // The k-th distance by a selection among the held items, once a few have
            // arrived since the last (a selection per slice cost more than the reads).
            since_select += pushed;
            if (since_select == 0 || (top.full() && since_select * 4 < static_cast<size_t>(k))) continue;
            since_select = 0;
            const int64_t kth = top.kth_distance();  // -1 until k items are held
            if (kth >= 0) tau = std::min(tau, static_cast<uint32_t>(kth));
            if (split.tau != nullptr) {  // atomic min
                uint32_t shared = split.tau->load(std::memory_order_relaxed);
                while (tau < shared && !split.tau->compare_exchange_weak(shared, tau, std::memory_order_relaxed)) {
                }
            }
        }
    }
    items_read_ += items;
    clusters_read_ += clusters;
    top.finish(D, I);
    return true;
}

}  // namespace hashsearch
