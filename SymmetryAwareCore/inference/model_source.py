"""Where models come from: the bundled ones, the user's imported ones, a path, or the stand-in.

Models are a weights file (safetensors) with a JSON card beside it (docs/model_card.md).
Bundled models live in ``SymmetryAwareCore/data/models``; models imported with
``symmetryaware models import`` live in the user's model folder
(``$SYMMETRYAWARE_MODELS``, default ``~/.local/share/symmetryaware/models``). Nothing is
ever downloaded.

``default`` is the bundled model (the one whose card says ``"default": true``, else the
first segmentation model, else the first); with none bundled it falls back to ``untrained-standin``, an SA-Swin built from a
fixed seed, so every part of the pipeline can run; its card and every report say that its
output is meaningless.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch

from ..contract import BUNDLED_MODELS_DIR, is_component_card
from ..errors import InputError

__all__ = [
    "BUNDLED_DIR",
    "STANDIN_NAME",
    "LoadedModel",
    "user_model_dir",
    "list_models",
    "find_model_card",
    "resolve_model",
    "standin_card",
    "brats_card_fields",
]

BUNDLED_DIR = BUNDLED_MODELS_DIR
STANDIN_NAME = "untrained-standin"
DEFAULT_NAME = "default"


def user_model_dir() -> Path:
    """The folder of imported models (``$SYMMETRYAWARE_MODELS`` or a per-user default)."""
    env = os.environ.get("SYMMETRYAWARE_MODELS")
    return Path(env) if env else Path.home() / ".local" / "share" / "symmetryaware" / "models"


@dataclass
class LoadedModel:
    """A network ready for inference with its card and where it came from."""

    network: torch.nn.Module
    card: object
    source: str
    notes: List[str] = field(default_factory=list)

    @property
    def untrained(self) -> bool:
        return self.card.name == STANDIN_NAME

    def describe(self) -> Dict:
        """Model id, version, hash and origin for reports."""
        return {
            "name": self.card.name,
            "version": self.card.version,
            "architecture": self.card.architecture,
            "sha256": self.card.sha256 or None,
            "source": self.source,
            "untrained": self.untrained,
            "licence": self.card.licence,
        }


def brats_card_fields() -> Dict:
    """Channels, labels and postprocessing of a BraTS-style glioma model, for its card.

    Label names and colours come from :func:`~SymmetryAwareCore.io.labels.brats_labels`
    (2021 convention, enhancing tumour = 4); outputs are the nested regions TC, WT, ET, one
    sigmoid channel each in that order.
    """
    from ..io.labels import brats_labels, brats_regions
    from ..models.model_card import InputChannel, Label

    return {
        "channels": [
            InputChannel("t1", ("*_t1.*", "*_t1_*", "*t1n*")),
            InputChannel("t1ce", ("*t1ce*", "*t1c*")),
            InputChannel("t2", ("*_t2.*", "*_t2_*", "*t2w*")),
            InputChannel("flair", ("*flair*", "*t2f*")),
        ],
        "modality": "MRI",
        "labels": [Label(l.value, l.name, tuple(int(round(255 * c)) for c in l.color)) for l in brats_labels(2021)],
        "postprocessing": {
            "activation": "sigmoid",
            # Channel order = the training order of SymmetryAwareTraining (and of MONAI's
            # ConvertToMultiChannelBasedOnBratsClasses): TC, WT, ET.
            "regions": {name: list(values) for name, values in brats_regions(2021).items()},
            "threshold": 0.5,
        },
    }


def standin_card():
    """The card of the untrained stand-in (BraTS-style channels and labels, 2 mm, 64^3)."""
    from ..models.model_card import ModelCard

    return ModelCard(
        name=STANDIN_NAME,
        description="UNTRAINED stand-in: random weights from a fixed seed, for testing the pipeline only. "
        "Its segmentations are meaningless.",
        preprocessing={"spacing": [2.0, 2.0, 2.0], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"},
        version="0.0.0",
        licence="Apache-2.0",
        training_data="none (untrained)",
        metrics={},
        architecture="SASwinUNETR",
        kwargs={"in_channels": 4, "out_channels": 3, "feature_size": 12},
        **brats_card_fields(),
    )


def _build_standin() -> "LoadedModel":
    from ..models.registry import build_model

    card = standin_card()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        network = build_model(card.architecture, card.kwargs)
    finally:
        torch.random.set_rng_state(state)
    note = "UNTRAINED STAND-IN MODEL: random weights from a fixed seed; outputs only exercise the pipeline and are meaningless"
    return LoadedModel(network.eval(), card, STANDIN_NAME, [note])


def _card_data(path: Path) -> Optional[Dict]:
    """The JSON object of a model card file, or None for anything else (never raises)."""
    from ..models.model_card import CARD_FORMAT, MAX_CARD_BYTES

    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            return None
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("format") == CARD_FORMAT else None


def _cards_in(folder: Path) -> List[Path]:
    """Model cards under ``folder``, skipping hidden files and folders (an import or a run
    in progress (or killed) stages there, and a half-imported model is not a model) and
    component cards (:func:`SymmetryAwareCore.contract.is_component_card`: a symmetry head)."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.rglob("*.json")):
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        data = _card_data(p)
        if data is not None and not is_component_card(data):
            out.append(p)
    return out


def _text(value, default: str = "") -> str:
    return value if isinstance(value, str) else default


def list_models() -> List[Dict]:
    """Every model that can be named: bundled, imported, and the stand-in."""
    rows = []
    for origin, folder in (("bundled", BUNDLED_DIR), ("imported", user_model_dir())):
        for card_path in _cards_in(folder):
            data = _card_data(card_path)
            if data is None:
                continue
            channels = data.get("channels") if isinstance(data.get("channels"), list) else []
            rows.append(
                {
                    "name": _text(data.get("name")) or card_path.stem,
                    "version": _text(data.get("version")),
                    "origin": origin,
                    "modality": _text(data.get("modality")),
                    "inputs": [_text(c.get("name"), "?") if isinstance(c, dict) else "?" for c in channels],
                    "card": str(card_path),
                }
            )
    rows.append({"name": STANDIN_NAME, "version": "0.0.0", "origin": "built-in", "modality": "MRI",
                 "inputs": ["t1", "t1ce", "t2", "flair"], "card": None})
    return rows


def find_model_card(name_or_path: Optional[str]) -> Optional[Path]:
    """The card path of a model name or path; None for the stand-in."""
    if name_or_path in (None, "", DEFAULT_NAME):
        from ..contract import default_model

        return default_model([(p, _card_data(p) or {}) for p in _cards_in(BUNDLED_DIR)])
    if name_or_path == STANDIN_NAME:
        return None
    if any(ord(c) < 32 for c in str(name_or_path)):
        raise InputError(f"model name {name_or_path!r} holds a control character")
    path = Path(name_or_path)
    if path.suffix in (".json", ".safetensors") or path.exists():
        if path.is_dir():
            cards = _cards_in(path)
            if len(cards) != 1:
                raise InputError(f"expected one model card in this folder, found {len(cards)}", path)
            return cards[0]
        if not path.exists():
            raise InputError("model file not found", path)
        return path
    for row in list_models():
        if row["name"] == name_or_path and row["card"]:
            return Path(row["card"])
    known = ", ".join(r["name"] for r in list_models())
    raise InputError(f"unknown model {name_or_path!r}; known: {known} (or give a path to a model card)")


def resolve_model(name_or_path: Optional[str] = None, device: Union[str, torch.device] = "cpu") -> LoadedModel:
    """Load a model by name or path, verifying its hash and keys (see :mod:`..models.model_card`)."""
    card_path = find_model_card(name_or_path)
    if card_path is None:
        return _build_standin()
    from ..models.model_card import load_model

    network, card = load_model(card_path, device)
    return LoadedModel(network, card, str(card_path))
