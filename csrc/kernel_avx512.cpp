// AVX-512 kernels (F + BW + VPOPCNTDQ): vpopcntq gives eight 64-bit lane
// counts per instruction; compare masks select the rare survivors.
#if defined(HASHSEARCH_EMULATE_AVX512)
#include "avx512_emulation.h"
#elif defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "topk.h"

#if defined(HASHSEARCH_EMULATE_AVX512) || defined(__x86_64__) || defined(__i386__)
#if !defined(HASHSEARCH_EMULATE_AVX512)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vpopcntdq,avx2,popcnt")
#endif

namespace hashsearch {
namespace {

inline uint32_t popcount64(uint64_t x) { return static_cast<uint32_t>(__builtin_popcountll(x)); }

#include "scan_generic.inc"

inline __m512i load(const uint64_t* p) { return _mm512_loadu_si512(reinterpret_cast<const void*>(p)); }

inline void offer(__m512i d, __mmask8 mask, const int* order, size_t base, TopKCollector& col,
                  ExcludeCursor& ex, uint32_t& bound) {
    alignas(64) uint64_t dist[8];
    _mm512_store_si512(reinterpret_cast<void*>(dist), d);
    for (int j = 0; j < 8; ++j) {
        if (!((mask >> j) & 1)) continue;
        int64_t id = static_cast<int64_t>(base + order[j]);
        uint32_t dj = static_cast<uint32_t>(dist[j]);
        if (dj < bound && !ex.excluded(id)) {
            col.push(dj, id);
            bound = col.bound();
        }
    }
}

void scan_w1(const uint64_t* codes, size_t nwords, size_t begin, size_t end,
             const uint64_t* query, TopKCollector& col, ExcludeCursor& ex) {
    static const int order[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    const __m512i q = _mm512_set1_epi64(static_cast<long long>(query[0]));
    uint32_t bound = col.bound();
    __m512i vb = _mm512_set1_epi64(bound);
    size_t i = begin;
    for (; i + 32 <= end; i += 32) {
        __m512i d[4];
        __mmask8 m[4];
        for (int g = 0; g < 4; ++g) {
            d[g] = _mm512_popcnt_epi64(_mm512_xor_si512(load(codes + i + 8 * g), q));
            m[g] = _mm512_cmplt_epu64_mask(d[g], vb);
        }
        if (m[0] | m[1] | m[2] | m[3]) {
            // Items are offered in id order; masks are recomputed against the
            // bound as it tightens.
            for (int g = 0; g < 4; ++g) {
                __mmask8 mg = _mm512_cmplt_epu64_mask(d[g], _mm512_set1_epi64(bound));
                if (mg) offer(d[g], mg, order, i + 8 * g, col, ex, bound);
            }
            vb = _mm512_set1_epi64(bound);
        }
    }
    scan_fixed<1>(codes, nwords, i, end, query, col, ex);
}

// 128-bit codes: four items per vector; each item's two word counts are
// added across the 128-bit lane, leaving its distance in the even lane.
void scan_w2(const uint64_t* codes, size_t nwords, size_t begin, size_t end,
             const uint64_t* query, TopKCollector& col, ExcludeCursor& ex) {
    static const int order[8] = {0, 0, 1, 1, 2, 2, 3, 3};
    const __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(query)));
    uint32_t bound = col.bound();
    __m512i vb = _mm512_set1_epi64(bound);
    size_t i = begin;
    for (; i + 4 <= end; i += 4) {
        __m512i p = _mm512_popcnt_epi64(_mm512_xor_si512(load(codes + 2 * i), q));
        __m512i d = _mm512_add_epi64(p, _mm512_shuffle_epi32(p, _MM_PERM_BADC));
        __mmask8 m = _mm512_cmplt_epu64_mask(d, vb) & 0x55;
        if (m) {
            offer(d, m, order, i, col, ex, bound);
            vb = _mm512_set1_epi64(bound);
        }
    }
    scan_fixed<2>(codes, nwords, i, end, query, col, ex);
}

void scan(const uint64_t* codes, size_t nwords, size_t begin, size_t end, const uint64_t* query,
          TopKCollector& col, ExcludeCursor& ex) {
    if (nwords == 1) return scan_w1(codes, nwords, begin, end, query, col, ex);
    if (nwords == 2) return scan_w2(codes, nwords, begin, end, query, col, ex);
    return scan_generic(codes, nwords, begin, end, query, col, ex);
}

}  // namespace

Kernels avx512_kernels() { return Kernels{&scan, &topk_two_pass, &topk_two_pass_bytes,
                   &scan32_generic, &fill32_generic, &select_bytes,
                   &inner_products, &select_within, &select_within32, &select_within_packed,
                   &fill_distances_bytes}; }

}  // namespace hashsearch
#if !defined(HASHSEARCH_EMULATE_AVX512)
#pragma GCC pop_options
#endif

#else
namespace hashsearch {
Kernels avx512_kernels() { return scalar_kernels(); }
}  // namespace hashsearch
#endif
