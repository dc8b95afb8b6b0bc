// Multi-index hashing (Norouzi, Punjani & Fleet, "Fast Exact Search in Hamming
// Space with Multi-Index Hashing", TPAMI 2014): exact k-NN in Hamming space.
#pragma once
#include <cstddef>
#include <atomic>
#include <cstdint>
#include <vector>

#include "flat_index.h"

namespace hashsearch {

class MIHIndex {
public:
    // m substrings of nearly equal length; each must be at most 24 bits.
    MIHIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits, int m);

    // Same output as FlatIndex::topk, bit for bit.
    void topk(const uint64_t* queries, size_t nq, int k, const ExcludeList& exclude, int num_threads,
              int32_t* D, int64_t* I) const;

    int m() const { return static_cast<int>(tables_.size()); }
    std::vector<int> substring_bits() const;
    const FlatIndex& flat() const { return flat_; }
    size_t table_bytes() const;
    // Queries answered by the linear-scan fallback since construction (a
    // hint for choosing m; not synchronised across concurrent calls).
    size_t fallback_count() const { return fallbacks_.load(); }
    // Buckets probed and candidates checked since construction.
    size_t probe_count() const { return probes_.load(); }
    size_t candidate_count() const { return candidates_.load(); }

private:
    struct Table {
        int start;
        int bits;
        std::vector<uint32_t> offsets;  // 2^bits + 1 bucket starts into ids
        std::vector<uint32_t> ids;      // item ids, ascending within a bucket
        // For codes of <= 32 bits, the codes themselves in bucket order: candidates
        // are then checked by a sequential scan instead of random reads.
        std::vector<uint32_t> codes32;
    };
    void search_one(const Kernels& kern, const uint64_t* query, int k, const int64_t* ex_begin,
                    const int64_t* ex_end, int32_t* D, int64_t* I, std::vector<uint32_t>& scratch,
                    std::vector<uint8_t>& scratch8,
                    bool& fell_back, size_t& probes, size_t& candidates) const;

    FlatIndex flat_;
    std::vector<Table> tables_;
    mutable std::atomic<size_t> fallbacks_{0};
    mutable std::atomic<size_t> probes_{0};
    mutable std::atomic<size_t> candidates_{0};
};

}  // namespace hashsearch
