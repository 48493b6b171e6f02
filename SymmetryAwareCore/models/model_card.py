"""Model weights as safetensors with a JSON model card beside them.

``brats_saswin.safetensors`` holds the tensors; ``brats_saswin.json`` says what they are:
the architecture name and keyword arguments (enough to rebuild the network), the input
channels in order with file-name patterns, modality, preprocessing, label names and
colours, version, licence, training data, metrics and the SHA-256 of the weights file.
The format is documented in ``docs/model_card.md``.

Loading checks the hash, then the keys (missing or unexpected keys raise an error naming
them), and never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..errors import InputError
from ..io.atomic import atomic_path
from .checkpoints import load_state_dict_checked, read_state_dict, sha256_file
from .registry import architecture_name, build_model

__all__ = ["CARD_FORMAT", "CARD_VERSION", "InputChannel", "Label", "ModelCard", "card_path_for", "read_card", "save_model", "load_model", "verify_weights"]

CARD_FORMAT = "symmetryaware-model-card"
CARD_VERSION = 1


@dataclass(frozen=True)
class InputChannel:
    """One input channel: a name (``"t1c"``) and file-name globs (``("*t1c*",)``) that
    pick its file among a case's files."""

    name: str
    patterns: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Label:
    """One output label: its value in the label map, name and RGB colour (0-255)."""

    value: int
    name: str
    color: Tuple[int, int, int] = (128, 128, 128)


@dataclass
class ModelCard:
    """What a weights file is. ``architecture``, ``kwargs`` and ``sha256`` are filled by
    :func:`save_model` from the model and the written file; ``extra`` holds anything else
    a writer wants kept (e.g. the training run's resolved configuration)."""

    channels: List[InputChannel]
    modality: str
    labels: List[Label] = field(default_factory=list)
    preprocessing: Dict[str, Any] = field(default_factory=dict)
    postprocessing: Dict[str, Any] = field(default_factory=dict)
    name: str = ""
    description: str = ""
    version: str = "0.0.0"
    licence: str = ""
    training_data: str = ""
    metrics: Dict[str, Any] = field(default_factory=dict)
    architecture: str = ""
    kwargs: Dict[str, Any] = field(default_factory=dict)
    weights_file: str = ""
    sha256: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["labels"] = [dict(label, color=list(label["color"])) for label in d["labels"]]
        d["channels"] = [dict(c, patterns=list(c["patterns"])) for c in d["channels"]]
        return {"format": CARD_FORMAT, "card_version": CARD_VERSION, **d}

    @classmethod
    def from_dict(cls, data: Dict[str, Any], path: Optional[Union[str, Path]] = None) -> "ModelCard":
        """Parse and check a card dict; InputError (naming ``path``) if it is malformed."""
        if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
            raise InputError(f"not a model card (expected format {CARD_FORMAT!r})", path)
        if data.get("card_version") != CARD_VERSION:
            raise InputError(f"unsupported card_version {data.get('card_version')!r} (this reader knows {CARD_VERSION})", path)
        required = ("architecture", "kwargs", "channels", "modality", "weights_file", "sha256")
        absent = [k for k in required if not data.get(k) and data.get(k) != {}]
        if absent:
            raise InputError(f"model card lacks {', '.join(absent)}", path)
        known = set(cls.__dataclass_fields__)
        fields = {k: v for k, v in data.items() if k in known}
        try:
            fields["channels"] = [
                InputChannel(name=str(c["name"]), patterns=tuple(str(p) for p in c.get("patterns", ()))) for c in data["channels"]
            ]
            fields["labels"] = [
                Label(value=int(l["value"]), name=str(l["name"]), color=tuple(int(c) for c in l.get("color", (128, 128, 128))))
                for l in data.get("labels", [])
            ]
        except (TypeError, KeyError, ValueError) as exc:
            raise InputError(f"malformed channels or labels in model card ({exc})", path) from exc
        card = cls(**fields)
        card.check(path)
        return card

    def check(self, path: Optional[Union[str, Path]] = None) -> None:
        """InputError if the card contradicts itself."""
        if not self.channels:
            raise InputError("model card lists no input channels", path)
        in_ch = self.kwargs.get("in_channels")
        if in_ch is not None and in_ch != len(self.channels):
            raise InputError(f"model card lists {len(self.channels)} input channel(s), the network takes {in_ch}", path)
        values = [l.value for l in self.labels]
        if len(set(values)) != len(values):
            raise InputError(f"model card repeats label values {values}", path)
        for l in self.labels:
            if len(l.color) != 3 or not all(0 <= c <= 255 for c in l.color):
                raise InputError(f"label {l.name!r} colour {l.color} is not three values 0-255", path)


def card_path_for(path: Union[str, Path]) -> Path:
    """The card beside a weights file (``x.safetensors`` -> ``x.json``); a ``.json`` path is kept."""
    path = Path(path)
    return path if path.suffix == ".json" else path.with_suffix(".json")


def read_card(path: Union[str, Path]) -> ModelCard:
    """Read the card of ``path`` (the card itself or its weights file)."""
    card_path = card_path_for(path)
    if not card_path.is_file():
        raise InputError("model card not found", card_path)
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"model card is not readable JSON ({exc})", card_path) from exc
    return ModelCard.from_dict(data, card_path)


def save_model(model: nn.Module, path: Union[str, Path], card: ModelCard) -> Path:
    """Write ``model``'s weights to ``path`` (``.safetensors``) and its card beside it.

    The card's ``architecture``, ``kwargs``, ``weights_file`` and ``sha256`` are set here
    from the model and the file. Both files appear together or not at all.

    Returns:
        the card's path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights path must end in .safetensors, got {path.name}")
    if not hasattr(model, "init_kwargs"):
        raise ValueError(f"{type(model).__name__} does not record its init_kwargs; cannot write a card")
    card.architecture = architecture_name(model)
    card.kwargs = json.loads(json.dumps(model.init_kwargs))  # tuples -> lists, fails early if not JSON
    card.weights_file = path.name
    card.check()
    # Copies on the CPU: safetensors refuses tensors that share storage or are not contiguous.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    card_path = card_path_for(path)
    with atomic_path(path) as tmp_weights, atomic_path(card_path) as tmp_card:
        save_file(tensors, str(tmp_weights), metadata={"format": "pt", "architecture": card.architecture})
        card.sha256 = sha256_file(tmp_weights)
        tmp_card.write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")
    return card_path


def verify_weights(path: Union[str, Path]) -> Tuple[ModelCard, Path]:
    """Read the card and check the weights file's SHA-256; returns ``(card, weights path)``."""
    card = read_card(path)
    card_path = card_path_for(path)
    weights = card_path.parent / card.weights_file
    if Path(card.weights_file).name != card.weights_file:
        raise InputError(f"weights_file must be a file name beside the card, got {card.weights_file!r}", card_path)
    if not weights.is_file():
        raise InputError("weights file named by the model card not found", weights)
    actual = sha256_file(weights)
    if actual != card.sha256:
        raise InputError(f"sha256 mismatch: the card says {card.sha256}, the file is {actual}", weights)
    return card, weights


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, ModelCard]:
    """Rebuild a network from its card and load its verified weights (eval mode).

    Args:
        path: the card (``.json``) or the weights file (``.safetensors``) beside it.
        device: where to put the model.

    Raises:
        InputError: missing files, bad card, hash mismatch, missing/unexpected keys.
    """
    card, weights = verify_weights(path)
    try:
        model = build_model(card.architecture, card.kwargs)
    except ValueError as exc:
        raise InputError(f"cannot build the network of the card: {exc}", card_path_for(path)) from exc
    load_state_dict_checked(model, read_state_dict(weights), weights)
    return model.to(device).eval(), card
