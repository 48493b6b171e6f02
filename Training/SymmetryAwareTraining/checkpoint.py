"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors, numbers, strings and lists only: ``model``,
``optimizer``, ``scheduler``, ``scaler`` state dicts, ``step``, ``epoch`` and ``position``
(batches of that epoch already consumed: the data order), ``rng`` (one
:func:`~SymmetryAwareTraining.distributed.rng_state` per rank) and the resolved ``config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

import torch
import torch.nn as nn

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.atomic import atomic_path

__all__ = ["save_checkpoint", "load_checkpoint", "unwrap", "load_model_weights", "LAST_NAME"]

LAST_NAME = "last.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (its state dict has no ``module.`` prefix)."""
    return model.module if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / LAST_NAME
    if not path.is_file():
        raise InputError("checkpoint not found", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a truncated or foreign file: the user's input, not a bug
        raise InputError(f"not a readable checkpoint ({str(error).splitlines()[0]})", path) from None


def load_model_weights(model: nn.Module, state: Dict[str, torch.Tensor], source: str = "", strict: bool = True) -> None:
    """Load ``state`` into ``model``, stripping a ``module.`` prefix; mismatches are an error.

    Loading is strict by default: the authors' code loaded with ``strict=False`` and missed the
    ``module.`` prefix, so pretrained weights could silently not load. With ``strict=False``
    (fine-tuning from a pretrained encoder) at least one tensor must match, and the missing
    ones are named in the error if none does.
    """
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    result = model.load_state_dict(state, strict=strict)
    if not strict:
        own = set(model.state_dict())
        loaded = own & set(state)
        if not loaded:
            raise InputError("no tensor of the checkpoint matches the model (wrong architecture?)", source or None)
    return result
