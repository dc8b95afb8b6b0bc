"""Builds hashsearch._core. Portable on purpose: no -march=native; SIMD
kernels carry their own target pragmas and are chosen at run time."""
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ext_modules = [
    Pybind11Extension(
        "hashsearch._core",
        sorted(glob("csrc/*.cpp")),
        include_dirs=["csrc"],
        cxx_std=17,
        extra_compile_args=["-O3", "-fvisibility=hidden"],
        depends=sorted(glob("csrc/*.h") + glob("csrc/*.inc")),
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
