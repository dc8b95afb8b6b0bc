// The kernel table: the distance scans and selections every index is built on, one
// implementation per SIMD level, chosen at run time (simd.h, dispatch.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include "topk.h"

namespace hashsearch {

// Scans items [begin, end) (each `nwords` uint64 words) for one query and
// pushes every item with distance < col.bound() that is not excluded.
using ScanFn = void (*)(const uint64_t* codes, size_t nwords, size_t begin, size_t end,
                        const uint64_t* query, TopKCollector& col, ExcludeCursor& ex);

// Exact top-k of items [0, n) by computing every distance first (see
// scan_generic.inc); for lists short enough that the buffer stays in cache.
using TwoPassFn = void (*)(const uint64_t* codes, size_t nwords, size_t n, int nbits,
                           const uint64_t* query, int k, const int64_t* ex_begin,
                           const int64_t* ex_end, uint16_t* dist, uint32_t* hist, int32_t* D,
                           int64_t* I);

// The same for codes of fewer than 255 bits, distances held in bytes;
// `hist` needs nbits + 2 + k + kSelectSlack entries (see select_bytes).
using TwoPassBytesFn = void (*)(const uint64_t* codes, size_t nwords, size_t n, int nbits,
                                const uint64_t* query, int k, const int64_t* ex_begin,
                                const int64_t* ex_end, uint8_t* dist, uint32_t* hist, int32_t* D,
                                int64_t* I);

// Codes of at most 32 bits are stored as uint32, one per item, halving memory
// traffic; these mirror the functions above for that layout.
using Scan32Fn = void (*)(const uint32_t* codes, size_t begin, size_t end, uint32_t query,
                          TopKCollector& col, ExcludeCursor& ex);
using Fill32Fn = void (*)(const uint32_t* codes, size_t begin, size_t end, uint32_t query,
                          uint8_t* dist);
using SelectBytesFn = void (*)(uint8_t* dist, size_t n, int nbits, int k, const int64_t* ex_begin,
                               const int64_t* ex_end, uint32_t* hist, int32_t* D, int64_t* I);

// Items of [begin, end) within distance thr: indices and distances, returns the count.
using SelectWithinFn = size_t (*)(const uint64_t* codes, size_t nwords, size_t begin, size_t end,
                                  const uint64_t* query, uint32_t thr, uint32_t* idx, uint32_t* dist);
using SelectWithin32Fn = size_t (*)(const uint32_t* codes, size_t begin, size_t end, uint32_t query,
                                    uint32_t thr, uint32_t* idx, uint32_t* dist);
using SelectWithinPackedFn = size_t (*)(const uint8_t* bytes, size_t width, size_t begin, size_t end,
                                        uint64_t query, uint32_t base, uint32_t thr, uint32_t* idx,
                                        uint32_t* dist);

// Hamming distances of items [0, n) (nwords words each) to the query, as bytes (nbits < 255).
using FillBytesFn = void (*)(const uint64_t* codes, size_t nwords, size_t n, const uint64_t* query,
                             uint8_t* dist);

using InnerProductsFn = void (*)(const float* emb, size_t dim, const int64_t* ids, size_t count,
                                 const float* query, double* out);

// One SIMD level's kernels; each level's file fills it member by member.
struct Kernels {
    ScanFn scan = nullptr;
    TwoPassFn two_pass = nullptr;
    TwoPassBytesFn two_pass_bytes = nullptr;
    Scan32Fn scan32 = nullptr;
    Fill32Fn fill32 = nullptr;
    SelectBytesFn select_bytes = nullptr;
    InnerProductsFn inner_products = nullptr;
    SelectWithinFn select_within = nullptr;
    SelectWithin32Fn select_within32 = nullptr;
    SelectWithinPackedFn select_within_packed = nullptr;
    FillBytesFn fill_bytes = nullptr;
    // Bit w set: this level's two-pass for w-word codes fills byte distances with
    // vector code, cheap enough to beat the tiled scan on up to 2^16 items of that
    // width even when their codes outgrow L2 (AVX-512: 2 to 8 words; on Zen 5,
    // 40,981 items of 96-256 bits 1.6-3x; of 5-7 words about even with the scan).
    uint32_t two_pass_wide_words = 0;
};

// One table per SIMD level, each in its own translation unit (scalar.cpp, avx2.cpp,
// avx512.cpp); a level this build or CPU lacks returns the scalar table.
Kernels scalar_kernels();
Kernels avx2_kernels();
Kernels avx512_kernels();
// The table of the level in use (current_simd_level(), see dispatch.cpp).
Kernels active_kernels();

}  // namespace hashsearch
