"""hashsearch trainer: learning binary codes for users and items (HashGNN and baselines).

Entry point: ``python -m train fit ...`` (see :mod:`train.cli`). The library API
used by other tools (e.g. reproduction scripts):

- :func:`train.data.load_dataset` -> :class:`train.data.Dataset`
- :class:`train.config.FitConfig` and :func:`train.trainer.fit`
- :func:`train.evaluate.evaluate` (Recall@n / NDCG@n through the engine)
"""
from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
