"""Publishing a trained model as a model card of :mod:`SymmetryAwareCore.models.model_card`.

A registered SA-Swin network (one with ``init_kwargs``) is written with
:func:`SymmetryAwareCore.models.model_card.save_model`: ``model.safetensors`` and
``model.json`` (architecture, kwargs, input channels, modality, labels, preprocessing,
SHA-256), with what training adds in the card's ``extra``: the task, its regions or
findings, the crop size, whether cases were aligned, and the resolved run configuration.

Any other network (a test double, a ``train.task`` plug-in) gets the same two files in a
minimal form (``"format": "symmetryaware-training-plain"``) that only this package reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch.nn as nn

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.atomic import atomic_path

__all__ = ["write_model_card", "read_trained_model", "to_shipping_precision", "PLAIN_FORMAT"]

PLAIN_FORMAT = "symmetryaware-training-plain"


def _card_fields(task: Any, config: Any, checkpoint: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    info = dict(getattr(task, "card_metadata", lambda: {})())
    extra = dict(info.pop("extra", {}))
    extra["training"] = {"task": type(task).__name__, "steps": config.train.steps}
    if checkpoint:
        # Which weights these are (best validation or last step) and why: the card must say.
        extra["training"]["checkpoint"] = checkpoint
    from .config import config_to_dict

    extra["training"]["config"] = config_to_dict(config)
    info["extra"] = extra
    return info


def write_model_card(model: nn.Module, task: Any, config: Any, stem: Path,
                     checkpoint: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json``; return the JSON's path.

    ``checkpoint`` records which weights ``model`` holds and why (``extra.training.checkpoint``:
    ``selected`` best or last, ``step``, ``why``, the validation history).
    """
    stem = Path(stem)
    fields = _card_fields(task, config, checkpoint)
    if hasattr(model, "init_kwargs"):
        from SymmetryAwareCore.models.model_card import InputChannel, Label, ModelCard, save_model

        from SymmetryAwareCore.inference.model_source import brats_card_fields

        # BraTS channels get the BraTS card's file patterns (2021 and 2023 spellings alike), so
        # `segment` matches t1n/t1c/t2w/t2f files too; other channels their own name.
        known = {c.name: c for c in brats_card_fields()["channels"]}
        card = ModelCard(
            channels=[known.get(c) or InputChannel(name=c, patterns=(f"*_{c}.*",)) for c in fields.get("channels", [])],
            modality=fields.get("modality", "mri"),
            labels=[Label(value=int(v), name=str(n), color=tuple(int(x) for x in c))
                    for v, n, c in fields.get("labels", [])],
            preprocessing=fields.get("preprocessing", {}),
            postprocessing=fields.get("postprocessing", {}),
            name=stem.parent.name,
            description=fields.get("description", ""),
            training_data=config.data.datalist,
            extra=fields["extra"],
        )
        return save_model(model, stem.with_suffix(".safetensors"), card)

    from safetensors.torch import save_file

    describe = getattr(task, "describe_model", lambda: {"name": type(model).__name__, "kwargs": {}})()
    weights, card_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"architecture": describe["name"]})
    body = {"format": PLAIN_FORMAT, "architecture": describe["name"], "kwargs": describe["kwargs"],
            "weights_file": weights.name, **{k: v for k, v in fields.items() if k != "extra"}, "extra": fields["extra"]}
    with atomic_path(card_path) as tmp:
        tmp.write_text(json.dumps(body, indent=2, default=str))
    return card_path


def read_trained_model(path, device="cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """``(model in eval mode, card extra)`` from a run folder or its ``model.json`` (SA-Swin cards)."""
    from SymmetryAwareCore.models.model_card import load_model

    path = Path(path)
    if path.is_dir():
        path = path / "model.json"
    if not path.is_file():
        raise InputError("model card not found", path)
    model, card = load_model(path, device)
    return model.eval(), dict(card.extra, preprocessing=card.preprocessing)


def to_shipping_precision(network: nn.Module) -> nn.Module:
    """Shrink a network for bundling, in place: float16 weights, and the Swin blocks'
    relative-position index tables (int64, about 1 MB each, values < 2^15) as int16.
    Loading casts both back; inference runs in float32."""
    import torch

    network = network.half()
    for module in network.modules():
        index = getattr(module, "relative_position_index", None)
        if isinstance(index, torch.Tensor) and index.dtype == torch.int64 and int(index.max()) < 2**15:
            module.relative_position_index = index.to(torch.int16)
    return network
