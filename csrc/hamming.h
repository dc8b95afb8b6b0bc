// Hamming distance of two codes for the index files built without -mpopcnt (there
// __builtin_popcountll is a library call); the SIMD kernels have their own.
#pragma once
#include <cstddef>
#include <cstdint>

namespace hashsearch {

// Bits set in x (SWAR).
inline size_t swar_popcount(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return static_cast<size_t>((x * 0x0101010101010101ull) >> 56);
}

// Hamming distance of two codes of nw words.
inline uint32_t hamming(const uint64_t* a, const uint64_t* b, size_t nw) {
    size_t d = 0;
    for (size_t w = 0; w < nw; ++w) d += swar_popcount(a[w] ^ b[w]);
    return static_cast<uint32_t>(d);
}

}  // namespace hashsearch
