"""Model weights as safetensors with a JSON model card beside them.

``brats_saswin.safetensors`` holds the tensors; ``brats_saswin.json`` says what they are:
the architecture name and keyword arguments (enough to rebuild the network), the input
channels in order with file-name patterns, modality, preprocessing, label names and
colours, version, licence, training data, metrics and the SHA-256 of the weights file.
The format is documented in ``docs/model_card.md``.

Loading checks the card's values against the ranges below (before any network is built,
so a card cannot make the reader allocate gigabytes), the hash, then the keys (missing or
unexpected keys raise an error naming them), and never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..contract import card_findings
from ..errors import InputError
from ..io.atomic import atomic_path
from .checkpoints import load_state_dict_checked, read_state_dict, sha256_file
from ..preprocessing.spec import BIAS_CORRECTIONS
from ..preprocessing.spec import NORMALISATIONS as _PREPARED_NORMALISATIONS
from ..preprocessing.spec import Preprocessing
from .registry import architecture_name, build_model

__all__ = ["CARD_FORMAT", "CARD_VERSION", "MAX_CARD_BYTES", "KWARG_RANGES", "InputChannel", "Label", "ModelCard", "card_path_for", "read_card", "save_model", "load_model", "verify_weights"]

CARD_FORMAT = "symmetryaware-model-card"
CARD_VERSION = 1

# Ranges of the network arguments a card may hold, whatever the architecture: (kind, low,
# high). Each admits every model this project trains (feature size 12-48, depths 2, heads
# 3-24) with room to spare, and bounds what a hostile card can make the reader build
# (feature size 12000 is ~5 GB of weights before any key is checked).
_INT, _FLOAT, _RATE = "int", "float", "rate"
KWARG_RANGES: Dict[str, Tuple[str, float, float]] = {
    "in_channels": (_INT, 1, 16),
    "image_channels": (_INT, 1, 16),
    "guidance_channels": (_INT, 0, 8),
    "out_channels": (_INT, 1, 64),
    "feature_size": (_INT, 12, 192),
    "in_features": (_INT, 1, 4096),
    "depths": (_INT, 1, 8),
    "num_heads": (_INT, 1, 64),
    "window_size": (_INT, 1, 16),
    "saca_heads": (_INT, 1, 64),
    "saca_stages": (_INT, 1, 4),
    "rotation_classes": (_INT, 1, 64),
    "contrastive_size": (_INT, 1, 4096),
    "projection_size": (_INT, 1, 4096),
    "mlp_ratio": (_FLOAT, 0.25, 16),
    "saca_mlp_ratio": (_FLOAT, 0.25, 16),
    "drop_rate": (_RATE, 0, 1),
    "attn_drop_rate": (_RATE, 0, 1),
    "dropout_path_rate": (_RATE, 0, 1),
    "saca_dropout_rate": (_RATE, 0, 1),
    "head_dropout_rate": (_RATE, 0, 1),
}
_BOOL_KWARGS = ("qkv_bias", "normalize", "patch_norm", "use_checkpoint", "use_v2", "use_saca", "counterpart_channels")
# Preprocessing read by the pipeline: voxel size (mm) and sliding-window size (voxels).
SPACING_RANGE_MM = (0.25, 10.0)
ROI_RANGE = (32, 256)
# The preparation's own list, plus "ct-window" (one fixed window: cards written before the
# windows were configurable, read by Preprocessing.from_card).
NORMALISATIONS = _PREPARED_NORMALISATIONS + ("ct-window",)
MAX_CHANNELS, MAX_LABELS, MAX_TEXT = 16, 255, 200
# A card is a few kB (with a training configuration in "extra"); more is not a card.
MAX_CARD_BYTES = 4 << 20


def _number(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    if kind == _INT:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")


def _check_range(key: str, value: Any, kind: str, low: float, high: float, path) -> None:
    values = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, (list, tuple)) and not 1 <= len(value) <= 8:
        raise InputError(f"model card: {key} must hold 1 to 8 values, got {len(value)}", path)
    for v in values:
        inside = _number(v, kind) and (low <= v < high if kind == _RATE else low <= v <= high)
        if not inside:
            span = f"[{low:g}, {high:g})" if kind == _RATE else f"{low:g}..{high:g}"
            what = "integers" if kind == _INT else "numbers"
            raise InputError(f"model card: {key} = {value!r} is outside the allowed range ({what} in {span})", path)


def _check_kwargs(kwargs: Dict[str, Any], path) -> None:
    """Ranges of the network arguments (see :data:`KWARG_RANGES`), before anything is built."""
    if not isinstance(kwargs, dict):
        raise InputError("model card: kwargs must be an object", path)
    for key, value in kwargs.items():
        if key in KWARG_RANGES:
            if key == "saca_heads" and value is None:
                continue
            _check_range(key, value, *KWARG_RANGES[key], path)
        elif key in _BOOL_KWARGS and not isinstance(value, bool):
            raise InputError(f"model card: {key} must be true or false, got {value!r}", path)
        elif key == "spatial_dims" and value != 3:
            raise InputError(f"model card: spatial_dims must be 3, got {value!r}", path)
        elif isinstance(value, str) and len(value) > MAX_TEXT:
            raise InputError(f"model card: {key} is longer than {MAX_TEXT} characters", path)
    feature = kwargs.get("feature_size")
    if isinstance(feature, int) and feature % 12:
        raise InputError(f"model card: feature_size must be divisible by 12, got {feature}", path)
    for key in ("depths", "num_heads"):
        if key in kwargs and (not isinstance(kwargs[key], (list, tuple)) or len(kwargs[key]) != 4):
            raise InputError(f"model card: {key} must list 4 values (one per Swin stage), got {kwargs[key]!r}", path)


def _check_preprocessing(pre: Dict[str, Any], path) -> None:
    if not isinstance(pre, dict):
        raise InputError("model card: preprocessing must be an object", path)
    spacing = pre.get("spacing")
    if spacing is not None:
        if not isinstance(spacing, (list, tuple)) or len(spacing) != 3:
            raise InputError(f"model card: preprocessing.spacing must be three numbers (mm), got {spacing!r}", path)
        _check_range("preprocessing.spacing", list(spacing), _FLOAT, *SPACING_RANGE_MM, path)
    roi = pre.get("roi_size")
    if roi is not None:
        if not isinstance(roi, (list, tuple)) or len(roi) != 3:
            raise InputError(f"model card: preprocessing.roi_size must be three integers, got {roi!r}", path)
        _check_range("preprocessing.roi_size", list(roi), _INT, *ROI_RANGE, path)
        if any(v % 32 for v in roi):
            raise InputError(f"model card: preprocessing.roi_size must be divisible by 32, got {list(roi)}", path)
    norm = pre.get("normalisation")
    if norm is not None and norm not in NORMALISATIONS:
        raise InputError(f"model card: unknown preprocessing.normalisation {norm!r} (known: {', '.join(NORMALISATIONS)})", path)
    bias = pre.get("bias_correction", "none")
    if bias not in BIAS_CORRECTIONS:
        raise InputError(f"model card: unknown preprocessing.bias_correction {bias!r} (known: {', '.join(BIAS_CORRECTIONS)})", path)


def _check_postprocessing(post: Dict[str, Any], path, findings: Tuple[str, ...] = ()) -> None:
    """``findings``: the card's finding names (``contract.card_findings``, the one rule), which a
    calibration must match one for one."""
    if not isinstance(post, dict):
        raise InputError("model card: postprocessing must be an object", path)
    activation = post.get("activation")
    if activation is not None and activation not in ("sigmoid", "softmax"):
        raise InputError(f"model card: postprocessing.activation must be sigmoid or softmax, got {activation!r}", path)
    threshold = post.get("threshold")
    if threshold is not None and not (_number(threshold, _FLOAT) and 0 < threshold < 1):
        raise InputError(f"model card: postprocessing.threshold must lie in (0, 1), got {threshold!r}", path)
    calibration = post.get("calibration")
    if calibration is not None:
        n = len(findings) or None
        ok = isinstance(calibration, dict) and calibration.get("method") == "platt"
        for key in ("scale", "offset"):
            values = calibration.get(key) if ok else None
            ok = ok and isinstance(values, list) and len(values) == n and all(
                _number(v, _FLOAT) for v in values)
        # A positive scale keeps the order of the scores: the AUC, the ranking and the map's peak.
        if not ok or not all(v > 0 for v in calibration["scale"]):
            raise InputError(
                "model card: postprocessing.calibration must be {method: platt, scale: [>0 per finding], "
                "offset: [one per finding]} with the card's findings", path)
    regions = post.get("regions")
    if regions is not None:
        if not isinstance(regions, dict) or not all(
            isinstance(v, list) and all(_number(x, _INT) and 0 < x <= 65535 for x in v) for v in regions.values()
        ):
            raise InputError("model card: postprocessing.regions must map names to lists of label values", path)


def check_text(value: Any, what: str, path=None, limit: int = MAX_TEXT) -> str:
    """A card string: text without control characters (a NUL cannot name a file), not too long."""
    if not isinstance(value, str):
        raise InputError(f"model card: {what} must be text, got {type(value).__name__}", path)
    if any(ord(c) < 32 for c in value):
        raise InputError(f"model card: {what} {value!r} holds a control character", path)
    if len(value) > limit:
        raise InputError(f"model card: {what} is longer than {limit} characters", path)
    return value


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
        if not isinstance(data["channels"], list) or not isinstance(data.get("labels", []), list):
            raise InputError("model card: channels and labels must be lists", path)
        if len(data["channels"]) > MAX_CHANNELS or len(data.get("labels", [])) > MAX_LABELS:
            raise InputError(f"model card: at most {MAX_CHANNELS} channels and {MAX_LABELS} labels", path)
        sha = data["sha256"]
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha):
            raise InputError(f"model card: sha256 must be 64 hexadecimal digits, got {sha!r}", path)
        weights = check_text(data["weights_file"], "weights_file", path)
        if weights in (".", "..") or "/" in weights or "\\" in weights:
            raise InputError(f"model card: weights_file must be a file name beside the card, got {weights!r}", path)
        for key in ("name", "version", "architecture", "modality"):
            if key in data:
                check_text(data[key], key, path)
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
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise InputError(f"malformed channels or labels in model card ({exc})", path) from exc
        for key in ("preprocessing", "postprocessing", "metrics", "extra"):
            if key in fields and not isinstance(fields[key], dict):
                raise InputError(f"model card: {key} must be an object", path)
        card = cls(**fields)
        card.check(path)
        return card

    def check(self, path: Optional[Union[str, Path]] = None) -> None:
        """InputError if the card contradicts itself or a value is outside its range
        (:data:`KWARG_RANGES`, :data:`SPACING_RANGE_MM`, :data:`ROI_RANGE`)."""
        if not self.channels:
            raise InputError("model card lists no input channels", path)
        if len(self.channels) > MAX_CHANNELS:
            raise InputError(f"model card lists {len(self.channels)} channels; at most {MAX_CHANNELS}", path)
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names) or not all(names):
            raise InputError(f"model card: channel names must be unique and non-empty, got {names}", path)
        for c in self.channels:
            check_text(c.name, "channel name", path)
            for pattern in c.patterns:
                check_text(pattern, f"channel {c.name!r} pattern", path)
        check_text(self.name, "name", path)
        _check_kwargs(self.kwargs, path)
        _check_preprocessing(self.preprocessing, path)
        _check_postprocessing(self.postprocessing, path, card_findings(self))
        in_ch = self.kwargs.get("in_channels", self.kwargs.get("image_channels"))
        network_channels = len(self.channels)
        if all(k in self.preprocessing for k in ("spacing", "roi_size", "normalisation")):
            # CT: one network channel per HU window of each scan (the preparation's rule).
            network_channels = Preprocessing.from_card(self.preprocessing, str(path or "")).network_channels(len(self.channels))
        if in_ch is not None and in_ch != network_channels:
            raise InputError(f"model card lists {len(self.channels)} input channel(s) giving {network_channels} network "
                             f"input(s), the network takes {in_ch}", path)
        values = [l.value for l in self.labels]
        if len(set(values)) != len(values):
            raise InputError(f"model card repeats label values {values}", path)
        for l in self.labels:
            if not 0 < l.value <= 65535:
                raise InputError(f"label {l.name!r} value {l.value} is not in 1..65535", path)
            check_text(l.name, "label name", path)
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
        if card_path.stat().st_size > MAX_CARD_BYTES:
            raise InputError(f"model card is larger than {MAX_CARD_BYTES >> 20} MiB", card_path)
        data = parse_card_json(card_path.read_bytes(), card_path)
    except OSError as exc:
        raise InputError(f"model card is not readable ({exc.strerror or exc})", card_path) from exc
    return ModelCard.from_dict(data, card_path)


def update_card(path: Union[str, Path], change: Callable[[Dict[str, Any]], None]) -> ModelCard:
    """Change a card's own fields in place (``change`` edits its JSON dict), weights untouched.

    The changed card is written to a hidden temporary file beside the old one and read back
    (every check of :func:`read_card`) before it replaces it, so a change that breaks the card,
    an interrupted write or a full disk leaves the old one as it was. The weights must match
    the card before (SHA-256), and a change may not touch what gives the weights their meaning
    (``sha256``, ``weights_file``, ``architecture``, ``kwargs``). Returns the new card.

    Raises:
        InputError: the card is not valid now, the change breaks it, or it touches the weights' fields.
    """
    card_path = card_path_for(path)
    verify_weights(card_path)  # the card to change is valid and holds its weights now
    data = json.loads(card_path.read_text())
    fixed = {key: json.dumps(data.get(key), sort_keys=True) for key in _WEIGHTS_FIELDS}
    change(data)
    touched = [key for key in _WEIGHTS_FIELDS if json.dumps(data.get(key), sort_keys=True) != fixed[key]]
    if touched:
        raise InputError(f"a card update may not change {', '.join(touched)} (re-bundle the weights instead)", card_path)
    with atomic_path(card_path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        read_card(tmp)  # the changed card is valid before it replaces the old one
    return read_card(card_path)


_WEIGHTS_FIELDS = ("sha256", "weights_file", "architecture", "kwargs")


def parse_card_json(raw: bytes, path=None) -> Any:
    """JSON of a card's bytes; InputError (naming ``path``) for anything that is not JSON text."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(f"model card is not readable JSON ({first})", path) from None


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
        # One metadata key: safetensors writes the metadata map in a per-process random order,
        # so two keys made the same weights hash differently from run to run. The card names
        # the architecture; with one key the file, and its SHA-256, depend on the tensors only.
        save_file(tensors, str(tmp_weights), metadata={"format": "pt"})
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
