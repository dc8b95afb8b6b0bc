#include "flat_index.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "parallel.h"
#include "kernels/simd.h"

namespace hashsearch {

namespace {
std::atomic<size_t>& split_min_words_slot() {
    static std::atomic<size_t> words{kSplitMinWords};
    return words;
}
}  // namespace

size_t split_min_words() { return split_min_words_slot().load(std::memory_order_relaxed); }
void set_split_min_words(size_t words) { split_min_words_slot() = words; }

namespace {
constexpr size_t kQueryBlock = 8;        // queries sharing one pass over a tile
constexpr size_t kTileBytes = 16 << 10;  // a tile of codes stays in L1 across the block
// Up to this many items (and code words) the two-pass select wins: its
// distance buffer and the codes stay in L2, and it never re-offers items.
constexpr size_t kTwoPassMaxItems = 1 << 16;

size_t tile_items(size_t nwords) { return std::max<size_t>(64, kTileBytes / (8 * nwords)); }
}  // namespace

FlatIndex::FlatIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits)
    : n_(n), nwords_(nwords), nbits_(nbits) {
    if (nwords == 0 || nbits <= 0 || static_cast<size_t>(nbits) > 64 * nwords ||
        static_cast<size_t>(nbits) <= 64 * (nwords - 1))
        throw std::invalid_argument("nbits=" + std::to_string(nbits) + " does not match " +
                                    std::to_string(nwords) + " words per code");
    n_ = 0;
    add(codes, n);
}

void check_exclude(const int64_t* indptr, size_t nq, const int64_t* indices, size_t nnz, size_t n) {
    if (indptr[0] != 0 || indptr[nq] < 0 || static_cast<size_t>(indptr[nq]) != nnz)
        throw std::invalid_argument("exclude indptr must start at 0 and end at len(indices)=" + std::to_string(nnz));
    for (size_t q = 0; q < nq; ++q)
        if (indptr[q + 1] < indptr[q]) throw std::invalid_argument("exclude indptr must be non-decreasing");
    for (size_t q = 0; q < nq; ++q) {
        for (int64_t t = indptr[q]; t < indptr[q + 1]; ++t) {
            if (indices[t] < 0 || static_cast<size_t>(indices[t]) >= n)
                throw std::invalid_argument("exclude id " + std::to_string(indices[t]) + " is out of range [0, " +
                                            std::to_string(n) + ")");
            if (t > indptr[q] && indices[t] < indices[t - 1])
                throw std::invalid_argument("exclude ids must be sorted within each query");
        }
    }
}

void FlatIndex::check_codes(const uint64_t* codes, size_t count) const {
    // Bits above nbits in a code's last word would count in every distance.
    const unsigned tail_bits = static_cast<unsigned>(nbits_) - 64 * static_cast<unsigned>(nwords_ - 1);
    const uint64_t tail_mask = tail_bits == 64 ? ~uint64_t{0} : (uint64_t{1} << tail_bits) - 1;
    for (size_t i = 0; i < count; ++i)
        if (codes[i * nwords_ + nwords_ - 1] & ~tail_mask)
            throw std::invalid_argument("code " + std::to_string(i) + " has bits set above nbits=" +
                                        std::to_string(nbits_));
}

namespace {
// Capacity for `need` elements, at least doubling (amortised O(1) appends).
template <class V>
void grow_to(V& v, size_t need) {
    if (v.capacity() < need) v.reserve(std::max(need, 2 * v.capacity()));
}
}  // namespace

void FlatIndex::reserve_for_add(size_t count) {
    if (nbits_ <= 32)
        grow_to(half_, n_ + count);
    else
        grow_to(codes_, (n_ + count) * nwords_);
}

void FlatIndex::remove_last(size_t count) {
    count = std::min(count, n_);
    n_ -= count;
    if (nbits_ <= 32)
        half_.resize(n_);
    else
        codes_.resize(n_ * nwords_);
}

void FlatIndex::add(const uint64_t* codes, size_t count) {
    check_codes(codes, count);
    reserve_for_add(count);
    if (nbits_ <= 32) {
        for (size_t i = 0; i < count; ++i) half_.push_back(static_cast<uint32_t>(codes[i]));
    } else {
        codes_.insert(codes_.end(), codes, codes + count * nwords_);
    }
    n_ += count;
}

void FlatIndex::copy_codes(uint64_t* out) const {
    if (compact())
        std::copy(half_.begin(), half_.end(), out);  // widens each code to one uint64 word
    else
        std::copy(codes_.begin(), codes_.end(), out);
}

void FlatIndex::permute(const std::vector<uint32_t>& order) {
    if (compact()) {
        HugeVector<uint32_t> out(n_);
        for (size_t i = 0; i < n_; ++i) out[i] = half_[order[i]];
        half_.swap(out);
    } else {
        HugeVector<uint64_t> out(n_ * nwords_);
        for (size_t i = 0; i < n_; ++i)
            std::copy_n(codes_.data() + static_cast<size_t>(order[i]) * nwords_, nwords_,
                        out.data() + i * nwords_);
        codes_.swap(out);
    }
}

void FlatIndex::topk(const uint64_t* queries, size_t nq, int k, const ExcludeList& exclude,
                     int num_threads, int32_t* D, int64_t* I) const {
    if (k <= 0) throw std::invalid_argument("k must be positive, got " + std::to_string(k));
    if (n_ == 0) throw std::invalid_argument("the index is empty");
    if (nq == 0) return;
    Kernels kern = active_kernels();
    int threads = resolve_threads(num_threads);
    // Few queries on many items: split the items instead, so every core has work.
    const bool split = nq < 2 * static_cast<size_t>(threads) && threads > 1 && n_ * nwords_ >= split_min_words();
    const bool wide_two_pass = nwords_ < 32 && ((kern.two_pass_wide_words >> nwords_) & 1);
    if (n_ <= kTwoPassMaxItems && (n_ * nwords_ <= kTwoPassMaxItems || wide_two_pass) && !split)
        return topk_two_pass(kern, queries, nq, k, exclude, threads, D, I);
    if (split)
        topk_by_item(kern, queries, nq, k, exclude, threads, D, I);
    else
        topk_by_query(kern, queries, nq, k, exclude, threads, D, I);
}

namespace {
// Range-search hits to CSR: query q's size(q) hits, given in id order by
// dist(q, c) / id(q, c), sorted by (distance, id) with a stable counting sort.
template <class Size, class Dist, class Id>
void write_csr(size_t nq, uint32_t radius, int num_threads, Size size, Dist dist, Id id,
               std::vector<int64_t>& lims, std::vector<int32_t>& D, std::vector<int64_t>& I) {
    lims.assign(nq + 1, 0);
    for (size_t q = 0; q < nq; ++q) lims[q + 1] = lims[q] + static_cast<int64_t>(size(q));
    D.resize(static_cast<size_t>(lims[nq]));
    I.resize(static_cast<size_t>(lims[nq]));
    parallel_for(nq, num_threads, [&](size_t q, size_t) {
        std::vector<size_t> start(radius + 2, 0);
        for (size_t c = 0; c < size(q); ++c) ++start[dist(q, c) + 1];
        for (size_t d = 1; d < start.size(); ++d) start[d] += start[d - 1];
        const size_t base = static_cast<size_t>(lims[q]);
        for (size_t c = 0; c < size(q); ++c) {
            const size_t pos = base + start[dist(q, c)]++;
            D[pos] = static_cast<int32_t>(dist(q, c));
            I[pos] = static_cast<int64_t>(id(q, c));
        }
    });
}
}  // namespace

void FlatIndex::range_search(const uint64_t* queries, size_t nq, int radius, const ExcludeList& exclude,
                             int num_threads, std::vector<int64_t>& lims, std::vector<int32_t>& D,
                             std::vector<int64_t>& I) const {
    if (radius < 0) throw std::invalid_argument("radius must be >= 0, got " + std::to_string(radius));
    if (n_ == 0) throw std::invalid_argument("the index is empty");
    Kernels kern = active_kernels();
    const uint32_t r = static_cast<uint32_t>(std::min(radius, nbits_));
    if (n_ <= kTwoPassMaxItems && nbits_ < 255) {
        // Short lists: every distance into a byte buffer (SIMD), then the hits
        // picked eight bytes at a time; hits are dense enough here that the
        // scan's filter would fall to its scalar path too often.
        std::vector<std::vector<uint32_t>> hit_ids(nq);
        std::vector<std::vector<uint8_t>> hit_dist(nq);
        parallel_for(nq, num_threads, [&](size_t q, size_t) {
            thread_local std::vector<uint8_t> buf;
            thread_local std::vector<uint32_t> scratch;
            buf.resize(n_);
            scratch.resize(n_);
            uint8_t* dist = buf.data();
            uint32_t* found = scratch.data();  // hit ids, in id order
            if (compact())
                kern.fill32(half_.data(), 0, n_, static_cast<uint32_t>(queries[q]), dist);
            else
                kern.fill_bytes(codes_.data(), nwords_, n_, queries + q * nwords_, dist);
            ExcludeCursor ex = exclude.cursor(q);
            size_t count = 0;
            for_each_byte_at_most(dist, n_, static_cast<uint8_t>(r), [&](size_t i) {
                if (!ex.excluded(static_cast<int64_t>(i))) found[count++] = static_cast<uint32_t>(i);
            });
            hit_ids[q].assign(found, found + count);
            hit_dist[q].resize(count);
            for (size_t c = 0; c < count; ++c) hit_dist[q][c] = dist[found[c]];
        });
        write_csr(
            nq, r, num_threads, [&](size_t q) { return hit_ids[q].size(); },
            [&](size_t q, size_t c) { return hit_dist[q][c]; }, [&](size_t q, size_t c) { return hit_ids[q][c]; },
            lims, D, I);
        return;
    }
    // Long lists: the top-k scan with collectors that keep every item within
    // the radius: blocks of queries share each tile, and the kernels' SIMD
    // filter rejects the (many) items beyond it. Hits arrive in id order.
    std::vector<TopKCollector> cols(nq, TopKCollector::within(radius, nbits_));
    const size_t nblocks = (nq + kQueryBlock - 1) / kQueryBlock;
    parallel_for(nblocks, num_threads, [&](size_t block, size_t) {
        const size_t q0 = block * kQueryBlock, q1 = std::min(nq, q0 + kQueryBlock);
        std::vector<ExcludeCursor> cursors;
        std::vector<const uint64_t*> qs;
        for (size_t q = q0; q < q1; ++q) {
            cursors.push_back(exclude.cursor(q));
            qs.push_back(queries + q * nwords_);
        }
        scan_block(kern, qs.data(), q1 - q0, cols.data() + q0, cursors.data());
    });
    write_csr(
        nq, r, num_threads, [&](size_t q) { return cols[q].size(); },
        [&](size_t q, size_t c) { return cols[q].dist_at(c); }, [&](size_t q, size_t c) { return cols[q].id_at(c); },
        lims, D, I);
}

void FlatIndex::scan_block(const Kernels& kern, const uint64_t* const* queries, size_t count,
                           TopKCollector* cols, ExcludeCursor* cursors, size_t begin,
                           size_t end) const {
    // One query has no tile to share: a single call spares the kernel's set-up per tile.
    const size_t tile = count == 1 ? n_ : tile_items(nwords_);
    end = std::min(end, n_);
    for (size_t start = begin; start < end; start += tile) {
        size_t stop = std::min(end, start + tile);
        for (size_t i = 0; i < count; ++i) {
            if (compact())
                kern.scan32(half_.data(), start, stop, static_cast<uint32_t>(queries[i][0]), cols[i],
                            cursors[i]);
            else
                kern.scan(codes_.data(), nwords_, start, stop, queries[i], cols[i], cursors[i]);
        }
    }
}

void FlatIndex::topk_by_query(const Kernels& kern, const uint64_t* queries, size_t nq, int k,
                              const ExcludeList& exclude, int threads, int32_t* D,
                              int64_t* I) const {
    const size_t nblocks = (nq + kQueryBlock - 1) / kQueryBlock;
    parallel_for(nblocks, threads, [&](size_t block, size_t) {
        size_t q0 = block * kQueryBlock, q1 = std::min(nq, q0 + kQueryBlock);
        std::vector<TopKCollector> cols(q1 - q0, TopKCollector(k, nbits_));
        std::vector<ExcludeCursor> cursors;
        std::vector<const uint64_t*> qs;
        for (size_t q = q0; q < q1; ++q) {
            cursors.push_back(exclude.cursor(q));
            qs.push_back(queries + q * nwords_);
        }
        scan_block(kern, qs.data(), q1 - q0, cols.data(), cursors.data());
        for (size_t q = q0; q < q1; ++q) cols[q - q0].finish(D + q * k, I + q * k);
    });
}

void FlatIndex::topk_two_pass(const Kernels& kern, const uint64_t* queries, size_t nq, int k,
                              const ExcludeList& exclude, int threads, int32_t* D,
                              int64_t* I) const {
    const size_t nblocks = (nq + kQueryBlock - 1) / kQueryBlock;
    const bool bytes = nbits_ < 255;
    parallel_for(nblocks, threads, [&](size_t block, size_t) {
        thread_local std::vector<uint16_t> dist16;
        thread_local std::vector<uint8_t> dist8;
        thread_local std::vector<uint32_t> hist;
        hist.resize(two_pass_hist_entries(nbits_, k));
        if (bytes)
            dist8.resize(n_);
        else
            dist16.resize(n_);
        size_t q0 = block * kQueryBlock, q1 = std::min(nq, q0 + kQueryBlock);
        for (size_t q = q0; q < q1; ++q) {
            if (compact()) {
                kern.fill32(half_.data(), 0, n_, static_cast<uint32_t>(queries[q]), dist8.data());
                kern.select_bytes(dist8.data(), n_, nbits_, k, exclude.begin(q), exclude.end(q),
                                  hist.data(), D + q * k, I + q * k);
            } else if (bytes)
                kern.two_pass_bytes(codes_.data(), nwords_, n_, nbits_, queries + q * nwords_, k,
                                    exclude.begin(q), exclude.end(q), dist8.data(), hist.data(),
                                    D + q * k, I + q * k);
            else
                kern.two_pass(codes_.data(), nwords_, n_, nbits_, queries + q * nwords_, k,
                              exclude.begin(q), exclude.end(q), dist16.data(), hist.data(),
                              D + q * k, I + q * k);
        }
    });
}

void FlatIndex::topk_by_item(const Kernels& kern, const uint64_t* queries, size_t nq, int k,
                             const ExcludeList& exclude, int threads, int32_t* D,
                             int64_t* I) const {
    const size_t nchunks = static_cast<size_t>(threads);
    const size_t chunk = (n_ + nchunks - 1) / nchunks;
    std::vector<int32_t> part_d(nchunks * nq * k);
    std::vector<int64_t> part_i(nchunks * nq * k);
    parallel_for(nchunks, threads, [&](size_t c, size_t) {
        size_t begin = std::min(n_, c * chunk), end = std::min(n_, begin + chunk);
        TopKCollector col(k, nbits_);
        for (size_t q = 0; q < nq; ++q) {
            col.reset();
            ExcludeCursor cursor = exclude.cursor(q);
            if (begin < end) {
                if (compact())
                    kern.scan32(half_.data(), begin, end, static_cast<uint32_t>(queries[q]), col, cursor);
                else
                    kern.scan(codes_.data(), nwords_, begin, end, queries + q * nwords_, col, cursor);
            }
            size_t off = (c * nq + q) * k;
            col.finish(part_d.data() + off, part_i.data() + off);
        }
    });
    // Chunks hold increasing id ranges, so a merge by distance that prefers the
    // earlier chunk on ties keeps the smaller-id rule.
    for (size_t q = 0; q < nq; ++q) {
        std::vector<size_t> pos(nchunks, 0);
        for (int r = 0; r < k; ++r) {
            size_t best = nchunks;
            int32_t best_d = 0;
            for (size_t c = 0; c < nchunks; ++c) {
                if (pos[c] >= static_cast<size_t>(k)) continue;
                int32_t d = part_d[(c * nq + q) * k + pos[c]];
                if (d < 0) continue;
                if (best == nchunks || d < best_d) {
                    best = c;
                    best_d = d;
                }
            }
            if (best == nchunks) {
                D[q * k + r] = -1;
                I[q * k + r] = -1;
                continue;
            }
            size_t off = (best * nq + q) * k + pos[best]++;
            D[q * k + r] = part_d[off];
            I[q * k + r] = part_i[off];
        }
    }
}

}  // namespace hashsearch
