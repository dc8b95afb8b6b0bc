// Hamming distance of two codes, for the index files (built without -mpopcnt); the
// kernels (kernels/) have their own.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/popcount.h"

namespace hashsearch {

// Hamming distance of two codes of nw words.
inline uint32_t hamming(const uint64_t* a, const uint64_t* b, size_t nw) {
    size_t d = 0;
    for (size_t w = 0; w < nw; ++w) d += swar_popcount(a[w] ^ b[w]);
    return static_cast<uint32_t>(d);
}

}  // namespace hashsearch
