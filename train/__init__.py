"""hashsearch trainer: learning binary codes for users and items (HashGNN and baselines).

Entry points: ``hashsearch-train fit ...`` once installed (the package installs as
``hashsearch_train``), or ``python -m train fit ...`` from a checkout (see :mod:`train.cli`).
The library API used by other tools (e.g. reproduction scripts):

- :func:`train.data.load_dataset` -> :class:`train.data.Dataset`
- :class:`train.config.FitConfig` and :func:`train.trainer.fit`
- :func:`train.evaluate.evaluate` (Recall@n / NDCG@n through the engine)
"""
from __future__ import annotations

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    # The version is hashsearch's (one number for the engine and the trainer); read on demand so
    # that importing the trainer does not load the engine's extension.
    if name == "__version__":
        from hashsearch import __version__

        return __version__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
