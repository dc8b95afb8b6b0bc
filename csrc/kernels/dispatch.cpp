// Run-time dispatch: the SIMD level this CPU supports (or the one forced), and its
// kernel table.
#include "simd.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include "kernels.h"

namespace hashsearch {

SimdLevel detect_simd_level() {
#if defined(HASHSEARCH_EMULATE_AVX512)
    // Test build: the AVX-512 kernel is portable code (avx512_emulation.h), so
    // any CPU that runs the AVX2 kernel offers it too.
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) return SimdLevel::AVX512;
    return SimdLevel::Scalar;
#elif defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vpopcntdq"))
        return SimdLevel::AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) return SimdLevel::AVX2;
#endif
    return SimdLevel::Scalar;
}

bool avx512_emulated() {
#if defined(HASHSEARCH_EMULATE_AVX512)
    return true;
#else
    return false;
#endif
}

const char* simd_level_name(SimdLevel level) {
    switch (level) {
        case SimdLevel::AVX512: return "avx512";
        case SimdLevel::AVX2: return "avx2";
        default: return "scalar";
    }
}

SimdLevel parse_simd_level(const std::string& name) {
    if (name == "scalar") return SimdLevel::Scalar;
    if (name == "avx2") return SimdLevel::AVX2;
    if (name == "avx512") return SimdLevel::AVX512;
    throw std::invalid_argument("unknown SIMD level '" + name +
                                "'; expected one of 'scalar', 'avx2', 'avx512'");
}

namespace {
SimdLevel initial_level() {
    const char* env = std::getenv("HASHSEARCH_SIMD");
    SimdLevel best = detect_simd_level();
    if (env == nullptr || *env == '\0') return best;
    SimdLevel wanted = parse_simd_level(env);
    if (static_cast<int>(wanted) > static_cast<int>(best))
        throw std::invalid_argument(std::string("HASHSEARCH_SIMD=") + env +
                                    " but this CPU supports at most " + simd_level_name(best));
    return wanted;
}
std::atomic<int>& level_slot() {
    static std::atomic<int> slot{static_cast<int>(initial_level())};
    return slot;
}
}  // namespace

int parse_wide_popcount_mode(const std::string& name) {
    if (name == "auto" || name.empty()) return 0;
    if (name == "vector") return 1;
    if (name == "popcnt") return 2;
    throw std::invalid_argument("unknown wide popcount mode '" + name +
                                "' (HASHSEARCH_WIDE_POPCOUNT or _set_wide_popcount); expected one of "
                                "'auto', 'vector', 'popcnt'");
}

namespace {
// First read inside a scan, where a bad value cannot be reported: it means 'auto' there, and
// the Python module refuses it at import.
std::atomic<int>& wide_popcount_slot() {
    static std::atomic<int> slot{[] {
        const char* env = std::getenv("HASHSEARCH_WIDE_POPCOUNT");
        try {
            return parse_wide_popcount_mode(env == nullptr ? "" : env);
        } catch (const std::invalid_argument&) {
            return 0;
        }
    }()};
    return slot;
}
}  // namespace

int wide_popcount_mode() { return wide_popcount_slot().load(std::memory_order_relaxed); }

void set_wide_popcount_mode(const std::string& name) { wide_popcount_slot().store(parse_wide_popcount_mode(name)); }

SimdLevel current_simd_level() { return static_cast<SimdLevel>(level_slot().load()); }

void set_simd_level(SimdLevel level) {
    SimdLevel best = detect_simd_level();
    if (static_cast<int>(level) > static_cast<int>(best))
        throw std::invalid_argument(std::string("SIMD level ") + simd_level_name(level) +
                                    " is not supported by this CPU (best: " +
                                    simd_level_name(best) + ")");
    level_slot().store(static_cast<int>(level));
}

Kernels active_kernels() {
    switch (current_simd_level()) {
        case SimdLevel::AVX512: return avx512_kernels();
        case SimdLevel::AVX2: return avx2_kernels();
        default: return scalar_kernels();
    }
}

}  // namespace hashsearch
