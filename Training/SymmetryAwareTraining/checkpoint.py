"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

Two are kept: ``last.pt`` and the one before it, ``previous.pt`` (:func:`save_rotating`), so a
checkpoint corrupted by a crash or a full disk falls back to the previous one on ``--resume``
(:func:`load_latest`), with a message. ``best.pt`` holds the weights of the best validation.

A checkpoint is a dict of tensors, numbers, strings and lists only: ``model``,
``optimizer``, ``scheduler``, ``scaler`` state dicts, ``step``, ``epoch`` and ``position``
(batches of that epoch already consumed: the data order), ``rng`` (one
:func:`~SymmetryAwareTraining.distributed.rng_state` per rank) and the resolved ``config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch
import torch.nn as nn

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.atomic import atomic_path

__all__ = ["save_checkpoint", "save_rotating", "load_checkpoint", "load_latest", "unwrap",
           "LAST_NAME", "PREVIOUS_NAME", "BEST_NAME"]

LAST_NAME = "last.pt"
PREVIOUS_NAME = "previous.pt"
BEST_NAME = "best.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (its state dict has no ``module.`` prefix)."""
    return model.module if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def save_rotating(folder: Union[str, Path], state: Dict[str, Any]) -> Path:
    """Write ``folder/last.pt``, keeping the one it replaces as ``previous.pt``."""
    import os

    folder = Path(folder)
    last = folder / LAST_NAME
    if last.is_file():
        os.replace(last, folder / PREVIOUS_NAME)
    return save_checkpoint(last, state)


def load_latest(folder: Union[str, Path], log=None) -> Tuple[Dict[str, Any], Path]:
    """``(state, path)`` of ``last.pt``, or of ``previous.pt`` when ``last.pt`` is missing or
    unreadable (said on stderr). InputError when neither can be read."""
    import sys

    log = log or (lambda text: print(text, file=sys.stderr))
    folder = Path(folder)
    last, previous = folder / LAST_NAME, folder / PREVIOUS_NAME
    try:
        return load_checkpoint(last), last
    except InputError as error:
        if not previous.is_file():
            raise
        state = load_checkpoint(previous)
        log(f"symmetryaware-train: {error}; resuming from the previous checkpoint {previous} (step {state.get('step')})")
        return state, previous


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / LAST_NAME
    if not path.is_file():
        raise InputError("checkpoint not found", path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a truncated or foreign file: the user's input, not a bug
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"not a readable checkpoint ({first})", path) from None
    if not isinstance(state, dict) or "model" not in state:
        raise InputError("not a training checkpoint (no 'model' entry)", path)
    return state
