#include "search_policy.h"

namespace hashsearch {

void scan_query_range(const FlatIndex& copy, const uint64_t* queries, size_t q0, size_t q1, int k,
                      const ExcludeList& exclude, int num_threads, int32_t* D, int64_t* I) {
    ExcludeList ex = exclude;
    if (ex.indptr) ex.indptr += q0;
    const size_t kk = static_cast<size_t>(k);
    copy.topk(queries + q0 * copy.nwords(), q1 - q0, k, ex, num_threads, D + q0 * kk, I + q0 * kk);
}

}  // namespace hashsearch
