"""Hardening against an adversarial user, one test per defect class: thread creation failing, an
unbounded num_threads, fork while an add holds a lock, damaged file headers, save over
symlinks and special files, the native exclude check, odd exclude forms, an interrupted add,
bad environment variables and big-endian codes. Cases that could hang or crash the process
run in a subprocess with a timeout."""
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

import hashsearch
from hashsearch import _core
from hashsearch.reference import topk_hamming

UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")


def _run(script: str, timeout: float = 120, **env):
    """Runs ``script`` in a fresh interpreter; (returncode, stdout, stderr). A hang fails the test."""
    full_env = dict(os.environ, **env)
    try:
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                             timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the script hung (> {timeout} s)")
    return out.returncode, out.stdout, out.stderr


def _codes(n, nbits=64, seed=0):
    return hashsearch.pack(np.random.default_rng(seed).integers(0, 2, (n, nbits), dtype=np.uint8))


# ---------------------------------------------------------------- D1: thread creation fails


@pytest.mark.skipif(UNDER_ASAN, reason="an address-space limit breaks AddressSanitizer's shadow memory")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, limits the address space")
def test_failing_thread_creation_raises_and_the_pool_stays_usable():
    """With the address space too small for another thread's stack, a call that needs new
    threads raises a clear RuntimeError, whether the pool is free or busy with another call
    (then the call's own threads: a joinable std::thread destroyed aborted the process), and
    the pool serves calls again once threads can be created."""
    rc, out, err = _run("""
        import resource, threading, time, numpy as np, hashsearch
        from hashsearch import _core
        from hashsearch.reference import topk_hamming
        codes = hashsearch.pack(np.random.default_rng(0).integers(0, 2, (4000, 64), dtype=np.uint8))
        index = hashsearch.Index(codes)
        q = codes[:64]
        stack = resource.getrlimit(resource.RLIMIT_STACK)[0]  # a new thread's stack (glibc)
        stack = stack if 0 < stack < 1 << 30 else 8 << 20
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)

        def search_with_room_for_one_thread(case):
            vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (vm + stack + stack // 2, hard))
            try:
                index.topk(q, 5, num_threads=4)  # 3 more threads: the second fails
                print(case, "no-error")
            except RuntimeError as e:
                ok = "could not start a worker thread" in str(e) and "num_threads" in str(e)
                print(case, "clear-error" if ok else "unclear-error", flush=True)
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

        search_with_room_for_one_thread("pool")  # the pool creates its workers
        holder = threading.Thread(target=_core._hold_pool, args=(1.0,))
        holder.start()
        time.sleep(0.3)
        search_with_room_for_one_thread("busy")  # threads of the call's own
        holder.join()
        D, I = index.topk(q, 5, num_threads=4)
        Dr, Ir = topk_hamming(q, codes, 5)
        print("usable", (D == Dr).all() and (I == Ir).all())
    """, timeout=120)
    assert rc == 0, f"exit status {rc}: {out} {err[-2000:]}"
    assert out.split() == ["pool", "clear-error", "busy", "clear-error", "usable", "True"], out + err


# ---------------------------------------------------------------- D2: num_threads bound


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_a_huge_num_threads_is_capped_at_four_times_the_cores():
    rc, out, err = _run("""
        import os, numpy as np, hashsearch
        codes = hashsearch.pack(np.random.default_rng(0).integers(0, 2, (20000, 64), dtype=np.uint8))
        hashsearch.Index(codes).topk(codes, 10, num_threads=10**6)
        hashsearch.MIHIndex(codes).topk(codes[:2000], 10, num_threads=10**6)
        hashsearch.ClusterIndex(codes, num_threads=10**6).topk(codes[:2000], 10, num_threads=10**6)
        threads = int(next(l for l in open("/proc/self/status") if l.startswith("Threads")).split()[1])
        print(threads, os.cpu_count())
    """)
    assert rc == 0, err
    threads, cores = map(int, out.split())
    assert threads <= 4 * cores + 2, f"{threads} threads on {cores} cores"


def test_num_threads_attribute_is_validated():
    codes = _codes(100)
    emb = np.ones((100, 3), np.float32)
    for index in (hashsearch.Index(codes), hashsearch.MIHIndex(codes), hashsearch.ClusterIndex(codes, nclusters=4),
                  hashsearch.HierarchicalIndex(codes, emb)):
        with pytest.raises(ValueError, match="num_threads must be >= 0, got -5"):
            index.num_threads = -5
        with pytest.raises(TypeError, match="num_threads must be an int, got float"):
            index.num_threads = 1.5
        with pytest.raises(ValueError, match="num_threads must be <="):
            index.num_threads = 2**40
        index.num_threads = np.int64(2)
        assert index.num_threads == 2 and type(index.num_threads) is int
        assert index.topk(codes[:2], 3, num_threads=None)[1].shape == (2, 3) if not isinstance(
            index, hashsearch.HierarchicalIndex) else True


# ---------------------------------------------------------------- D3: fork during add

_FORK_SCRIPT = """
    import os, threading, time, numpy as np, hashsearch
    codes = hashsearch.pack(np.random.default_rng(0).integers(0, 2, (1000, 64), dtype=np.uint8))
    emb = np.ones((1000, 4), np.float32)
    index = {make}
    def fork_and_search():
        pid = os.fork()
        if pid == 0:
            try:
                {child}
                os._exit(0)
            except RuntimeError as e:
                print("child:", e, flush=True)
                os._exit(3)
            except BaseException as e:
                print("child other:", type(e).__name__, e, flush=True)
                os._exit(4)
        for _ in range(200):  # 20 s
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return "hung"
    {scenario}
"""


def _fork_case(make, child, scenario):
    rc, out, err = _run(_FORK_SCRIPT.format(make=make, child=child, scenario=textwrap.indent(
        textwrap.dedent(scenario), "    ").strip()), timeout=60)
    assert rc == 0, err
    return out


@pytest.mark.parametrize("make", ["hashsearch.Index(codes)", "hashsearch.HierarchicalIndex(codes, emb)"])
def test_fork_while_another_thread_holds_the_write_lock_does_not_hang_the_child(make):
    """A child must not wait for good on a lock whose holder does not exist in the child.
    The writer may have been mid-change, so the child refuses that index with a clear error;
    the parent goes on."""
    out = _fork_case(make, "index.hamming_topk(codes[:1], 1) if hasattr(index, 'hamming_topk') "
                           "else index.topk(codes[:1], 1)", """
        t = threading.Thread(target=index._native._hold_write_lock, args=(1.0,))
        t.start()
        while not index._native._write_held:
            time.sleep(0.005)
        print("exit", fork_and_search())
        t.join()
        print("parent", index.ntotal)
    """)
    assert "being changed (add) by another thread when the process forked" in out, out
    assert out.strip().endswith("exit 3\nparent 1000"), out


@pytest.mark.parametrize("make", ["hashsearch.Index(codes)", "hashsearch.HierarchicalIndex(codes, emb)"])
def test_a_child_forked_after_the_add_ended_uses_the_index(make):
    out = _fork_case(make, """assert index.ntotal == 1000
                print("child ids", index.codes()[:1].tolist() == codes[:1].tolist())""", """
        t = threading.Thread(target=index._native._hold_write_lock, args=(0.2,))
        t.start()
        t.join()
        print("exit", fork_and_search())
    """)
    assert "child ids True" in out and out.strip().endswith("exit 0"), out


@pytest.mark.parametrize("make", ["hashsearch.MIHIndex(codes)", "hashsearch.ClusterIndex(codes, nclusters=4)"])
def test_a_child_can_add_to_an_index_whose_add_lock_a_parent_thread_held(make):
    """MIHIndex and ClusterIndex guard the swap of their native index with a Python lock,
    which a fork copied in its held state."""
    out = _fork_case(make, """index.add(codes[:5])
                assert index.ntotal == 1005""", """
        held, release = threading.Event(), threading.Event()
        def hold():
            with index._add_lock:
                held.set()
                release.wait()
        t = threading.Thread(target=hold)
        t.start()
        held.wait()
        print("exit", fork_and_search())
        release.set()
        t.join()
    """)
    assert out.strip().endswith("exit 0"), out


# ---------------------------------------------------------------- D4: header checksum


def _hier_and_flat():
    c = hashsearch.pack(np.random.default_rng(0).integers(0, 2, (500, 60), dtype=np.uint8))
    hier = hashsearch.HierarchicalIndex(c, np.ones((500, 4)), 60)
    return c, hier, hashsearch.Index(c, 60)


def test_the_issue_header_changes_are_rejected():
    _, hier, flat = _hier_and_flat()
    raw = bytearray(hashsearch.serialize_index(hier))
    raw[12] = 1  # kind 3 -> 1: would load as an Index without the embeddings
    with pytest.raises(ValueError, match="header checksum mismatch"):
        hashsearch.deserialize_index(bytes(raw))
    raw = bytearray(hashsearch.serialize_index(flat))
    raw[16] = 61  # nbits 60 -> 61
    with pytest.raises(ValueError, match="header checksum mismatch"):
        hashsearch.deserialize_index(bytes(raw))


def test_every_single_byte_change_of_the_header_is_rejected():
    c, hier, flat = _hier_and_flat()
    cluster = hashsearch.ClusterIndex(c, 60, nclusters=5)
    mih = hashsearch.MIHIndex(c, 60, m=3)
    for index in (hier, flat, cluster, mih):
        raw = hashsearch.serialize_index(index)
        assert raw[8] == 2, "files are written as format version 2"
        for pos in range(56):
            for value in {0, 1, 2, 3, 4, 61, 0xFF, raw[pos] ^ 1, raw[pos] ^ 0x80} - {raw[pos]}:
                damaged = bytearray(raw)
                damaged[pos] = value
                with pytest.raises(ValueError):
                    hashsearch.deserialize_index(bytes(damaged))


def _version1_bytes(index) -> bytes:
    """The bytes the version-1 writer wrote: the same fields, no header checksum, CRC32 of the
    payload only."""
    raw = hashsearch.serialize_index(index)
    fields = list(struct.unpack("<8sIIIIQIIQI", raw[:52]))
    payload = raw[56:]
    assert fields[-1] == zlib.crc32(payload)
    fields[1] = 1
    return struct.pack("<8sIIIIQIIQI", *fields) + payload


def test_version_1_files_still_load(tmp_path):
    c, hier, flat = _hier_and_flat()
    for index in (hier, flat, hashsearch.MIHIndex(c, 60, m=3), hashsearch.ClusterIndex(c, 60, nclusters=5)):
        old = _version1_bytes(index)
        back = hashsearch.deserialize_index(old)
        (tmp_path / "v1.hsi").write_bytes(old)
        loaded = hashsearch.load(tmp_path / "v1.hsi")
        for x in (back, loaded):
            assert type(x) is type(index) and x.nbits == 60
            np.testing.assert_array_equal(x.codes(), c)
        damaged = bytearray(old)
        damaged[-1] ^= 1
        with pytest.raises(ValueError, match="checksum mismatch"):
            hashsearch.deserialize_index(bytes(damaged))


# ---------------------------------------------------------------- D5: save's target


def test_save_through_a_symlink_writes_its_target(tmp_path):
    index = hashsearch.Index(_codes(20))
    target = tmp_path / "real.hsi"
    target.write_bytes(b"old")
    link = tmp_path / "link.hsi"
    link.symlink_to(target)
    index.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(hashsearch.load(target).codes(), index.codes())
    dangling = tmp_path / "dangling.hsi"
    dangling.symlink_to(tmp_path / "new.hsi")
    index.save(dangling)
    assert dangling.is_symlink() and (tmp_path / "new.hsi").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.hsi", "link.hsi", "new.hsi", "real.hsi"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_save_refuses_paths_that_are_not_regular_files(tmp_path):
    index = hashsearch.Index(_codes(20))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"fifo: it is a FIFO; expected a regular file or a new path"):
        index.save(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(ValueError, match="it is a directory"):
        index.save(tmp_path)
    to_device = tmp_path / "null.hsi"
    to_device.symlink_to(os.devnull)  # (a link: replacing the link would never reach the device)
    with pytest.raises(ValueError, match=r"null.hsi \(-> /dev/null\): it is a character device"):
        index.save(to_device)
    assert to_device.is_symlink() and stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null.hsi"]


def test_save_gives_new_files_the_umask_mode_and_keeps_an_existing_mode(tmp_path):
    index = hashsearch.Index(_codes(20))
    old_umask = os.umask(0o027)
    try:
        index.save(tmp_path / "new.hsi")
        assert stat.S_IMODE(os.stat(tmp_path / "new.hsi").st_mode) == 0o640
        existing = tmp_path / "existing.hsi"
        existing.write_bytes(b"x")
        os.chmod(existing, 0o604)
        index.save(existing)
        assert stat.S_IMODE(os.stat(existing).st_mode) == 0o604
        assert hashsearch.load(existing).ntotal == 20
    finally:
        os.umask(old_umask)


# ---------------------------------------------------------------- D6: native exclude offsets


def test_the_native_exclude_check_reads_no_id_before_the_offsets_are_checked():
    """indptr [0, 2, 1] with one id placed right before an unreadable page: the check read
    ids[1] (past the page) before it saw the offsets decrease."""
    rc, out, err = _run("""
        import ctypes, mmap, numpy as np
        from hashsearch import _core
        page = mmap.PAGESIZE
        buf = mmap.mmap(-1, 2 * page)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        assert libc.mprotect(addr + page, page, 0) == 0  # PROT_NONE
        ids = np.frombuffer(buf, dtype=np.int64, count=1, offset=page - 8)
        ids[0] = 0
        index = _core.FlatIndex(np.zeros((10, 1), np.uint64), 64)
        q = np.zeros((2, 1), np.uint64)
        for bad in ([0, 2, 1], [0, 5, 1], [0, -3, 1]):
            try:
                index.topk(q, 3, np.array(bad, np.int64), ids)
                print("accepted", bad)
            except ValueError as e:
                print("rejected:", e)
        print("alive")
    """)
    assert rc == 0, f"exit status {rc}: {err[-2000:]}"
    assert out.count("rejected: exclude indptr must be non-decreasing") == 3 and "alive" in out, out


def test_the_native_exclude_check_wants_both_arrays():
    index = _core.FlatIndex(np.zeros((10, 1), np.uint64), 64)
    with pytest.raises(ValueError, match="both indptr and indices"):
        index.topk(np.zeros((1, 1), np.uint64), 3, None, np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="both indptr and indices"):
        index.topk(np.zeros((1, 1), np.uint64), 3, np.zeros(2, np.int64), None)


# ---------------------------------------------------------------- D7: exclude forms


def test_exclude_in_undocumented_forms_is_refused():
    c = _codes(1000)
    emb = np.ones((1000, 3), np.float32)
    indexes = [hashsearch.Index(c), hashsearch.MIHIndex(c), hashsearch.ClusterIndex(c, nclusters=8)]
    hier = hashsearch.HierarchicalIndex(c, emb)
    for form in ({0: [231], 1: [224]}, {0: [1]}.keys(), {3, 5}, frozenset({3}), "ab", b"ab"):
        name = type(form).__name__
        for index in indexes:
            with pytest.raises(TypeError, match=f"exclude must be None, a sequence of id arrays .* got {name}"):
                index.topk(c[:2], 3, exclude=form)
            with pytest.raises(TypeError, match="exclude must be None"):
                index.range_search(c[:2], 3, exclude=form)
        with pytest.raises(TypeError, match="exclude must be None"):
            hier.topk(c[:2], emb[:2], 3, exclude=form)
        with pytest.raises(TypeError, match="exclude must be None"):
            hier.hamming_topk(c[:2], 3, exclude=form)
    # The documented forms still work: rows (list, tuple of 3, array rows) and CSR.
    D, I = indexes[0].topk(c[:2], 3, exclude=[[0], [1]])
    assert 0 not in I[0] and 1 not in I[1]
    assert (indexes[0].topk(c[:2], 3, exclude=(np.array([0, 1, 2]), np.array([0, 1])))[1] == I).all()


# ---------------------------------------------------------------- D8: interrupted add


class _Stop(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer (POSIX)")
@pytest.mark.parametrize("search", ["scan", "mih", "cluster"])
def test_an_add_interrupted_at_any_moment_adds_all_or_nothing(search):
    """The signal lands at delays spread over the add's duration: a call that raised must have
    added nothing (or everything, when the signal came just after it returned), one that
    returned everything. The MIH rebuild (~50 ms here) and the cluster
    layout never reached their first interrupt check (100 ms), so the add completed and the
    exception came after it."""
    rng = np.random.default_rng(2)
    n = 200_000
    c = hashsearch.pack(rng.integers(0, 2, (2 * n, 64), dtype=np.uint8))
    e = rng.standard_normal((2 * n, 8)).astype(np.float32)

    def handler(signum, frame):
        raise _Stop()

    old = signal.signal(signal.SIGALRM, handler)
    raised = 0
    try:
        h = hashsearch.HierarchicalIndex(c[:n], e[:n], candidate_search=search, num_threads=1)
        for delay in np.linspace(0.0005, 0.03 if search != "scan" else 0.003, 12):
            before, returned = h.ntotal, False
            signal.setitimer(signal.ITIMER_REAL, float(delay))
            try:
                h.add(c[n:n + 100_000], e[n:n + 100_000])
                returned = True
                signal.setitimer(signal.ITIMER_REAL, 0)
            except _Stop:
                # the signal may also land after add returned, before `returned` is set: then the
                # add is whole; either way the index holds all of it or none of it
                assert h.ntotal in (before, before + 100_000), f"partly grown ({delay})"
                assert len(h.embeddings()) == h.ntotal
                raised += h.ntotal == before
                returned = h.ntotal != before
            if returned:
                assert h.ntotal == before + 100_000 and len(h.embeddings()) == h.ntotal
            h = hashsearch.HierarchicalIndex(c[:n], e[:n], candidate_search=search, num_threads=1) \
                if h.ntotal != n else h
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if search != "scan":
        assert raised > 0, "no add was interrupted: the workload is too small"
    q = c[:3]
    D, I = h.hamming_topk(q, 5)
    Dr, Ir = topk_hamming(q, c[:n], 5)
    np.testing.assert_array_equal(I, Ir)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer (POSIX)")
def test_an_interrupted_index_add_adds_all_or_nothing():
    c = _codes(400_000, seed=4)
    index = hashsearch.Index(c[:1000])

    def handler(signum, frame):
        raise _Stop()

    old = signal.signal(signal.SIGALRM, handler)
    try:
        for delay in np.linspace(0.0001, 0.004, 12):
            before, returned = index.ntotal, False
            signal.setitimer(signal.ITIMER_REAL, float(delay))
            try:
                index.add(c)
                returned = True
                signal.setitimer(signal.ITIMER_REAL, 0)
            except _Stop:
                if not returned:
                    assert index.ntotal == before, f"grew though interrupted ({delay})"
            assert index.ntotal == (before + len(c) if returned else before)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    np.testing.assert_array_equal(index.codes()[:1000], c[:1000])


# ---------------------------------------------------------------- D12 (engine): env vars, byte order


@pytest.mark.parametrize("name,value", [("HASHSEARCH_SPIN_US", "junk"), ("HASHSEARCH_SPIN_US", "-1"),
                                        ("HASHSEARCH_SPIN_US", "5us"), ("HASHSEARCH_SPIN_US", "100001"),
                                        ("HASHSEARCH_WIDE_POPCOUNT", "bogus"),
                                        ("HASHSEARCH_WIDE_POPCOUNT", "POPCNT")])
def test_bad_environment_values_are_refused_at_import(name, value):
    rc, out, err = _run("import hashsearch", **{name: value})
    assert rc != 0
    assert f"ValueError: {name}" in err or f"'{value}' ({name}" in err, err
    assert value in err.splitlines()[-1], err


@pytest.mark.parametrize("name,value", [("HASHSEARCH_SPIN_US", "0"), ("HASHSEARCH_SPIN_US", "100000"),
                                        ("HASHSEARCH_SPIN_US", ""), ("HASHSEARCH_WIDE_POPCOUNT", "popcnt"),
                                        ("HASHSEARCH_WIDE_POPCOUNT", "auto")])
def test_good_environment_values_import(name, value):
    rc, out, err = _run("import hashsearch; print('ok')", **{name: value})
    assert rc == 0 and out.strip() == "ok", err


def test_big_endian_packed_codes_are_the_same_codes():
    c = _codes(300, nbits=128, seed=5)
    big = c.astype(">u8")
    ref = hashsearch.Index(c)
    D, I = hashsearch.Index(big).topk(big[:4], 5)
    Dr, Ir = ref.topk(c[:4], 5)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(ref.topk(big[0], 5)[1], Ir[:1])
    index = hashsearch.Index(c[:10])
    index.add(big[10:20])
    np.testing.assert_array_equal(index.codes(), c[:20])
    np.testing.assert_array_equal(hashsearch.unpack(big, 128), hashsearch.unpack(c, 128))
    h = hashsearch.HierarchicalIndex(big, np.ones((300, 2), ">f4"))
    np.testing.assert_array_equal(h.codes(), c)
    with pytest.raises(ValueError, match="bits set above nbits=100"):
        hashsearch.Index(big, 100)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer (POSIX)")
def test_a_signal_handler_using_the_index_during_its_add_gets_a_clear_error():
    """The add checks for signals while it holds the index's write lock; a handler that reads
    the index then finds the lock held by its own thread (glibc's own error would say only
    "Resource deadlock avoided"). In a subprocess: a lock that does not detect it would hang."""
    rc, out, err = _run("""
        import signal, numpy as np, hashsearch
        rng = np.random.default_rng(2)
        c = hashsearch.pack(rng.integers(0, 2, (400_000, 64), dtype=np.uint8))
        e = rng.standard_normal((400_000, 8)).astype(np.float32)
        h = hashsearch.HierarchicalIndex(c[:200_000], e[:200_000], candidate_search="mih", num_threads=1)
        signal.signal(signal.SIGALRM, lambda signum, frame: h.ntotal)
        signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)  # again and again: some land in the add
        try:
            h.add(c[200_000:], e[200_000:])
            result = "added"
        except RuntimeError as err:
            result = f"refused: {err}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        print(result)
        print("after", h.ntotal)
    """, timeout=60)
    assert rc == 0, err
    assert "refused: this index is being changed by an add in this thread" in out, out
    assert out.strip().endswith("after 200000"), out
