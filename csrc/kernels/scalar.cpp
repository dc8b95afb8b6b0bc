// Scalar reference kernels: portable C++, no instruction-set assumptions.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "popcount.h"

namespace hashsearch {
namespace {

inline uint32_t popcount64(uint64_t x) { return swar_popcount(x); }

#include "scan_generic.inc"

}  // namespace

Kernels scalar_kernels() {
    Kernels k;
    k.scan = &scan_generic;
    k.two_pass = &topk_two_pass;
    k.two_pass_bytes = &topk_two_pass_bytes;
    k.scan32 = &scan32_generic;
    k.fill32 = &fill32_generic;
    k.select_bytes = &select_bytes;
    k.inner_products = &inner_products;
    k.select_within = &select_within;
    k.select_within32 = &select_within32;
    k.select_within_packed = &select_within_packed;
    k.fill_bytes = &fill_distances_bytes;
    return k;
}

}  // namespace hashsearch
