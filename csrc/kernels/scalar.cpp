// Scalar reference kernels: portable C++, no instruction-set assumptions.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "topk.h"

namespace hashsearch {
namespace {

// SWAR popcount: portable, and unlike __builtin_popcountll without -mpopcnt
// it is inlined rather than a libgcc call.
inline uint32_t popcount64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return static_cast<uint32_t>((x * 0x0101010101010101ULL) >> 56);
}

#include "scan_generic.inc"

}  // namespace

Kernels scalar_kernels() { return Kernels{&scan_generic, &topk_two_pass, &topk_two_pass_bytes,
                   &scan32_generic, &fill32_generic, &select_bytes,
                   &inner_products, &select_within, &select_within32, &select_within_packed,
                   &fill_distances_bytes}; }

}  // namespace hashsearch
