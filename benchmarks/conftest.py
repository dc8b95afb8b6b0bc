"""pytest set-up for the benchmark suite (``pytest benchmarks/ --benchmark-only``).

See :mod:`bench_common` for the settings (``HASHSEARCH_BENCH_FULL=1`` turns on
the long workloads) and :mod:`data` for the synthetic codes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from bench_common import FULL, THREADS  # noqa: E402


def pytest_report_header(config):
    return f"hashsearch benchmarks: threads={THREADS}, full={FULL} (HASHSEARCH_BENCH_FULL)"


@pytest.fixture(scope="session", autouse=True)
def _threads():
    """faiss (OpenMP) at THREADS threads for the whole session."""
    try:
        import faiss
    except ImportError:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(THREADS)
    yield
    faiss.omp_set_num_threads(before)
