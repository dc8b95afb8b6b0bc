"""A run's learning curve: the training loss and the validation metric per epoch, drawn to
``OUT/learning_curve.png`` when the run finishes and, with ``--tensorboard DIR``, logged to
TensorBoard as each epoch ends (for watching a run live)."""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .fileio import atomic_write_bytes

log = logging.getLogger(__name__)

CURVE_FILE = "learning_curve.png"
_TENSORBOARD_MISSING = ("--tensorboard needs the tensorboard package, which is not installed "
                        "(pip install tensorboard, or the hashsearch[tensorboard] extra)")


def require_tensorboard() -> None:
    """Raise ImportError (one line, naming the package to install) when TensorBoard logging cannot work."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:  # torch raises it (or ModuleNotFoundError) when tensorboard is absent
        raise ImportError(_TENSORBOARD_MISSING) from None


class EpochLog:
    """Scalars of each epoch record (``Trainer.history`` entries) to TensorBoard in ``logdir``;
    does nothing when ``logdir`` is None. The writer opens at the first epoch."""

    def __init__(self, logdir: Optional[str], val_name: str) -> None:
        self.logdir = logdir
        self.val_name = val_name  # e.g. "hies:recall@50"
        self._writer = None
        if logdir is not None:
            require_tensorboard()

    def epoch(self, rec: Dict[str, Any]) -> None:
        """Log one epoch record: loss, val (if validated), p, seconds and test monitor metrics."""
        if self.logdir is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.logdir)
        step = int(rec["epoch"])
        self._writer.add_scalar("train/loss", float(rec["loss"]), step)
        if rec.get("val") is not None:
            self._writer.add_scalar(f"valid/{self.val_name}", float(rec["val"]), step)
        for key in ("p", "seconds"):
            if rec.get(key) is not None:
                self._writer.add_scalar(f"train/{key}", float(rec[key]), step)
        for name, value in (rec.get("test_monitor") or {}).items():
            self._writer.add_scalar(f"test/{name}", float(value), step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _series(history: Sequence[Dict[str, Any]], key: str) -> tuple:
    pts = [(r["epoch"], r[key]) for r in history if r.get(key) is not None and math.isfinite(r[key])]
    return tuple(zip(*pts)) if pts else ((), ())


def plot_learning_curve(history: List[Dict[str, Any]], path: Path, val_name: str, title: str = "") -> Optional[Path]:
    """Draw loss (left axis) and the validation metric (right axis) per epoch to the PNG ``path``
    (written atomically); returns ``path``, or None when ``history`` has no epoch."""
    if not history:
        return None
    # The object API with the Agg canvas: no pyplot, so a caller's backend and figures are untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ep, loss = _series(history, "loss")
    ax.plot(ep, loss, "o-", color="tab:blue")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training loss", color="tab:blue")
    ep_v, val = _series(history, "val")
    if val:
        ax2 = ax.twinx()
        ax2.plot(ep_v, val, "s-", color="tab:orange")
        ax2.set_ylabel(f"validation {val_name}", color="tab:orange")
    ax.set_title(title or "learning curve")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_learning_curve(out: Path, history: List[Dict[str, Any]], cfg: Any) -> Optional[Path]:
    """``OUT/learning_curve.png`` of a run (``cfg``: its FitConfig); a plotting failure is logged,
    never fatal (the run's codes and metrics are already written)."""
    mode, metric = cfg.val_spec
    try:
        return plot_learning_curve(history, Path(out) / CURVE_FILE, f"{mode}:{metric}",
                                   title=f"{cfg.method}, {cfg.bits} bits")
    except Exception as e:  # noqa: BLE001 - a figure must not cost the run
        log.warning("learning curve not drawn: %s", e)
        return None
