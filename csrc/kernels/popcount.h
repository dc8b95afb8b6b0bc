// The portable popcount, for code built without -mpopcnt (the index files and the
// scalar kernels), where __builtin_popcountll would be a libgcc call rather than
// inlined; the AVX2 and AVX-512 kernels use the popcnt instruction.
#pragma once
#include <cstdint>

namespace hashsearch {

// Bits set in x (SWAR).
inline uint32_t swar_popcount(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return static_cast<uint32_t>((x * 0x0101010101010101ull) >> 56);
}

}  // namespace hashsearch
