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

}  // namespace hashsearch
