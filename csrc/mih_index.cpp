#include "mih_index.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "mih_detail.h"
#include "parallel.h"
#include "scan_sorted.h"
#include "search_policy.h"
#include "unordered_topk.h"

namespace hashsearch {

using namespace mih_detail;

namespace {

// Costs (ns) for choosing the next ring and for deciding when a query is
// better finished by the linear scan, fitted to timings of 1M and 4.2M-item
// learned 32/64-bit indexes on an AVX2 core (a candidate's cost includes the
// share of them that must be offered to the top-k and have their ids looked up).
constexpr double kProbeNs = 15.0;        // one bucket: its offsets read
constexpr double kRunNs = 40.0;          // a non-empty bucket: the miss that starts its run
constexpr double kCandidateNs = 3.5;     // a candidate
constexpr double kRangeCandidateNs = 8.0;  // a candidate of range_search (a scalar distance each)
constexpr double kCompactScanNs = 0.2;   // the linear scan per item, codes of <= 32 bits
constexpr size_t kSmallScanItems = 1 << 16;  // up to here the fallback fills a byte buffer (Index's two-pass)
// From this many fallback queries on a small index, an id-ordered copy of the
// codes (~2 ns an item) costs less than putting each query's distances into id order.
constexpr size_t kBatchCopyQueries = 16;
// Queries a batch times both ways (the tables and the scan) to choose between them.
constexpr size_t kMinCalibrationQueries = 32;
constexpr size_t kMaxCalibrationQueries = 512;
// From this many queries a batch is answered in the order of its queries' keys.
constexpr size_t kOrderedBatch = 1024;
constexpr uint32_t kSliceItems = 256;    // items read per threshold update
constexpr size_t kPrefetchRuns = 16;     // runs fetched ahead of the one being read
constexpr size_t kPrefetchBytes = 128;   // ... up to this much of each (the rest streams)
// Batches of one-word codes from this many queries are searched joined (search_joined),
// in chunks of at most kJoinChunk (a pair packs bucket, sub distance and query in 32 bits).
constexpr size_t kJoinMinQueries = 64;
constexpr size_t kJoinChunk = 2048;
// Threads search chunks of their own once each gets at least this many queries: the
// threads sharing each step of one chunk (barriers, merged counts) measured slower.
constexpr size_t kJoinThreadChunkMin = 200;

}  // namespace

// Per-thread buffers, reused across queries.
struct MIHIndex::Scratch {
    struct Run {
        uint32_t b0, b1, key, key_distance;
    };
    // A bucket with a sub-directory, met at some key distance: its
    // sub-buckets are read at the rings key distance + sub distance.
    struct Crowded {
        uint32_t key, b0;
        Table::SubDir dir;
    };
    struct Ring {
        int radius = -1;  // key radius of the ring held below (-1: none)
        std::vector<Run> runs;  // non-empty buckets
        size_t items = 0;
    };
    std::vector<Ring> rings;
    std::vector<std::vector<std::vector<Crowded>>> crowded;  // [table][key distance]
    std::vector<int> done;  // per table: key radius searched completely (-1: none)
    std::vector<uint32_t> qkeys, qsubs, idx, dist, ring_keys;
    std::vector<uint64_t> qrest;  // per table: the query with that table's key cut out
    UnorderedTopK top;
    // Candidates of tables j >= 1 that tied with the k-th distance when found:
    // their ids (a binary search each) are only looked up if the tie survives.
    struct Deferred {
        uint32_t d, rank;
    };
    std::vector<Deferred> deferred;
    std::vector<uint64_t> deferred_codes;
    // Queries with at most k exclusions: counts instead of ids, and every admitted
    // candidate kept with what finds its id (table 0: its position; other
    // tables: its code and rank among equal codes).
    CountingTopK counting;
    struct Pending {
        uint32_t d, where;  // where: a table-0 position, or the rank of a code in pending_codes
        uint32_t code;      // index into pending_codes (in codes), or kAtPosition
    };
    static constexpr uint32_t kAtPosition = std::numeric_limits<uint32_t>::max();
    std::vector<Pending> pending;
    std::vector<uint64_t> pending_codes;
    std::vector<Candidate> resolved;
    std::vector<double> floor_costs;  // remaining_floor's ring costs
    size_t probes = 0, candidates = 0;
};

int MIHIndex::key_bits_for(int sub_bits, size_t n, int nbits) {
    int lg = 0;  // floor(log2 n)
    while (lg < 62 && (uint64_t{2} << lg) <= n) ++lg;
    // About 16+ items per bucket on average keeps the directory small beside the codes.
    int kb = std::max(1, std::min({sub_bits, kMaxKeyBits, lg - 4}));
    // One-word codes are stored without their key bits, in whole bytes: when
    // one or two more key bits save a byte per item and table, take them.
    int spill = (nbits - kb) % 8;
    if (nbits <= 64 && (spill == 1 || spill == 2) && kb + spill <= std::min({sub_bits, kMaxKeyBits, lg - 2}))
        kb += spill;
    return kb;
}

MIHIndex::MIHIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits, int m)
    : sorted_(codes, n, nwords, nbits) {
    if (m < 1 || m > nbits)
        throw std::invalid_argument("m must be in [1, nbits=" + std::to_string(nbits) + "], got " +
                                    std::to_string(m));
    if (n >= (uint64_t{1} << 32)) throw std::invalid_argument("MIH supports fewer than 2^32 items");
    const size_t nw = nwords;
    for (int j = 0; j < m; ++j) {
        Table t;
        t.start = static_cast<int>(static_cast<int64_t>(j) * nbits / m);
        t.bits = static_cast<int>(static_cast<int64_t>(j + 1) * nbits / m) - t.start;
        t.key_bits = key_bits_for(t.bits, n, nbits);
        t.sub_bits = std::min(t.bits - t.key_bits, kMaxSubBits);
        tables_.push_back(std::move(t));
    }
    std::vector<uint64_t> all(n * nw);  // codes in id order, for the sorts below
    sorted_.copy_codes(all.data());
    std::vector<uint32_t> keys(n), order(n);
    // Stable counting sort of items [0, n) (codes at `src`) by table j's key.
    auto bucket_sort = [&](Table& t, const uint64_t* src) {
        size_t nbuckets = size_t{1} << t.key_bits;
        t.offsets.assign(nbuckets + 1, 0);
        for (size_t i = 0; i < n; ++i) {
            keys[i] = substring(src + i * nw, t.start, t.key_bits);
            ++t.offsets[keys[i] + 1];
        }
        for (size_t b = 0; b < nbuckets; ++b) {
            max_bucket_ = std::max<size_t>(max_bucket_, t.offsets[b + 1]);
            t.offsets[b + 1] += t.offsets[b];
        }
        std::vector<uint32_t> fill(t.offsets.begin(), t.offsets.end() - 1);
        for (size_t i = 0; i < n; ++i) order[fill[keys[i]]++] = static_cast<uint32_t>(i);
    };
    // Table 0: by key, then by sub-key, then by code (what locate() searches), then by id.
    // (The build runs on one thread: poll_interrupt() between its phases lets Ctrl-C in.)
    bucket_sort(tables_[0], all.data());
    poll_interrupt();
    const uint64_t* base = all.data();
    const Table& t0 = tables_[0];
    for (size_t b = 0; b + 1 < t0.offsets.size(); ++b) {
        auto first = order.begin() + t0.offsets[b], last = order.begin() + t0.offsets[b + 1];
        if (last - first > 1)
            std::sort(first, last, [&](uint32_t a, uint32_t c) {
                const uint64_t *x = base + size_t{a} * nw, *y = base + size_t{c} * nw;
                if (t0.sub_bits > 0) {
                    const uint32_t sx = substring(x, t0.key_bits, t0.sub_bits), sy = substring(y, t0.key_bits, t0.sub_bits);
                    if (sx != sy) return sx < sy;
                }
                if (code_less(x, y, nw)) return true;
                if (code_less(y, x, nw)) return false;
                return a < c;
            });
    }
    poll_interrupt();
    sorted_.permute(order);
    id_of_ = PackedWords(n, PackedWords::width_for(n - 1));
    for (size_t p = 0; p < n; ++p) id_of_.set(p, order[p]);
    if (n <= kSmallScanItems && nbits < 255) {  // scan_small's gather into id order
        pos_of_id_.resize(n);
        for (size_t p = 0; p < n; ++p) pos_of_id_[order[p]] = static_cast<uint16_t>(p);
    }
    // Codes in table-0 order; the other tables sort positions of these.
    sorted_.copy_codes(all.data());
    for (int j = 1; j < m; ++j) {
        Table& t = tables_[j];
        poll_interrupt();
        bucket_sort(t, all.data());
        poll_interrupt();
        // Inside a bucket by sub-key, then table-0 order (so equal codes stay adjacent, in table-0 order).
        if (t.sub_bits > 0)
            for (size_t b = 0; b + 1 < t.offsets.size(); ++b) {
                auto first = order.begin() + t.offsets[b], last = order.begin() + t.offsets[b + 1];
                if (last - first > 1)
                    std::stable_sort(first, last, [&](uint32_t a, uint32_t c) {
                        return substring(all.data() + size_t{a} * nw, t.start + t.key_bits, t.sub_bits) <
                               substring(all.data() + size_t{c} * nw, t.start + t.key_bits, t.sub_bits);
                    });
            }
        if (nw == 1) {
            t.rest = PackedWords(n, PackedWords::width_for(low_mask(nbits - t.key_bits)));
            for (size_t e = 0; e < n; ++e) t.rest.set(e, cut_key(all[order[e]], t.start, t.key_bits));
        } else {
            t.full.resize(n * nw);
            for (size_t e = 0; e < n; ++e)
                std::copy_n(all.data() + size_t{order[e]} * nw, nw, t.full.data() + e * nw);
        }
    }
    poll_interrupt();
    build_sub_dirs(all.data());
}

uint32_t MIHIndex::sub_key_at(int j, size_t e, const uint64_t* table0_codes) const {
    const Table& t = tables_[j];
    if (j == 0) return substring(table0_codes + e * sorted_.nwords(), t.key_bits, t.sub_bits);
    if (sorted_.nwords() == 1) return static_cast<uint32_t>((t.rest.get(e) >> t.start) & low_mask(t.sub_bits));
    return substring(t.full.data() + e * sorted_.nwords(), t.start + t.key_bits, t.sub_bits);
}

void MIHIndex::build_sub_dirs(const uint64_t* table0_codes) {
    // Sub-directories go to the largest buckets, as many as keep the tables
    // within twice the packed codes: one size threshold for all tables, the
    // least that fits. (A user's m whose tables already exceed that gets up
    // to an eighth of the codes.) Buckets of fewer than 2^sub_bits items
    // (under one item a sub-bucket) are read whole, as are those of 2^16 or
    // more. Ends take one byte below 256 items, else two.
    const size_t n = sorted_.size();
    const double code_bytes = static_cast<double>(n * sorted_.nwords() * 8);
    const double base = static_cast<double>(table_bytes());
    const double slack = base <= 2.0 * code_bytes ? 2.0 * code_bytes - base : code_bytes / 8;
    if (slack <= 0) return;
    auto floor_of = [](const Table& t) { return uint32_t{1} << t.sub_bits; };
    // 0: no sub-directory; else the bytes of one end.
    auto width_of = [&](const Table& t, uint32_t size, uint32_t threshold) -> size_t {
        if (t.sub_bits == 0 || size < std::max(threshold, floor_of(t)) || size >= (1u << 16)) return 0;
        return size < 256 ? 1 : 2;
    };
    // Buckets of table t without a sub-directory, with uint8 ends and with uint16 ends.
    auto counts = [&](const Table& t, uint32_t threshold) {
        std::array<size_t, 3> count{0, 0, 0};
        for (size_t b = 0; b + 1 < t.offsets.size(); ++b) ++count[width_of(t, t.offsets[b + 1] - t.offsets[b], threshold)];
        return count;
    };
    auto cost = [&](uint32_t threshold) {
        double bytes = 0;
        for (const Table& t : tables_) {
            const std::array<size_t, 3> count = counts(t, threshold);
            const double words = static_cast<double>((t.offsets.size() - 1 + 63) / 64);
            for (size_t w = 1; w <= 2; ++w)
                if (count[w] > 0) bytes += 12.0 * words + static_cast<double>(w * (count[w] << t.sub_bits));
        }
        return bytes;
    };
    uint32_t lo = 1, hi = 1u << 16;  // cost(hi) = 0; find the least threshold whose cost fits
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (cost(mid) <= slack) hi = mid;
        else lo = mid + 1;
    }
    const uint32_t threshold = lo;
    std::vector<uint32_t> ends;
    for (int j = 0; j < static_cast<int>(tables_.size()); ++j) {
        Table& t = tables_[j];
        const size_t nbuckets = t.offsets.size() - 1, words = (nbuckets + 63) / 64, nsub = size_t{1} << t.sub_bits;
        const std::array<size_t, 3> count = counts(t, threshold);
        if (count[1] + count[2] == 0) continue;
        t.sub_min = std::max(threshold, floor_of(t));
        // Room for each width's sub-directories, then filled bucket by bucket.
        auto prepare = [&](auto& dirs, size_t n_dirs) {
            if (n_dirs == 0) return;
            dirs.mask.assign(words, 0);
            dirs.rank.assign(words, 0);
            dirs.ends.assign(n_dirs << t.sub_bits, 0);
        };
        prepare(t.narrow, count[1]);
        prepare(t.wide, count[2]);
        size_t slots[3] = {0, 0, 0};
        auto fill = [&](auto& dirs, size_t b, size_t slot) {
            dirs.mask[b >> 6] |= uint64_t{1} << (b & 63);
            for (size_t sk = 0; sk < nsub; ++sk)
                dirs.ends[(slot << t.sub_bits) + sk] = static_cast<typename std::decay_t<decltype(dirs.ends)>::value_type>(ends[sk]);
        };
        ends.resize(nsub);
        for (size_t b = 0; b < nbuckets; ++b) {
            if ((b & 63) == 0) {
                if (count[1] > 0) t.narrow.rank[b >> 6] = static_cast<uint32_t>(slots[1]);
                if (count[2] > 0) t.wide.rank[b >> 6] = static_cast<uint32_t>(slots[2]);
            }
            const uint32_t b0 = t.offsets[b], b1 = t.offsets[b + 1];
            const size_t w = width_of(t, b1 - b0, threshold);
            if (w == 0) continue;
            std::fill(ends.begin(), ends.end(), 0);
            for (uint32_t e = b0; e < b1; ++e) ++ends[sub_key_at(j, e, table0_codes)];
            for (size_t sk = 1; sk < nsub; ++sk) ends[sk] += ends[sk - 1];
            if (w == 1) fill(t.narrow, b, slots[1]++);
            else fill(t.wide, b, slots[2]++);
        }
    }
}

template <class Field>
std::vector<Field> MIHIndex::per_table(Field Table::*field) const {
    std::vector<Field> v;
    for (const auto& t : tables_) v.push_back(t.*field);
    return v;
}

std::vector<int> MIHIndex::substring_bits() const { return per_table(&Table::bits); }
std::vector<int> MIHIndex::key_bits() const { return per_table(&Table::key_bits); }
std::vector<int> MIHIndex::sub_bits() const { return per_table(&Table::sub_bits); }
std::vector<uint32_t> MIHIndex::sub_min_items() const { return per_table(&Table::sub_min); }

size_t MIHIndex::sub_dir_bytes() const {
    size_t bytes = 0;
    for (const auto& t : tables_) bytes += t.sub_bytes();
    return bytes;
}

size_t MIHIndex::table_bytes() const {
    size_t bytes = id_of_.bytes() + pos_of_id_.size() * sizeof(uint16_t);
    for (const auto& t : tables_)
        bytes += t.offsets.size() * sizeof(uint32_t) + t.rest.bytes() + t.full.size() * sizeof(uint64_t) +
                 t.sub_bytes();
    return bytes;
}

void MIHIndex::copy_codes(uint64_t* out) const {
    const size_t nw = sorted_.nwords();
    for (size_t p = 0; p < sorted_.size(); ++p)
        sorted_.load_code(p, out + static_cast<size_t>(id_of_.get(p)) * nw);
}

uint32_t MIHIndex::locate(const uint64_t* code, uint32_t rank) const {
    const Table& t0 = tables_[0];
    const size_t nw = sorted_.nwords();
    const uint32_t key = substring(code, t0.start, t0.key_bits);
    uint32_t lo = t0.offsets[key], hi = t0.offsets[key + 1];
    // A bucket is ordered by sub-key, then code: the sub-directory, or a
    // search on the sub-key, narrows it to the code's sub-bucket.
    const int kb = t0.key_bits, sb = t0.sub_bits;
    const uint32_t sk = sb > 0 ? substring(code, kb, sb) : 0;
    const uint64_t smask = low_mask(sb);
    if (const Table::SubDir dir = t0.sub_dir(key)) {
        hi = lo + dir.end(sk);
        lo += dir.begin(sk);
    } else if (sb > 0) {
        auto sub_of = [&](uint32_t p) {
            if (sorted_.compact()) return static_cast<uint32_t>((sorted_.data32()[p] >> kb) & smask);
            return substring(sorted_.data64() + size_t{p} * nw, kb, sb);
        };
        uint32_t a = lo, b = hi;  // first position of a sub-key >= sk
        while (a < b) {
            const uint32_t mid = a + (b - a) / 2;
            if (sub_of(mid) < sk) a = mid + 1;
            else b = mid;
        }
        lo = a;
        b = hi;  // first position of a sub-key > sk
        while (a < b) {
            const uint32_t mid = a + (b - a) / 2;
            if (sub_of(mid) <= sk) a = mid + 1;
            else b = mid;
        }
        hi = a;
    }
    // First position whose code is not less than `code`.
    if (sorted_.compact()) {
        const uint32_t* c = sorted_.data32();
        return static_cast<uint32_t>(std::lower_bound(c + lo, c + hi, static_cast<uint32_t>(code[0])) - c) + rank;
    }
    const uint64_t* c = sorted_.data64();
    if (nw == 1) return static_cast<uint32_t>(std::lower_bound(c + lo, c + hi, code[0]) - c) + rank;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (code_less(c + size_t{mid} * nw, code, nw)) lo = mid + 1;
        else hi = mid;
    }
    return lo + rank;
}

void MIHIndex::topk(const uint64_t* queries, size_t nq, int k, const ExcludeList& exclude,
                    int num_threads, int32_t* D, int64_t* I) const {
    if (k <= 0) throw std::invalid_argument("k must be positive, got " + std::to_string(k));
    if (sorted_.size() == 0) throw std::invalid_argument("the index is empty");
    Kernels kern = active_kernels();
    // (A batch that will be searched joined is timed joined too, on enough queries to be.)
    const size_t probe = std::min(kMaxCalibrationQueries,
                                  std::max({kMinCalibrationQueries, nq / 32, joinable() ? kJoinMinQueries : 0}));
    if (!scan_fallback_ || nq < 4 * probe) {
        // Small batches (below the timed size) whose recent queries fell back: scan this
        // call's, but let one in every kRetryEvery calls try the tables.
        const size_t tried = scan_fallback_ ? fall_score_.queries_to_try(nq, false) : nq;
        if (tried == nq) return search_tables(kern, queries, 0, nq, k, exclude, num_threads, D, I);
        if (tried) search_tables(kern, queries, 0, tried, k, exclude, num_threads, D, I);
        std::vector<size_t> which(nq - tried);
        std::iota(which.begin(), which.end(), tried);
        if (!which.empty()) scan_fallback(kern, queries, which, k, exclude, num_threads, D, I);
        scanned_ += which.size();
        return;
    }
    // A large batch goes the way its first `probe` queries were faster (see BatchVerdict).
    // Its scan is Index's scan over an id-ordered copy of the codes (see scan_fallback),
    // built once per batch.
    auto tables = [&](size_t q0, size_t q1) { search_tables(kern, queries, q0, q1, k, exclude, num_threads, D, I); };
    std::optional<FlatIndex> copy;
    auto make_copy = [&] {
        if (!copy) copy.emplace(id_ordered_copy());
    };
    auto scan = [&](size_t q0, size_t q1) {
        scan_query_range(*copy, queries, q0, q1, k, exclude, num_threads, D, I);
        scanned_ += q1 - q0;
    };
    const int verdict = verdict_.for_this_call();
    if (verdict != BatchVerdict::kUntimed) {
        if (verdict == BatchVerdict::kStructureFaster) return tables(0, nq);
        make_copy();
        return scan(0, nq);
    }
    size_t done = 0;
    const bool tables_faster = verdict_.time_both_ways(probe, fall_score_, tables, make_copy, scan, done);
    if (tables_faster) tables(done, nq);
    else scan(done, nq);
}

FlatIndex MIHIndex::id_ordered_copy() const {
    std::vector<uint64_t> ordered(sorted_.size() * sorted_.nwords());
    copy_codes(ordered.data());
    return FlatIndex(ordered.data(), sorted_.size(), sorted_.nwords(), sorted_.nbits());
}

void MIHIndex::search_tables(const Kernels& kern, const uint64_t* queries, size_t q0, size_t q1, int k,
                             const ExcludeList& exclude, int num_threads, int32_t* D, int64_t* I) const {
    if (q1 <= q0) return;
    const size_t nw = sorted_.nwords(), nq = q1 - q0;
    const size_t nworkers = static_cast<size_t>(resolve_threads(num_threads));
    std::vector<size_t> probes(nworkers, 0), cands(nworkers, 0);
    std::vector<uint8_t> fell(nq, 0);
    // Queries (batch positions) in the order of their table-0 keys, then codes:
    // neighbouring queries probe the same and nearby buckets. Learned codes cluster, so
    // this pays once a batch holds many queries per cluster (each answer is unchanged).
    auto by_key = [&](std::vector<uint32_t>& positions) {
        const Table& t0 = tables_[0];
        std::vector<std::pair<uint32_t, uint32_t>> keyed(positions.size());
        for (size_t i = 0; i < positions.size(); ++i)
            keyed[i] = {substring(queries + (q0 + positions[i]) * nw, t0.start, t0.key_bits), positions[i]};
        std::sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
            if (a.first != b.first) return a.first < b.first;
            const uint64_t *x = queries + (q0 + a.second) * nw, *y = queries + (q0 + b.second) * nw;
            if (code_less(x, y, nw)) return true;
            if (code_less(y, x, nw)) return false;
            return a.second < b.second;
        });
        for (size_t i = 0; i < keyed.size(); ++i) positions[i] = keyed[i].second;
    };
    // Queries searched one by one (batch positions, in search order).
    std::vector<uint32_t> order;
    if (joinable() && nq >= kJoinMinQueries) {
        // Large batches of one-word codes are searched joined (search_joined), all but
        // the queries with more than k exclusions (search_one's exclusion-aware top-k),
        // in chunks of neighbouring keys when there are several.
        std::vector<uint32_t> joined;
        for (size_t i = 0; i < nq; ++i) {
            const size_t q = q0 + i;
            const bool few = static_cast<size_t>(exclude.end(q) - exclude.begin(q)) <= static_cast<size_t>(k);
            (few ? joined : order).push_back(static_cast<uint32_t>(i));
        }
        // Equal chunks of at most kJoinChunk queries. With several threads and enough
        // queries, each thread searches whole chunks by itself (at least one per thread);
        // else the chunks go one after the other, each searched by all the threads.
        size_t chunks = (joined.size() + kJoinChunk - 1) / kJoinChunk;
        const bool own_chunks = nworkers > 1 && joined.size() >= nworkers * kJoinThreadChunkMin;
        if (own_chunks) chunks = (std::max(chunks, nworkers) + nworkers - 1) / nworkers * nworkers;
        if (chunks > 1) by_key(joined);
        for (uint32_t& i : joined) i += static_cast<uint32_t>(q0);  // search_joined takes query indices
        std::vector<uint8_t> jfell(joined.size(), 0);
        const size_t per = chunks == 0 ? 0 : (joined.size() + chunks - 1) / chunks;
        if (own_chunks) {
            // A chunk takes long: one interrupted (or failing) stops the others at their next step.
            std::atomic<bool> stop{false};
            parallel_for(chunks, num_threads, [&](size_t c, size_t worker) {
                const size_t c0 = std::min(joined.size(), c * per), c1 = std::min(joined.size(), c0 + per);
                if (c1 <= c0) return;
                try {
                    search_joined(kern, queries, joined.data() + c0, c1 - c0, k, exclude, 1, D, I,
                                  jfell.data() + c0, probes[worker], cands[worker], &stop);
                } catch (...) {
                    stop = true;
                    throw;
                }
            });
        } else {
            for (size_t c0 = 0; c0 < joined.size(); c0 += per)
                search_joined(kern, queries, joined.data() + c0, std::min(per, joined.size() - c0), k, exclude,
                              num_threads, D, I, jfell.data() + c0, probes[0], cands[0]);
        }
        for (size_t i = 0; i < joined.size(); ++i) fell[joined[i] - q0] = jfell[i];
        joined_ += joined.size() - static_cast<size_t>(std::count(jfell.begin(), jfell.end(), uint8_t{1}));
    } else {
        order.resize(nq);
        std::iota(order.begin(), order.end(), 0u);
        if (nq >= kOrderedBatch) by_key(order);
    }
    // Fewer queries than threads: a query searches the tables on one thread, but its
    // fallback scan would split the items over all of them (scan_sorted, as Index), so it
    // is measured against that share of the scan's time.
    const double scan_share = nq < nworkers && sorted_.size() * nw >= split_min_words()
                                  ? static_cast<double>(nq) / static_cast<double>(nworkers)
                                  : 1.0;
    parallel_for(order.size(), num_threads, [&](size_t task, size_t worker) {
        thread_local Scratch scratch;
        const size_t i = order[task];
        const size_t q = q0 + i;
        scratch.probes = scratch.candidates = 0;
        bool fell_back = false;
        search_one(kern, queries + q * nw, k, exclude.begin(q), exclude.end(q), D + q * k, I + q * k,
                   scratch, fell_back, scan_share);
        fell[i] = fell_back;
        probes[worker] += scratch.probes;
        cands[worker] += scratch.candidates;
    });
    std::vector<size_t> which;
    for (size_t i = 0; i < fell.size(); ++i)
        if (fell[i]) which.push_back(q0 + i);
    if (!which.empty()) scan_fallback(kern, queries, which, k, exclude, num_threads, D, I);
    fallbacks_ += which.size();
    // An answered query saves less against a cheaper scan, so its weight scales with the
    // scan's cost (4 at AVX2, 2 at AVX-512: skipping pays from 2 in 3 falling back; 1M
    // learned-like 64-bit codes, single queries, had 72% fall back, each after an attempt
    // of up to its budget).
    const int answered_weight =
        static_cast<int>(std::lround(FallbackScore::kAnsweredWeight * scan_cost_scale()));
    fall_score_.record(which.size(), fell.size() - which.size(), answered_weight);
    for (size_t w = 0; w < nworkers; ++w) {
        probes_ += probes[w];
        candidates_ += cands[w];
    }
}

void MIHIndex::scan_fallback(const Kernels& kern, const uint64_t* queries, const std::vector<size_t>& which,
                             int k, const ExcludeList& exclude, int num_threads, int32_t* D,
                             int64_t* I) const {
    const size_t nw = sorted_.nwords();
    const bool small = sorted_.size() <= kSmallScanItems && sorted_.nbits() < 255;
    if (which.size() >= (small ? kBatchCopyQueries : kCopyScanQueries)) {
        // Many queries: a temporary id-ordered copy of the codes lets Index's own
        // scan answer them, its cost spread over the batch. (Scanning table 0's
        // order instead must keep every tie with the k-th distance and sort out
        // ids afterwards: 10-30% slower than Index on large indexes.) The copy
        // is held only during this call.
        const size_t nq = which.size();
        const FlatIndex flat = id_ordered_copy();
        std::vector<uint64_t> qs(nq * nw);
        std::vector<int64_t> ptr(nq + 1, 0), ids;
        for (size_t i = 0; i < nq; ++i) {
            std::copy_n(queries + which[i] * nw, nw, qs.data() + i * nw);
            ids.insert(ids.end(), exclude.begin(which[i]), exclude.end(which[i]));
            ptr[i + 1] = static_cast<int64_t>(ids.size());
        }
        ExcludeList ex;
        if (exclude.indptr != nullptr) {
            ex.indptr = ptr.data();
            ex.indices = ids.data();
        }
        const size_t kk = static_cast<size_t>(k);
        std::vector<int32_t> d(nq * kk);
        std::vector<int64_t> id(nq * kk);
        flat.topk(qs.data(), nq, k, ex, num_threads, d.data(), id.data());
        for (size_t i = 0; i < nq; ++i) {
            std::copy_n(d.data() + i * kk, kk, D + which[i] * kk);
            std::copy_n(id.data() + i * kk, kk, I + which[i] * kk);
        }
        return;
    }
    if (small) {
        parallel_for(which.size(), num_threads, [&](size_t i, size_t) {
            const size_t q = which[i];
            scan_small(kern, queries + q * sorted_.nwords(), k, exclude.begin(q), exclude.end(q), D + q * k,
                       I + q * k);
        });
        return;
    }
    scan_sorted(kern, sorted_, [&](uint32_t pos) { return static_cast<int64_t>(id_of_.get(pos)); },
                [&](uint32_t pos) { __builtin_prefetch(id_of_.data() + size_t{pos} * id_of_.width()); }, queries,
                which, k, exclude, num_threads, D, I);
}

void MIHIndex::scan_small(const Kernels& kern, const uint64_t* query, int k, const int64_t* ex_begin,
                          const int64_t* ex_end, int32_t* D, int64_t* I) const {
    // All distances into a byte buffer in table-0 order, as Index does for
    // short lists, then gathered into id order (n <= 65536: the buffers and
    // the 2-byte positions stay in L2), so Index's byte select yields (distance, id) order and handles
    // exclude itself. Selecting in table-0 order instead breaks ties by
    // position, and sorting out the ties by id cost more than the scan.
    thread_local std::vector<uint8_t> dist;
    thread_local std::vector<uint8_t> by_id;
    thread_local std::vector<uint32_t> hist;
    const size_t n = sorted_.size();
    const int nbits = sorted_.nbits();
    dist.resize(n);
    by_id.resize(n);
    hist.resize(two_pass_hist_entries(nbits, k));
    uint8_t* dp = dist.data();  // (each thread_local access costs a call)
    uint8_t* bp = by_id.data();
    if (sorted_.compact())
        kern.fill32(sorted_.data32(), 0, n, static_cast<uint32_t>(query[0]), dp);
    else
        kern.fill_bytes(sorted_.data64(), sorted_.nwords(), n, query, dp);
    const uint16_t* pos = pos_of_id_.data();
    for (size_t i = 0; i < n; ++i) bp[i] = dp[pos[i]];
    kern.select_bytes(bp, n, nbits, k, ex_begin, ex_end, hist.data(), D, I);
}

// One query's search through the tables, in stages: planning (the constructor: the
// query's keys; load_ring: a table's next ring as runs of items, ring_cost and
// remaining_floor: what rings cost), probing (search_ring, read_table0, read_other:
// a ring's runs read through the kernels), filtering candidates (seen_elsewhere,
// then keep or offer) and finishing (finish: ids looked up, the row written).
//
// Ring r of table j: the buckets at key distance r (whole, or for a bucket with a
// sub-directory its sub-bucket at sub distance 0) and the sub-buckets at sub
// distance b of the crowded buckets at key distance r - b. After rings 0..r, every
// item whose key and sub-key are together within r of the query's has been read
// (and every item of a bucket without a sub-directory whose key is).
// The stages called for every run, slice or candidate are inlined (HS_ALWAYS_INLINE), as
// one function's loops would be: as calls they cost up to a tenth of a query.
#define HS_ALWAYS_INLINE __attribute__((always_inline)) inline
class MIHIndex::QuerySearch {
public:
    // scan_share: see search_one.
    QuerySearch(const MIHIndex& index, const Kernels& kern, const uint64_t* query, int k, const int64_t* ex_begin,
                const int64_t* ex_end, Scratch& s, double scan_share);
    // Widens the cheapest table ring by ring until the k-th distance is proven (the row
    // written to D and I: true), or until the cost model gives the query to the scan (false).
    bool run(int32_t* D, int64_t* I);

private:
    void load_ring(int j, int r);
    void add_sub_runs(int j, const Scratch::Crowded& c, int b, uint32_t key_distance, size_t& sub_probes);
    double ring_cost(int j) const {
        return static_cast<double>(s_.rings[j].items) * kCandidateNs +
               static_cast<double>(s_.rings[j].runs.size()) * kRunNs;
    }
    double remaining_floor(size_t rings_left);
    // Whether proving the k-th distance, `rings_left` rings away, would cost more than the scan.
    bool over_budget(size_t rings_left) {
        return ix_.scan_fallback_ && spent_ns_ + remaining_floor(rings_left) > budget_ns_;
    }
    void search_ring(int j);
    void prefetch_run(int j, const Scratch::Run& run) const;
    void read_table0(uint32_t b0, uint32_t b1);
    void read_other(int j, const Scratch::Run& run, uint32_t b0, uint32_t b1);
    bool seen_elsewhere(int j, const uint64_t* code);
    uint32_t threshold() const { return counting_ ? s_.counting.threshold() : s_.top.threshold(); }
    void offer(uint32_t pos, uint32_t d);
    void keep(uint32_t d, uint32_t where, const uint64_t* code_or_null);
    void compact_pending();
    void finish(int32_t* D, int64_t* I);

    const MIHIndex& ix_;
    const std::vector<Table>& tables_;
    const Kernels& kern_;
    const uint64_t* query_;
    const int k_;
    const int64_t *ex_begin_, *ex_end_;
    Scratch& s_;
    const size_t n_, nw_;
    const int m_;
    const bool compact_;
    // Ids are looked up at the end unless there are many exclusions: the k + |exclude|
    // nearest hold the k nearest allowed items, so counting to that many keeps it exact.
    bool counting_ = false;
    size_t compact_at_ = 0;  // pending candidates at which keep() drops those behind the k-th
    double budget_ns_ = 0, spent_ns_ = 0;
    uint64_t diff_[16], code_[16];  // codes are at most 1024 bits
};

MIHIndex::QuerySearch::QuerySearch(const MIHIndex& index, const Kernels& kern, const uint64_t* query, int k,
                                   const int64_t* ex_begin, const int64_t* ex_end, Scratch& s, double scan_share)
    : ix_(index), tables_(index.tables_), kern_(kern), query_(query), k_(k), ex_begin_(ex_begin), ex_end_(ex_end),
      s_(s), n_(index.sorted_.size()), nw_(index.sorted_.nwords()), m_(static_cast<int>(index.tables_.size())),
      compact_(index.sorted_.compact()) {
    const size_t buf = std::max<size_t>(ix_.max_bucket_, 1);
    if (s.idx.size() < buf) {
        s.idx.resize(buf);
        s.dist.resize(buf);
    }
    const size_t mm = static_cast<size_t>(m_);
    s.rings.resize(mm);
    s.done.assign(mm, -1);
    s.qkeys.resize(mm);
    s.qsubs.resize(mm);
    s.qrest.resize(mm);
    s.crowded.resize(mm);
    for (int j = 0; j < m_; ++j) {
        const Table& t = tables_[j];
        s.qkeys[j] = substring(query, t.start, t.key_bits);
        s.qsubs[j] = t.sub_bits > 0 ? substring(query, t.start + t.key_bits, t.sub_bits) : 0;
        s.crowded[j].resize(static_cast<size_t>(t.key_bits) + 1);
        for (auto& level : s.crowded[j]) level.clear();
        s.qrest[j] = nw_ == 1 ? cut_key(query[0], t.start, t.key_bits) : 0;
        s.rings[j].radius = -1;
    }
    s.top.reset(static_cast<size_t>(k));
    s.deferred.clear();
    s.deferred_codes.clear();
    const size_t nexcluded = static_cast<size_t>(ex_end - ex_begin);
    counting_ = nexcluded <= static_cast<size_t>(k);
    s.counting.reset(static_cast<size_t>(k) + nexcluded, index.sorted_.nbits());
    s.pending.clear();
    s.pending_codes.clear();
    compact_at_ = 4 * (static_cast<size_t>(k) + nexcluded) + 256;
    budget_ns_ = scan_share * static_cast<double>(n_) *
                 (compact_ ? kCompactScanNs : kScanNsPerWord * static_cast<double>(nw_)) * scan_cost_scale();
}

bool MIHIndex::QuerySearch::run(int32_t* D, int64_t* I) {
    for (;;) {
        // Every item within sum_j (done_j + 1) - 1 of the query has been seen.
        int proven = -1;
        bool all_seen = false;  // a table searched to its full key width holds every item
        for (int j = 0; j < m_; ++j) {
            proven += s_.done[j] + 1;
            all_seen = all_seen || s_.done[j] == tables_[j].key_bits + tables_[j].sub_bits;
        }
        const int64_t kth = counting_ ? s_.counting.kth_distance() : s_.top.kth_distance();
        if (all_seen || (kth >= 0 && kth <= proven)) {
            finish(D, I);
            return true;
        }
        // Proving the current k-th distance takes at least (kth - proven) more
        // rings: give up on hopeless queries early, before reading any offsets.
        const size_t rings_left = kth >= 0 ? static_cast<size_t>(kth - proven) : 1;
        if (over_budget(rings_left)) return false;
        // Widen the table whose next ring is cheapest.
        int best = -1;
        double best_cost = 0;
        for (int j = 0; j < m_; ++j) {
            const int r = s_.done[j] + 1;
            if (r > tables_[j].key_bits + tables_[j].sub_bits) continue;
            if (s_.rings[j].radius != r) load_ring(j, r);
            const double c = ring_cost(j);
            if (best < 0 || c < best_cost) {
                best = j;
                best_cost = c;
            }
        }
        if (over_budget(rings_left)) return false;
        search_ring(best);
        spent_ns_ += best_cost;
    }
}

// The sub-buckets at sub distance b of crowded bucket c, as runs of ring j.
void MIHIndex::QuerySearch::add_sub_runs(int j, const Scratch::Crowded& c, int b, uint32_t key_distance,
                                         size_t& sub_probes) {
    Scratch::Ring& ring = s_.rings[j];
    for_each_key_at(s_.qsubs[j], tables_[j].sub_bits, b, [&](uint32_t sk) {
        const uint32_t e0 = c.b0 + c.dir.begin(sk), e1 = c.b0 + c.dir.end(sk);
        ++sub_probes;
        if (e1 > e0) {
            ring.runs.push_back({e0, e1, c.key, key_distance});
            ring.items += e1 - e0;
        }
    });
}

void MIHIndex::QuerySearch::load_ring(int j, int r) {
    const Table& t = tables_[j];
    Scratch::Ring& ring = s_.rings[j];
    ring.radius = r;
    ring.runs.clear();
    ring.items = 0;
    size_t buckets = 0, sub_probes = 0;
    if (r <= t.key_bits) {
        // The ring's keys first, their offsets fetched ahead: the directory
        // (2^17 offsets a table at millions of items) is mostly out of cache.
        s_.ring_keys.clear();
        for_each_key_at(s_.qkeys[j], t.key_bits, r, [&](uint32_t bucket) { s_.ring_keys.push_back(bucket); });
        constexpr size_t kAhead = 16;
        const size_t nkeys = s_.ring_keys.size();
        for (size_t i = 0; i < std::min(nkeys, kAhead); ++i) __builtin_prefetch(t.offsets.data() + s_.ring_keys[i]);
        for (size_t i = 0; i < nkeys; ++i) {
            if (i + kAhead < nkeys) __builtin_prefetch(t.offsets.data() + s_.ring_keys[i + kAhead]);
            const uint32_t bucket = s_.ring_keys[i];
            const uint32_t b0 = t.offsets[bucket], b1 = t.offsets[bucket + 1];
            ++buckets;
            if (b1 <= b0) continue;
            if (b1 - b0 >= t.sub_min && t.sub_min > 0) {
                if (const Table::SubDir dir = t.sub_dir(bucket)) {
                    __builtin_prefetch(dir.data());  // read below, once the ring's buckets are all known
                    s_.crowded[j][r].push_back({bucket, b0, dir});
                    continue;
                }
            }
            ring.runs.push_back({b0, b1, bucket, static_cast<uint32_t>(r)});
            ring.items += b1 - b0;
        }
        for (const Scratch::Crowded& c : s_.crowded[j][r]) add_sub_runs(j, c, 0, static_cast<uint32_t>(r), sub_probes);
    }
    for (int b = 1; b <= std::min(r, t.sub_bits); ++b)
        if (r - b <= t.key_bits)
            for (const Scratch::Crowded& c : s_.crowded[j][r - b])
                add_sub_runs(j, c, b, static_cast<uint32_t>(r - b), sub_probes);
    s_.probes += buckets + sub_probes;
    spent_ns_ += static_cast<double>(buckets) * kProbeNs + static_cast<double>(sub_probes) * kSubProbeNs;
}

// The least cost of the `rings_left` rings that proving the k-th distance
// still needs: the cheapest rings not yet searched, or finishing one whole
// table if that is cheaper. A loaded ring counts at its exact cost; a later
// ring at its probes, and at least the cost of its table's loaded ring
// (rings grow binomially: outer rings of uniform codes cost more, while
// clustered codes thin out and keep them about level). Charging every future
// ring like the cheapest next one let hopeless (uniform) queries spend a
// scan's budget before falling back.
double MIHIndex::QuerySearch::remaining_floor(size_t rings_left) {
    std::vector<double>& costs = s_.floor_costs;
    costs.clear();
    double finish_one = std::numeric_limits<double>::max();
    for (int j = 0; j < m_; ++j) {
        const int kb = tables_[j].key_bits;
        const bool loaded = s_.rings[j].radius == s_.done[j] + 1;
        const double next = loaded ? ring_cost(j) : 0.0;
        double table_total = 0;
        for (int r = s_.done[j] + 1; r <= kb + tables_[j].sub_bits; ++r) {
            double c = loaded && r == s_.done[j] + 1 ? next : std::max(next, binomial(kb, r) * kProbeNs);
            costs.push_back(c);
            table_total += c;
        }
        finish_one = std::min(finish_one, table_total);
    }
    double pigeonhole = 0;
    if (rings_left >= costs.size()) {
        for (double c : costs) pigeonhole += c;
    } else {
        std::nth_element(costs.begin(), costs.begin() + rings_left, costs.end());
        for (size_t i = 0; i < rings_left; ++i) pigeonhole += costs[i];
    }
    return std::min(pigeonhole, finish_one);
}

// Each run starts with a cache miss; fetching a few runs ahead overlaps them.
HS_ALWAYS_INLINE void MIHIndex::QuerySearch::prefetch_run(int j, const Scratch::Run& run) const {
    const Table& t = tables_[j];
    const size_t b = run.b0, len = run.b1 - b;
    if (j == 0) {
        if (compact_) prefetch_lines(ix_.sorted_.data32() + b, 4 * len, kPrefetchBytes);
        else prefetch_lines(ix_.sorted_.data64() + b * nw_, 8 * nw_ * len, kPrefetchBytes);
    } else if (nw_ == 1) {
        prefetch_lines(t.rest.data() + b * t.rest.width(), t.rest.width() * len, kPrefetchBytes);
    } else {
        prefetch_lines(t.full.data() + b * nw_, 8 * nw_ * len, kPrefetchBytes);
    }
}

void MIHIndex::QuerySearch::search_ring(int j) {
    const Scratch::Ring& ring = s_.rings[j];
    s_.candidates += ring.items;
    const size_t nruns = ring.runs.size();
    for (size_t r = 0; r < std::min(nruns, kPrefetchRuns); ++r) prefetch_run(j, ring.runs[r]);
    for (size_t r = 0; r < nruns; ++r) {
        if (r + kPrefetchRuns < nruns) prefetch_run(j, ring.runs[r + kPrefetchRuns]);
        const Scratch::Run& run = ring.runs[r];
        // Long runs go in slices so that the threshold tightens as the top-k fills.
        for (uint32_t b0 = run.b0; b0 < run.b1; b0 += kSliceItems) {
            const uint32_t b1 = std::min<uint32_t>(run.b1, b0 + kSliceItems);
            if (j == 0) read_table0(b0, b1);
            else read_other(j, run, b0, b1);
        }
    }
    s_.done[j] = ring.radius;
}

// Items [b0, b1) of a run of table 0, the sorted codes themselves.
HS_ALWAYS_INLINE void MIHIndex::QuerySearch::read_table0(uint32_t b0, uint32_t b1) {
    const FlatIndex& sorted = ix_.sorted_;
    const size_t cnt = compact_ ? kern_.select_within32(sorted.data32(), b0, b1, static_cast<uint32_t>(query_[0]),
                                                        threshold(), s_.idx.data(), s_.dist.data())
                                : kern_.select_within(sorted.data64(), nw_, b0, b1, query_, threshold(),
                                                      s_.idx.data(), s_.dist.data());
    for (size_t c = 0; c < cnt; ++c) {
        const uint32_t p = s_.idx[c];
        if (s_.dist[c] > threshold()) continue;
        if (m_ > 1) {
            sorted.load_code(p, code_);
            if (seen_elsewhere(0, code_)) continue;
        }
        if (counting_) keep(s_.dist[c], p, nullptr);
        else offer(p, s_.dist[c]);
    }
}

// Items [b0, b1) of `run` in table j >= 1: codes in bucket order; an item's
// position in table 0 is looked up only once it would enter the top-k.
HS_ALWAYS_INLINE void MIHIndex::QuerySearch::read_other(int j, const Scratch::Run& run, uint32_t b0, uint32_t b1) {
    const Table& t = tables_[j];
    const size_t cnt = nw_ == 1 ? kern_.select_within_packed(t.rest.data(), t.rest.width(), b0, b1, s_.qrest[j],
                                                             run.key_distance, threshold(), s_.idx.data(),
                                                             s_.dist.data())
                                : kern_.select_within(t.full.data(), nw_, b0, b1, query_, threshold(),
                                                      s_.idx.data(), s_.dist.data());
    for (size_t c = 0; c < cnt; ++c) {
        const uint32_t e = s_.idx[c], d = s_.dist[c];
        if (d > threshold()) continue;
        uint32_t rank = 0;  // equal codes are adjacent, in table-0 order
        if (nw_ == 1) {
            const uint64_t rest = t.rest.get(e);
            code_[0] = paste_key(rest, run.key, t.start, t.key_bits);
            if (seen_elsewhere(j, code_)) continue;
            while (e - rank > run.b0 && t.rest.get(e - rank - 1) == rest) ++rank;
        } else {
            const uint64_t* x = t.full.data() + size_t{e} * nw_;
            std::copy_n(x, nw_, code_);
            if (seen_elsewhere(j, code_)) continue;
            while (e - rank > run.b0 && std::equal(x - (rank + 1) * nw_, x - rank * nw_, x)) ++rank;
        }
        if (counting_) {
            keep(d, rank, code_);
            continue;
        }
        if (s_.top.full() && d == s_.top.threshold()) {  // a tie with the k-th: its id may not be needed
            s_.deferred.push_back({d, rank});
            s_.deferred_codes.insert(s_.deferred_codes.end(), code_, code_ + nw_);
            continue;
        }
        offer(ix_.locate(code_, rank), d);
    }
}

// Seen before iff another table has already searched the ring holding it
// (see load_ring: the key distance alone unless its bucket there has a sub-directory).
HS_ALWAYS_INLINE bool MIHIndex::QuerySearch::seen_elsewhere(int j, const uint64_t* code) {
    for (size_t w = 0; w < nw_; ++w) diff_[w] = code[w] ^ query_[w];
    for (int jj = 0; jj < m_; ++jj) {
        if (jj == j || s_.done[jj] < 0) continue;
        const Table& t = tables_[jj];
        const int a = popcount32(substring(diff_, t.start, t.key_bits));
        if (a > s_.done[jj]) continue;
        if (!t.sub_dir(substring(code, t.start, t.key_bits))) return true;
        if (a + popcount32(substring(diff_, t.start + t.key_bits, t.sub_bits)) <= s_.done[jj]) return true;
    }
    return false;
}

// A candidate of the exclusion-aware top-k (queries with more than k exclusions).
HS_ALWAYS_INLINE void MIHIndex::QuerySearch::offer(uint32_t pos, uint32_t d) {
    const int64_t id = static_cast<int64_t>(ix_.id_of_.get(pos));
    if (!s_.top.admits(d, id)) return;
    if (is_excluded(ex_begin_, ex_end_, id)) return;
    s_.top.push(d, id);
}

// A candidate of the counting top-k, kept with what finds its id (see Scratch::Pending).
HS_ALWAYS_INLINE void MIHIndex::QuerySearch::keep(uint32_t d, uint32_t where, const uint64_t* code_or_null) {
    s_.counting.add(d);
    uint32_t ci = Scratch::kAtPosition;
    if (code_or_null != nullptr) {
        ci = static_cast<uint32_t>(s_.pending_codes.size() / nw_);
        s_.pending_codes.insert(s_.pending_codes.end(), code_or_null, code_or_null + nw_);
    }
    s_.pending.push_back({d, where, ci});
    if (s_.pending.size() >= compact_at_) {
        compact_pending();
        // Ties with the k-th distance can outnumber k many times (short codes): compacting
        // again only after the list has doubled keeps this linear.
        compact_at_ = std::max(compact_at_, 2 * s_.pending.size());
    }
}

// Drops the pending candidates that fell behind the k-th distance.
void MIHIndex::QuerySearch::compact_pending() {
    const uint32_t thr = s_.counting.threshold();
    size_t out = 0, out_codes = 0;
    for (const Scratch::Pending& c : s_.pending) {
        if (c.d > thr) continue;
        Scratch::Pending kept = c;
        if (c.code != Scratch::kAtPosition) {
            std::copy_n(s_.pending_codes.data() + size_t{c.code} * nw_, nw_, s_.pending_codes.data() + out_codes * nw_);
            kept.code = static_cast<uint32_t>(out_codes++);
        }
        s_.pending[out++] = kept;
    }
    s_.pending.resize(out);
    s_.pending_codes.resize(out_codes * nw_);
}

// Writes the row: the counting top-k's candidates within the k-th distance get their
// ids; the exclusion-aware one looks up the deferred ties that still tie with it.
void MIHIndex::QuerySearch::finish(int32_t* D, int64_t* I) {
    if (counting_) {
        // Ids of the candidates within the k-th distance (ties included), then (distance, id) order.
        compact_pending();
        s_.resolved.clear();
        for (const Scratch::Pending& c : s_.pending) {
            const uint32_t pos = c.code == Scratch::kAtPosition
                                     ? c.where
                                     : ix_.locate(s_.pending_codes.data() + size_t{c.code} * nw_, c.where);
            const int64_t id = static_cast<int64_t>(ix_.id_of_.get(pos));
            if (!is_excluded(ex_begin_, ex_end_, id)) s_.resolved.push_back({c.d, id});
        }
        write_nearest(s_.resolved.data(), s_.resolved.data() + s_.resolved.size(), k_, D, I);
        return;
    }
    const int64_t kth = s_.top.kth_distance();
    for (size_t i = 0; i < s_.deferred.size(); ++i)
        if (static_cast<int64_t>(s_.deferred[i].d) == kth)
            offer(ix_.locate(s_.deferred_codes.data() + i * nw_, s_.deferred[i].rank), s_.deferred[i].d);
    s_.top.finish(D, I);
}

void MIHIndex::search_one(const Kernels& kern, const uint64_t* query, int k, const int64_t* ex_begin,
                          const int64_t* ex_end, int32_t* D, int64_t* I, Scratch& s,
                          bool& fell_back, double scan_share) const {
    QuerySearch search(*this, kern, query, k, ex_begin, ex_end, s, scan_share);
    fell_back = !search.run(D, I);
}

void MIHIndex::range_search(const uint64_t* queries, size_t nq, int radius, const ExcludeList& exclude,
                            int num_threads, std::vector<int64_t>& lims, std::vector<int32_t>& D,
                            std::vector<int64_t>& I) const {
    if (radius < 0) throw std::invalid_argument("radius must be >= 0, got " + std::to_string(radius));
    if (sorted_.size() == 0) throw std::invalid_argument("the index is empty");
    const size_t n = sorted_.size(), nw = sorted_.nwords();
    const int m = static_cast<int>(tables_.size());
    const int r = std::min(radius, sorted_.nbits());
    // Key radius per table: sum_j (r_j + 1) = r + 1, spread evenly; r_j = -1
    // leaves table j unread. Every item within r has some substring, hence some
    // key, within r_j of the query's.
    std::vector<int> rj(static_cast<size_t>(m));
    double probes = 0;
    for (int j = 0; j < m; ++j) {
        rj[j] = std::min((r + 1) / m + (j < (r + 1) % m ? 1 : 0) - 1, tables_[j].key_bits);
        for (int rho = 0; rho <= rj[j]; ++rho) probes += binomial(tables_[j].key_bits, rho);
    }
    const double scan_ns =
        static_cast<double>(n) * (sorted_.compact() ? kCompactScanNs : kScanNsPerWord * nw) * scan_cost_scale();
    RangeHits hits(nq);
    std::vector<size_t> cands(nq, 0);
    std::vector<uint8_t> scan(nq, probes * kProbeNs > scan_ns && scan_fallback_);
    parallel_for(nq, num_threads, [&](size_t q, size_t) {
        if (scan[q]) return;
        const uint64_t* query = queries + q * nw;
        const int64_t *eb = exclude.begin(q), *ee = exclude.end(q);
        std::vector<uint32_t> qkeys(static_cast<size_t>(m));
        for (int j = 0; j < m; ++j) qkeys[j] = substring(query, tables_[j].start, tables_[j].key_bits);
        // The buckets' sizes first (offsets only): a query whose candidates
        // would cost more than a scan is scanned instead.
        size_t total = 0;
        for (int j = 0; j < m; ++j)
            for (int rho = 0; rho <= rj[j]; ++rho)
                for_each_key_at(qkeys[j], tables_[j].key_bits, rho, [&](uint32_t b) {
                    total += tables_[j].offsets[b + 1] - tables_[j].offsets[b];
                });
        if (scan_fallback_ && probes * kProbeNs + static_cast<double>(total) * kRangeCandidateNs > scan_ns) {
            scan[q] = 1;
            return;
        }
        cands[q] = total;
        uint64_t diff[16], code[16];  // codes are at most 1024 bits
        // An item of table j was already taken from an earlier table if its key there is within r_jj.
        auto seen_before = [&](int j) {
            for (size_t w = 0; w < nw; ++w) diff[w] = code[w] ^ query[w];
            for (int jj = 0; jj < j; ++jj)
                if (popcount32(substring(diff, tables_[jj].start, tables_[jj].key_bits)) <= rj[jj]) return true;
            return false;
        };
        auto& out = hits[q];
        for (int j = 0; j < m; ++j) {
            const Table& t = tables_[j];
            for (int rho = 0; rho <= rj[j]; ++rho)
                for_each_key_at(qkeys[j], t.key_bits, rho, [&](uint32_t bucket) {
                    const uint32_t b0 = t.offsets[bucket], b1 = t.offsets[bucket + 1];
                    for (uint32_t e = b0; e < b1; ++e) {
                        if (j == 0) sorted_.load_code(e, code);
                        else if (nw == 1) code[0] = paste_key(t.rest.get(e), bucket, t.start, t.key_bits);
                        else std::copy_n(t.full.data() + size_t{e} * nw, nw, code);
                        const uint32_t d = hamming(code, query, nw);
                        if (d > static_cast<uint32_t>(r) || seen_before(j)) continue;
                        uint32_t pos = e;
                        if (j > 0) {  // its table-0 position: equal codes are adjacent, in table-0 order
                            uint32_t rank = 0;
                            if (nw == 1) {
                                while (e - rank > b0 && t.rest.get(e - rank - 1) == t.rest.get(e)) ++rank;
                            } else {
                                const uint64_t* x = t.full.data() + size_t{e} * nw;
                                while (e - rank > b0 && std::equal(x - (rank + 1) * nw, x - rank * nw, x)) ++rank;
                            }
                            pos = locate(code, rank);
                        }
                        const int64_t id = static_cast<int64_t>(id_of_.get(pos));
                        if (!is_excluded(eb, ee, id)) out.emplace_back(static_cast<int32_t>(d), id);
                    }
                });
        }
        std::sort(out.begin(), out.end());
    });
    // The scanned queries: table 0's order, then ids, sorted by (distance, id).
    std::vector<size_t> which;
    for (size_t q = 0; q < nq; ++q)
        if (scan[q]) which.push_back(q);
    if (!which.empty()) {
        range_scan_sorted(sorted_, [&](size_t pos) { return static_cast<int64_t>(id_of_.get(pos)); }, queries, which,
                          radius, exclude, num_threads, hits);
        fallbacks_ += which.size();
    }
    hits_to_csr(hits, num_threads, lims, D, I);
    for (size_t q = 0; q < nq; ++q) candidates_ += cands[q];
    probes_ += static_cast<size_t>(probes) * (nq - which.size());
}

}  // namespace hashsearch
