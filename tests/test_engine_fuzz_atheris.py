"""Coverage-guided fuzzing of the file loader and the argument checks with atheris, outside CI
(pytest collects no test here; tests/test_engine_fuzz.py is the bounded, seeded CI version):

    pip install atheris
    python tests/test_engine_fuzz_atheris.py -atheris_runs=200000   # libFuzzer flags after it

Each input is one case: its first byte picks the target (a file's bytes as given, a valid
file with the input XORed over it, or the input as an array of some dtype handed to Index
and topk). ValueError / TypeError are the expected refusals; anything else, a crash or a hang
is a finding (libFuzzer writes the input that caused it)."""
import sys

import numpy as np

DTYPES = ["<u8", ">u8", "u1", "i8", "f4", ">f8", "bool", "i2"]


def _targets():
    import hashsearch

    rng = np.random.default_rng(0)
    codes = hashsearch.pack(rng.integers(0, 2, (16, 70), dtype=np.uint8))
    emb = rng.standard_normal((16, 3)).astype(np.float32)
    files = [hashsearch.serialize_index(index) for index in (
        hashsearch.Index(codes, 70), hashsearch.MIHIndex(codes, 70, m=2), hashsearch.ClusterIndex(codes, 70, nclusters=3),
        hashsearch.HierarchicalIndex(codes, emb, 70, candidate_search="mih", m=2))]
    index = hashsearch.Index(codes, 70)

    def load(data: bytes):
        hashsearch.deserialize_index(data, num_threads=1)

    def mutate(data: bytes):
        raw = bytearray(files[data[0] % len(files)] if data else files[0])
        for i, b in enumerate(data[1:]):
            raw[(i * 7 + b) % len(raw)] ^= b
        if bytes(raw) not in files:
            try:
                hashsearch.deserialize_index(bytes(raw), num_threads=1)
            except ValueError:
                return
            raise AssertionError("a damaged file loaded")

    def arrays(data: bytes):
        if len(data) < 3:
            return
        dtype = np.dtype(DTYPES[data[0] % len(DTYPES)])
        body = data[3:][: len(data[3:]) // dtype.itemsize * dtype.itemsize]
        arr = np.frombuffer(body, dtype=dtype)
        width = data[1] % 80 + 1
        arr = arr[: arr.size // width * width].reshape(-1, width) if data[2] & 1 else arr
        index.topk(arr, data[2] % 20, exclude=[[data[1] % 16]] * (len(arr) if arr.ndim == 2 else 1))

    return [load, mutate, arrays]


def main() -> None:
    import atheris

    with atheris.instrument_imports():
        import hashsearch  # noqa: F401
    targets = _targets()

    def one_input(data: bytes) -> None:
        if not data:
            return
        try:
            targets[data[0] % len(targets)](data[1:])
        except (ValueError, TypeError):
            pass

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
