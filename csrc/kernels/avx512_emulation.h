// Test builds only (HASHSEARCH_EMULATE_AVX512, set by setup.py when the
// environment variable of that name is 1): the AVX-512 intrinsics of
// kernels/avx512.cpp from SIMDe (Debian's libsimde-dev), portable C++, so the
// kernel's logic (lane order, masks, shuffles) runs and is checked against the
// scalar reference on a CPU without AVX-512. It says nothing about speed.
// SIMDe 0.7.4 lacks the intrinsics below; they are written here from
// Intel's definitions, lane by lane over SIMDe's own vector layout.
#pragma once
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include <cstdint>

#ifndef __AVX512F__
typedef simde__mmask8 __mmask8;
typedef simde__mmask16 __mmask16;
#endif

// VPSHUFD: within each 128-bit lane, 32-bit element i takes element
// (imm >> 2i) & 3 of the same lane.
inline simde__m512i hs_emulated_shuffle_epi32(simde__m512i a, int imm) {
    simde__m512i_private a_ = simde__m512i_to_private(a), r_;
    for (int lane = 0; lane < 4; ++lane)
        for (int i = 0; i < 4; ++i) r_.u32[4 * lane + i] = a_.u32[4 * lane + ((imm >> (2 * i)) & 3)];
    return simde__m512i_from_private(r_);
}
// VPCMPUQ (less than): bit i set when unsigned 64-bit lane i of a < lane i of b.
inline simde__mmask8 hs_emulated_cmplt_epu64_mask(simde__m512i a, simde__m512i b) {
    simde__m512i_private a_ = simde__m512i_to_private(a), b_ = simde__m512i_to_private(b);
    simde__mmask8 m = 0;
    for (int i = 0; i < 8; ++i) m |= static_cast<simde__mmask8>((a_.u64[i] < b_.u64[i] ? 1u : 0u) << i);
    return m;
}
// VPCMPUD (less than): bit i set when unsigned 32-bit lane i of a < lane i of b.
inline simde__mmask16 hs_emulated_cmplt_epu32_mask(simde__m512i a, simde__m512i b) {
    simde__m512i_private a_ = simde__m512i_to_private(a), b_ = simde__m512i_to_private(b);
    simde__mmask16 m = 0;
    for (int i = 0; i < 16; ++i) m |= static_cast<simde__mmask16>((a_.u32[i] < b_.u32[i] ? 1u : 0u) << i);
    return m;
}
// VPMOVDB / VPMOVQB: each 32- or 64-bit lane truncated to its low byte, packed
// into the low bytes of a 128-bit vector (the rest zero).
inline simde__m128i hs_emulated_cvtepi32_epi8(simde__m512i a) {
    simde__m512i_private a_ = simde__m512i_to_private(a);
    simde__m128i_private r_;
    for (int i = 0; i < 16; ++i) r_.u8[i] = static_cast<uint8_t>(a_.u32[i]);
    return simde__m128i_from_private(r_);
}
inline simde__m128i hs_emulated_cvtepi64_epi8(simde__m512i a) {
    simde__m512i_private a_ = simde__m512i_to_private(a);
    simde__m128i_private r_;
    for (int i = 0; i < 16; ++i) r_.u8[i] = i < 8 ? static_cast<uint8_t>(a_.u64[i]) : 0;
    return simde__m128i_from_private(r_);
}
#define _mm512_cmplt_epu32_mask(a, b) hs_emulated_cmplt_epu32_mask(a, b)
#define _mm512_cvtepi32_epi8(a) hs_emulated_cvtepi32_epi8(a)
#define _mm512_cvtepi64_epi8(a) hs_emulated_cvtepi64_epi8(a)
#define _mm512_shuffle_epi32(a, imm) hs_emulated_shuffle_epi32(a, static_cast<int>(imm))
#define _mm512_cmplt_epu64_mask(a, b) hs_emulated_cmplt_epu64_mask(a, b)
// _MM_PERM_ENUM values are the 8-bit immediate spelled as four element
// letters, last element first (BADC = 01 00 11 10b).
#ifndef _MM_PERM_BADC
#define _MM_PERM_BADC 0x4E
#endif
