"""The run configuration: typed dataclasses, loaded from YAML, overridden on the command line.

Precedence (lowest to highest): the dataclass defaults, the YAML file, ``--set a.b=value``
overrides. The resolved configuration is written beside every run (``config.yaml``) so a
run can be repeated or resumed from its own folder alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union, get_type_hints

import yaml

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.atomic import atomic_path

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "PretrainConfig",
    "RunConfig",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "save_config",
]


@dataclass
class DataConfig:
    """Where the cases come from and how crops are made.

    ``datalist`` is a MONAI-style JSON (paths relative to its folder). ``fold`` is the
    evaluation fold: its cases are held out of training. ``exclude_datalist`` /
    ``exclude_fold`` name a downstream evaluation fold that a *pretraining* list must not
    touch (the leakage check); ``pretrain_datalist`` is the list a fine-tuned model was
    pretrained on, checked against this run's evaluation fold.
    """

    datalist: str = ""
    fold: int = 0
    exclude_datalist: str = ""
    exclude_fold: int = 0
    pretrain_datalist: str = ""
    roi_size: List[int] = field(default_factory=lambda: [96, 96, 96])
    batch_size: int = 1
    num_workers: int = 0
    cache: bool = True
    pos_fraction: float = 0.5
    augment: bool = True
    label_fraction: float = 1.0
    channels: List[str] = field(default_factory=list)
    """Input channel names for the model card (default: the datalist's ``channels``)."""
    modality: str = "mri"
    align: bool = True
    """Prepare each case in its symmetric frame (mid-sagittal plane estimated, the method's
    premise). False is an ablation: mirror pairs follow the image axes, and the model card
    records ``alignment: none`` so inference prepares scans the same way."""
    spacing: List[float] = field(default_factory=list)
    """Frame voxel size in mm (LR, AP, IS); empty: the datalist's ``spacing_mm``, else the
    first training case's own voxel size. Recorded in the model card."""
    normalisation: str = ""
    """``zscore-nonzero`` / ``ct-windows`` / ``none``; empty: ``ct-windows`` for CT, else
    ``zscore-nonzero``."""
    ct_windows: List[List[float]] = field(default_factory=list)
    """HU windows for ``ct-windows`` (one network channel each); empty: brain, blood, bone."""
    anti_alias: bool = True
    """Gaussian pre-filter when the frame is coarser than a scan."""
    cache_dir: str = ""
    """Where prepared cases are kept; empty: ``$SYMMETRYAWARE_CACHE`` or ``~/.cache/symmetryaware/prepared``."""
    findings: List[str] = field(default_factory=list)
    """Classification: the entry ``findings`` keys to predict, one logit each."""


@dataclass
class ModelConfig:
    """Which network: a name the model library knows and its keyword arguments (MONAI names)."""

    name: str = "SASwinUNETR"
    kwargs: Dict[str, Any] = field(default_factory=dict)
    init_checkpoint: str = ""
    output_prior: float = 0.01
    """Segmentation: start every region's output bias at logit(output_prior), the expected
    share of foreground voxels (0 keeps PyTorch's near-zero initialisation). With a near-zero
    bias every background voxel starts near p = 0.5, the soft Dice is swamped by the background and the
    first few hundred steps go into lowering it; few-shot runs cannot spare them.
    ``model.init_checkpoint`` overrides it when it holds an output layer."""


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.0


@dataclass
class TrainConfig:
    """Loop settings. ``steps`` counts optimiser steps (each ``accumulate`` micro-batches)."""

    output_dir: str = "runs/run"
    steps: int = 1000
    accumulate: int = 1
    seed: int = 0
    precision: str = "fp32"
    checkpoint_every: int = 100
    log_every: int = 10
    device: str = "auto"
    deterministic: bool = False
    stop_after_steps: int = 0
    """Stop as if killed after this many steps, with no final checkpoint (0: never).
    Used to rehearse ``--resume``."""
    find_unused_parameters: bool = False
    """DDP: set when some parameters get no gradient in a step (e.g. an optional head)."""
    task: str = ""
    """Optional ``module:callable`` building the task (overrides the command's own task)."""


@dataclass
class PretrainConfig:
    """Symmetry-aware pretraining: loss weights (the authors: 1, 1, 1 and 0.5) and masking."""

    rotation_weight: float = 1.0
    contrastive_weight: float = 1.0
    inpainting_weight: float = 1.0
    symmetry_weight: float = 0.5
    temperature: float = 0.5
    mask_ratio: float = 0.3
    block_size: int = 16


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


def config_to_dict(config) -> Dict[str, Any]:
    return dataclasses.asdict(config)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type; raise InputError naming the key."""
    origin = getattr(hint, "__origin__", None)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return "" if value is None else str(value)
        if origin in (list, List):
            if not isinstance(value, (list, tuple)):
                raise ValueError
            (item,) = hint.__args__
            return [_coerce(v, item, where) for v in value]
        if origin in (dict, Dict):
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        raise InputError(f"config key {where}: cannot use {value!r} as {getattr(hint, '__name__', hint)}") from None
    return value


def config_from_dict(data: Dict[str, Any], cls=RunConfig, prefix: str = ""):
    """Build ``cls`` from nested dicts; unknown keys are an InputError naming them."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"config section {prefix or '<root>'} must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for name in names & set(data):
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = config_from_dict(data[name], hint, prefix + name + ".")
        else:
            kwargs[name] = _coerce(data[name], hint, prefix + name)
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    """YAML-parse an override value, so ``3``, ``1e-4``, ``[64, 64, 64]``, ``true`` work."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(config: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """Return a copy of ``config`` with ``a.b=value`` overrides applied (values in YAML syntax)."""
    data = config_to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override {item!r} must look like section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise InputError(f"override {item!r}: unknown config section {part!r}")
            node = node[part]
        if not isinstance(node, dict) or (parts[-1] not in node and not _is_free_dict(config, parts[:-1])):
            raise InputError(f"override {item!r}: unknown config key {key!r}")
        node[parts[-1]] = _parse_value(text)
    return config_from_dict(data)


def _is_free_dict(config, path: Sequence[str]) -> bool:
    """True when ``path`` points at a free-form dict field (e.g. model.kwargs)."""
    node = config
    for part in path:
        if dataclasses.is_dataclass(node):
            node = getattr(node, part, None)
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return False
    return isinstance(node, dict)


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (), base: Optional[RunConfig] = None) -> RunConfig:
    """Defaults (or ``base``), then the YAML file at ``path``, then ``overrides``."""
    data = config_to_dict(base or RunConfig())
    if path:
        path = Path(path)
        if not path.is_file():
            raise InputError("config file not found", path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise InputError(f"not valid YAML ({str(error).splitlines()[0]})", path) from None
        if not isinstance(loaded, dict):
            raise InputError("config must be a mapping of sections", path)
        try:
            _merge(data, loaded)
            config = config_from_dict(data)
        except InputError as error:
            raise InputError(str(error), path) from None
    else:
        config = config_from_dict(data)
    return apply_overrides(config, overrides)


def _merge(into: Dict[str, Any], new: Dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "kwargs":
            _merge(into[key], value)
        else:
            into[key] = value


def save_config(config: RunConfig, path: Union[str, Path]) -> Path:
    """Write the resolved configuration as YAML, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path
