// Run-time SIMD level selection.
#pragma once
#include <string>

namespace hashsearch {

enum class SimdLevel : int { Scalar = 0, AVX2 = 1, AVX512 = 2 };

// Best level this CPU supports.
SimdLevel detect_simd_level();
// Level in use: the best supported, unless HASHSEARCH_SIMD or set_simd_level() forced one.
SimdLevel current_simd_level();
// Forces a level; throws std::invalid_argument if the CPU lacks it.
void set_simd_level(SimdLevel level);
SimdLevel parse_simd_level(const std::string& name);
const char* simd_level_name(SimdLevel level);
// True in a test build whose AVX-512 kernel runs emulated (avx512_emulation.h).
bool avx512_emulated();

// AVX2 scans of 128-bit and 4k-word codes count bits either with vpshufb or
// with the popcnt instruction, each width timed once on first use (0, "auto"),
// unless HASHSEARCH_WIDE_POPCOUNT or set_wide_popcount_mode() forces
// 1 ("vector") or 2 ("popcnt"). Results are identical either way.
int wide_popcount_mode();
void set_wide_popcount_mode(const std::string& name);
// 'auto' (or empty) 0, 'vector' 1, 'popcnt' 2; std::invalid_argument otherwise.
int parse_wide_popcount_mode(const std::string& name);

}  // namespace hashsearch
