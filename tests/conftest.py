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
