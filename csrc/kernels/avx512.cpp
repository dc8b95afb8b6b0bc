// AVX-512 kernels (F + BW + VPOPCNTDQ): vpopcntq gives eight 64-bit lane
// counts per instruction; compare masks select the rare survivors.
// GCC 12's AVX-512 headers initialise placeholder vectors from themselves (`__Y = __Y`),
// which -Wmaybe-uninitialized reports at every inlined use (GCC bug 105593), hundreds of
// lines a build; the state must be set before the header is read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#if defined(HASHSEARCH_EMULATE_AVX512)
#include "avx512_emulation.h"
#elif defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels.h"

#if defined(HASHSEARCH_EMULATE_AVX512) || defined(__x86_64__) || defined(__i386__)
#if !defined(HASHSEARCH_EMULATE_AVX512)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vpopcntdq,avx2,popcnt")
#endif

namespace hashsearch {
namespace {

inline uint32_t popcount64(uint64_t x) { return static_cast<uint32_t>(__builtin_popcountll(x)); }

#if !defined(HASHSEARCH_EMULATE_AVX512)  // SIMDe's vectors are not GCC's: the generic loader there
#define HS_HAVE_LOAD_F32X4_AS_F64
inline __m256d load_f32x4_as_f64(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
#endif
// select_bytes' pass over the items closer than t: 64 bytes compared at once, and each
// 16 of them turned into ids by one compress (branch-free: 13% of ML-1M's items pass
// at k=500, too many for a loop over set bits to predict).
#define HS_HAVE_SELECT_BELOW
size_t select_below(const uint8_t* dist, size_t n, uint8_t t, uint32_t* sel) {
    const __m512i tv = _mm512_set1_epi8(static_cast<char>(t));
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i sixteen = _mm512_set1_epi32(16);
    size_t nsel = 0, i = 0;
    for (; i + 64 <= n; i += 64) {
        const uint64_t m = _mm512_cmplt_epu8_mask(_mm512_loadu_si512(reinterpret_cast<const void*>(dist + i)), tv);
        if (m == 0) continue;
        __m512i ids = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(i)), iota);
        for (int c = 0; c < 4; ++c, ids = _mm512_add_epi32(ids, sixteen)) {
            const __mmask16 mc = static_cast<__mmask16>(m >> (16 * c));
            _mm512_storeu_si512(reinterpret_cast<void*>(sel + nsel), _mm512_maskz_compress_epi32(mc, ids));
            nsel += static_cast<size_t>(__builtin_popcount(mc));
        }
    }
    for (; i < n; ++i) {
        sel[nsel] = static_cast<uint32_t>(i);
        nsel += dist[i] < t;
    }
    return nsel;
}
#include "scan_generic.inc"

inline __m512i load(const uint64_t* p) { return _mm512_loadu_si512(reinterpret_cast<const void*>(p)); }

inline void offer(__m512i d, __mmask8 mask, const int* order, size_t base, TopKCollector& col,
                  ExcludeCursor& ex, uint32_t& bound) {
    alignas(64) uint64_t dist[8];
    _mm512_store_si512(reinterpret_cast<void*>(dist), d);
    // Only the set lanes, in lane order (ids non-decreasing in every caller's order).
    for (unsigned bits = mask; bits != 0; bits &= bits - 1) {
        const int j = __builtin_ctz(bits);
        push_if_closer(col, ex, static_cast<uint32_t>(dist[j]), static_cast<int64_t>(base + order[j]), bound);
    }
}

// The one-vector scans' item loop: steps of Step items from `begin` while a whole step
// fits before `stop`; distances(i) returns a step's distances (lane j: item
// i + order[j]; only the lanes of `lanes` hold one), and a step with any below the bound
// is offered. Returns where the steps end; the caller scans the rest.
template <size_t Step, class Distances>
inline size_t scan_steps(size_t begin, size_t stop, __mmask8 lanes, const int* order, TopKCollector& col,
                         ExcludeCursor& ex, Distances&& distances) {
    uint32_t bound = col.bound();
    __m512i vb = _mm512_set1_epi64(bound);
    size_t i = begin;
    for (; i + Step <= stop; i += Step) {
        const __m512i d = distances(i);
        const __mmask8 m = _mm512_cmplt_epu64_mask(d, vb) & lanes;
        if (m) {
            offer(d, m, order, i, col, ex, bound);
            vb = _mm512_set1_epi64(bound);
        }
    }
    return i;
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
    scan_width<1>(codes, nwords, i, end, query, col, ex);
}

// 128-bit codes: four items per vector; each item's two word counts are
// added across the 128-bit lane, leaving its distance in the even lane.
void scan_w2(const uint64_t* codes, size_t nwords, size_t begin, size_t end,
             const uint64_t* query, TopKCollector& col, ExcludeCursor& ex) {
    static const int order[8] = {0, 0, 1, 1, 2, 2, 3, 3};
    const __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(query)));
    const size_t i = scan_steps<4>(begin, end, 0x55, order, col, ex, [&](size_t i) {
        const __m512i p = _mm512_popcnt_epi64(_mm512_xor_si512(load(codes + 2 * i), q));
        return _mm512_add_epi64(p, _mm512_shuffle_epi32(p, _MM_PERM_BADC));
    });
    scan_width<2>(codes, nwords, i, end, query, col, ex);
}

// Eight items' distances in one vector, from s[j] = the lane counts of item
// j (its distance is the sum of s[j]'s eight lanes): pairs of lanes are added
// within 128-bit lanes, then 128-bit lanes are paired twice.
inline __m512i sum_lanes8(const __m512i* s) {
    __m512i a[4];
    for (int j = 0; j < 4; ++j)
        a[j] = _mm512_add_epi64(_mm512_unpacklo_epi64(s[2 * j], s[2 * j + 1]),
                                _mm512_unpackhi_epi64(s[2 * j], s[2 * j + 1]));
    // a[j] 128-bit lane L: (item 2j, item 2j+1) partial sums of their lanes 2L, 2L+1.
    // 0x88 takes lanes (0, 2) of each source, 0xDD lanes (1, 3).
    __m512i b0 = _mm512_add_epi64(_mm512_shuffle_i32x4(a[0], a[1], 0x88), _mm512_shuffle_i32x4(a[0], a[1], 0xDD));
    __m512i b1 = _mm512_add_epi64(_mm512_shuffle_i32x4(a[2], a[3], 0x88), _mm512_shuffle_i32x4(a[2], a[3], 0xDD));
    return _mm512_add_epi64(_mm512_shuffle_i32x4(b0, b1, 0x88), _mm512_shuffle_i32x4(b0, b1, 0xDD));
}

// 256-bit codes: eight items from four vectors of two; lane sums as in
// sum_lanes8 (one pairing fewer), then a lane permutation to item order.
inline __m512i distances_w4(const uint64_t* p, __m512i q) {
    __m512i v[4];
    for (int g = 0; g < 4; ++g) v[g] = _mm512_popcnt_epi64(_mm512_xor_si512(load(p + 8 * g), q));
    // a 128-bit lane L: (item 2g+L/2 of v[g], the same of v[g+1]) partial sums.
    __m512i a0 = _mm512_add_epi64(_mm512_unpacklo_epi64(v[0], v[1]), _mm512_unpackhi_epi64(v[0], v[1]));
    __m512i a1 = _mm512_add_epi64(_mm512_unpacklo_epi64(v[2], v[3]), _mm512_unpackhi_epi64(v[2], v[3]));
    __m512i d = _mm512_add_epi64(_mm512_shuffle_i32x4(a0, a1, 0x88), _mm512_shuffle_i32x4(a0, a1, 0xDD));
    // Lanes now hold items {0, 2, 1, 3, 4, 6, 5, 7}.
    return _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 1, 3, 4, 6, 5, 7), d);
}

// 128-bit codes: eight items from two vectors of four; each item's two word
// counts are added into its even lane, and the even lanes gathered in order.
inline __m512i distances_w2(const uint64_t* p, __m512i q) {
    __m512i a = _mm512_popcnt_epi64(_mm512_xor_si512(load(p), q));
    __m512i b = _mm512_popcnt_epi64(_mm512_xor_si512(load(p + 8), q));
    a = _mm512_add_epi64(a, _mm512_shuffle_epi32(a, _MM_PERM_BADC));
    b = _mm512_add_epi64(b, _mm512_shuffle_epi32(b, _MM_PERM_BADC));
    return _mm512_permutex2var_epi64(a, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), b);
}

// 129-192-bit codes: eight items are 24 words, three vectors; word w of item j is
// lane 3j + w of the three together. The query repeated the same way (q3[0..2]),
// then each item's three word counts are gathered into lane j and added.
inline void query_w3(const uint64_t* query, __m512i* q3) {
    const long long a = static_cast<long long>(query[0]), b = static_cast<long long>(query[1]),
                    c = static_cast<long long>(query[2]);
    q3[0] = _mm512_setr_epi64(a, b, c, a, b, c, a, b);
    q3[1] = _mm512_setr_epi64(c, a, b, c, a, b, c, a);
    q3[2] = _mm512_setr_epi64(b, c, a, b, c, a, b, c);
}

inline __m512i distances_w3(const uint64_t* p, const __m512i* q3) {
    const __m512i v0 = _mm512_popcnt_epi64(_mm512_xor_si512(load(p), q3[0]));
    const __m512i v1 = _mm512_popcnt_epi64(_mm512_xor_si512(load(p + 8), q3[1]));
    const __m512i v2 = _mm512_popcnt_epi64(_mm512_xor_si512(load(p + 16), q3[2]));
    // Word w of item j is lane 3j + w: below 16 from (v0, v1), the rest from v2.
    __m512i w0 = _mm512_permutex2var_epi64(v0, _mm512_setr_epi64(0, 3, 6, 9, 12, 15, 0, 0), v1);
    __m512i w1 = _mm512_permutex2var_epi64(v0, _mm512_setr_epi64(1, 4, 7, 10, 13, 0, 0, 0), v1);
    __m512i w2 = _mm512_permutex2var_epi64(v0, _mm512_setr_epi64(2, 5, 8, 11, 14, 0, 0, 0), v1);
    w0 = _mm512_mask_permutexvar_epi64(w0, 0xC0, _mm512_setr_epi64(0, 0, 0, 0, 0, 0, 2, 5), v2);
    w1 = _mm512_mask_permutexvar_epi64(w1, 0xE0, _mm512_setr_epi64(0, 0, 0, 0, 0, 0, 3, 6), v2);
    w2 = _mm512_mask_permutexvar_epi64(w2, 0xE0, _mm512_setr_epi64(0, 0, 0, 0, 0, 1, 4, 7), v2);
    return _mm512_add_epi64(_mm512_add_epi64(w0, w1), w2);
}

// Codes of 5+ words: one vector per item and 512 bits, eight items a step. The last
// nwords % 8 words (`tail` lanes) are read with a full load whose other lanes fall in
// the next row and are cleared by the masked xor (masked loads were up to 1.2x slower
// on Zen 5, and SIMDe 0.7 lacks them), so callers stop a row short of the end of the
// codes: see many_words_end. The query's tail is copied out once.
struct ManyWords {
    size_t full;     // words in whole vectors (nwords rounded down to 8)
    __mmask8 tail;   // lanes of the last, partial vector (0: none)
    __m512i q_tail;  // the query's words there
};

inline ManyWords many_words(size_t nwords, const uint64_t* query) {
    ManyWords m;
    m.full = nwords & ~size_t{7};
    m.tail = static_cast<__mmask8>((1u << (nwords % 8)) - 1);
    alignas(64) uint64_t q[8] = {};
    std::memcpy(q, query + m.full, (nwords % 8) * sizeof(uint64_t));
    m.q_tail = _mm512_load_si512(reinterpret_cast<const void*>(q));
    return m;
}

// Items before this take the eight-a-step path (the tail's load reads into the next row).
inline size_t many_words_end(const ManyWords& m, size_t end) { return m.tail && end > 0 ? end - 1 : end; }

// Calls fn(std::integral_constant<size_t, W>) with W = nwords for codes of 5 to 16
// words (up to 1,024 bits), else W = 0. Compiled for each width, the loops below
// unroll and keep their sums in registers: with nwords known only at run time they
// took 1.5-2x as long (5-8 words, Zen 5).
template <class Fn>
auto with_words(size_t nwords, Fn&& fn) {
    switch (nwords) {
        case 5: return fn(std::integral_constant<size_t, 5>{});
        case 6: return fn(std::integral_constant<size_t, 6>{});
        case 7: return fn(std::integral_constant<size_t, 7>{});
        case 8: return fn(std::integral_constant<size_t, 8>{});
        case 9: return fn(std::integral_constant<size_t, 9>{});
        case 10: return fn(std::integral_constant<size_t, 10>{});
        case 11: return fn(std::integral_constant<size_t, 11>{});
        case 12: return fn(std::integral_constant<size_t, 12>{});
        case 13: return fn(std::integral_constant<size_t, 13>{});
        case 14: return fn(std::integral_constant<size_t, 14>{});
        case 15: return fn(std::integral_constant<size_t, 15>{});
        case 16: return fn(std::integral_constant<size_t, 16>{});
        default: return fn(std::integral_constant<size_t, 0>{});
    }
}

// W: the words per code when known at compile time (0: nwords).
template <size_t W>
inline __m512i distances_many(const uint64_t* p, size_t nwords, const uint64_t* query, const ManyWords& m) {
    const size_t nw = W ? W : nwords, full = W ? (W & ~size_t{7}) : m.full;
    const bool tail = W ? W % 8 != 0 : m.tail != 0;
    __m512i s[8];
    for (int j = 0; j < 8; ++j) {
        const uint64_t* c = p + j * nw;
        __m512i acc = _mm512_setzero_si512();
        for (size_t v = 0; v < full; v += 8)
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(load(c + v), load(query + v))));
        if (tail) acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_maskz_xor_epi64(m.tail, load(c + full), m.q_tail)));
        s[j] = acc;
    }
    return sum_lanes8(s);
}

// Codes of 3+ words: eight items' distances a step, in item order (W as above).
template <size_t W>
void scan_wide(const uint64_t* codes, size_t nwords, size_t begin, size_t end,
               const uint64_t* query, TopKCollector& col, ExcludeCursor& ex) {
    static const int order[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    const __m512i q4 =
        nwords == 4 ? _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(query))) : __m512i{};
    __m512i q3[3];
    if (nwords == 3) query_w3(query, q3);
    const ManyWords many = nwords > 4 ? many_words(nwords, query) : ManyWords{};  // no tail: stop = end
    const size_t stop = many_words_end(many, end);
    const size_t i = scan_steps<8>(begin, stop, 0xFF, order, col, ex, [&](size_t i) {
        const uint64_t* p = codes + i * nwords;
        return nwords == 3   ? distances_w3(p, q3)
               : nwords == 4 ? distances_w4(p, q4)
                             : distances_many<W>(p, nwords, query, many);
    });
    scan_generic(codes, nwords, i, end, query, col, ex);
}

void scan(const uint64_t* codes, size_t nwords, size_t begin, size_t end, const uint64_t* query,
          TopKCollector& col, ExcludeCursor& ex) {
    if (nwords == 1) return scan_w1(codes, nwords, begin, end, query, col, ex);
    if (nwords == 2) return scan_w2(codes, nwords, begin, end, query, col, ex);
    if (nwords == 3) return scan_wide<3>(codes, nwords, begin, end, query, col, ex);
    if (nwords == 4) return scan_wide<4>(codes, nwords, begin, end, query, col, ex);
    return with_words(nwords, [&](auto w) { scan_wide<decltype(w)::value>(codes, nwords, begin, end, query, col, ex); });
}

inline __m512i load32(const uint32_t* p) { return _mm512_loadu_si512(reinterpret_cast<const void*>(p)); }

// Compact 32-bit codes: 64 items per iteration, 16 per vector (vpopcntd).
void scan32(const uint32_t* codes, size_t begin, size_t end, uint32_t query, TopKCollector& col,
            ExcludeCursor& ex) {
    const __m512i q = _mm512_set1_epi32(static_cast<int>(query));
    uint32_t bound = col.bound();
    __m512i vb = _mm512_set1_epi32(static_cast<int>(bound));
    size_t i = begin;
    for (; i + 64 <= end; i += 64) {
        __m512i d[4];
        __mmask16 m[4];
        for (int g = 0; g < 4; ++g) {
            d[g] = _mm512_popcnt_epi32(_mm512_xor_si512(load32(codes + i + 16 * g), q));
            m[g] = _mm512_cmplt_epu32_mask(d[g], vb);
        }
        if (!(m[0] | m[1] | m[2] | m[3])) continue;
        for (int g = 0; g < 4; ++g) {  // in id order; the bound tightens as items enter
            if (!m[g]) continue;
            alignas(64) uint32_t dist[16];
            _mm512_store_si512(reinterpret_cast<void*>(dist), d[g]);
            for (unsigned bits = m[g]; bits != 0; bits &= bits - 1) {
                const int j = __builtin_ctz(bits);
                push_if_closer(col, ex, dist[j], static_cast<int64_t>(i + 16 * g + j), bound);
            }
        }
        vb = _mm512_set1_epi32(static_cast<int>(bound));
    }
    scan32_generic(codes, i, end, query, col, ex);
}

// Compact 32-bit codes to byte distances, 16 per vector (vpmovdb narrows them).
void fill32(const uint32_t* codes, size_t begin, size_t end, uint32_t query, uint8_t* dist) {
    const __m512i q = _mm512_set1_epi32(static_cast<int>(query));
    size_t i = begin;
    for (; i + 16 <= end; i += 16) {
        const __m512i d = _mm512_popcnt_epi32(_mm512_xor_si512(load32(codes + i), q));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dist + i), _mm512_cvtepi32_epi8(d));
    }
    fill32_generic(codes, i, end, query, dist);
}

// Eight 64-bit lanes as bytes; Capped: each at most 254 first (codes of 255+ bits).
template <bool Capped>
inline void store8(uint8_t* dst, __m512i d) {
    if (Capped) d = _mm512_min_epu64(d, _mm512_set1_epi64(254));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm512_cvtepi64_epi8(d));
}

// fill_bytes for codes of 5+ words, up to the items it returns (W as in distances_many).
template <bool Capped, size_t W>
size_t fill_many_w(const uint64_t* codes, size_t nwords, size_t n, const uint64_t* query, uint8_t* dist) {
    const ManyWords many = many_words(nwords, query);
    size_t i = 0;
    for (const size_t stop = many_words_end(many, n); i + 8 <= stop; i += 8)
        store8<Capped>(dist + i, distances_many<W>(codes + i * nwords, nwords, query, many));
    return i;
}

template <bool Capped>
size_t fill_many(const uint64_t* codes, size_t nwords, size_t n, const uint64_t* query, uint8_t* dist) {
    return with_words(nwords, [&](auto w) { return fill_many_w<Capped, decltype(w)::value>(codes, nwords, n, query, dist); });
}

// Byte distances, eight items a step (Capped:
// min(distance, 254), for codes of 255+ bits; other widths only below 255 bits).
template <bool Capped = false>
void fill_bytes(const uint64_t* codes, size_t nwords, size_t n, const uint64_t* query, uint8_t* dist) {
    size_t i = 0;
    if (nwords == 1) {
        const __m512i q = _mm512_set1_epi64(static_cast<long long>(query[0]));
        for (; i + 8 <= n; i += 8) store8<Capped>(dist + i, _mm512_popcnt_epi64(_mm512_xor_si512(load(codes + i), q)));
    } else if (nwords == 2) {
        const __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(query)));
        for (; i + 8 <= n; i += 8) store8<Capped>(dist + i, distances_w2(codes + 2 * i, q));
    } else if (nwords == 3) {
        __m512i q3[3];
        query_w3(query, q3);
        for (; i + 8 <= n; i += 8) store8<Capped>(dist + i, distances_w3(codes + 3 * i, q3));
    } else if (nwords == 4) {
        const __m512i q4 = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(query)));
        for (; i + 8 <= n; i += 8) store8<Capped>(dist + i, distances_w4(codes + 4 * i, q4));
    } else {
        i = fill_many<Capped>(codes, nwords, n, query, dist);
    }
    for (const uint64_t* p = codes + i * nwords; i < n; ++i, p += nwords) {
        uint32_t d = 0;
        for (size_t w = 0; w < nwords; ++w) d += popcount64(p[w] ^ query[w]);
        dist[i] = static_cast<uint8_t>(Capped ? std::min<uint32_t>(d, 254) : d);
    }
}

// Top-k for codes of 255-512 bits (4 to 8 words): byte distances capped at 254
// and the byte select over them; a query whose top k reaches the cap (its k-th
// distance is then 254 or more: few items left, or codes far from it) is done
// again by the exact uint16 two-pass. `dist` (n uint16) holds the bytes first.
// Longer codes go straight to the exact pass: their k-th distances pass the
// cap often (6,039 ML-1M users, 1,024-bit learned-like codes: 86 ms capped
// against 52 ms exact; 256 bits: 12 against 35 ms).
void two_pass_capped(const uint64_t* codes, size_t nwords, size_t n, int nbits, const uint64_t* query, int k,
                     const int64_t* ex_begin, const int64_t* ex_end, uint16_t* dist, uint32_t* hist, int32_t* D,
                     int64_t* I) {
    if (nbits < 255 || nbits > 512)
        return topk_two_pass(codes, nwords, n, nbits, query, k, ex_begin, ex_end, dist, hist, D, I);
    uint8_t* dist8 = reinterpret_cast<uint8_t*>(dist);
    fill_bytes<true>(codes, nwords, n, query, dist8);
    select_bytes(dist8, n, 254, k, ex_begin, ex_end, hist, D, I);
    for (int r = 0; r < k; ++r)
        if (D[r] == 254) return topk_two_pass(codes, nwords, n, nbits, query, k, ex_begin, ex_end, dist, hist, D, I);
}

void two_pass_bytes(const uint64_t* codes, size_t nwords, size_t n, int nbits, const uint64_t* query,
                    int k, const int64_t* ex_begin, const int64_t* ex_end, uint8_t* dist,
                    uint32_t* hist, int32_t* D, int64_t* I) {
    fill_bytes<false>(codes, nwords, n, query, dist);
    select_bytes(dist, n, nbits, k, ex_begin, ex_end, hist, D, I);
}

// Appends the items among base + [0, 8) whose distance in `d` is at most thr.
inline size_t append_within(__m512i d, __m512i t, size_t base, uint32_t* idx, uint32_t* dist, size_t cnt) {
    unsigned pass = _mm512_cmple_epu64_mask(d, t);
    if (pass == 0) return cnt;
    alignas(64) uint64_t dd[8];
    _mm512_store_si512(reinterpret_cast<void*>(dd), d);
    do {
        const unsigned j = static_cast<unsigned>(__builtin_ctz(pass));
        pass &= pass - 1;
        idx[cnt] = static_cast<uint32_t>(base + j);
        dist[cnt] = static_cast<uint32_t>(dd[j]);
        ++cnt;
    } while (pass != 0);
    return cnt;
}

// select_within for codes of 5+ words, up to the item it returns (W as in distances_many).
template <size_t W>
size_t select_many(const uint64_t* codes, size_t nwords, size_t begin, size_t end, const uint64_t* query,
                   __m512i t, uint32_t* idx, uint32_t* dist, size_t& cnt) {
    const ManyWords many = many_words(nwords, query);
    size_t i = begin;
    for (const size_t stop = many_words_end(many, end); i + 8 <= stop; i += 8)
        cnt = append_within(distances_many<W>(codes + i * nwords, nwords, query, many), t, i, idx, dist, cnt);
    return i;
}

// select_within (scan_generic.inc) eight items a step: only those within thr are
// written (MIH runs and cluster windows read mostly others).
size_t select_within_vec(const uint64_t* codes, size_t nwords, size_t begin, size_t end, const uint64_t* query,
                         uint32_t thr, uint32_t* idx, uint32_t* dist) {
    const __m512i t = _mm512_set1_epi64(static_cast<long long>(thr));
    size_t cnt = 0, i = begin;
    if (nwords == 1) {
        const __m512i q = _mm512_set1_epi64(static_cast<long long>(query[0]));
        for (; i + 8 <= end; i += 8)
            cnt = append_within(_mm512_popcnt_epi64(_mm512_xor_si512(load(codes + i), q)), t, i, idx, dist, cnt);
    } else if (nwords == 2) {
        const __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(query)));
        for (; i + 8 <= end; i += 8) cnt = append_within(distances_w2(codes + 2 * i, q), t, i, idx, dist, cnt);
    } else if (nwords == 3) {
        __m512i q3[3];
        query_w3(query, q3);
        for (; i + 8 <= end; i += 8) cnt = append_within(distances_w3(codes + 3 * i, q3), t, i, idx, dist, cnt);
    } else if (nwords == 4) {
        const __m512i q4 = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(query)));
        for (; i + 8 <= end; i += 8) cnt = append_within(distances_w4(codes + 4 * i, q4), t, i, idx, dist, cnt);
    } else {
        i = with_words(nwords, [&](auto w) {
            return select_many<decltype(w)::value>(codes, nwords, begin, end, query, t, idx, dist, cnt);
        });
    }
    return cnt + select_within(codes, nwords, i, end, query, thr, idx + cnt, dist + cnt);
}

}  // namespace

Kernels avx512_kernels() {
    Kernels k;
    k.scan = &scan;
    k.two_pass = &two_pass_capped;
    k.two_pass_bytes = &two_pass_bytes;
    k.scan32 = &scan32;
    k.fill32 = &fill32;
    k.select_bytes = &select_bytes;
    k.inner_products = &inner_products;
    k.select_within = &select_within_vec;
    k.select_within32 = &select_within32;
    k.select_within_packed = &select_within_packed;
    k.fill_bytes = &fill_bytes<false>;
    k.two_pass_wide_words = 0x1FCu;  // 2 to 8 words
    return k;
}

}  // namespace hashsearch
#if !defined(HASHSEARCH_EMULATE_AVX512)
#pragma GCC pop_options
#endif

#else
namespace hashsearch {
Kernels avx512_kernels() { return scalar_kernels(); }
}  // namespace hashsearch
#endif
