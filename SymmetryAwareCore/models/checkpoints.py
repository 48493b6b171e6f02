"""Reading weight files safely and loading state dicts with every key accounted for.

Rules (the authors' loader used ``strict=False`` and a prefix strip that missed
``module.``, so pretrained weights could silently not load):

- ``.safetensors`` is read with safetensors; ``.pt``/``.pth``/``.ckpt`` only with
  ``torch.load(weights_only=True)``: no arbitrary unpickling of untrusted files.
- Missing keys, unexpected keys and shape mismatches raise
  :class:`~SymmetryAwareCore.errors.InputError` naming the keys.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Union

import torch
import torch.nn as nn

from ..errors import InputError

__all__ = ["sha256_file", "read_state_dict", "unwrap_state_dict", "describe_keys", "load_state_dict_checked"]

_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def sha256_file(path: Union[str, Path]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_keys(keys: Iterable[str], limit: int = 8) -> str:
    """``'a, b, c'`` or ``'a, b, ... (+12 more)'`` for error messages that stay one line."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown}, ... (+{len(keys) - limit} more)"


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Tensors of a weight file, on the CPU, never unpickling arbitrary objects.

    Raises:
        InputError: missing file, unknown suffix, unreadable or unsafe content.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"not a readable safetensors file ({exc})", path) from exc
    if suffix in _PICKLE_SUFFIXES:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"refused or unreadable with torch.load(weights_only=True): {first}", path) from exc
        if not isinstance(obj, Mapping):
            raise InputError(f"holds a {type(obj).__name__}, not a state dict", path)
        return dict(obj)
    raise InputError(f"unknown weights format {suffix!r} (use .safetensors, or .pt/.pth)", path)


def unwrap_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint: unwrap ``{"state_dict": ...}`` / ``{"model": ...}``
    and strip a ``module.`` prefix (DistributedDataParallel) carried by every key."""
    for wrapper in ("state_dict", "model", "network_weights"):
        if wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError("the checkpoint holds no tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_state_dict_checked(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: Optional[Union[str, Path]] = None
) -> None:
    """``model.load_state_dict(state, strict=True)`` with errors that name the keys.

    Raises:
        InputError: missing or unexpected keys, or shape mismatches (``source`` names the file).
    """
    target = model.state_dict()
    missing = set(target) - set(state)
    unexpected = set(state) - set(target)
    if missing:
        raise InputError(f"{len(missing)} missing key(s) for {type(model).__name__}: {describe_keys(missing)}", source)
    if unexpected:
        raise InputError(
            f"{len(unexpected)} unexpected key(s) for {type(model).__name__}: {describe_keys(unexpected)}", source
        )
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in target.items() if state[k].shape != v.shape]
    if wrong:
        raise InputError(f"{len(wrong)} shape mismatch(es): {describe_keys(wrong, 4)}", source)
    model.load_state_dict(dict(state), strict=True)
