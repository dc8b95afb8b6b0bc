"""``fit --config FILE``: the settings a run recorded (``metrics.json``'s ``"config"``), read back
as command-line defaults so that the run can be repeated, each value checked against its field."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict

from .config import FitConfig

# Where and how a run is written or watched, not what it trains: never taken from the file (a
# repeated run must not overwrite the recorded one by default).
NOT_FROM_FILE = ("out", "resume", "progress", "tensorboard")
# Settings that the command line spells as comma-separated lists.
COMMA_LISTS = ("sage_dims", "fanout", "test_modes")


class ConfigFileError(ValueError):
    """A --config file that cannot be read as a run's settings (one line, exit status 2)."""


def _matches(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a FitConfig field annotation ('int', 'Optional[List[int]]', …)."""
    annotation = annotation.replace(" ", "")
    if annotation.startswith("Optional[") and annotation.endswith("]"):
        return value is None or _matches(value, annotation[len("Optional["):-1])
    if annotation.startswith("List[") and annotation.endswith("]"):
        return isinstance(value, list) and all(_matches(v, annotation[len("List["):-1]) for v in value)
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation == "str":
        return isinstance(value, str)
    return True  # an annotation this reader does not know: FitConfig.validate() still checks the value


def _read_object(path: Path) -> Dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigFileError(f"--config {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"--config {path}: not a UTF-8 text file (expected a run's metrics.json)") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigFileError(f"--config {path}: not JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                              "expected a run's metrics.json or a JSON object of fit settings") from None
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
        obj = obj["config"]  # a run's metrics.json
    if not isinstance(obj, dict):
        raise ConfigFileError(f"--config {path}: expected a JSON object of fit settings (or a run's "
                              f"metrics.json), got a JSON {type(obj).__name__}")
    return obj


def load_config_file(path: "str | Path") -> Dict[str, Any]:
    """Settings of ``path`` as argparse defaults of ``fit`` (dest -> value).

    ``path`` is a run's ``metrics.json`` (its ``"config"`` object is read) or a JSON object of
    :class:`FitConfig` fields. ``out``, ``resume``, ``progress`` and ``tensorboard`` are left out.

    Raises:
        ConfigFileError: unreadable file, not JSON, not an object, an unknown setting, or a value of
            the wrong type (each message names the file and the setting).
    """
    path = Path(path)
    obj = _read_object(path)
    types = {f.name: str(f.type) for f in fields(FitConfig)}
    unknown = sorted(set(obj) - set(types))
    if unknown:
        raise ConfigFileError(f"--config {path}: unknown setting(s) {', '.join(unknown)} (not a field of fit's "
                              "configuration)")
    out: Dict[str, Any] = {}
    for name, value in obj.items():
        if name in NOT_FROM_FILE:
            continue
        if not _matches(value, types[name]):
            raise ConfigFileError(f"--config {path}: {name} must be {types[name]}, got {json.dumps(value)}")
        if name in COMMA_LISTS and value is not None:
            value = ",".join(str(v) for v in value)
        out[name] = value
    return out
