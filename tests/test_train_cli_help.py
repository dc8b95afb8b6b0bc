"""The trainer's command line: help and a shown default for every option, grouped options,
``fit --config`` (a recorded run's settings back), the learning curve and TensorBoard logging."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
import pytest

from train.cli import HelpFormatter, _add_fit_args, build_parser, config_from_args, main, parse_args, parse_fit_args
from train.config import FitConfig
from train.config_file import NOT_FROM_FILE, ConfigFileError, load_config_file
from train.curves import CURVE_FILE, plot_learning_curve

TINY = ["--data", "synthetic:users=30,items=40,edges=300", "--method", "mf", "--epochs", "2", "--no-progress",
        "--threads", "1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[Tuple[str, argparse.ArgumentParser]]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    yield from sub.choices.items()


def _options(p: argparse.ArgumentParser) -> List[argparse.Action]:
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction)]


def test_every_option_of_every_command_has_help_and_a_shown_default() -> None:
    parser = build_parser()
    commands = dict(_subparsers(parser))
    assert set(commands) == {"fit", "reproduce", "recommend"}
    missing, no_default = [], []
    for name, p in commands.items():
        fmt = HelpFormatter(p.prog)
        for action in _options(p):
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            text = fmt._expand_help(action) if action.help else ""
            if not text.strip():
                missing.append(label)
                continue
            flag = action.nargs == 0
            shown = any(mark in text for mark in ("(default", "default:"))
            if action.option_strings and not action.required and not flag and not shown:
                no_default.append(label)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help shows no default: {no_default}"


def test_defaults_shown_are_the_real_ones(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["fit", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    d = FitConfig()
    for shown in (f"code length K in bits (default: {d.bits})", f"Adam learning rate (default: {d.lr})",
                  f"(default: {d.p_decay})", f"(default: {d.method})"):
        assert shown in text


def test_fit_options_are_grouped() -> None:
    fit = dict(_subparsers(build_parser()))["fit"]
    titles = [g.title for g in fit._action_groups]
    for wanted in ("data", "model", "hashing", "optimisation", "loss", "evaluation", "runtime", "scale"):
        assert any(t.startswith(wanted) for t in titles), (wanted, titles)
    default_groups = {"options", "optional arguments", "positional arguments"}
    ungrouped = [a.option_strings for g in fit._action_groups if g.title in default_groups
                 for a in g._group_actions if not isinstance(a, argparse._HelpAction)]
    assert not ungrouped, f"fit options outside a named group: {ungrouped}"
    for name, p in _subparsers(build_parser()):
        named = [g for g in p._action_groups if g.title not in default_groups and g._group_actions]
        assert len(named) >= 2, f"{name}: options not grouped"


def test_top_level_help_lists_commands_without_internal_notes(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "reproduce", "recommend"):
        assert f"    {command}" in out
    for note in ("leave room", "``", "TODO", "XXX"):
        assert note not in out
    assert main([]) == 2  # no command: the help again, exit status 2


def test_version_is_hashsearch_version(capsys: pytest.CaptureFixture) -> None:
    import hashsearch
    import train

    assert train.__version__ == hashsearch.__version__
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip().endswith(hashsearch.__version__)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def test_config_file_values_become_defaults_and_the_command_line_wins(tmp_path: Path) -> None:
    f = _write(tmp_path, "c.json", json.dumps({"config": {"bits": 48, "lr": 0.01, "sage_dims": [32, 16],
                                                          "fanout": [4, 2], "method": "hashnet",
                                                          "out": "elsewhere", "resume": True}}))
    cfg = config_from_args(parse_args(build_parser(), ["fit", "--config", str(f), "--lr", "0.5"]))
    assert (cfg.bits, cfg.lr, cfg.sage_dims, cfg.fanout, cfg.method) == (48, 0.5, [32, 16], [4, 2], "hashnet")
    assert cfg.out == FitConfig().out and cfg.resume is False  # never taken from the file
    assert {"out", "resume", "progress", "tensorboard"} == set(NOT_FROM_FILE)
    plain = config_from_args(parse_args(build_parser(), ["fit", "--bits", "48"]))
    assert plain.lr == FitConfig().lr  # the file's values do not leak into a parser built afterwards
    own = argparse.ArgumentParser()  # a tool with fit's options (python -m train.profiling)
    _add_fit_args(own)
    cfg = config_from_args(parse_fit_args(own, ["--config", str(f), "--bits", "8"]))
    assert (cfg.bits, cfg.lr, cfg.method) == (8, 0.01, "hashnet")


@pytest.mark.parametrize("content, message", [
    (None, "No such file"),
    ("{\"bits\": 3", "not JSON"),
    ("[1, 2]", "got a JSON list"),
    ("{\"bitz\": 3}", "unknown setting(s) bitz"),
    ("{\"bits\": \"32\"}", "bits must be int"),
    ("{\"lr\": true}", "lr must be float"),
    ("{\"sage_dims\": [1, \"a\"]}", "sage_dims must be List[int]"),
])
def test_bad_config_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, content, message) -> None:
    f = tmp_path / "c.json" if content is None else _write(tmp_path, "c.json", content)
    code = main(["fit", "--config", str(f), "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("python -m train fit: error: --config ") and message in err[0], err
    assert not (tmp_path / "run").exists()
    if content is not None:
        with pytest.raises(ConfigFileError):
            load_config_file(f)


def test_fit_repeats_a_recorded_run_exactly_and_draws_its_curve(tmp_path: Path) -> None:
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["fit", *TINY, "--bits", "16", "--seed", "3", "--out", str(first)]) == 0
    assert main(["fit", "--config", str(first / "metrics.json"), "--out", str(again), "--no-progress"]) == 0
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (first, again))
    same = lambda m: {k: v for k, v in m["config"].items() if k not in NOT_FROM_FILE}  # noqa: E731
    assert same(m1) == same(m2)
    with np.load(first / "codes.npz") as a, np.load(again / "codes.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert [h["loss"] for h in m1["history"]] == [h["loss"] for h in m2["history"]]
    png = (first / CURVE_FILE).read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000


def test_learning_curve_without_validation_and_without_epochs(tmp_path: Path) -> None:
    hist = [{"epoch": 1, "loss": 0.7}, {"epoch": 2, "loss": 0.6}, {"epoch": 3, "loss": float("nan")}]
    out = plot_learning_curve(hist, tmp_path / "c.png", "hies:recall@50")
    assert out is not None and out.read_bytes().startswith(PNG_MAGIC)
    assert plot_learning_curve([], tmp_path / "none.png", "x") is None and not (tmp_path / "none.png").exists()


def _has_tensorboard() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


@pytest.mark.skipif(_has_tensorboard(), reason="tensorboard is installed")
def test_tensorboard_missing_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["fit", *TINY, "--tensorboard", str(tmp_path / "tb"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs the tensorboard package" in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not _has_tensorboard(), reason="tensorboard is not installed")
def test_tensorboard_logs_each_epoch(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = tmp_path / "tb"
    assert main(["fit", *TINY, "--tensorboard", str(tb), "--out", str(tmp_path / "run")]) == 0
    acc = EventAccumulator(str(tb))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("train/loss")]
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    np.testing.assert_allclose(losses, [h["loss"] for h in history], rtol=1e-6)
    assert [e.step for e in acc.Scalars("valid/continuous:recall@20")] == [1, 2]
