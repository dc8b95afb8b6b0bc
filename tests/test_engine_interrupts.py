"""Signals reach long native calls: Ctrl-C (or any Python signal handler that raises) stops a
search or build in the main thread within ~100 ms, and the index stays intact."""
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import hashsearch
from hashsearch.reference import topk_hamming

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer (POSIX)")


class Stop(Exception):
    pass


@pytest.fixture
def alarm():
    """alarm(seconds): SIGALRM after that long raises Stop in the main thread."""
    def handler(signum, frame):
        raise Stop()

    old = signal.signal(signal.SIGALRM, handler)
    yield lambda seconds: signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def big():
    """2M random 64-bit codes and 40,000 queries: a top-10 of all of them takes seconds (~7 s
    on 2 threads of the project's machine), a ClusterIndex build ~3 s."""
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 2**63, (2_000_000, 1), dtype=np.uint64) ^ rng.integers(0, 2, (2_000_000, 1), dtype=np.uint64) << np.uint64(63)
    queries = rng.integers(0, 2**63, (40_000, 1), dtype=np.uint64)
    return codes, queries


def _stopped_within(call, alarm, seconds=2.0):
    """Runs call() with SIGALRM due in 50 ms; checks that the call itself was stopped (it did
    not return) well before it could have finished."""
    result = None
    alarm(0.05)
    start = time.perf_counter()
    with pytest.raises(Stop):
        result = call()
    elapsed = time.perf_counter() - start
    assert result is None, "the call finished before the signal: the workload is too small"
    assert elapsed < seconds, f"stopped only after {elapsed:.2f} s"


@pytest.mark.parametrize("threads", [1, 2])
def test_a_long_search_stops_and_the_index_still_answers_exactly(big, alarm, threads):
    codes, queries = big
    index = hashsearch.Index(codes, 64, num_threads=threads)
    _stopped_within(lambda: index.topk(queries, 10), alarm)
    D, I = index.topk(queries[:3], 10)
    Dr, Ir = topk_hamming(queries[:3], codes, 10)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


def test_builds_and_other_indexes_stop(big, alarm):
    codes, queries = big
    _stopped_within(lambda: hashsearch.ClusterIndex(codes, 64, num_threads=2), alarm)
    small = codes[:300_000]
    mih = hashsearch.MIHIndex(small, 64)
    mih._native._set_scan_fallback(False)  # the tables answer every query: uniform codes make that slow
    _stopped_within(lambda: mih.topk(queries, 10, num_threads=2), alarm)
    np.testing.assert_array_equal(mih.topk(queries[:2], 10)[1], topk_hamming(queries[:2], small, 10)[1])
    emb = np.ones((len(codes), 4), dtype=np.float32)
    hies = hashsearch.HierarchicalIndex(codes, emb, 64)
    _stopped_within(lambda: hies.topk(queries, emb[: len(queries)], 10, candidates=50), alarm)


def test_an_interrupted_add_leaves_the_index_as_it_was(big, alarm):
    codes, queries = big
    emb = np.ones((len(codes), 4), dtype=np.float32)
    first = 200_000
    for search in ("cluster", "mih"):
        hies = hashsearch.HierarchicalIndex(codes[:first], emb[:first], 64, candidate_search=search, num_threads=2)
        before = hies.topk(queries[:3], emb[:3], 10)
        _stopped_within(lambda: hies.add(codes[first:], emb[first:]), alarm)
        assert hies.ntotal == first and len(hies.embeddings()) == first
        after = hies.topk(queries[:3], emb[:3], 10)
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)


def test_searches_outside_the_main_thread_are_not_stopped(big, alarm):
    codes, queries = big
    index = hashsearch.Index(codes[:100_000], 64, num_threads=1)
    out, done = {}, threading.Event()

    def search():
        out["r"] = index.topk(queries[:10_000], 10)
        done.set()

    worker = threading.Thread(target=search)
    worker.start()
    alarm(0.05)
    # (Not join(): on Python 3.11 a signal handler raising inside join() marks the thread as
    # stopped while it still runs, bpo-45274.)
    while not done.is_set():
        try:
            done.wait()  # the handler's Stop surfaces here, in the main thread
        except Stop:
            pass
    worker.join()
    alarm(0)
    assert out["r"][0].shape == (10_000, 10)
    Dr, Ir = topk_hamming(queries[:5], codes[:100_000], 10)
    np.testing.assert_array_equal(out["r"][1][:5], Ir)


def test_ctrl_c_raises_keyboard_interrupt():
    script = textwrap.dedent("""
        import os, signal, threading, time, numpy as np, hashsearch
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 2**63, (2_000_000, 1), dtype=np.uint64)
        index = hashsearch.Index(codes, 64, num_threads=2)
        # Python leaves SIGINT ignored if it started so (a CI job run in the background):
        # install the KeyboardInterrupt handler a terminal session would have.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        start = time.perf_counter()
        try:
            index.topk(codes[:40_000], 10)
            print("finished")
        except KeyboardInterrupt:
            print("interrupted after", round(time.perf_counter() - start, 2))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("interrupted after"), out.stdout + out.stderr
    assert float(out.stdout.split()[-1]) < 2.5, out.stdout
