"""Training, evaluation and benchmarking tools built on top of the trackers package.

Nothing in ``trackers`` imports this package: inference never loads training code.

* :mod:`trackers.train.engine` -- the loop every recipe shares (:func:`~trackers.train.engine.train`,
  :class:`~trackers.train.engine.Recipe`): AdamW with warm-up + cosine, clipping, accumulation, autocast,
  torchrun/DDP, CSV/TensorBoard logs, checkpoints in the ``save_pretrained`` format and exact resume;
* :mod:`trackers.train.config` -- recipe configs as dataclasses, overridable from YAML and the command line;
* :mod:`trackers.train.recipes` -- one module per recipe (``point``: CoTracker3 supervised);
* :mod:`trackers.train.losses` -- the training losses;
* :mod:`trackers.train.cli` -- the ``trackers-train`` command;
* :mod:`trackers.train.data` -- synthetic training data; :mod:`trackers.train.eval` -- benchmark metrics.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "train": "trackers.train.engine",
    "Recipe": "trackers.train.engine",
    "StepContext": "trackers.train.engine",
    "TrainResult": "trackers.train.engine",
    "TrainConfig": "trackers.train.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    # lazy: importing a sub-package (e.g. trackers.train.eval) does not pull in the engine
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trackers.train' has no attribute {name!r}")
