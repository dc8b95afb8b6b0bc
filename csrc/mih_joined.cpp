// Joined search of a batch of queries through MIHIndex's tables (one-word codes of
// 33..64 bits).
//
// search_one answers a query by itself: every bucket it probes and every run of
// items it reads starts with a cache miss, since a query's buckets are scattered
// over the tables. Here the queries of a chunk go through the rings together, one
// step (one ring of one table) at a time: the step's (bucket, query) pairs are put
// in bucket order, so the table is read in address order and a bucket that several
// queries probe is read once for all of them, while it is in cache. Same output as
// search_one, bit for bit.
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <vector>

#include "mih_detail.h"
#include "mih_index.h"
#include "parallel.h"
#include "search_policy.h"
#include "unordered_topk.h"

namespace hashsearch {

using namespace mih_detail;

namespace {

// Pairs are grouped by the top kJoinGroupBits bits of their bucket (a counting sort
// with 2^14 counters per thread): a group's buckets then lie within a few KB of the
// table. (A full sort by bucket measured no faster, and 10 bits slower.)
constexpr int kJoinGroupBits = 14;
// Sub distances of a pair (up to kMaxSubBits = 5) take three bits of its 32.
constexpr int kSubDistanceBits = 3;
// Costs (ns) counted against a query's budget (its share of a linear scan), so that
// queries the tables cannot answer cheaply (uniform codes) go to the scan: a pair
// (generating, grouping and reading its bucket's offsets, and keeping what passes)
// and an item of a run. Fitted where the budget binds, 1M learned 64-bit codes on an
// AVX2 core (~185 us a query: ~2,100 pairs, ~32,000 items); at 4.2M items, whose
// tables miss the cache more, a query costs ~2x this estimate but stays far within
// its budget.
constexpr double kJoinPairNs = 50.0;
constexpr double kJoinItemNs = 2.5;
// The least a future step's key costs (search_one's kProbeNs for a future ring's
// key): proving a query's k-th distance costs at least the keys of the steps it
// still takes. (Charged like the pairs so far, it sent ~30% more of those 1M
// learned queries to the scan.)
constexpr double kJoinKeyNs = 15.0;
// ... counted once every table has searched rings 0 and 1: before that a query's k-th
// distance is that of the few items sharing a key with it (22-25 at 4.2M learned
// 64-bit codes, 8 on average once proven), and the floor sent 13% of those queries
// to the scan.
constexpr size_t kJoinFloorFromRing = 2;
// Pairs and runs come in address order but with gaps the hardware prefetcher does not
// follow: their buckets' offsets are fetched this many pairs ahead, and a run's first
// two lines this many runs ahead. (4.2M learned 64-bit codes, m=3, in-process A/B:
// 1.19x faster at 2 threads, 1.27x at one; no difference at 1M, whose tables fit the
// cache. Runs alone, or 8 or 64 ahead, or one line, gained less; four lines no more.)
constexpr size_t kJoinPrefetchPairs = 64;
constexpr size_t kJoinPrefetchRuns = 32;
constexpr size_t kJoinPrefetchBytes = 128;
// A finishing step looks its candidates' ids up in table-0 order, by a counting sort on
// this many top bits of their table-0 key and sub-key. (Two std::sorts, by key and code
// and then by position, take 18 ms of a 1,000-query batch at 4.2M items; this takes 2.)
constexpr int kLookupOrderBits = 14;

}  // namespace

// One chunk's joined search, in stages: planning (the constructor: each query's keys
// and state; make_pairs: a step's (bucket, query) pairs grouped by bucket), probing
// (probe_block: the pairs' runs of items; read_runs: the runs read through the
// kernels, candidates filtered by seen_before and kept), settling (settle: each query's
// k-th distance so far, finished, still searching or given to the scan) and finishing
// (finish: ids looked up in table-0 order, rows written).
//
// Every query goes through the rings in the same order (tables 0..m-1 at radius 0,
// then at radius 1, ...), so after each step all active queries have searched
// table j to the same radius done[j], and an item met in table j is new iff no
// other table has already read it (seen_before). Ring r of a table is what
// search_one reads there: buckets at key distance r, whole or, with a
// sub-directory, their sub-bucket at sub distance 0, and the sub-buckets at sub
// distance b of the crowded buckets at key distance r - b.
//
// The threads share each step: each reads blocks of the step's grouped pairs and
// keeps what it finds in its own part of every query's state. Between steps the
// parts' distance counts are summed to each query's k-th distance so far, which
// bounds every part's threshold in the next step.
class MIHIndex::JoinedSearch {
public:
    JoinedSearch(const MIHIndex& index, const Kernels& kern, const uint64_t* queries, const uint32_t* which,
                 size_t count, int k, const ExcludeList& exclude, int num_threads, int32_t* D, int64_t* I,
                 uint8_t* fell);
    // Steps until every query is finished or given to the scan; see search_joined.
    void run(const std::atomic<bool>* stop, size_t& probes, size_t& candidates);

private:
    struct Kept {
        uint64_t code;   // the item's code (tables j >= 1: its table-0 position is looked up at the end)
        uint32_t d;
        uint32_t where;  // table 0: its position; else the rank of its code among equal codes
        bool at_position;
    };
    struct Crowded {  // a bucket with a sub-directory, met at some key distance
        uint32_t bucket;
        uint8_t table, key_distance;
    };
    struct Part {  // one thread's part of one query's state
        CountingTopK counts;
        std::vector<Kept> kept;
        std::vector<Crowded> crowded;
        size_t compact_at = 0;
    };
    struct Run {  // items [e0, e1) of `bucket` for `query`
        uint32_t e0, e1, bucket, query, key_distance;
    };
    struct Lookup {  // a kept candidate's id, found at the end
        uint32_t pos;   // table-0 position, or kUnknown (then found from its code and rank)
        uint32_t slot;  // index into the finishing queries' candidates (and their codes)
        uint32_t key;   // table-0 key and sub-key of its code (the order of the lookups)
        uint32_t rank;
    };
    static constexpr uint32_t kUnknown = std::numeric_limits<uint32_t>::max();
    struct Worker {
        std::vector<uint32_t> pairs, group_at;
        std::vector<Run> runs;
        std::vector<uint32_t> idx, dist;
        std::vector<Candidate> cands;
        std::vector<size_t> cand_begin;
        std::vector<uint64_t> codes;  // per candidate slot
        std::vector<Lookup> lookups, ordered;
        std::vector<uint32_t> order_at;
        size_t probes = 0, candidates = 0;
    };

    Part& part(size_t th, uint32_t a) { return parts_[th * count_ + a]; }
    size_t make_pairs(int j, int r, size_t s0, size_t s1);
    void probe_block(int j, int r, size_t p0, size_t p1, size_t th);
    void read_runs(int j, size_t th);
    bool seen_before(int j, uint64_t diff, uint64_t code) const;
    void settle(size_t step);
    void finish(const uint32_t* fin, size_t nfin, Worker& w);
    void collect(const uint32_t* fin, size_t nfin, Worker& w);

    const MIHIndex& ix_;
    const std::vector<Table>& tables_;
    const Kernels& kern_;
    const uint64_t* queries_;
    const uint32_t* which_;
    const size_t count_;
    const int k_;
    const ExcludeList& exclude_;
    int32_t* D_;
    int64_t* I_;
    uint8_t* fell_;
    const int m_;
    const size_t mm_;
    int qbits_ = 1, low_bits_ = 0;  // a pair: bucket | sub distance | query (qbits_ bits)
    uint32_t qmask_ = 0;
    size_t nthreads_ = 1;
    const uint64_t* codes0_;
    const Table& t0_;
    std::vector<Part> parts_;      // [thread][query]
    // Each thread's estimate of what each query has cost so far (ns), apart from the
    // parts: the pair loop touches it for every pair, so it is kept dense.
    std::vector<double> spent_ns_;
    std::vector<Worker> workers_;
    std::vector<uint32_t> bound_;  // k-th distance so far
    std::vector<size_t> want_;     // k + the query's exclusions: counting to that many keeps it exact
    std::vector<uint32_t> qkey_, qsub_, active_;
    std::vector<uint64_t> qrest_;
    std::vector<int> done_;
    std::vector<uint32_t> grouped_, finishing_;
    double budget_ns_ = 0;
};

MIHIndex::JoinedSearch::JoinedSearch(const MIHIndex& index, const Kernels& kern, const uint64_t* queries,
                                     const uint32_t* which, size_t count, int k, const ExcludeList& exclude,
                                     int num_threads, int32_t* D, int64_t* I, uint8_t* fell)
    : ix_(index), tables_(index.tables_), kern_(kern), queries_(queries), which_(which), count_(count), k_(k),
      exclude_(exclude), D_(D), I_(I), fell_(fell), m_(static_cast<int>(index.tables_.size())),
      mm_(index.tables_.size()), codes0_(index.sorted_.data64()), t0_(index.tables_[0]) {
    while ((size_t{1} << qbits_) < count) ++qbits_;
    low_bits_ = qbits_ + kSubDistanceBits;
    if (kMaxKeyBits + low_bits_ > 32) throw std::logic_error("search_joined: too many queries in one chunk");
    qmask_ = (uint32_t{1} << qbits_) - 1;
    nthreads_ = std::max<size_t>(1, std::min<size_t>(resolve_threads(num_threads), count / 64 + 1));
    parts_.resize(nthreads_ * count);
    spent_ns_.assign(nthreads_ * count, 0.0);
    workers_.resize(nthreads_);
    for (Worker& w : workers_) {
        w.idx.resize(std::max<size_t>(ix_.max_bucket_, 1));
        w.dist.resize(std::max<size_t>(ix_.max_bucket_, 1));
    }
    bound_.assign(count, std::numeric_limits<uint32_t>::max());
    want_.resize(count);
    qkey_.resize(count * mm_);
    qsub_.resize(count * mm_);
    active_.resize(count);
    qrest_.resize(count * mm_);
    for (size_t a = 0; a < count; ++a) {
        const uint64_t* q = queries + which[a];
        want_[a] = static_cast<size_t>(k) + static_cast<size_t>(exclude.end(which[a]) - exclude.begin(which[a]));
        for (size_t th = 0; th < nthreads_; ++th) {
            Part& pt = part(th, static_cast<uint32_t>(a));
            pt.counts.reset(want_[a], ix_.sorted_.nbits());
            pt.compact_at = 4 * want_[a] + 256;
        }
        for (int j = 0; j < m_; ++j) {
            const Table& t = tables_[j];
            qkey_[a * mm_ + j] = substring64(q[0], t.start, t.key_bits);
            qsub_[a * mm_ + j] = t.sub_bits > 0 ? substring64(q[0], t.start + t.key_bits, t.sub_bits) : 0;
            qrest_[a * mm_ + j] = cut_key(q[0], t.start, t.key_bits);
        }
        active_[a] = static_cast<uint32_t>(a);
    }
    done_.assign(mm_, -1);
    budget_ns_ = static_cast<double>(ix_.sorted_.size()) * kScanNsPerWord * scan_cost_scale();
}

void MIHIndex::JoinedSearch::run(const std::atomic<bool>* stop, size_t& probes, size_t& candidates) {
    for (size_t step = 0; !active_.empty(); ++step) {
        if (stop != nullptr && stop->load(std::memory_order_relaxed)) throw InterruptedError();
        // Steps in search order: (table j, radius r) is step r * m + j.
        const int j = static_cast<int>(step % mm_), r = static_cast<int>(step / mm_);
        const Table& t = tables_[j];
        if (r > t.key_bits + t.sub_bits) continue;
        // The step in slices of the active queries whose pairs stay below join_step_pairs_
        // (a ring far out has up to C(18, 9) = 48,620 keys a query).
        const double keys = r <= t.key_bits ? binomial(t.key_bits, r) : 1.0;
        const size_t per_slice = std::max<size_t>(
            1, std::min<size_t>(active_.size(), static_cast<size_t>(static_cast<double>(ix_.join_step_pairs_) / keys)));
        for (size_t s0 = 0; s0 < active_.size(); s0 += per_slice) {
            const size_t npairs = make_pairs(j, r, s0, std::min(active_.size(), s0 + per_slice));
            // Blocks of pairs handed out as threads come free (buckets vary in size).
            const size_t nblocks = nthreads_ == 1 ? 1 : 8 * nthreads_;
            parallel_for(nblocks, static_cast<int>(nthreads_), [&](size_t blk, size_t th) {
                probe_block(j, r, npairs * blk / nblocks, npairs * (blk + 1) / nblocks, th);
                read_runs(j, th);
            });
        }
        done_[j] = r;
        settle(step);
        parallel_for(nthreads_, static_cast<int>(nthreads_), [&](size_t th, size_t) {
            const size_t f0 = finishing_.size() * th / nthreads_, f1 = finishing_.size() * (th + 1) / nthreads_;
            finish(finishing_.data() + f0, f1 - f0, workers_[th]);
        });
    }
    for (const Worker& w : workers_) {
        probes += w.probes;
        candidates += w.candidates;
    }
}

// The pairs of step (j, r) of the active queries [s0, s1) into grouped_, grouped by
// their bucket's top bits: each thread makes the pairs of a share of the queries and
// counts them per group, then places them. Returns their number.
size_t MIHIndex::JoinedSearch::make_pairs(int j, int r, size_t s0, size_t s1) {
    const Table& t = tables_[j];
    const int kb = t.key_bits;
    const int gbits = std::min(kb, kJoinGroupBits), shift = low_bits_ + kb - gbits;
    const size_t ngroups = size_t{1} << gbits;
    parallel_for(nthreads_, static_cast<int>(nthreads_), [&](size_t th, size_t) {
        Worker& w = workers_[th];
        w.pairs.clear();
        const size_t a0 = s0 + (s1 - s0) * th / nthreads_, a1 = s0 + (s1 - s0) * (th + 1) / nthreads_;
        for (size_t ai = a0; ai < a1; ++ai) {
            const uint32_t a = active_[ai];
            if (r <= kb)
                for_each_key_at(qkey_[a * mm_ + j], kb, r, [&](uint32_t b) { w.pairs.push_back((b << low_bits_) | a); });
            for (size_t th2 = 0; th2 < nthreads_; ++th2)
                for (const Crowded& c : part(th2, a).crowded) {
                    const int bsub = r - c.key_distance;
                    if (c.table == j && bsub >= 1 && bsub <= t.sub_bits)
                        w.pairs.push_back((c.bucket << low_bits_) | (static_cast<uint32_t>(bsub) << qbits_) | a);
                }
        }
        w.group_at.assign(ngroups, 0);
        for (uint32_t p : w.pairs) ++w.group_at[p >> shift];
    });
    size_t npairs = 0;  // groups in order, threads in order within a group
    for (size_t g = 0; g < ngroups; ++g)
        for (Worker& w : workers_) {
            const uint32_t c = w.group_at[g];
            w.group_at[g] = static_cast<uint32_t>(npairs);
            npairs += c;
        }
    grouped_.resize(npairs);
    parallel_for(nthreads_, static_cast<int>(nthreads_), [&](size_t th, size_t) {
        Worker& w = workers_[th];
        for (uint32_t p : w.pairs) grouped_[w.group_at[p >> shift]++] = p;
    });
    return npairs;
}

// The runs of items of grouped pairs [p0, p1) into thread th's worker: a whole bucket,
// or the sub-buckets at the pair's sub distance.
void MIHIndex::JoinedSearch::probe_block(int j, int r, size_t p0, size_t p1, size_t th) {
    const Table& t = tables_[j];
    Worker& w = workers_[th];
    w.runs.clear();
    for (size_t pi = p0; pi < p1; ++pi) {
        if (pi + kJoinPrefetchPairs < p1) __builtin_prefetch(t.offsets.data() + (grouped_[pi + kJoinPrefetchPairs] >> low_bits_));
        const uint32_t p = grouped_[pi];
        const uint32_t b = p >> low_bits_, a = p & qmask_;
        const int bsub = static_cast<int>((p >> qbits_) & ((1u << kSubDistanceBits) - 1));
        const uint32_t b0 = t.offsets[b], b1 = t.offsets[b + 1];
        double& spent = spent_ns_[th * count_ + a];
        spent += kJoinPairNs;
        if (b1 <= b0) continue;
        const uint32_t key_distance = static_cast<uint32_t>(r - bsub);
        const Table::SubDir dir = t.sub_min > 0 && b1 - b0 >= t.sub_min ? t.sub_dir(b) : Table::SubDir{};
        if (!dir) {
            w.runs.push_back({b0, b1, b, a, key_distance});
            continue;
        }
        if (bsub == 0) part(th, a).crowded.push_back({b, static_cast<uint8_t>(j), static_cast<uint8_t>(r)});
        for_each_key_at(qsub_[a * mm_ + j], t.sub_bits, bsub, [&](uint32_t sk) {
            spent += kSubProbeNs;
            const uint32_t e0 = b0 + dir.begin(sk), e1 = b0 + dir.end(sk);
            if (e1 > e0) w.runs.push_back({e0, e1, b, a, key_distance});
        });
    }
    w.probes += p1 - p0;
}

// Thread th's runs read: each item within its query's threshold that no earlier table
// has read is counted and kept in the thread's part of the query.
void MIHIndex::JoinedSearch::read_runs(int j, size_t th) {
    const Table& t = tables_[j];
    Worker& w = workers_[th];
    for (size_t ri = 0; ri < w.runs.size(); ++ri) {
        const Run& run = w.runs[ri];
        if (ri + kJoinPrefetchRuns < w.runs.size()) {
            const Run& ahead = w.runs[ri + kJoinPrefetchRuns];
            const size_t len = ahead.e1 - ahead.e0;
            if (j == 0) prefetch_lines(codes0_ + ahead.e0, 8 * len, kJoinPrefetchBytes);
            else prefetch_lines(t.rest.data() + size_t{ahead.e0} * t.rest.width(), t.rest.width() * len, kJoinPrefetchBytes);
        }
        const uint32_t a = run.query, e0 = run.e0, e1 = run.e1;
        Part& pt = part(th, a);
        const uint64_t* query = queries_ + which_[a];
        const uint32_t limit = bound_[a];
        auto threshold = [&] { return std::min(pt.counts.threshold(), limit); };
        w.candidates += e1 - e0;
        spent_ns_[th * count_ + a] += kJoinItemNs * (e1 - e0);
        const size_t cnt =
            j == 0 ? kern_.select_within(codes0_, 1, e0, e1, query, threshold(), w.idx.data(), w.dist.data())
                   : kern_.select_within_packed(t.rest.data(), t.rest.width(), e0, e1, qrest_[a * mm_ + j],
                                                run.key_distance, threshold(), w.idx.data(), w.dist.data());
        for (size_t c = 0; c < cnt; ++c) {
            const uint32_t e = w.idx[c], d = w.dist[c];
            if (d > threshold()) continue;
            uint64_t rest = 0, code;
            if (j == 0) {
                code = codes0_[e];
            } else {
                rest = t.rest.get(e);
                code = paste_key(rest, run.bucket, t.start, t.key_bits);
            }
            if (seen_before(j, code ^ query[0], code)) continue;
            pt.counts.add(d);
            if (j == 0) {
                pt.kept.push_back({code, d, e, true});
            } else {
                uint32_t rank = 0;  // equal codes are adjacent (in one sub-bucket), in table-0 order
                while (e - rank > e0 && t.rest.get(e - rank - 1) == rest) ++rank;
                pt.kept.push_back({code, d, rank, false});
            }
            if (pt.kept.size() >= pt.compact_at) {  // drop what fell behind the k-th distance
                const uint32_t thr = threshold();
                pt.kept.erase(std::remove_if(pt.kept.begin(), pt.kept.end(), [&](const Kept& x) { return x.d > thr; }),
                              pt.kept.end());
                pt.compact_at = std::max(pt.compact_at, 2 * pt.kept.size());
            }
        }
    }
}

// Inlined: called for every candidate within its query's threshold.
// Read before iff some other table jj has read it: its key there within done[jj]
// (and, if its bucket there has a sub-directory, key and sub distance together).
__attribute__((always_inline)) inline bool MIHIndex::JoinedSearch::seen_before(int j, uint64_t diff, uint64_t code) const {
    for (int jj = 0; jj < m_; ++jj) {
        if (jj == j || done_[jj] < 0) continue;
        const Table& t = tables_[jj];
        const int a = popcount32(substring64(diff, t.start, t.key_bits));
        if (a > done_[jj]) continue;
        if (t.sub_min == 0 || !t.sub_dir(substring64(code, t.start, t.key_bits))) return true;
        if (a + popcount32(substring64(diff, t.start + t.key_bits, t.sub_bits)) <= done_[jj]) return true;
    }
    return false;
}

// After step `step`: each active query's k-th distance so far from all parts' counts
// (each part counted every candidate within its threshold, which is never below the
// k-th distance of all found); the query finishes (finishing_) once that distance is
// proven, goes to the scan once proving it would cost more than the scan, or stays active.
void MIHIndex::JoinedSearch::settle(size_t step) {
    // Every item within sum_j (done_j + 1) - 1 of a query has been seen.
    int proven = -1;
    bool all_seen = false;  // a table searched to its full key and sub width holds every item
    for (int jj = 0; jj < m_; ++jj) {
        proven += done_[jj] + 1;
        all_seen = all_seen || done_[jj] == tables_[jj].key_bits + tables_[jj].sub_bits;
    }
    auto step_keys = [&](size_t s) { return binomial(tables_[s % mm_].key_bits, static_cast<int>(s / mm_)); };
    size_t out = 0;
    finishing_.clear();
    for (uint32_t a : active_) {
        size_t total = 0;
        double spent = 0;
        for (size_t th = 0; th < nthreads_; ++th) {
            total += part(th, a).counts.total();
            spent += spent_ns_[th * count_ + a];
        }
        int64_t kth = -1;
        if (total >= want_[a]) {
            size_t within = 0;
            for (uint32_t d = 0; kth < 0; ++d) {
                for (size_t th = 0; th < nthreads_; ++th) within += part(th, a).counts.count_at(d);
                if (within >= want_[a]) kth = d;
            }
            bound_[a] = static_cast<uint32_t>(kth);
        }
        if (all_seen || (kth >= 0 && kth <= proven)) {
            finishing_.push_back(a);
            continue;
        }
        if (ix_.scan_fallback_) {
            // Proving the k-th distance takes at least kth - proven more steps.
            const size_t left = kth >= 0 ? static_cast<size_t>(kth - proven) : 1;
            double floor_ns = 0;
            if (step + 1 >= kJoinFloorFromRing * mm_)
                for (size_t x = 1; x <= left; ++x) floor_ns += step_keys(step + x) * kJoinKeyNs;
            if (spent + floor_ns > budget_ns_) {
                fell_[a] = 1;  // the caller scans for this query
                for (size_t th = 0; th < nthreads_; ++th) std::vector<Kept>().swap(part(th, a).kept);
                continue;
            }
        }
        active_[out++] = a;
    }
    active_.resize(out);
}

// The kept candidates within the k-th distance of queries fin[0..nfin) into w.cands
// (query f's from w.cand_begin[f]), each with a lookup of its id; the parts' lists freed.
void MIHIndex::JoinedSearch::collect(const uint32_t* fin, size_t nfin, Worker& w) {
    w.cands.clear();
    w.codes.clear();
    w.lookups.clear();
    w.cand_begin.assign(1, 0);
    for (size_t f = 0; f < nfin; ++f) {
        const uint32_t a = fin[f];
        for (size_t th = 0; th < nthreads_; ++th) {
            Part& pt = part(th, a);
            for (const Kept& c : pt.kept) {
                if (c.d > bound_[a]) continue;
                const uint32_t slot = static_cast<uint32_t>(w.cands.size());
                w.cands.push_back({c.d, -1});
                w.codes.push_back(c.code);
                const uint32_t key = (substring64(c.code, 0, t0_.key_bits) << t0_.sub_bits) |
                                     (t0_.sub_bits > 0 ? substring64(c.code, t0_.key_bits, t0_.sub_bits) : 0);
                w.lookups.push_back({c.at_position ? c.where : kUnknown, slot, key, c.at_position ? 0 : c.where});
            }
            std::vector<Kept>().swap(pt.kept);
        }
        w.cand_begin.push_back(w.cands.size());
    }
}

// Writes the rows of queries fin[0..nfin). Their ids are looked up together, in
// table-0 order (binary searches by code, then reads of the id permutation).
void MIHIndex::JoinedSearch::finish(const uint32_t* fin, size_t nfin, Worker& w) {
    collect(fin, nfin, w);
    // In table-0 order (near enough for the cache: a counting sort on the top
    // kLookupOrderBits bits of key and sub-key), which is also the id permutation's.
    const int order_bits = t0_.key_bits + t0_.sub_bits, drop = std::max(0, order_bits - kLookupOrderBits);
    w.order_at.assign((size_t{1} << (order_bits - drop)) + 1, 0);
    for (const Lookup& l : w.lookups) ++w.order_at[(l.key >> drop) + 1];
    for (size_t g = 1; g < w.order_at.size(); ++g) w.order_at[g] += w.order_at[g - 1];
    w.ordered.resize(w.lookups.size());
    for (const Lookup& l : w.lookups) w.ordered[w.order_at[l.key >> drop]++] = l;
    for (const Lookup& l : w.ordered) {
        const uint32_t pos = l.pos != kUnknown ? l.pos : ix_.locate(&w.codes[l.slot], l.rank);
        w.cands[l.slot].id = static_cast<int64_t>(ix_.id_of_.get(pos));
    }
    const size_t kk = static_cast<size_t>(k_);
    for (size_t f = 0; f < nfin; ++f) {
        const size_t q = which_[fin[f]];
        const int64_t *eb = exclude_.begin(q), *ee = exclude_.end(q);
        Candidate* first = w.cands.data() + w.cand_begin[f];
        Candidate* last = w.cands.data() + w.cand_begin[f + 1];
        if (eb != ee) last = std::remove_if(first, last, [&](const Candidate& c) { return is_excluded(eb, ee, c.id); });
        write_nearest(first, last, k_, D_ + q * kk, I_ + q * kk);
    }
}

void MIHIndex::search_joined(const Kernels& kern, const uint64_t* queries, const uint32_t* which, size_t count,
                             int k, const ExcludeList& exclude, int num_threads, int32_t* D, int64_t* I,
                             uint8_t* fell, size_t& probes, size_t& candidates,
                             const std::atomic<bool>* stop) const {
    if (count == 0) return;
    JoinedSearch search(*this, kern, queries, which, count, k, exclude, num_threads, D, I, fell);
    search.run(stop, probes, candidates);
}

}  // namespace hashsearch
