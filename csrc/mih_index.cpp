#include "mih_index.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "parallel.h"

namespace hashsearch {

namespace {

// Bits [start, start+bits) of a packed code, bits <= 32.
inline uint32_t substring(const uint64_t* code, int start, int bits) {
    size_t w = static_cast<size_t>(start) >> 6;
    int off = start & 63;
    uint64_t v = code[w] >> off;
    if (off + bits > 64) v |= code[w + 1] << (64 - off);
    return static_cast<uint32_t>(v & ((uint64_t{1} << bits) - 1));
}

uint64_t binomial(int n, int r) {
    if (r < 0 || r > n) return 0;
    uint64_t c = 1;
    for (int i = 1; i <= r; ++i) c = c * static_cast<uint64_t>(n - r + i) / static_cast<uint64_t>(i);
    return c;
}

struct Candidate {
    uint32_t d;
    int64_t id;
    bool operator<(const Candidate& o) const { return d != o.d ? d < o.d : id < o.id; }
};

// Top-k over candidates arriving in any order, ordered by (distance, id).
class UnorderedTopK {
public:
    explicit UnorderedTopK(size_t k) : k_(k) { buf_.reserve(2 * k + 1); }
    bool admits(uint32_t d, int64_t id) const { return !full_ || Candidate{d, id} < worst_; }
    void push(uint32_t d, int64_t id) {
        buf_.push_back({d, id});
        if (buf_.size() >= 2 * k_) shrink();
    }
    // k-th smallest distance, or -1 while fewer than k candidates are held.
    int64_t kth_distance() {
        if (buf_.size() < k_) return -1;
        shrink();
        return worst_.d;
    }
    void finish(int32_t* D, int64_t* I) {
        if (buf_.size() > k_) shrink();
        std::sort(buf_.begin(), buf_.end());
        for (size_t r = 0; r < k_; ++r) {
            D[r] = r < buf_.size() ? static_cast<int32_t>(buf_[r].d) : -1;
            I[r] = r < buf_.size() ? buf_[r].id : -1;
        }
    }

private:
    void shrink() {
        std::nth_element(buf_.begin(), buf_.begin() + (k_ - 1), buf_.end());
        buf_.resize(k_);
        worst_ = *std::max_element(buf_.begin(), buf_.end());
        full_ = true;
    }
    size_t k_;
    std::vector<Candidate> buf_;
    Candidate worst_{0, 0};
    bool full_ = false;
};

// Rough costs (ns, measured on an AVX2 core) that decide when a query is
// better finished by the linear scan: MIH pays per bucket probed and per
// candidate checked (a random read unless the table keeps codes in bucket
// order), the scan per item.
constexpr double kProbeNs = 10.0;
constexpr double kRandomCandidateNs = 12.0;
constexpr double kSequentialCandidateNs = 9.0;
constexpr double kScanNsPerWord = 0.3;
constexpr double kCompactScanNs = 0.2;
constexpr int kMaxSubstringBits = 24;

}  // namespace

MIHIndex::MIHIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits, int m)
    : flat_(codes, n, nwords, nbits) {
    if (m < 1 || m > nbits)
        throw std::invalid_argument("m must be in [1, nbits=" + std::to_string(nbits) + "], got " +
                                    std::to_string(m));
    // A substring of b bits needs a 2^b-bucket offset array.
    if ((nbits + m - 1) / m > kMaxSubstringBits)
        throw std::invalid_argument("m=" + std::to_string(m) + " gives substrings of " +
                                    std::to_string((nbits + m - 1) / m) + " bits; at most " +
                                    std::to_string(kMaxSubstringBits) + " are supported, so use m >= " +
                                    std::to_string((nbits + kMaxSubstringBits - 1) / kMaxSubstringBits));
    if (n >= (uint64_t{1} << 32)) throw std::invalid_argument("MIH supports fewer than 2^32 items");
    std::vector<uint64_t> code(nwords);
    for (int j = 0; j < m; ++j) {
        Table t;
        t.start = static_cast<int>(static_cast<int64_t>(j) * nbits / m);
        t.bits = static_cast<int>(static_cast<int64_t>(j + 1) * nbits / m) - t.start;
        size_t nbuckets = size_t{1} << t.bits;
        t.offsets.assign(nbuckets + 1, 0);
        std::vector<uint32_t> keys(n);
        for (size_t i = 0; i < n; ++i) {
            flat_.load_code(i, code.data());
            keys[i] = substring(code.data(), t.start, t.bits);
            ++t.offsets[keys[i] + 1];
        }
        for (size_t b = 0; b < nbuckets; ++b) t.offsets[b + 1] += t.offsets[b];
        t.ids.resize(n);
        std::vector<uint32_t> fill(t.offsets.begin(), t.offsets.end() - 1);
        for (size_t i = 0; i < n; ++i) t.ids[fill[keys[i]]++] = static_cast<uint32_t>(i);
        if (flat_.compact()) {
            t.codes32.resize(n);
            for (size_t pos = 0; pos < n; ++pos) t.codes32[pos] = flat_.data32()[t.ids[pos]];
        }
        tables_.push_back(std::move(t));
    }
}

std::vector<int> MIHIndex::substring_bits() const {
    std::vector<int> bits;
    for (const auto& t : tables_) bits.push_back(t.bits);
    return bits;
}

size_t MIHIndex::table_bytes() const {
    size_t bytes = 0;
    for (const auto& t : tables_)
        bytes += (t.offsets.size() + t.ids.size() + t.codes32.size()) * sizeof(uint32_t);
    return bytes;
}

void MIHIndex::topk(const uint64_t* queries, size_t nq, int k, const ExcludeList& exclude,
                    int num_threads, int32_t* D, int64_t* I) const {
    if (k <= 0) throw std::invalid_argument("k must be positive, got " + std::to_string(k));
    if (flat_.size() == 0) throw std::invalid_argument("the index is empty");
    Kernels kern = active_kernels();
    size_t nw = flat_.nwords();
    const size_t nworkers = static_cast<size_t>(resolve_threads(num_threads));
    std::vector<size_t> fell(nworkers, 0), probes(nworkers, 0), cands(nworkers, 0);
    parallel_for(nq, num_threads, [&](size_t q, size_t worker) {
        thread_local std::vector<uint32_t> scratch;
        thread_local std::vector<uint8_t> scratch8;
        const int64_t* eb = exclude.indptr ? exclude.indices + exclude.indptr[q] : nullptr;
        const int64_t* ee = exclude.indptr ? exclude.indices + exclude.indptr[q + 1] : nullptr;
        bool fell_back = false;
        search_one(kern, queries + q * nw, k, eb, ee, D + q * k, I + q * k, scratch, scratch8, fell_back,
                   probes[worker], cands[worker]);
        fell[worker] += fell_back;
    });
    for (size_t w = 0; w < nworkers; ++w) {
        fallbacks_ += fell[w];
        probes_ += probes[w];
        candidates_ += cands[w];
    }
}

void MIHIndex::search_one(const Kernels& kern, const uint64_t* query, int k, const int64_t* ex_begin,
                          const int64_t* ex_end, int32_t* D, int64_t* I,
                          std::vector<uint32_t>& scratch, std::vector<uint8_t>& scratch8,
                          bool& fell_back, size_t& probes,
                          size_t& candidates) const {
    const size_t n = flat_.size(), nw = flat_.nwords();
    const int m = static_cast<int>(tables_.size());
    std::vector<uint32_t> qkeys(m);
    int max_bits = 0;
    for (int j = 0; j < m; ++j) {
        qkeys[j] = substring(query, tables_[j].start, tables_[j].bits);
        max_bits = std::max(max_bits, tables_[j].bits);
    }
    auto is_excluded = [&](int64_t id) {
        return ex_begin != ex_end && std::binary_search(ex_begin, ex_end, id);
    };
    UnorderedTopK top(static_cast<size_t>(k));
    uint64_t diff[16];  // codes are at most 1024 bits
    const bool compact = flat_.compact();
    const double cand_ns = compact ? kSequentialCandidateNs : kRandomCandidateNs;
    const double budget_ns = static_cast<double>(n) *
                             (compact ? kCompactScanNs : kScanNsPerWord * static_cast<double>(nw));
    size_t my_probes = 0, my_cands = 0;
    auto spent_ns = [&] { return my_probes * kProbeNs + my_cands * cand_ns; };
    auto finish_by_scan = [&] {
        fell_back = true;
        TopKCollector col(k, flat_.nbits());
        ExcludeCursor cursor(ex_begin, ex_end);
        flat_.scan_all(kern, query, col, cursor);
        col.finish(D, I);
        probes += my_probes;
        candidates += my_cands;
    };

    for (int s = 0; s <= max_bits; ++s) {
        // Expected cost of this radius at the average bucket size (buckets near a
        // clustered query are fuller, which the check on work spent below catches).
        double next_ns = 0;
        for (const auto& t : tables_) {
            double avg = static_cast<double>(n) / static_cast<double>(size_t{1} << t.bits);
            next_ns += static_cast<double>(binomial(t.bits, s)) * (kProbeNs + avg * cand_ns);
        }
        if (s > 0 && spent_ns() + next_ns > budget_ns) return finish_by_scan();
        for (int j = 0; j < m; ++j) {
            const Table& t = tables_[j];
            if (s > t.bits) continue;
            const uint64_t limit = uint64_t{1} << t.bits;
            uint64_t mask = (s == 0) ? 0 : (uint64_t{1} << s) - 1;
            while (mask < limit) {
                uint32_t bucket = qkeys[j] ^ static_cast<uint32_t>(mask);
                uint32_t b0 = t.offsets[bucket], b1 = t.offsets[bucket + 1];
                ++my_probes;
                my_cands += b1 - b0;
                if (b1 > b0) {
                    size_t cnt = b1 - b0;
                    const bool seq = !t.codes32.empty();
                    if (seq) {
                        if (scratch8.size() < cnt) scratch8.resize(cnt);
                        kern.fill32(t.codes32.data() + b0, 0, cnt, static_cast<uint32_t>(query[0]),
                                    scratch8.data());
                    } else {
                        if (scratch.size() < cnt) scratch.resize(cnt);
                        flat_.gather(kern, t.ids.data() + b0, cnt, query, scratch.data());
                    }
                    for (size_t c = 0; c < cnt; ++c) {
                        uint32_t d = seq ? scratch8[c] : scratch[c];
                        int64_t id = t.ids[b0 + c];
                        if (!top.admits(d, id)) continue;
                        // Seen before iff an earlier table matched within s, or a
                        // later one within s-1 (the order tables are probed in).
                        if (seq)
                            diff[0] = t.codes32[b0 + c];
                        else
                            flat_.load_code(static_cast<size_t>(id), diff);
                        for (size_t w = 0; w < nw; ++w) diff[w] ^= query[w];
                        bool seen = false;
                        for (int jj = 0; jj < m && !seen; ++jj) {
                            if (jj == j) continue;
                            int sd = __builtin_popcount(substring(diff, tables_[jj].start, tables_[jj].bits));
                            seen = jj < j ? sd <= s : sd <= s - 1;
                        }
                        if (seen || is_excluded(id)) continue;
                        top.push(d, id);
                    }
                }
                if (s == 0) break;
                uint64_t c = mask & (~mask + 1);  // Gosper's hack: next mask with s bits
                uint64_t r = mask + c;
                mask = (((r ^ mask) >> 2) / c) | r;
            }
            // Every item within m*s + j of the query has now been seen.
            int64_t kth = top.kth_distance();
            if (kth >= 0 && kth <= static_cast<int64_t>(m) * s + j) {
                top.finish(D, I);
                probes += my_probes;
                candidates += my_cands;
                return;
            }
            if (spent_ns() > budget_ns) return finish_by_scan();
        }
    }
    top.finish(D, I);  // radius exhausted: every item was seen
    probes += my_probes;
    candidates += my_cands;
}

}  // namespace hashsearch
