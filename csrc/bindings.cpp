// Python bindings. Arrays are validated again here (the Python layer gives the
// friendlier messages); every search releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <new>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include <pthread.h>

#include "cluster_index.h"
#include "flat_index.h"
#include "hierarchical_index.h"
#include "mih_index.h"
#include "parallel.h"
#include "kernels/simd.h"

namespace py = pybind11;
using namespace hashsearch;

namespace {

// Ctrl-C during a long search or build: Python runs signal handlers only in the main thread,
// and only between bytecodes, so the core's loops call this there at most every 100 ms
// (parallel.h); a handler that raised (KeyboardInterrupt) stops the loop, and its exception,
// left set here, is what the call raises.
unsigned long main_thread_id = 0;
bool python_signal_raised() {
    py::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
}

// The GIL released for a search or a build, which a signal can interrupt (see above).
class ReleaseGil {
  public:
    ReleaseGil() : interrupts_(PyThread_get_thread_ident() == main_thread_id ? &python_signal_raised : nullptr) {}

  private:
    InterruptScope interrupts_;        // armed first, disarmed last
    py::gil_scoped_release release_;
};

using CodesArray = py::array_t<uint64_t, py::array::c_style>;
using IdArray = py::array_t<int64_t, py::array::c_style>;
using FloatArray = py::array_t<float, py::array::c_style>;

void check_codes(const CodesArray& a, const char* what) {
    if (a.ndim() != 2)
        throw std::invalid_argument(std::string(what) + " must be 2-D (n, words), got " +
                                    std::to_string(a.ndim()) + "-D");
}

void check_queries(const CodesArray& q, size_t nwords) {
    check_codes(q, "queries");
    if (static_cast<size_t>(q.shape(1)) != nwords)
        throw std::invalid_argument("queries have " + std::to_string(q.shape(1)) +
                                    " words per code, the index has " + std::to_string(nwords));
}

// CSR exclusion lists; both None means no exclusion. Checked by the core (check_exclude).
ExcludeList make_exclude(const py::object& indptr, const py::object& indices, size_t nq, size_t n,
                         IdArray& keep_ptr, IdArray& keep_idx) {
    ExcludeList ex;
    if (indptr.is_none() && indices.is_none()) return ex;
    if (indptr.is_none() || indices.is_none())
        throw std::invalid_argument("exclude needs both indptr and indices, or neither");
    keep_ptr = indptr.cast<IdArray>();
    keep_idx = indices.cast<IdArray>();
    if (keep_ptr.ndim() != 1 || static_cast<size_t>(keep_ptr.shape(0)) != nq + 1)
        throw std::invalid_argument("exclude indptr must have nq+1=" + std::to_string(nq + 1) + " entries");
    if (keep_idx.ndim() != 1) throw std::invalid_argument("exclude indices must be 1-D");
    const int64_t* p = keep_ptr.data();
    const int64_t* x = keep_idx.data();
    check_exclude(p, nq, x, static_cast<size_t>(keep_idx.size()), n);
    ex.indptr = p;
    ex.indices = x;
    return ex;
}

// fork() copies a lock that another thread of the parent held, and no thread of the child
// will release it. The child handler (registered at import) counts forks, and an index
// repairs its locks the first time it is locked in a new child (Growable::check_fork).
std::atomic<uint64_t> fork_generation{0};
std::mutex& fork_repair_mutex() {
    static std::mutex m;
    return m;
}
void after_fork_in_child() {
    fork_generation.fetch_add(1);
    new (&fork_repair_mutex()) std::mutex();  // only this thread exists now
}

// An index that Python can grow: searches (GIL released) share the lock,
// add() takes it alone, so no search reads codes that add() is reallocating.
// A waiting add() goes first: the shared_mutex alone (glibc's rwlock) prefers
// readers, and threads searching back to back kept an add() waiting for minutes.
template <class Base>
struct Growable : Base {
    using Base::Base;
    mutable std::shared_mutex rw;
    mutable std::mutex turnstile;  // held by a writer while it waits, so new readers queue behind it
    mutable std::atomic<size_t> waited_reads{0};  // read locks that took the waiting path (tests)
    std::atomic<bool> write_held{false};           // set by _hold_write_lock (tests)
    std::atomic<bool> writing{false};              // the write lock is held: the index may be mid-change
    std::atomic<std::thread::id> writer{};         // the thread holding it
    mutable std::atomic<uint64_t> generation{fork_generation.load()};  // the fork its locks belong to

    // In a forked child, the first lock resets both locks (their holders were the parent's
    // threads), unless a writer held one at the fork: its change may be half done, so the
    // index is refused from then on. Two relaxed loads otherwise.
    void check_fork() const {
        if (generation.load(std::memory_order_relaxed) != fork_generation.load(std::memory_order_relaxed))
            repair_after_fork();
    }
    void repair_after_fork() const {
        std::lock_guard<std::mutex> guard(fork_repair_mutex());
        const uint64_t now = fork_generation.load();
        if (generation.load() == now) return;
        if (writing.load())  // generation left stale: every later use says so too
            throw std::runtime_error(
                "this index was being changed (add) by another thread when the process forked; the "
                "child cannot use it: build or load it in the child, or fork while no add is running");
        new (&rw) std::shared_mutex();
        new (&turnstile) std::mutex();
        generation.store(now);
    }

    // The shared lock, waited for with the GIL released (a writer may be waiting on a reader).
    // With no add() running or waiting it is taken at once, without releasing the GIL: a
    // release and reacquire cost ~0.3 us, and a one-query search took the lock twice.
    std::shared_lock<std::shared_mutex> read_lock() const {
        check_fork();
        std::shared_lock<std::shared_mutex> lock(rw, std::defer_lock);
        {
            std::unique_lock<std::mutex> queue(turnstile, std::try_to_lock);
            if (queue.owns_lock() && lock.try_lock()) return lock;
        }
        check_not_writer();
        waited_reads.fetch_add(1, std::memory_order_relaxed);
        py::gil_scoped_release release;
        { std::lock_guard<std::mutex> queue(turnstile); }
        lock.lock();
        return lock;
    }
    // An add checks for signals while it holds the write lock, and a Python signal handler that
    // used the index then would find the lock held by its own thread (EDEADLK from glibc's
    // rwlock, "Resource deadlock avoided"): this error says what happened instead.
    void check_not_writer() const {
        if (writer.load() == std::this_thread::get_id())
            throw std::runtime_error("this index is being changed by an add in this thread (a signal handler "
                                     "ran during it); it cannot be used until the add returns");
    }
    // The exclusive lock; `writing` and `writer` are set while it is held (cleared before the unlock).
    struct WriteLock {
        std::unique_lock<std::shared_mutex> lock;
        Growable& index;
        ~WriteLock() {
            index.writer = std::thread::id();
            index.writing = false;
        }
    };
    // The lock alone; call with the GIL released.
    WriteLock write_lock() {
        check_fork();
        check_not_writer();
        std::lock_guard<std::mutex> queue(turnstile);
        std::unique_lock<std::shared_mutex> lock(rw);
        writing = true;
        writer = std::this_thread::get_id();
        return WriteLock{std::move(lock), *this};
    }
};
using GrowableFlatIndex = Growable<FlatIndex>;
using GrowableHierarchicalIndex = Growable<HierarchicalIndex>;

// Test hooks of a growable index: the read locks that waited, and holding the write lock as an
// add() would (GIL released), so tests can make a search wait for a writer deterministically.
template <class G, class Cls>
void def_lock_hooks(Cls& cls) {
    cls.def_property_readonly("_waited_reads", [](const G& self) { return self.waited_reads.load(); })
        .def_property_readonly("_write_held", [](const G& self) { return self.write_held.load(); })
        .def("_hold_write_lock",
             [](G& self, double seconds) {
                 ReleaseGil release;
                 auto lock = self.write_lock();
                 self.write_held = true;
                 std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
                 self.write_held = false;
             },
             py::arg("seconds"));
}

template <class Index, class Shape>
py::tuple hamming_topk(const Index& index, const Shape& flat, const CodesArray& q, int k,
                       const py::object& indptr, const py::object& indices, int num_threads) {
    check_queries(q, flat.nwords());
    // k against the size here, under the caller's read lock (Python checks k >= 1): Python
    // read ntotal for it twice a call, ~0.4 us each.
    if (flat.size() == 0) throw std::invalid_argument("the index is empty: it holds 0 codes");
    if (k > 0 && static_cast<size_t>(k) > flat.size())
        throw std::invalid_argument("k=" + std::to_string(k) + " exceeds the number of indexed codes n=" +
                                    std::to_string(flat.size()));
    size_t nq = static_cast<size_t>(q.shape(0));
    IdArray keep_ptr, keep_idx;
    ExcludeList ex = make_exclude(indptr, indices, nq, flat.size(), keep_ptr, keep_idx);
    py::array_t<int32_t> D({nq, static_cast<size_t>(k > 0 ? k : 0)});
    py::array_t<int64_t> I({nq, static_cast<size_t>(k > 0 ? k : 0)});
    int32_t* dp = D.mutable_data();
    int64_t* ip = I.mutable_data();
    const uint64_t* qp = q.data();
    {
        ReleaseGil release;
        index.topk(qp, nq, k, ex, num_threads, dp, ip);
    }
    return py::make_tuple(D, I);
}

// Embeddings must be finite: a NaN would make the re-ranking's order undefined.
void check_finite(const float* x, size_t count, const char* what) {
    for (size_t i = 0; i < count; ++i)
        if (!std::isfinite(x[i])) throw std::invalid_argument(std::string(what) + " contain NaN or infinite values (as float32)");
}

// A HierarchicalIndex's Hamming stage, searched as an index by hamming_topk.
struct HammingStage {
    const HierarchicalIndex& index;
    void topk(const uint64_t* q, size_t nq, int k, const ExcludeList& ex, int num_threads, int32_t* D,
              int64_t* I) const {
        index.hamming_topk(q, nq, k, ex, num_threads, D, I);
    }
};

template <class Index>
py::tuple hamming_range(const Index& index, size_t nwords, size_t n, const CodesArray& q, int radius,
                        const py::object& indptr, const py::object& indices, int num_threads) {
    check_queries(q, nwords);
    const size_t nq = static_cast<size_t>(q.shape(0));
    IdArray keep_ptr, keep_idx;
    ExcludeList ex = make_exclude(indptr, indices, nq, n, keep_ptr, keep_idx);
    std::vector<int64_t> lims;
    std::vector<int32_t> D;
    std::vector<int64_t> I;
    {
        ReleaseGil release;
        index.range_search(q.data(), nq, radius, ex, num_threads, lims, D, I);
    }
    return py::make_tuple(py::array_t<int64_t>(lims.size(), lims.data()),
                          py::array_t<int32_t>(D.size(), D.data()),
                          py::array_t<int64_t>(I.size(), I.data()));
}

// The environment variables read by the core where a bad value cannot be reported (worker
// threads, static initialisers), checked at import instead.
void check_environment() {
    detail::parse_spin_us(std::getenv("HASHSEARCH_SPIN_US"));
    const char* wide = std::getenv("HASHSEARCH_WIDE_POPCOUNT");
    if (wide != nullptr) parse_wide_popcount_mode(wide);
}

CodesArray export_codes(const FlatIndex& flat) {
    CodesArray out({flat.size(), flat.nwords()});
    flat.copy_codes(out.mutable_data());
    return out;
}

// The module, one class at a time.
void bind_flat(py::module_& m) {
    py::class_<GrowableFlatIndex> flat_cls(m, "FlatIndex");
    flat_cls
        .def(py::init([](const CodesArray& codes, int nbits) {
                 check_codes(codes, "codes");
                 return new GrowableFlatIndex(codes.data(), codes.shape(0), codes.shape(1), nbits);
             }),
             py::arg("codes"), py::arg("nbits"))
        .def("topk",
             [](const GrowableFlatIndex& self, const CodesArray& q, int k, const py::object& indptr,
                const py::object& indices, int num_threads) {
                 auto lock = self.read_lock();
                 return hamming_topk(self, self, q, k, indptr, indices, num_threads);
             },
             py::arg("queries"), py::arg("k"), py::arg("indptr") = py::none(),
             py::arg("indices") = py::none(), py::arg("num_threads") = 0)
        .def("range_search",
             [](const GrowableFlatIndex& self, const CodesArray& q, int radius, const py::object& indptr,
                const py::object& indices, int num_threads) {
                 auto lock = self.read_lock();
                 return hamming_range(self, self.nwords(), self.size(), q, radius, indptr, indices, num_threads);
             },
             py::arg("queries"), py::arg("radius"), py::arg("indptr") = py::none(),
             py::arg("indices") = py::none(), py::arg("num_threads") = 0)
        .def("add",
             [](GrowableFlatIndex& self, const CodesArray& codes) {
                 check_codes(codes, "codes");
                 if (static_cast<size_t>(codes.shape(1)) != self.nwords())
                     throw std::invalid_argument("codes have " + std::to_string(codes.shape(1)) +
                                                 " words per code, the index has " + std::to_string(self.nwords()));
                 const uint64_t* p = codes.data();
                 const size_t count = static_cast<size_t>(codes.shape(0));
                 ReleaseGil release;
                 auto lock = self.write_lock();
                 self.add(p, count);
                 // An interrupt that came during the add cancels it: its KeyboardInterrupt must
                 // not come after the index has grown.
                 try {
                     poll_interrupt_now();
                 } catch (const InterruptedError&) {
                     self.remove_last(count);
                     throw;
                 }
             },
             py::arg("codes"))
        .def("codes", [](const GrowableFlatIndex& self) {
            auto lock = self.read_lock();
            return export_codes(self);
        })
        .def_property_readonly("ntotal", [](const GrowableFlatIndex& self) {
            auto lock = self.read_lock();
            return self.size();
        })
        .def_property_readonly("nbits", &FlatIndex::nbits)
        .def_property_readonly("nwords", &FlatIndex::nwords)
        .def("memory_bytes", [](const GrowableFlatIndex& self) {
            auto lock = self.read_lock();
            return self.memory_bytes();
        });
    def_lock_hooks<GrowableFlatIndex>(flat_cls);
}

void bind_mih(py::module_& m) {
    m.def("mih_key_bits", &MIHIndex::key_bits_for, py::arg("sub_bits"), py::arg("n"), py::arg("nbits"),
          "Directory bits MIHIndex uses for a substring of sub_bits bits (n items, nbits-bit codes).");

    py::class_<MIHIndex>(m, "MIHIndex")
        .def(py::init([](const CodesArray& codes, int nbits, int m) {
                 check_codes(codes, "codes");
                 ReleaseGil release;
                 return new MIHIndex(codes.data(), codes.shape(0), codes.shape(1), nbits, m);
             }),
             py::arg("codes"), py::arg("nbits"), py::arg("m"))
        .def("topk",
             [](const MIHIndex& self, const CodesArray& q, int k, const py::object& indptr,
                const py::object& indices, int num_threads) {
                 return hamming_topk(self, self, q, k, indptr, indices, num_threads);
             },
             py::arg("queries"), py::arg("k"), py::arg("indptr") = py::none(),
             py::arg("indices") = py::none(), py::arg("num_threads") = 0)
        .def("range_search",
             [](const MIHIndex& self, const CodesArray& q, int radius, const py::object& indptr,
                const py::object& indices, int num_threads) {
                 return hamming_range(self, self.nwords(), self.size(), q, radius, indptr, indices, num_threads);
             },
             py::arg("queries"), py::arg("radius"), py::arg("indptr") = py::none(),
             py::arg("indices") = py::none(), py::arg("num_threads") = 0)
        .def("codes",
             [](const MIHIndex& self) {
                 CodesArray out({self.size(), self.nwords()});
                 self.copy_codes(out.mutable_data());
                 return out;
             })
        .def_property_readonly("m", &MIHIndex::m)
        .def_property_readonly("substring_bits", &MIHIndex::substring_bits)
        .def_property_readonly("key_bits", &MIHIndex::key_bits)
        .def_property_readonly("sub_bits", &MIHIndex::sub_bits)
        .def_property_readonly("sub_min_items", &MIHIndex::sub_min_items)
        .def("sub_dir_bytes", &MIHIndex::sub_dir_bytes)
        .def("_set_scan_fallback", &MIHIndex::set_scan_fallback, py::arg("enabled"))
        .def("_set_join", &MIHIndex::set_join, py::arg("enabled"))
        .def("_set_join_step_pairs", &MIHIndex::set_join_step_pairs, py::arg("pairs"))
        .def_property_readonly("ntotal", &MIHIndex::size)
        .def_property_readonly("nbits", &MIHIndex::nbits)
        .def_property_readonly("fallback_count", &MIHIndex::fallback_count)
        .def_property_readonly("scanned_count", &MIHIndex::scanned_count)
        .def_property_readonly("joined_count", &MIHIndex::joined_count)
        .def_property_readonly("batch_verdict", &MIHIndex::batch_verdict)
        .def("_set_batch_verdict", &MIHIndex::set_batch_verdict, py::arg("verdict"))
        .def_property_readonly("probe_count", &MIHIndex::probe_count)
        .def_property_readonly("candidate_count", &MIHIndex::candidate_count)
        .def("table_bytes", &MIHIndex::table_bytes)
        .def("memory_bytes", [](const MIHIndex& s) { return s.code_bytes() + s.table_bytes(); });
}

void bind_cluster(py::module_& m) {
    py::class_<ClusterIndex>(m, "ClusterIndex")
        .def(py::init([](const CodesArray& codes, int nbits, size_t nclusters, int num_threads) {
                 check_codes(codes, "codes");
                 ReleaseGil release;
                 return new ClusterIndex(codes.data(), codes.shape(0), codes.shape(1), nbits, nclusters, 3,
                                         num_threads);
             }),
             py::arg("codes"), py::arg("nbits"), py::arg("nclusters"), py::arg("num_threads") = 0)
        .def_static(
            "from_clusters",
            [](const CodesArray& codes, int nbits, const CodesArray& centroids,
               const py::array_t<uint32_t, py::array::c_style>& labels) {
                check_codes(codes, "codes");
                check_codes(centroids, "centroids");
                if (centroids.shape(1) != codes.shape(1))
                    throw std::invalid_argument("centroids must have as many words as the codes");
                if (labels.ndim() != 1 || labels.shape(0) != codes.shape(0))
                    throw std::invalid_argument("labels must be one per code");
                ReleaseGil release;
                return new ClusterIndex(codes.data(), codes.shape(0), codes.shape(1), nbits, centroids.data(),
                                        centroids.shape(0), labels.data());
            },
            py::arg("codes"), py::arg("nbits"), py::arg("centroids"), py::arg("labels"))
        .def("range_search",
             [](const ClusterIndex& self, const CodesArray& q, int radius, const py::object& indptr,
                const py::object& indices, int num_threads) {
                 return hamming_range(self, self.nwords(), self.size(), q, radius, indptr, indices, num_threads);
             },
             py::arg("queries"), py::arg("radius"), py::arg("indptr") = py::none(),
             py::arg("indices") = py::none(), py::arg("num_threads") = 0)
        .def("grown",
             [](const ClusterIndex& self, const CodesArray& codes, int num_threads) {
                 check_codes(codes, "codes");
                 if (static_cast<size_t>(codes.shape(1)) != self.nwords())
                     throw std::invalid_argument("codes have " + std::to_string(codes.shape(1)) +
                                                 " words per code, the index has " + std::to_string(self.nwords()));
                 ReleaseGil release;
                 return self.grown(codes.data(), codes.shape(0), num_threads);
             },
             py::arg("codes"), py::arg("num_threads") = 0)
        .def("centroids",
             [](const ClusterIndex& self) {
                 CodesArray out({self.nclusters(), self.nwords()});
                 self.copy_centroids(out.mutable_data());
                 return out;
             })
        .def("labels",
             [](const ClusterIndex& self) {
                 py::array_t<uint32_t> out(self.size());
                 self.copy_labels(out.mutable_data());
                 return out;
             })
        .def("topk",
             [](const ClusterIndex& self, const CodesArray& q, int k, const py::object& indptr,
                const py::object& indices, int num_threads) {
                 return hamming_topk(self, self, q, k, indptr, indices, num_threads);
             },
             py::arg("queries"), py::arg("k"), py::arg("indptr") = py::none(),
             py::arg("indices") = py::none(), py::arg("num_threads") = 0)
        .def("codes",
             [](const ClusterIndex& self) {
                 CodesArray out({self.size(), self.nwords()});
                 self.copy_codes(out.mutable_data());
                 return out;
             })
        .def_property_readonly("ntotal", &ClusterIndex::size)
        .def_property_readonly("nbits", &ClusterIndex::nbits)
        .def_property_readonly("nclusters", &ClusterIndex::nclusters)
        .def_property_readonly("items_read", &ClusterIndex::items_read)
        .def_property_readonly("clusters_read", &ClusterIndex::clusters_read)
        .def_property_readonly("scanned", &ClusterIndex::scanned)
        .def_property_readonly("skipped", &ClusterIndex::skipped)
        .def_static("_set_small_scan", &ClusterIndex::set_small_scan, py::arg("enabled"))
        .def_static("_small_scan", &ClusterIndex::small_scan)
        .def("extra_bytes", &ClusterIndex::extra_bytes)
        .def("memory_bytes", [](const ClusterIndex& s) { return s.code_bytes() + s.extra_bytes(); });
}

// HierarchicalIndex: construction, search and growth here, its stored parts below.
void bind_hierarchical_parts(py::class_<GrowableHierarchicalIndex>& hier_cls);

void bind_hierarchical(py::module_& m) {
    py::class_<GrowableHierarchicalIndex> hier_cls(m, "HierarchicalIndex");
    hier_cls
        .def(py::init([](const CodesArray& codes, int nbits, const FloatArray& emb, int m) {
                 check_codes(codes, "codes");
                 if (emb.ndim() != 2 || emb.shape(0) != codes.shape(0))
                     throw std::invalid_argument("embeddings must be (n, dim) with n matching codes");
                 check_finite(emb.data(), static_cast<size_t>(emb.size()), "embeddings");
                 ReleaseGil release;
                 return new GrowableHierarchicalIndex(codes.data(), codes.shape(0), codes.shape(1), nbits,
                                              emb.data(), emb.shape(1), m);
             }),
             py::arg("codes"), py::arg("nbits"), py::arg("embeddings"), py::arg("m") = 0)
        .def("topk",
             [](const GrowableHierarchicalIndex& self, const CodesArray& q, const FloatArray& qe, int k,
                int candidates, const py::object& indptr, const py::object& indices,
                int num_threads) {
                 auto lock = self.read_lock();
                 const FlatIndex& flat = self.flat();
                 check_queries(q, flat.nwords());
                 size_t nq = static_cast<size_t>(q.shape(0));
                 if (qe.ndim() != 2 || static_cast<size_t>(qe.shape(0)) != nq ||
                     static_cast<size_t>(qe.shape(1)) != self.dim())
                     throw std::invalid_argument("query embeddings must be (nq, " +
                                                 std::to_string(self.dim()) + ")");
                 // Checked here rather than in Python (np.isfinite(...).all() cost ~2 us a call).
                 check_finite(qe.data(), nq * self.dim(), "query embeddings");
                 IdArray keep_ptr, keep_idx;
                 ExcludeList ex = make_exclude(indptr, indices, nq, flat.size(), keep_ptr, keep_idx);
                 size_t kk = static_cast<size_t>(k > 0 ? k : 0);
                 py::array_t<float> S({nq, kk});
                 py::array_t<int64_t> I({nq, kk});
                 float* sp = S.mutable_data();
                 int64_t* ip = I.mutable_data();
                 const uint64_t* qp = q.data();
                 const float* qep = qe.data();
                 {
                     ReleaseGil release;
                     self.topk(qp, qep, nq, k, candidates, ex, num_threads, sp, ip);
                 }
                 return py::make_tuple(S, I);
             },
             py::arg("queries"), py::arg("query_embeddings"), py::arg("k"), py::arg("candidates"),
             py::arg("indptr") = py::none(), py::arg("indices") = py::none(),
             py::arg("num_threads") = 0)
        .def("hamming_topk",
             [](const GrowableHierarchicalIndex& self, const CodesArray& q, int k, const py::object& indptr,
                const py::object& indices, int num_threads) {
                 auto lock = self.read_lock();
                 return hamming_topk(HammingStage{self}, self.flat(), q, k, indptr, indices, num_threads);
             },
             py::arg("queries"), py::arg("k"), py::arg("indptr") = py::none(),
             py::arg("indices") = py::none(), py::arg("num_threads") = 0)
        .def("add",
             [](GrowableHierarchicalIndex& self, const CodesArray& codes, const FloatArray& emb) {
                 check_codes(codes, "codes");
                 if (static_cast<size_t>(codes.shape(1)) != self.flat().nwords())
                     throw std::invalid_argument("codes have " + std::to_string(codes.shape(1)) +
                                                 " words per code, the index has " +
                                                 std::to_string(self.flat().nwords()));
                 if (emb.ndim() != 2 || emb.shape(0) != codes.shape(0) ||
                     static_cast<size_t>(emb.shape(1)) != self.dim())
                     throw std::invalid_argument("embeddings must be (n, " + std::to_string(self.dim()) +
                                                 ") with n matching codes");
                 check_finite(emb.data(), static_cast<size_t>(emb.size()), "embeddings");
                 const uint64_t* cp = codes.data();
                 const float* ep = emb.data();
                 const size_t count = static_cast<size_t>(codes.shape(0));
                 ReleaseGil release;
                 auto lock = self.write_lock();
                 auto pending = self.prepare_add(cp, ep, count);
                 self.commit_add(pending);
                 // An interrupt that came during the add (the rebuild) cancels it: its
                 // KeyboardInterrupt must not come after the index has grown.
                 try {
                     poll_interrupt_now();
                 } catch (const InterruptedError&) {
                     self.undo_add(pending);
                     throw;
                 }
             },
             py::arg("codes"), py::arg("embeddings"));
    bind_hierarchical_parts(hier_cls);
}

void bind_hierarchical_parts(py::class_<GrowableHierarchicalIndex>& hier_cls) {
    hier_cls
        .def("codes", [](const GrowableHierarchicalIndex& self) {
            auto lock = self.read_lock();
            return export_codes(self.flat());
        })
        .def("embeddings",
             [](const GrowableHierarchicalIndex& self) {
                 auto lock = self.read_lock();
                 FloatArray out({self.flat().size(), self.dim()});
                 std::copy(self.embeddings(), self.embeddings() + self.flat().size() * self.dim(),
                           out.mutable_data());
                 return out;
             })
        .def_property_readonly("ntotal", [](const GrowableHierarchicalIndex& s) {
            auto lock = s.read_lock();
            return s.flat().size();
        })
        .def_property_readonly("nbits", [](const GrowableHierarchicalIndex& s) { return s.flat().nbits(); })
        .def_property_readonly("dim", &HierarchicalIndex::dim)
        .def_property_readonly("m", &HierarchicalIndex::m)
        .def("use_clusters",
             [](GrowableHierarchicalIndex& self, size_t nclusters, int num_threads) {
                 ReleaseGil release;
                 auto lock = self.write_lock();
                 self.use_clusters(nclusters, num_threads);
             },
             py::arg("nclusters"), py::arg("num_threads") = 0)
        .def("use_saved_clusters",
             [](GrowableHierarchicalIndex& self, const CodesArray& centroids,
                const py::array_t<uint32_t, py::array::c_style>& labels) {
                 check_codes(centroids, "centroids");
                 if (static_cast<size_t>(centroids.shape(1)) != self.flat().nwords())
                     throw std::invalid_argument("centroids must have as many words as the codes");
                 if (labels.ndim() != 1 || static_cast<size_t>(labels.shape(0)) != self.flat().size())
                     throw std::invalid_argument("labels must be one per code");
                 ReleaseGil release;
                 auto lock = self.write_lock();
                 self.use_clusters(centroids.data(), centroids.shape(0), labels.data());
             },
             py::arg("centroids"), py::arg("labels"))
        .def_property_readonly("nclusters", [](const GrowableHierarchicalIndex& s) {
            auto lock = s.read_lock();
            return s.clusters() ? s.clusters()->nclusters() : size_t{0};
        })
        .def("centroids",
             [](const GrowableHierarchicalIndex& self) {
                 auto lock = self.read_lock();
                 if (!self.clusters()) throw std::invalid_argument("the index has no cluster candidates");
                 CodesArray out({self.clusters()->nclusters(), self.flat().nwords()});
                 self.clusters()->copy_centroids(out.mutable_data());
                 return out;
             })
        .def("labels",
             [](const GrowableHierarchicalIndex& self) {
                 auto lock = self.read_lock();
                 if (!self.clusters()) throw std::invalid_argument("the index has no cluster candidates");
                 py::array_t<uint32_t> out(self.flat().size());
                 self.clusters()->copy_labels(out.mutable_data());
                 return out;
             })
        .def("memory_bytes", [](const GrowableHierarchicalIndex& s) {
            auto lock = s.read_lock();
            return s.memory_bytes();
        });
    def_lock_hooks<GrowableHierarchicalIndex>(hier_cls);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "hashsearch native core: packed Hamming codes, SIMD scan, MIH, hierarchical search";
    main_thread_id = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const std::bad_alloc&) {
            PyErr_SetString(PyExc_MemoryError, "hashsearch: out of memory");
        } catch (const InterruptedError&) {
            // The signal handler's exception is already set (python_signal_raised).
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyboardInterrupt, "hashsearch: interrupted");
        }
    });

    pthread_atfork(nullptr, nullptr, &after_fork_in_child);
    m.def("_check_environment", &check_environment,
          "ValueError if HASHSEARCH_SPIN_US or HASHSEARCH_WIDE_POPCOUNT holds a value the core cannot use.");

    m.def("simd_level", [] { return std::string(simd_level_name(current_simd_level())); },
          "SIMD level in use: 'scalar', 'avx2' or 'avx512'.");
    m.def("detect_simd_level", [] { return std::string(simd_level_name(detect_simd_level())); },
          "Best SIMD level this CPU supports.");
    m.def("avx512_emulated", &avx512_emulated,
          "True in a test build (HASHSEARCH_EMULATE_AVX512=1) whose 'avx512' kernel is portable emulation.");
    m.def("set_simd_level", [](const std::string& name) { set_simd_level(parse_simd_level(name)); },
          py::arg("level"), "Force a SIMD level (for testing); ValueError if unsupported.");
    m.def("_set_split_min_words", &set_split_min_words, py::arg("words"),
          "Tests: code words from which a query's scan is split over threads (default 2^17).");
    m.def("_split_min_words", &split_min_words);
    m.def("_hold_pool",
          [](double seconds) {
              py::gil_scoped_release release;
              parallel_for(2, 2, [&](size_t task, size_t) {
                  if (task == 0) std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
              });
          },
          py::arg("seconds"), "Tests: keeps the worker pool busy with a two-thread loop for that long.");
    m.def("_set_wide_popcount", [](const std::string& mode) { set_wide_popcount_mode(mode); },
          py::arg("mode"),
          "AVX2 scans of 128-bit and 4k-word codes: 'auto' (time both once per width), 'vector' "
          "(vpshufb) or 'popcnt'; for tests (HASHSEARCH_WIDE_POPCOUNT sets the start value).");

    bind_flat(m);
    bind_mih(m);
    bind_cluster(m);
    bind_hierarchical(m);
}
