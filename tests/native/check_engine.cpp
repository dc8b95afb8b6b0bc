// The engine without Python, against a brute-force twin: for builds where the Python
// tests cannot run (.ci/native-checks compiles this for aarch64 and runs it under
// qemu, where the scalar kernels are the only ones) and for sanitizer builds. Top-k and
// range search of Index, MIHIndex (tables forced, and with its scan fallback) and
// ClusterIndex (its clusters forced, and by default), batches and single queries, on
// clustered codes with duplicates; and the check of exclude lists that guards those reads.
// Exits 1 if any check fails.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

#include "cluster_index.h"
#include "flat_index.h"
#include "mih_index.h"
#include "kernels/simd.h"

using namespace hashsearch;

namespace {

int hamming_ref(const uint64_t* a, const uint64_t* b, size_t nw) {
    int d = 0;
    for (size_t w = 0; w < nw; ++w)
        for (uint64_t x = a[w] ^ b[w]; x; x &= x - 1) ++d;
    return d;
}

// Top-k by (distance, id), excluded ids skipped, padded with (-1, -1).
void topk_ref(const std::vector<uint64_t>& codes, size_t n, size_t nw, const uint64_t* q, int k,
              const int64_t* ex_begin, const int64_t* ex_end, int32_t* D, int64_t* I) {
    std::vector<std::pair<int, int64_t>> all;
    for (size_t i = 0; i < n; ++i) {
        const int64_t id = static_cast<int64_t>(i);
        if (std::binary_search(ex_begin, ex_end, id)) continue;
        all.emplace_back(hamming_ref(codes.data() + i * nw, q, nw), id);
    }
    std::sort(all.begin(), all.end());
    for (int r = 0; r < k; ++r) {
        const bool has = static_cast<size_t>(r) < all.size();
        D[r] = has ? all[r].first : -1;
        I[r] = has ? all[r].second : -1;
    }
}

// Every item within `radius`, by (distance, id), excluded ids skipped: CSR as range_search gives.
void range_ref(const std::vector<uint64_t>& codes, size_t n, size_t nw, const uint64_t* queries, size_t nq,
               int radius, const ExcludeList& ex, std::vector<int64_t>& lims, std::vector<int32_t>& D,
               std::vector<int64_t>& I) {
    lims.assign(1, 0);
    D.clear();
    I.clear();
    for (size_t q = 0; q < nq; ++q) {
        std::vector<std::pair<int, int64_t>> hits;
        for (size_t i = 0; i < n; ++i) {
            const int64_t id = static_cast<int64_t>(i);
            const int d = hamming_ref(codes.data() + i * nw, queries + q * nw, nw);
            if (d <= radius && !std::binary_search(ex.begin(q), ex.end(q), id)) hits.emplace_back(d, id);
        }
        std::sort(hits.begin(), hits.end());
        for (const auto& [d, id] : hits) {
            D.push_back(d);
            I.push_back(id);
        }
        lims.push_back(static_cast<int64_t>(D.size()));
    }
}

int failures = 0, checks = 0;

void expect_equal(const char* what, int nbits, int k, const std::vector<int32_t>& D, const std::vector<int64_t>& I,
                  const std::vector<int32_t>& Dr, const std::vector<int64_t>& Ir,
                  const std::vector<int64_t>& lims = {}, const std::vector<int64_t>& lims_ref = {}) {
    ++checks;
    if (D == Dr && I == Ir && lims == lims_ref) return;
    ++failures;
    std::printf("MISMATCH %s nbits=%d k/radius=%d\n", what, nbits, k);
}

}  // namespace

// check_exclude: offsets out of order (one past the ids, which end the vector: ASan sees a
// read beyond them), offsets not framing the ids, ids out of range or unsorted are refused
// before a search could read them; a good list passes.
void check_exclude_lists() {
    struct ExcludeCase {
        std::vector<int64_t> indptr, indices;
        bool ok;
    };
    for (const ExcludeCase& c : std::vector<ExcludeCase>{{{0, 2, 1}, {0}, false},
                                                         {{0, 5, 1}, {0}, false},
                                                         {{0, -3, 1}, {0}, false},
                                                         {{0, 1, 3}, {0, 1}, false},
                                                         {{1, 1, 2}, {0, 1}, false},
                                                         {{0, 1, 2}, {0, 10}, false},
                                                         {{0, 2, 2}, {3, 1}, false},
                                                         {{0, 2, 3}, {1, 3, 9}, true},
                                                         {{0, 0, 0}, {}, true}}) {
        bool ok = true;
        try {
            check_exclude(c.indptr.data(), 2, c.indices.data(), c.indices.size(), 10);
        } catch (const std::invalid_argument&) {
            ok = false;
        }
        ++checks;
        if (ok != c.ok) {
            std::printf("FAIL check_exclude: indptr [%lld, %lld, %lld] %s\n", static_cast<long long>(c.indptr[0]),
                        static_cast<long long>(c.indptr[1]), static_cast<long long>(c.indptr[2]),
                        ok ? "accepted" : "refused");
            ++failures;
        }
    }
}

int run() {
    std::mt19937_64 rng(12345);
    std::printf("SIMD level: %s\n", simd_level_name(current_simd_level()));
    // (n, nbits): small indexes, and past 65,536 items or code words, where the scans take
    // other paths; 320-576 bits: AVX-512's kernels for 5+ words, which read into the next row.
    const std::pair<size_t, int> shapes[] = {{3000, 16},  {3000, 32},  {3000, 64},   {3000, 100},
                                             {3000, 128}, {3000, 256}, {3001, 320},  {9001, 576},
                                             {70000, 64}};
    for (const auto& [n, nbits] : shapes) {
        const size_t nw = static_cast<size_t>((nbits + 63) / 64), nq = 40;
        const uint64_t last_mask = nbits % 64 == 0 ? ~uint64_t{0} : (uint64_t{1} << (nbits % 64)) - 1;
        // Clustered codes with duplicates: 30 centres, each code a few bits away from one.
        std::vector<uint64_t> centres(30 * nw), codes(n * nw), queries(nq * nw);
        for (auto& w : centres) w = rng();
        auto draw = [&](uint64_t* out) {
            const uint64_t* c = centres.data() + (rng() % 30) * nw;
            std::copy(c, c + nw, out);
            for (int f = static_cast<int>(rng() % 6); f > 0; --f) {
                const size_t b = rng() % static_cast<size_t>(nbits);
                out[b / 64] ^= uint64_t{1} << (b % 64);
            }
            out[nw - 1] &= last_mask;
        };
        for (size_t i = 0; i < n; ++i) draw(codes.data() + i * nw);
        for (size_t q = 0; q < nq; ++q) draw(queries.data() + q * nw);
        // Every third query excludes a few ids (sorted, as the Python layer passes them).
        std::vector<int64_t> indptr(nq + 1, 0), indices;
        for (size_t q = 0; q < nq; ++q) {
            if (q % 3 == 0)
                for (int64_t id = static_cast<int64_t>(rng() % 50); id < static_cast<int64_t>(n); id += 97) indices.push_back(id);
            indptr[q + 1] = static_cast<int64_t>(indices.size());
        }
        ExcludeList ex;
        ex.indptr = indptr.data();
        ex.indices = indices.data();

        FlatIndex flat(codes.data(), n, nw, nbits);
        MIHIndex mih(codes.data(), n, nw, nbits, std::max(1, nbits / 16));
        mih.set_scan_fallback(false);  // the tables themselves, on an index this small
        MIHIndex mih_auto(codes.data(), n, nw, nbits, std::max(1, nbits / 16));  // with its scan fallback
        ClusterIndex cluster(codes.data(), n, nw, nbits, 40, 3, 1);
        for (int k : {1, 10, 100}) {
            std::vector<int32_t> Dr(nq * k), D(nq * k);
            std::vector<int64_t> Ir(nq * k), I(nq * k);
            for (size_t q = 0; q < nq; ++q)
                topk_ref(codes, n, nw, queries.data() + q * nw, k, ex.begin(q), ex.end(q), Dr.data() + q * k,
                         Ir.data() + q * k);
            // The queries as one batch, and one at a time (the paths for few queries).
            auto check = [&](const char* what, const auto& index, int threads) {
                index.topk(queries.data(), nq, k, ex, threads, D.data(), I.data());
                expect_equal(what, nbits, k, D, I, Dr, Ir);
                for (size_t q = 0; q < nq; ++q) {
                    ExcludeList one = ex;
                    one.indptr += q;
                    index.topk(queries.data() + q * nw, 1, k, one, threads, D.data() + q * k, I.data() + q * k);
                }
                expect_equal(what, nbits, k, D, I, Dr, Ir);
            };
            for (int threads : {1, 2})
                for (size_t split : {kSplitMinWords, size_t{4096}}) {  // also split single queries' scans
                    set_split_min_words(split);
                    check("Index", flat, threads);
                    check("MIHIndex", mih, threads);
                    check("MIHIndex (fallback on)", mih_auto, threads);
                    ClusterIndex::set_small_scan(false);  // the clusters, on an index this small
                    check("ClusterIndex", cluster, threads);
                    ClusterIndex::set_small_scan(true);
                    check("ClusterIndex (small scan)", cluster, threads);
                }
            set_split_min_words(kSplitMinWords);
        }
        if (nbits > 32 && nbits <= 64) {
            // A batch of >= 64 one-word queries: MIH's joined search (ring by ring for all
            // of them), with these queries' exclusions: 70 queries (the threads share each
            // ring) and, on the smaller indexes, 450 (each of 2 threads searches a chunk).
            for (size_t nb : {size_t{70}, size_t{450}}) {
                if (nb > 70 && n > 20000) continue;
                std::vector<uint64_t> batch(nb * nw);
                for (size_t q = 0; q < nb; ++q) {
                    if (q % 2 == 0) std::copy_n(codes.data() + (rng() % n) * nw, nw, batch.data() + q * nw);
                    else draw(batch.data() + q * nw);
                }
                std::vector<int64_t> bptr(nb + 1, 0);
                for (size_t q = 0; q < nb; ++q) bptr[q + 1] = indptr[(q % nq) + 1] - indptr[q % nq] + bptr[q];
                std::vector<int64_t> bind;
                for (size_t q = 0; q < nb; ++q) bind.insert(bind.end(), indices.begin() + indptr[q % nq], indices.begin() + indptr[(q % nq) + 1]);
                ExcludeList bex;
                bex.indptr = bptr.data();
                bex.indices = bind.data();
                for (int k : {1, 10, 100}) {
                    std::vector<int32_t> Dr(nb * k), D(nb * k);
                    std::vector<int64_t> Ir(nb * k), I(nb * k);
                    for (size_t q = 0; q < nb; ++q)
                        topk_ref(codes, n, nw, batch.data() + q * nw, k, bex.begin(q), bex.end(q), Dr.data() + q * k,
                                 Ir.data() + q * k);
                    for (int threads : {1, 2}) {
                        const size_t before = mih.joined_count();
                        mih.topk(batch.data(), nb, k, bex, threads, D.data(), I.data());
                        expect_equal("MIHIndex (joined)", nbits, k, D, I, Dr, Ir);
                        if (mih.joined_count() == before) {
                            std::printf("FAIL MIHIndex (joined) nbits=%d k=%d: the batch was not searched joined\n", nbits, k);
                            ++failures;
                        }
                        mih_auto.topk(batch.data(), nb, k, bex, threads, D.data(), I.data());
                        expect_equal("MIHIndex (joined, fallback on)", nbits, k, D, I, Dr, Ir);
                    }
                }
            }
        }
        for (int radius : {0, 3, nbits / 8}) {
            std::vector<int64_t> lr, l;
            std::vector<int32_t> Dr, D;
            std::vector<int64_t> Ir, I;
            range_ref(codes, n, nw, queries.data(), nq, radius, ex, lr, Dr, Ir);
            for (int threads : {1, 2}) {
                flat.range_search(queries.data(), nq, radius, ex, threads, l, D, I);
                expect_equal("Index range", nbits, radius, D, I, Dr, Ir, l, lr);
                mih.range_search(queries.data(), nq, radius, ex, threads, l, D, I);
                expect_equal("MIHIndex range", nbits, radius, D, I, Dr, Ir, l, lr);
                cluster.range_search(queries.data(), nq, radius, ex, threads, l, D, I);
                expect_equal("ClusterIndex range", nbits, radius, D, I, Dr, Ir, l, lr);
            }
        }
    }
    check_exclude_lists();
    // FallbackScore: each query that fell back adds one, each answered one takes its weight
    // off; 3 in 4 falling back leads to skipping at weight 2 (MIH at AVX-512), not at 4.
    for (int weight : {FallbackScore::kAnsweredWeight, 2}) {
        FallbackScore score;
        for (int call = 0; call < 100; ++call) score.record(3, 1, weight);
        ++checks;
        if (score.skipping() != (weight == 2)) {
            std::printf("FAIL FallbackScore weight=%d: skipping=%d\n", weight, static_cast<int>(score.skipping()));
            ++failures;
        }
    }
    std::printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}

int main() {
    try {
        return run();
    } catch (const std::exception& e) {  // HASHSEARCH_SIMD naming a level this CPU lacks
        std::printf("error: %s\n", e.what());
        return 2;
    }
}
