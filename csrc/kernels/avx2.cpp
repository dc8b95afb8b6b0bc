// AVX2 kernels: nibble-lookup popcount (vpshufb) summed per word with vpsadbw,
// compared against the collector's bound four distances at a time. Code sizes
// without a vector kernel use the hardware popcnt instruction word by word.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "simd.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")

namespace hashsearch {
namespace {

inline uint32_t popcount64(uint64_t x) { return static_cast<uint32_t>(__builtin_popcountll(x)); }

#define HS_HAVE_LOAD_F32X4_AS_F64
inline __m256d load_f32x4_as_f64(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
#include "scan_generic.inc"

inline __m256i popcount_bytes(__m256i v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,  //
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(v, low);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

// Per 64-bit lane popcount.
inline __m256i popcount_lanes(__m256i v) {
    return _mm256_sad_epu8(popcount_bytes(v), _mm256_setzero_si256());
}

inline __m256i load(const uint64_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Offers the 4*G distances in `d` (lane j of vector g is item base + order[4g+j])
// to the collector; called only when at least one is below the bound.
template <int G>
inline void offer(const __m256i* d, const int* order, size_t base, TopKCollector& col,
                  ExcludeCursor& ex, uint32_t& bound) {
    alignas(32) uint64_t dist[4 * G];
    for (int g = 0; g < G; ++g) _mm256_store_si256(reinterpret_cast<__m256i*>(dist + 4 * g), d[g]);
    // Visit in item order so the collector sees increasing ids.
    uint32_t by_item[4 * G];
    for (int j = 0; j < 4 * G; ++j) by_item[order[j]] = static_cast<uint32_t>(dist[j]);
    for (int j = 0; j < 4 * G; ++j) push_if_closer(col, ex, by_item[j], static_cast<int64_t>(base + j), bound);
}

// Lanes of d[0..G) below vb (all ones), or'ed pairwise into one vector.
template <int G>
inline __m256i any_below(__m256i vb, const __m256i* d) {
    if constexpr (G == 1) return _mm256_cmpgt_epi64(vb, d[0]);
    else return _mm256_or_si256(any_below<G / 2>(vb, d), any_below<G / 2>(vb, d + G / 2));
}

// The vector scans' item loop: blocks of 4G items from `begin`, whose distances
// distances(i, d) puts into G vectors of four 64-bit lanes (lane j of vector g is item
// i + order[4g + j]); a block with any distance below the bound is offered. Returns
// where the blocks end; the caller scans the rest.
template <int G, class Distances>
inline size_t scan_blocks(size_t begin, size_t end, const int* order, TopKCollector& col, ExcludeCursor& ex,
                          Distances&& distances) {
    uint32_t bound = col.bound();
    __m256i vb = _mm256_set1_epi64x(bound);
    size_t i = begin;
    for (; i + 4 * G <= end; i += 4 * G) {
        __m256i d[G];
        distances(i, d);
        const __m256i any = any_below<G>(vb, d);
        if (!_mm256_testz_si256(any, any)) {
            offer<G>(d, order, i, col, ex, bound);
            vb = _mm256_set1_epi64x(bound);
        }
    }
    return i;
}

// 64-bit codes: 16 items per iteration, one vector of 4 items at a time.
void scan_w1(const uint64_t* codes, size_t nwords, size_t begin, size_t end,
             const uint64_t* query, TopKCollector& col, ExcludeCursor& ex) {
    static const int order[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const __m256i q = _mm256_set1_epi64x(static_cast<long long>(query[0]));
    const size_t i = scan_blocks<4>(begin, end, order, col, ex, [&](size_t i, __m256i* d) {
        for (int g = 0; g < 4; ++g) d[g] = popcount_lanes(_mm256_xor_si256(load(codes + i + 4 * g), q));
    });
    scan_width<1>(codes, nwords, i, end, query, col, ex);
}

// 128-bit codes: two vectors hold four items; lanes come out as items {0,2,1,3}.
void scan_w2(const uint64_t* codes, size_t nwords, size_t begin, size_t end,
             const uint64_t* query, TopKCollector& col, ExcludeCursor& ex) {
    static const int order[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    const __m256i q = _mm256_setr_epi64x(static_cast<long long>(query[0]), static_cast<long long>(query[1]),
                                         static_cast<long long>(query[0]), static_cast<long long>(query[1]));
    const size_t i = scan_blocks<2>(begin, end, order, col, ex, [&](size_t i, __m256i* d) {
        for (int g = 0; g < 2; ++g) {
            const uint64_t* p = codes + 2 * (i + 4 * g);
            __m256i a = popcount_lanes(_mm256_xor_si256(load(p), q));
            __m256i b = popcount_lanes(_mm256_xor_si256(load(p + 4), q));
            d[g] = _mm256_add_epi64(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
        }
    });
    scan_width<2>(codes, nwords, i, end, query, col, ex);
}

// 256*j-bit codes: byte counts of an item's vectors are summed before one vpsadbw
// (at most 8 per byte per vector, so no overflow below 32 vectors), then four
// items' lane sums are transposed into one vector.
void scan_w4x(const uint64_t* codes, size_t nwords, size_t begin, size_t end,
              const uint64_t* query, TopKCollector& col, ExcludeCursor& ex) {
    static const int order[4] = {0, 1, 2, 3};
    const size_t nvec = nwords / 4;
    const size_t i = scan_blocks<1>(begin, end, order, col, ex, [&](size_t i, __m256i* d) {
        __m256i s[4];
        for (int it = 0; it < 4; ++it) {
            const uint64_t* p = codes + (i + it) * nwords;
            __m256i acc = _mm256_setzero_si256();
            for (size_t v = 0; v < nvec; ++v)
                acc = _mm256_add_epi8(acc, popcount_bytes(_mm256_xor_si256(load(p + 4 * v), load(query + 4 * v))));
            s[it] = _mm256_sad_epu8(acc, _mm256_setzero_si256());
        }
        __m256i x = _mm256_add_epi64(_mm256_unpacklo_epi64(s[0], s[1]), _mm256_unpackhi_epi64(s[0], s[1]));
        __m256i y = _mm256_add_epi64(_mm256_unpacklo_epi64(s[2], s[3]), _mm256_unpackhi_epi64(s[2], s[3]));
        d[0] = _mm256_add_epi64(_mm256_permute2x128_si256(x, y, 0x20), _mm256_permute2x128_si256(x, y, 0x31));
    });
    scan_width<0>(codes, nwords, i, end, query, col, ex);
}

// Eight 32-bit distances: byte counts summed pairwise (maddubs) then into dwords (madd).
inline __m256i popcount_u32x8(__m256i v) {
    __m256i bytes = popcount_bytes(v);
    __m256i words = _mm256_maddubs_epi16(bytes, _mm256_set1_epi8(1));
    return _mm256_madd_epi16(words, _mm256_set1_epi16(1));
}

inline __m256i load32(const uint32_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Compact 32-bit codes: 32 items per iteration, 8 per vector.
void scan32(const uint32_t* codes, size_t begin, size_t end, uint32_t query, TopKCollector& col,
            ExcludeCursor& ex) {
    const __m256i q = _mm256_set1_epi32(static_cast<int>(query));
    uint32_t bound = col.bound();
    __m256i vb = _mm256_set1_epi32(static_cast<int>(bound));
    size_t i = begin;
    for (; i + 32 <= end; i += 32) {
        __m256i d[4];
        for (int g = 0; g < 4; ++g) d[g] = popcount_u32x8(_mm256_xor_si256(load32(codes + i + 8 * g), q));
        __m256i any = _mm256_or_si256(
            _mm256_or_si256(_mm256_cmpgt_epi32(vb, d[0]), _mm256_cmpgt_epi32(vb, d[1])),
            _mm256_or_si256(_mm256_cmpgt_epi32(vb, d[2]), _mm256_cmpgt_epi32(vb, d[3])));
        if (_mm256_testz_si256(any, any)) continue;
        alignas(32) uint32_t dist[32];
        for (int g = 0; g < 4; ++g) _mm256_store_si256(reinterpret_cast<__m256i*>(dist + 8 * g), d[g]);
        for (int j = 0; j < 32; ++j) push_if_closer(col, ex, dist[j], static_cast<int64_t>(i + j), bound);
        vb = _mm256_set1_epi32(static_cast<int>(bound));
    }
    scan32_generic(codes, i, end, query, col, ex);
}

// Compact 32-bit codes to byte distances, 32 per iteration: four vectors of
// eight dwords are packed to bytes; the packs interleave 128-bit lanes, which
// one dword permutation undoes.
void fill32(const uint32_t* codes, size_t begin, size_t end, uint32_t query, uint8_t* dist) {
    const __m256i q = _mm256_set1_epi32(static_cast<int>(query));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = begin;
    for (; i + 32 <= end; i += 32) {
        __m256i d0 = popcount_u32x8(_mm256_xor_si256(load32(codes + i), q));
        __m256i d1 = popcount_u32x8(_mm256_xor_si256(load32(codes + i + 8), q));
        __m256i d2 = popcount_u32x8(_mm256_xor_si256(load32(codes + i + 16), q));
        __m256i d3 = popcount_u32x8(_mm256_xor_si256(load32(codes + i + 24), q));
        __m256i w01 = _mm256_packus_epi32(d0, d1);
        __m256i w23 = _mm256_packus_epi32(d2, d3);
        __m256i b = _mm256_packus_epi16(w01, w23);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dist + i), _mm256_permutevar8x32_epi32(b, order));
    }
    fill32_generic(codes, i, end, query, dist);
}

// 64-bit codes to byte distances, 16 per iteration. The packs leave items
// {0,1,4,5,8,9,12,13} in the low lane and the rest in the high lane (at even
// bytes); a byte shuffle, a qword permutation and a final shuffle restore id order.
void fill64(const uint64_t* codes, size_t n, uint64_t query, uint8_t* dist) {
    const __m256i q = _mm256_set1_epi64x(static_cast<long long>(query));
    const __m256i even = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1,
                                          0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m128i order = _mm_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i d0 = popcount_lanes(_mm256_xor_si256(load(codes + i), q));
        __m256i d1 = popcount_lanes(_mm256_xor_si256(load(codes + i + 4), q));
        __m256i d2 = popcount_lanes(_mm256_xor_si256(load(codes + i + 8), q));
        __m256i d3 = popcount_lanes(_mm256_xor_si256(load(codes + i + 12), q));
        __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(d0, d1), _mm256_packus_epi32(d2, d3));
        b = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(b, even), 0x08);  // qwords 0 and 2
        __m128i out = _mm_shuffle_epi8(_mm256_castsi256_si128(b), order);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dist + i), out);
    }
    for (; i < n; ++i) dist[i] = static_cast<uint8_t>(popcount64(codes[i] ^ query));
}

void fill_bytes(const uint64_t* codes, size_t nwords, size_t n, const uint64_t* query, uint8_t* dist) {
    if (nwords == 1) return fill64(codes, n, query[0], dist);
    fill_distances_bytes(codes, nwords, n, query, dist);
}

void two_pass_bytes(const uint64_t* codes, size_t nwords, size_t n, int nbits, const uint64_t* query,
                    int k, const int64_t* ex_begin, const int64_t* ex_end, uint8_t* dist,
                    uint32_t* hist, int32_t* D, int64_t* I) {
    if (nwords != 1)
        return topk_two_pass_bytes(codes, nwords, n, nbits, query, k, ex_begin, ex_end, dist, hist, D, I);
    fill64(codes, n, query[0], dist);
    select_bytes(dist, n, nbits, k, ex_begin, ex_end, hist, D, I);
}

// select_within (scan_generic.inc) for 64-bit codes: eight distances a step compared
// against thr, and only the items within it written. Cluster windows and MIH runs
// read mostly items beyond the search's bound, where the scalar loop's two stores and
// counter update per item cost more than the vector filter.
size_t select_within_w1(const uint64_t* codes, size_t nwords, size_t begin, size_t end, const uint64_t* query,
                        uint32_t thr, uint32_t* idx, uint32_t* dist) {
    if (nwords != 1) return select_within(codes, nwords, begin, end, query, thr, idx, dist);
    const __m256i q = _mm256_set1_epi64x(static_cast<long long>(query[0]));
    const __m256i t = _mm256_set1_epi64x(static_cast<long long>(thr));
    size_t cnt = 0, i = begin;
    for (; i + 8 <= end; i += 8) {
        const __m256i d0 = popcount_lanes(_mm256_xor_si256(load(codes + i), q));
        const __m256i d1 = popcount_lanes(_mm256_xor_si256(load(codes + i + 4), q));
        const unsigned over =
            static_cast<unsigned>(_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(d0, t)))) |
            (static_cast<unsigned>(_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(d1, t)))) << 4);
        unsigned pass = ~over & 0xffu;
        if (pass == 0) continue;
        alignas(32) uint64_t d[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(d), d0);
        _mm256_store_si256(reinterpret_cast<__m256i*>(d + 4), d1);
        do {
            const unsigned j = static_cast<unsigned>(__builtin_ctz(pass));
            pass &= pass - 1;
            idx[cnt] = static_cast<uint32_t>(i + j);
            dist[cnt] = static_cast<uint32_t>(d[j]);
            ++cnt;
        } while (pass != 0);
    }
    for (; i < end; ++i) {
        const uint32_t d = popcount64(codes[i] ^ query[0]);
        idx[cnt] = static_cast<uint32_t>(i);
        dist[cnt] = d;
        cnt += d <= thr;
    }
    return cnt;
}

// Codes of 2 or 4k words: the vpshufb kernels above, or the popcnt instruction
// word by word (scan_width). Which is faster depends on the core:
// on this project's AMD EPYC, 256-bit codes scan ~20% faster with popcnt (Zen
// retires several per cycle), while Intel cores retire one popcnt per cycle.
// So each width is timed once, on first use, on a block that stays in L1.
using VectorScan = void (*)(const uint64_t*, size_t, size_t, size_t, const uint64_t*, TopKCollector&,
                            ExcludeCursor&);

void popcnt_scan(const uint64_t* codes, size_t nwords, size_t begin, size_t end, const uint64_t* query,
                 TopKCollector& col, ExcludeCursor& ex) {
    switch (nwords) {
        case 2: return scan_width<2>(codes, nwords, begin, end, query, col, ex);
        case 4: return scan_width<4>(codes, nwords, begin, end, query, col, ex);
        case 8: return scan_width<8>(codes, nwords, begin, end, query, col, ex);
        default: return scan_width<0>(codes, nwords, begin, end, query, col, ex);
    }
}

double time_scan(VectorScan fn, const std::vector<uint64_t>& codes, size_t nwords, size_t n) {
    TopKCollector col(10, static_cast<int>(64 * nwords));
    ExcludeCursor none;
    double best = 1e300;
    for (int rep = 0; rep < 5; ++rep) {
        col.reset();
        auto t0 = std::chrono::steady_clock::now();
        for (int pass = 0; pass < 4; ++pass) fn(codes.data(), nwords, 0, n, codes.data() + (pass + 1) * nwords, col, none);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
}

bool popcnt_is_faster(VectorScan vector_fn, size_t nwords) {
    static std::atomic<int> verdict[65];  // per width: 0 untimed, 1 vector, 2 popcnt (static: zeroed)
    const int forced = wide_popcount_mode();
    if (forced != 0) return forced == 2;
    int v = verdict[nwords].load(std::memory_order_relaxed);
    if (v == 0) {
        const size_t n = std::max<size_t>(256, (16 << 10) / (8 * nwords));  // 16 KiB of codes
        std::vector<uint64_t> codes(n * nwords);
        uint64_t x = 0x9E3779B97F4A7C15ull;
        for (uint64_t& c : codes) {  // an LCG step, then its high bits folded in
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            c = x ^ (x >> 29);
        }
        time_scan(vector_fn, codes, nwords, n);  // warm the caches
        double tv = time_scan(vector_fn, codes, nwords, n), tp = time_scan(&popcnt_scan, codes, nwords, n);
        v = tp < 0.95 * tv ? 2 : 1;  // popcnt only for a clear win
        verdict[nwords].store(v, std::memory_order_relaxed);
    }
    return v == 2;
}

void scan(const uint64_t* codes, size_t nwords, size_t begin, size_t end, const uint64_t* query,
          TopKCollector& col, ExcludeCursor& ex) {
    if (nwords == 1) return scan_w1(codes, nwords, begin, end, query, col, ex);
    if (nwords == 2) {
        if (popcnt_is_faster(&scan_w2, 2)) return scan_width<2>(codes, nwords, begin, end, query, col, ex);
        return scan_w2(codes, nwords, begin, end, query, col, ex);
    }
    if (nwords % 4 == 0 && nwords <= 64) {
        if (popcnt_is_faster(&scan_w4x, nwords)) return popcnt_scan(codes, nwords, begin, end, query, col, ex);
        return scan_w4x(codes, nwords, begin, end, query, col, ex);
    }
    return scan_generic(codes, nwords, begin, end, query, col, ex);
}

}  // namespace

Kernels avx2_kernels() {
    Kernels k;
    k.scan = &scan;
    k.two_pass = &topk_two_pass;
    k.two_pass_bytes = &two_pass_bytes;
    k.scan32 = &scan32;
    k.fill32 = &fill32;
    k.select_bytes = &select_bytes;
    k.inner_products = &inner_products;
    k.select_within = &select_within_w1;
    k.select_within32 = &select_within32;
    k.select_within_packed = &select_within_packed;
    k.fill_bytes = &fill_bytes;
    return k;
}

}  // namespace hashsearch
#pragma GCC pop_options

#else
namespace hashsearch {
Kernels avx2_kernels() { return scalar_kernels(); }
}  // namespace hashsearch
#endif
