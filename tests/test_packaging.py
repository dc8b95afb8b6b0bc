"""What pyproject.toml and MANIFEST.in promise: one version, every trainer subpackage shipped as
``hashsearch_train`` (no top-level ``train``), a console script that exists, an sdist that carries
what the tests and the build need."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_written_once(pyproject: dict) -> None:
    import hashsearch
    import train

    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hashsearch.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", hashsearch.__version__)
    assert train.__version__ == hashsearch.__version__
    assert f"## [{hashsearch.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
    others = [p for p in ("setup.py", "train/__init__.py", "train/cli.py")
              if hashsearch.__version__ in (ROOT / p).read_text()]
    assert not others, f"the version written again in {others}"


def test_trainer_installs_as_hashsearch_train_with_every_subpackage(pyproject: dict) -> None:
    st = pyproject["tool"]["setuptools"]
    assert st["package-dir"] == {"hashsearch_train": "train"}
    on_disk = {"hashsearch"} | {
        ".".join(("hashsearch_train",) + p.parent.relative_to(ROOT / "train").parts)
        for p in (ROOT / "train").rglob("__init__.py")}
    on_disk |= {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hashsearch").rglob("__init__.py")}
    assert set(st["packages"]) == on_disk
    assert not any(p == "train" or p.startswith("train.") for p in st["packages"])


def test_console_script_target_exists(pyproject: dict) -> None:
    target = pyproject["project"]["scripts"]["hashsearch-train"]
    module, func = target.split(":")
    assert module.startswith("hashsearch_train.")
    local = importlib.import_module("train" + module[len("hashsearch_train"):])  # the same file, from the checkout
    assert callable(getattr(local, func))


def test_trainer_imports_are_relative() -> None:
    """Installed as hashsearch_train, an absolute ``train`` import inside the package would fail."""
    bad = [f"{p.relative_to(ROOT)}:{n}" for p in (ROOT / "train").rglob("*.py")
           for n, line in enumerate(p.read_text().splitlines(), 1)
           if re.match(r"\s*(from|import)\s+train(\.|\s|$)", line)]
    assert not bad, bad


def test_sdist_manifest_carries_tests_and_sources() -> None:
    lines = {ln.strip() for ln in (ROOT / "MANIFEST.in").read_text().splitlines()}
    for needed in ("graft csrc", "graft tests", "include LICENSE README.md CHANGELOG.md"):
        assert needed in lines
    for f in ("tests/conftest.py", "tests/helpers.py", "LICENSE", "CHANGELOG.md"):
        assert (ROOT / f).is_file(), f
