"""Load MONAI Swin UNETR weights into SA-Swin networks, with every key accounted for.

Two key layouts are understood:

1. A MONAI ``SwinUNETR`` state dict (``swinViT.*``, ``encoder1.*`` ... ``out.*``), bare or
   wrapped in ``{"state_dict": ...}`` / ``{"model": ...}``, keys optionally prefixed
   ``module.`` (DistributedDataParallel). SA-Swin keeps MONAI's names, so it loads key for
   key; only the SACA blocks stay freshly initialised.
2. MONAI's self-supervised Swin encoder checkpoints (the layout
   ``SwinUNETR.load_from`` reads): ``{"state_dict": {"module.patch_embed.proj.weight",
   "module.layers1.0.blocks.0.mlp.fc1.weight", "module.layers1.0.downsample...", ...}}``
   -- encoder keys without the ``swinViT.`` prefix and with ``fc1``/``fc2`` for the MLP
   (MONAI's MLPBlock calls them ``linear1``/``linear2``). Prefixes ``swinViT.`` or
   ``swin_vit.`` (from pretraining heads) are understood too.

The same function moves an SA-Swin pretrainer's encoder and SACA block into a
segmentation or classification network (its ``head.*`` keys are reported as ignored).

Every key of the model's encoder (``swinViT.*``) must be in the checkpoint. Checkpoint keys
inside the model's own modules that the model lacks are errors (a different
architecture); keys outside them (pretraining heads such as ``rotation_pre.*``) are
reported in :class:`LoadReport` and logged, never dropped silently.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

import torch
import torch.nn as nn

from ..errors import InputError
from .checkpoints import describe_keys, read_state_dict, unwrap_state_dict

__all__ = ["LoadReport", "normalise_monai_keys", "load_monai_weights"]

logger = logging.getLogger(__name__)

_ENCODER = "swinViT."
_SSL_ROOTS = ("patch_embed.", "layers1.", "layers2.", "layers3.", "layers4.")
_MLP_RENAME = re.compile(r"\.mlp\.fc([12])\.")


@dataclass(frozen=True)
class LoadReport:
    """What a weight load did.

    Attributes:
        loaded: model keys set from the checkpoint.
        fresh: model keys left as initialised (SACA, or the decoder for an encoder-only
            checkpoint).
        ignored: checkpoint keys outside the model's modules (e.g. pretraining heads).
    """

    loaded: Tuple[str, ...]
    fresh: Tuple[str, ...]
    ignored: Tuple[str, ...]


def normalise_monai_keys(obj: Mapping) -> Dict[str, torch.Tensor]:
    """Unwrap a checkpoint and rename its keys to MONAI SwinUNETR's (see module docstring)."""
    state = unwrap_state_dict(obj)
    out = {}
    for key, value in state.items():
        if key.startswith("swin_vit."):
            key = _ENCODER + key[len("swin_vit."):]
        elif key.startswith(_SSL_ROOTS):
            key = _ENCODER + key
        if key.startswith(_ENCODER):
            key = _MLP_RENAME.sub(r".mlp.linear\1.", key)
        out[key] = value
    return out


def load_monai_weights(
    model: nn.Module, source: Union[str, Path, Mapping], encoder_only: bool = False
) -> LoadReport:
    """Load MONAI SwinUNETR or SSL encoder weights into ``model`` (an SA-Swin network).

    Args:
        model: a network with a ``swinViT`` encoder (any SA-Swin class).
        source: a weight file (``.safetensors``, or ``.pt``/``.pth`` read with
            ``weights_only=True``) or an already loaded checkpoint mapping.
        encoder_only: take only the encoder from a full SwinUNETR checkpoint (e.g. to
            fine-tune for another label set); its decoder keys are then reported as ignored.

    Returns:
        a :class:`LoadReport`.

    Raises:
        InputError: missing encoder keys, unexpected keys, shape mismatches, unreadable file.
    """
    path = None if isinstance(source, Mapping) else Path(source)
    try:
        state = normalise_monai_keys(read_state_dict(path) if path is not None else source)
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(str(exc), path) from exc
    target = model.state_dict()
    top = {k.split(".")[0] for k in target}
    encoder_keys = {k for k in target if k.startswith(_ENCODER)}
    missing_encoder = encoder_keys - set(state)
    if missing_encoder:
        raise InputError(
            f"{len(missing_encoder)} encoder key(s) missing from the checkpoint: {describe_keys(missing_encoder)}", path
        )
    ignored = {k for k in state if k.split(".")[0] not in top}
    unexpected = {k for k in state if k.split(".")[0] in top and k not in target}
    if unexpected:
        raise InputError(
            f"{len(unexpected)} unexpected key(s) for {type(model).__name__}: {describe_keys(unexpected)}", path
        )
    usable = {k for k in state if k in target}
    if encoder_only:
        ignored |= usable - encoder_keys
        usable = set(encoder_keys)
    else:
        # A checkpoint with some decoder keys must have all of them: half a decoder is a bug.
        decoder_keys = {k for k in target if not k.startswith((_ENCODER, "saca."))}
        given = usable & decoder_keys
        if given and given != decoder_keys:
            missing = decoder_keys - given
            raise InputError(f"{len(missing)} missing key(s) for {type(model).__name__}: {describe_keys(missing)}", path)
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(target[k].shape)}" for k in usable if state[k].shape != target[k].shape]
    if wrong:
        raise InputError(f"{len(wrong)} shape mismatch(es): {describe_keys(wrong, 4)}", path)
    merged = dict(target)
    merged.update({k: state[k] for k in usable})
    model.load_state_dict(merged, strict=True)
    report = LoadReport(
        loaded=tuple(sorted(usable)), fresh=tuple(sorted(set(target) - usable)), ignored=tuple(sorted(ignored))
    )
    if report.ignored:
        logger.warning("ignored %d checkpoint key(s) not part of %s: %s", len(ignored), type(model).__name__, describe_keys(ignored))
    if report.fresh:
        logger.info("%d key(s) of %s left as initialised: %s", len(report.fresh), type(model).__name__, describe_keys(report.fresh))
    return report
