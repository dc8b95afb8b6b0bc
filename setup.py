"""Builds hashsearch._core. Portable on purpose: no -march=native; SIMD
kernels carry their own target pragmas and are chosen at run time."""
import os
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

# HASHSEARCH_EMULATE_AVX512=1: a test build whose AVX-512 kernel is compiled
# against SIMDe's portable intrinsics (Debian: libsimde-dev), so tests run it on
# CPUs without AVX-512 (see .ci/avx512-emulated). Never for a release.
emulate_avx512 = os.environ.get("HASHSEARCH_EMULATE_AVX512") == "1"
# HASHSEARCH_SANITIZE=1: a test build under AddressSanitizer and UndefinedBehaviorSanitizer
# (see .ci/python-sanitizers); -O1 keeps its build short. Never for a release.
sanitize = os.environ.get("HASHSEARCH_SANITIZE") == "1"
sanitizer_flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g"]
# Compile the sources in parallel, one job per core (NPY_NUM_BUILD_JOBS=N to choose):
# a serial -O3 build takes ~1 min on 2 cores, and CI builds the extension three times.
ParallelCompile("NPY_NUM_BUILD_JOBS").install()
ext_modules = [
    Pybind11Extension(
        "hashsearch._core",
        sorted(glob("csrc/*.cpp") + glob("csrc/kernels/*.cpp")),
        include_dirs=["csrc"],
        cxx_std=17,
        # (-Wno-psabi: the emulated vectors are passed without AVX-512 enabled, by design.)
        extra_compile_args=(["-O1"] + sanitizer_flags if sanitize else ["-O3"])
        + ["-fvisibility=hidden"]
        + (["-Wno-psabi"] if emulate_avx512 else []),
        extra_link_args=sanitizer_flags if sanitize else [],
        define_macros=[("HASHSEARCH_EMULATE_AVX512", "1")] if emulate_avx512 else [],
        depends=sorted(glob("csrc/*.h") + glob("csrc/kernels/*.h") + glob("csrc/kernels/*.inc")),
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
