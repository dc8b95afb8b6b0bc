import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def simd_levels():
    import hashsearch

    return hashsearch.available_simd_levels()


@pytest.fixture(params=["scalar", "avx2", "avx512"])
def simd(request):
    """Runs a test at each SIMD level this CPU has (others are skipped)."""
    import hashsearch

    if request.param not in hashsearch.available_simd_levels():
        pytest.skip(f"CPU lacks {request.param}")
    before = hashsearch.simd_level()
    hashsearch.set_simd_level(request.param)
    yield request.param
    hashsearch.set_simd_level(before)


@pytest.fixture(autouse=True)
def cluster_search_on_small_indexes():
    """ClusterIndex scans every query of an index of up to 65,536 codes by default (the scan
    is faster there); the tests check its cluster search on small inputs, so it is forced
    here. Tests of the default ask for ``cluster_small_scan``."""
    from hashsearch import _core

    _core.ClusterIndex._set_small_scan(False)
    yield
    _core.ClusterIndex._set_small_scan(True)


@pytest.fixture
def cluster_small_scan(cluster_search_on_small_indexes):
    """ClusterIndex as shipped: small indexes answered by the scan."""
    from hashsearch import _core

    _core.ClusterIndex._set_small_scan(True)
    yield


@pytest.fixture
def split_small_scans():
    """Lets a query's scan split over threads from 4,096 code words (by default 2^17, where
    it starts to pay), so the split paths run on inputs of test size."""
    from hashsearch import _core

    before = _core._split_min_words()
    _core._set_split_min_words(4096)
    yield
    _core._set_split_min_words(before)
