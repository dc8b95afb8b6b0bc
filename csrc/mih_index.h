// Multi-index hashing (Norouzi, Punjani & Fleet, "Fast Exact Search in Hamming
// Space with Multi-Index Hashing", TPAMI 2014): exact k-NN in Hamming space.
//
// Laid out for clustered (learned) codes, where the buckets near a query are
// crowded and reading candidates, not probing buckets, is the cost:
//  * Every table keeps its codes in bucket order, so a bucket is one run of
//    codes read sequentially (a random read per candidate costs ~30x more).
//    Table 0 is the index's only full copy of the codes, sorted by bucket and
//    then by code; the other tables keep the codes without their own bucket
//    key bits (48 of 64 bits) and find an item's id, when it is good enough
//    to enter the top-k, by binary search in table 0.
//  * Substring j is indexed by a directory on its first key_bits bits (a
//    bucket holds every item whose key is at distance r); by pigeonhole, once
//    table j has been searched to key radius r_j, every item within
//    sum_j (r_j + 1) - 1 of the query has been seen. Each step widens the
//    table whose next ring is cheapest, counted exactly from the offsets.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "flat_index.h"
#include "hamming.h"
#include "huge_alloc.h"
#include "search_policy.h"

namespace hashsearch {

// n unsigned values of `width` bytes each (1..8), read with one 8-byte load.
class PackedWords {
public:
    PackedWords() = default;
    PackedWords(size_t n, size_t width) : width_(width), bytes_(n * width + 8, 0) {}
    static size_t width_for(uint64_t max_value) {
        size_t w = 1;
        while (w < 8 && (max_value >> (8 * w)) != 0) ++w;
        return w;
    }
    uint64_t get(size_t i) const {
        uint64_t v;
        std::memcpy(&v, bytes_.data() + i * width_, 8);  // the pad keeps this in bounds
        return width_ == 8 ? v : (v & ((uint64_t{1} << (8 * width_)) - 1));
    }
    void set(size_t i, uint64_t v) { std::memcpy(bytes_.data() + i * width_, &v, width_); }
    const uint8_t* data() const { return bytes_.data(); }
    size_t width() const { return width_; }
    size_t bytes() const { return bytes_.size(); }

private:
    size_t width_ = 8;
    HugeVector<uint8_t> bytes_;
};

class MIHIndex {
public:
    // m substrings of nearly equal length (1 <= m <= nbits).
    MIHIndex(const uint64_t* codes, size_t n, size_t nwords, int nbits, int m);

    // Same output as FlatIndex::topk, bit for bit.
    void topk(const uint64_t* queries, size_t nq, int k, const ExcludeList& exclude, int num_threads,
              int32_t* D, int64_t* I) const;

    // Same output as FlatIndex::range_search: every item within `radius`,
    // CSR (lims, D, I) sorted by (distance, id). By pigeonhole, table j read to
    // key radius r_j with sum_j (r_j + 1) > radius holds every such item; a
    // query whose buckets would cost more than a scan is scanned instead.
    void range_search(const uint64_t* queries, size_t nq, int radius, const ExcludeList& exclude,
                      int num_threads, std::vector<int64_t>& lims, std::vector<int32_t>& D,
                      std::vector<int64_t>& I) const;

    int m() const { return static_cast<int>(tables_.size()); }
    std::vector<int> substring_bits() const;
    std::vector<int> key_bits() const;
    // Per table: bits ordering items inside a bucket, and the least bucket
    // size given a sub-directory (0: none).
    std::vector<int> sub_bits() const;
    std::vector<uint32_t> sub_min_items() const;
    // Bytes of the sub-directories (part of table_bytes; chosen to keep the
    // tables within twice the packed codes).
    size_t sub_dir_bytes() const;
    // Directory bits for a substring of `sub_bits` bits of an nbits code in an
    // index of n items.
    static int key_bits_for(int sub_bits, size_t n, int nbits);
    size_t size() const { return sorted_.size(); }
    size_t nwords() const { return sorted_.nwords(); }
    int nbits() const { return sorted_.nbits(); }
    // Codes in id order, (n, nwords) uint64 into `out`.
    void copy_codes(uint64_t* out) const;
    // Bytes of everything but table 0's codes: the id permutation, bucket
    // offsets and the other tables' code copies.
    size_t table_bytes() const;
    size_t code_bytes() const { return sorted_.memory_bytes(); }
    // Queries answered by the linear-scan fallback since construction (a
    // hint for choosing m; not synchronised across concurrent calls).
    size_t fallback_count() const { return fallbacks_.load(); }
    // Queries answered by the scan without trying the tables: in large batches
    // because timing a batch's first queries showed the scan faster (or to time
    // it), in small ones because most recent queries fell back.
    size_t scanned_count() const { return scanned_.load(); }
    // Queries answered by a joined search (search_joined) since construction.
    size_t joined_count() const { return joined_.load(); }
    // Buckets probed and candidates checked since construction.
    size_t probe_count() const { return probes_.load(); }
    size_t candidate_count() const { return candidates_.load(); }
    // Tests turn the scan fallback off to exercise the table search on inputs
    // too small for it to pay.
    void set_scan_fallback(bool enabled) { scan_fallback_ = enabled; }
    // Tests: batches searched query by query (false) or joined where they can be (true).
    void set_join(bool enabled) { join_enabled_ = enabled; }
    // Tests: the most pairs a step of the joined search makes at once (see join_step_pairs_).
    void set_join_step_pairs(size_t pairs) { join_step_pairs_ = std::max<size_t>(1, pairs); }
    // Which way large batches go: -1 not timed yet, 0 the scan, 1 the tables.
    int batch_verdict() const { return verdict_.verdict(); }
    // Tests: impose a verdict on the next BatchVerdict::kRetimeEvery - 1 (or more) large batches.
    void set_batch_verdict(int verdict) { verdict_.impose(verdict); }

private:
    struct Table {
        int start;      // first bit of the substring
        int bits;       // substring length
        int key_bits;   // directory on bits [start, start + key_bits)
        HugeVector<uint32_t> offsets;  // 2^key_bits + 1 bucket starts
        // Tables j >= 1, codes of one word: each code with its key bits cut
        // out, in bucket order (ties in table-0 order).
        PackedWords rest;
        // Tables j >= 1, codes of several words: the full codes in bucket order.
        HugeVector<uint64_t> full;
        // Sub-directories: the next sub_bits bits after the key order the
        // items inside every bucket, and the largest buckets (those of at
        // least sub_min items) hold the ends of their 2^sub_bits sub-buckets
        // (relative to the bucket's start: uint8 below 256 items, else uint16),
        // so a ring reads a crowded bucket's sub-bucket at sub distance b only
        // at ring key distance + b.
        int sub_bits = 0;
        uint32_t sub_min = 0;  // 0: no sub-directories
        template <class End>
        struct SubDirs {
            std::vector<uint64_t> mask;  // per bucket: has a sub-directory with ends of this type
            std::vector<uint32_t> rank;  // sub-directories before each word of mask
            std::vector<End> ends;       // 2^sub_bits ends per sub-directory
            // `bucket`'s 2^sub_bits ends, or nullptr.
            const End* find(uint32_t bucket, int sub_bits) const {
                if (mask.empty()) return nullptr;
                const uint64_t w = mask[bucket >> 6], bit = uint64_t{1} << (bucket & 63);
                if (!(w & bit)) return nullptr;
                return ends.data() + ((rank[bucket >> 6] + size_t{swar_popcount(w & (bit - 1))}) << sub_bits);
            }
            size_t bytes() const { return mask.size() * 8 + rank.size() * 4 + ends.size() * sizeof(End); }
        };
        SubDirs<uint8_t> narrow;  // buckets below 256 items
        SubDirs<uint16_t> wide;
        // A bucket's sub-directory: end(s) is where sub-bucket s ends (begin(0) = 0).
        struct SubDir {
            const uint8_t* e8 = nullptr;
            const uint16_t* e16 = nullptr;
            explicit operator bool() const { return e8 != nullptr || e16 != nullptr; }
            uint32_t end(uint32_t sk) const { return e8 ? e8[sk] : e16[sk]; }
            uint32_t begin(uint32_t sk) const { return sk == 0 ? 0 : end(sk - 1); }
            const void* data() const { return e8 ? static_cast<const void*>(e8) : static_cast<const void*>(e16); }
        };
        SubDir sub_dir(uint32_t bucket) const {
            SubDir d;
            if (sub_min == 0) return d;
            if (!(d.e8 = narrow.find(bucket, sub_bits))) d.e16 = wide.find(bucket, sub_bits);
            return d;
        }
        size_t sub_bytes() const { return narrow.bytes() + wide.bytes(); }
    };
    struct Scratch;
    class QuerySearch;   // search_one's stages (mih_index.cpp)
    class JoinedSearch;  // search_joined's stages (mih_joined.cpp)
    // Queries [q0, q1) through the tables, each falling back to the scan when
    // the cost model says the scan is cheaper.
    void search_tables(const Kernels& kern, const uint64_t* queries, size_t q0, size_t q1, int k,
                       const ExcludeList& exclude, int num_threads, int32_t* D, int64_t* I) const;
    // Queries which[0..count) (one-word codes of 33..64 bits, at most k exclusions each)
    // searched together, ring by ring: each ring's (bucket, query) pairs are grouped by
    // bucket, so the tables are read in address order instead of a cache miss per bucket
    // and query. fell[i] set: query which[i] is left to the scan. Throws InterruptedError
    // between steps once *stop is set (the thread of another chunk was interrupted or failed).
    void search_joined(const Kernels& kern, const uint64_t* queries, const uint32_t* which, size_t count,
                       int k, const ExcludeList& exclude, int num_threads, int32_t* D, int64_t* I,
                       uint8_t* fell, size_t& probes, size_t& candidates,
                       const std::atomic<bool>* stop = nullptr) const;
    // Whether search_tables may answer a batch by search_joined.
    bool joinable() const { return join_enabled_ && sorted_.nwords() == 1 && !sorted_.compact() && tables_.size() > 1; }
    // scan_share: the part of the fallback scan's one-thread time this query would wait
    // for (1, or 1/threads when fewer queries than threads split the scan's items).
    void search_one(const Kernels& kern, const uint64_t* query, int k, const int64_t* ex_begin,
                    const int64_t* ex_end, int32_t* D, int64_t* I, Scratch& s, bool& fell_back,
                    double scan_share) const;
    // The linear-scan fallback for the queries `which`, over the sorted codes,
    // ties still broken by id.
    void scan_fallback(const Kernels& kern, const uint64_t* queries, const std::vector<size_t>& which,
                       int k, const ExcludeList& exclude, int num_threads, int32_t* D, int64_t* I) const;
    // One query by the two-pass byte select, for small indexes (see scan_fallback).
    void scan_small(const Kernels& kern, const uint64_t* query, int k, const int64_t* ex_begin,
                    const int64_t* ex_end, int32_t* D, int64_t* I) const;
    // The codes in id order as an Index, for scanning large batches (the
    // caller holds it only while it scans: one more copy of the codes).
    FlatIndex id_ordered_copy() const;
    // One field of every table, in table order.
    template <class Field>
    std::vector<Field> per_table(Field Table::*field) const;
    // Sub-key of entry e of table j (table 0's codes given in its order).
    uint32_t sub_key_at(int j, size_t e, const uint64_t* table0_codes) const;
    void build_sub_dirs(const uint64_t* table0_codes);
    // Position in table 0 of the `rank`-th item (0-based, in table-0 order)
    // whose code is `code`.
    uint32_t locate(const uint64_t* code, uint32_t rank) const;

    FlatIndex sorted_;   // codes ordered by table 0's key, then by code, then by id
    PackedWords id_of_;  // position in sorted_ -> item id
    std::vector<uint16_t> pos_of_id_;  // item id -> position, small indexes only (scan_small)
    std::vector<Table> tables_;
    size_t max_bucket_ = 0;
    bool scan_fallback_ = true;
    bool join_enabled_ = true;
    // A joined step's pairs are made and read in slices of the queries of at most this
    // many pairs (two arrays of 4-byte pairs: 32 MiB).
    size_t join_step_pairs_ = size_t{1} << 22;
    mutable std::atomic<size_t> fallbacks_{0};
    mutable std::atomic<size_t> scanned_{0};
    BatchVerdict verdict_;  // which way large batches go (timed on their first queries)
    FallbackScore fall_score_;  // whether recent queries kept falling back to the scan
    mutable std::atomic<size_t> joined_{0};
    mutable std::atomic<size_t> probes_{0};
    mutable std::atomic<size_t> candidates_{0};
};

}  // namespace hashsearch
