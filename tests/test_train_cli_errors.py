"""User errors of ``python -m train fit``: one line on stderr and exit status 2, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from train.cli import main

FAST = ["--epochs", "1", "--no-progress", "--method", "mf"]


def _fails_in_one_line(argv: List[str], capsys: pytest.CaptureFixture, match: str) -> None:
    code = main(["fit", *argv, *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("python -m train fit: error: "), err
    assert match in err[0], err


def test_missing_data_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _fails_in_one_line(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")], capsys,
                       "no such file or directory")


def test_malformed_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "edges.txt"
    f.write_text("0 1\n1 2\n2 x y z w\n")
    _fails_in_one_line(["--data", str(f), "--out", str(tmp_path / "run")], capsys, "edges.txt:3:")


def test_ambiguous_format_asks_for_format(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "uiw.txt"
    f.write_text("".join(f"{u} {i} 1\n" for u in range(5) for i in range(5)))
    _fails_in_one_line(["--data", str(f), "--out", str(tmp_path / "run")], capsys,
                       "pass --format lightgcn or --format edges")


def test_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "taken").write_text("x")
    _fails_in_one_line(["--data", "synthetic:users=30,items=40,edges=300", "--out", str(tmp_path / "taken")], capsys,
                       "exists and is not a directory")
    _fails_in_one_line(["--data", "synthetic:users=30,items=40,edges=300", "--out", str(tmp_path / "taken" / "run")],
                       capsys, "is not a directory")


def test_cuda_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _fails_in_one_line(["--device", "cuda", "--out", str(tmp_path / "run")], capsys, "--device cuda: this torch")
    _fails_in_one_line(["--device", "gpu", "--out", str(tmp_path / "run")], capsys, "not a device")


def test_empty_train_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "train.txt").write_text("")
    (tmp_path / "test.txt").write_text("0 3\n")
    _fails_in_one_line(["--data", str(tmp_path), "--out", str(tmp_path / "run")], capsys,
                       "the training split is empty (train 0, valid 0, test 1 interactions")


def test_too_little_data_for_the_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "three.txt"
    f.write_text("0 1\n1 2\n2 3\n")
    _fails_in_one_line(["--data", str(f), "--out", str(tmp_path / "run")], capsys,
                       "the test split is empty (train 3, valid 0, test 0 interactions")
    assert not (tmp_path / "run").exists()  # nothing was trained or written


def test_subprocess_exit_status_and_no_traceback(tmp_path: Path) -> None:
    # `python -m train` from a checkout: the repository root on the path (installed, it is hashsearch_train)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "train", "fit", "--data", str(tmp_path / "nope"), *FAST],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_options_the_data_cannot_take(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _fails_in_one_line(["--format", "csv", "--out", str(tmp_path / "run")], capsys, "synthetic data take no format")
    f = tmp_path / "e.txt"
    f.write_text("0 1\n1 2\n")
    _fails_in_one_line(["--data", str(f), "--columns", "user=0,item=1", "--out", str(tmp_path / "run")], capsys,
                       "columns apply to csv, tsv, inter and parquet")
