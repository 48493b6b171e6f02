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
    "ValidationConfig",
    "InteractiveConfig",
    "RunConfig",
    "check_config",
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
    bias_correction: str = "none"
    """``n4``: remove each MRI channel's bias field (N4) before preparing every case, and
    record it in the model card so that inference does the same; ``none``: not."""
    cache_dir: str = ""
    """Where prepared cases are kept; empty: ``$SYMMETRYAWARE_CACHE`` or ``~/.cache/symmetryaware/prepared``."""
    findings: List[str] = field(default_factory=list)
    """Classification: the entry ``findings`` keys to predict, one logit each."""
    finding_labels: Dict[str, List[int]] = field(default_factory=dict)
    """Classification with ``pooling: lesion``: the label-map values of each finding's voxels,
    whose token masks train the lesion map; empty: the datalist's ``labels`` block."""


@dataclass
class ModelConfig:
    """Which network: a name the model library knows and its keyword arguments (MONAI names).

    ``kwargs.pairing`` (SASwinUNETR, SASwinClassifier): ``input`` (default, the paper's: the counterpart is
    context only) or ``mirror-pair`` (patch and counterpart encoded once each in one call,
    SACA across the pair, both supervised; ``data.batch_size`` then counts pairs, two
    supervised crops each). It is a network argument so the model card carries it and
    inference pairs windows the same way (docs/pairing.md).
    """

    name: str = "SASwinUNETR"
    kwargs: Dict[str, Any] = field(default_factory=dict)
    init_checkpoint: str = ""
    init_allow_partial: bool = False
    """Load an init checkpoint that lacks some encoder or SACA tensors (what loaded is printed);
    by default every encoder and SACA tensor must load."""
    freeze: List[str] = field(default_factory=list)
    """Parameter-name prefixes kept fixed (e.g. ``swinViT.patch_embed``, ``swinViT.layers1``):
    the initialised early stages stay as loaded, and no gradient is kept or computed for them."""
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
    """Symmetry-aware pretraining: loss weights (the authors: 1, 1, 1 and 0.5), masking, input.

    The authors' weights leave the encoder's gradient to rotation and symmetry at
    initialisation (docs/asymmetry_benchmark.md); ``Training/scripts/pretrain_balance.py``
    measures each task's encoder gradient norm on the run's own data and model and prints the
    weights that make the four contributions equal
    (:func:`SymmetryAwareCore.models.losses.balanced_weights`), to put here.
    """

    rotation_weight: float = 1.0
    contrastive_weight: float = 1.0
    inpainting_weight: float = 1.0
    symmetry_weight: float = 0.5
    temperature: float = 0.5
    mask_ratio: float = 0.3
    block_size: int = 16
    input: str = "crop"
    """``crop``: random ``roi_size`` crops with their counterparts (the paper's). ``whole-scan``:
    the prepared brain box resized to ``roi_size`` and its left-right flip, the very input of
    the zero-shot score (:mod:`SymmetryAwareCore.inference.zero_shot`); each item is then one
    healthy and one patient scan, so ``data.batch_size`` counts such pairs (2 scans each)."""


@dataclass
class ValidationConfig:
    """Validation on the held-out fold during training (segmentation).

    Every ``every`` optimiser steps (and after the last), the evaluation fold's whole cases go
    through the deployed inference path (mirror-paired sliding window, see
    :mod:`.validation`); Dice, HD95 and lesion-wise Dice/HD95 per region are gathered over
    all processes. ``metric`` picks the best checkpoint (``dice_mean``, ``lesion_dice_mean``,
    ``hd95_mean``, ``lesion_hd95_mean``, or one region's, e.g. ``ET_dice``, ``WT_lesion_hd95``;
    HD95 is better lower, Dice higher). ``patience`` > 0 stops the run after that many
    validations without an improvement larger than ``min_delta``. ``publish`` chooses which
    weights the model card gets: ``best`` or ``last``.
    """

    every: int = 0
    metric: str = "dice_mean"
    patience: int = 0
    min_delta: float = 0.0
    overlap: float = 0.25
    sw_batch_size: int = 1
    max_cases: int = 0
    """Validate on the first ``max_cases`` cases of the fold only (0: all)."""
    publish: str = "best"


@dataclass
class InteractiveConfig:
    """Click training (``finetune-interactive``; see :class:`.tasks.InteractiveSegmentationTask`)."""

    region: str = "WT"
    """The BraTS region that is the binary target (WT: whole tumour)."""
    max_rounds: int = 2
    """No-gradient click rounds before the supervised pass: 0..max_rounds, drawn per batch."""
    no_click_fraction: float = 0.1
    """Share of samples with no guidance (keeps the automatic first pass)."""
    box_fraction: float = 0.2
    """Share of samples that also get a box around the object."""
    box_margin: int = 4
    """A training box is the object's bounding box grown by 0..box_margin voxels per side."""
    click_sigma: float = 2.0
    """Click blob width in frame voxels (the card records it; the session draws clicks alike)."""
    init_output_channels: List[int] = field(default_factory=lambda: [1])
    """Output channels of the init checkpoint that become this network's outputs (1: WT of TC, WT, ET)."""


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    interactive: InteractiveConfig = field(default_factory=InteractiveConfig)


PRETRAIN_INPUTS = ("crop", "whole-scan")

_SWIN_MODELS = ("SASwinUNETR", "SASwinClassifier", "SASwinPretrainer", "PromptableSASwinUNETR")
# Bounds against values that would only exhaust memory: a crop of 512^3 voxels is 4 x larger
# than a whole BraTS case; feature size 192 is 4 x the paper's network width (16 x its weights).
_MAX_ROI = 512
_MAX_FEATURE = 192
_REGIONS = ("TC", "WT", "ET")
_METRICS = ("dice", "hd95", "lesion_dice", "lesion_hd95")


def validation_metric_names():
    """Every name ``validation.metric`` accepts."""
    return [f"{m}_mean" for m in _METRICS] + [f"{r}_{m}" for r in _REGIONS for m in _METRICS]


def check_config(config: RunConfig) -> None:
    """Check every value that can be checked before any work; an InputError naming the key.

    The network's own argument checks run when it is built (also before data are read);
    this catches what would otherwise fail deep inside a step (a crop too small for the
    Swin bottleneck, a fraction outside [0, 1]...).
    """
    from SymmetryAwareCore.models.encoder import STRIDE

    d, m, o, t, v = config.data, config.model, config.optim, config.train, config.validation

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise InputError(f"config: {message}")

    need(len(d.roi_size) == 3 and all(0 < r <= _MAX_ROI for r in d.roi_size),
         f"data.roi_size must be three sizes in 1..{_MAX_ROI} voxels, got {d.roi_size}")
    if m.name in _SWIN_MODELS and not t.task:  # a train.task plug-in builds its own network
        # Patch 2 then four 2x mergings: sizes divisible by 32; at 32 the bottleneck is one
        # voxel and its instance norm fails, so 64 is the smallest usable size.
        need(all(r % STRIDE == 0 and r >= 2 * STRIDE for r in d.roi_size),
             f"data.roi_size {d.roi_size} does not suit {m.name}: every size must be a multiple of {STRIDE} "
             f"and at least {2 * STRIDE} (e.g. [64, 64, 64] or [96, 96, 96])")
        fs = m.kwargs.get("feature_size", 48)
        need(isinstance(fs, int) and 0 < fs <= _MAX_FEATURE and fs % 12 == 0,
             f"model.kwargs.feature_size must be a multiple of 12 in 12..{_MAX_FEATURE} (the paper: 48), got {fs!r}")
        ic = m.kwargs.get("in_channels", 1)
        need(isinstance(ic, int) and 0 < ic <= 64, f"model.kwargs.in_channels must be 1..64, got {ic!r}")
        if "pairing" in m.kwargs:
            from SymmetryAwareCore.models.sa_swin_unetr import PAIRINGS

            need(m.name in ("SASwinUNETR", "SASwinClassifier"), f"model.kwargs.pairing is a setting of "
                 f"SASwinUNETR and SASwinClassifier, not of {m.name}")
            need(m.kwargs["pairing"] in PAIRINGS,
                 f"model.kwargs.pairing must be one of {', '.join(PAIRINGS)}, got {m.kwargs['pairing']!r}")
        for flag in ("use_saca", "counterpart_channels"):  # "false" as a string would be True
            need(isinstance(m.kwargs.get(flag, False), bool),
                 f"model.kwargs.{flag} must be true or false, got {m.kwargs.get(flag)!r}")
        if m.kwargs.get("counterpart_channels"):
            need(m.name == "SASwinUNETR", f"model.kwargs.counterpart_channels is a setting of SASwinUNETR, not of {m.name}")
            need(m.kwargs.get("use_saca") is False and m.kwargs.get("pairing", "input") == "input",
                 "model.kwargs.counterpart_channels (the counterpart as input channels) needs use_saca=false and "
                 "pairing=input")
    need(1 <= d.batch_size <= 4096, f"data.batch_size must be at least 1, got {d.batch_size}")
    need(config.pretrain.input in PRETRAIN_INPUTS,
         f"pretrain.input must be one of {', '.join(PRETRAIN_INPUTS)}, got {config.pretrain.input!r}")
    need(0 <= d.num_workers <= 256, f"data.num_workers must be 0..256, got {d.num_workers}")
    need(0.0 <= d.pos_fraction <= 1.0, f"data.pos_fraction must be in [0, 1], got {d.pos_fraction}")
    need(0.0 < d.label_fraction <= 1.0, f"data.label_fraction must be in (0, 1], got {d.label_fraction}")
    need(d.fold >= 0 and d.exclude_fold >= 0, "data.fold and data.exclude_fold must be >= 0")
    need(d.modality.lower() in ("mri", "ct"), f"data.modality must be mri or ct, got {d.modality!r}")
    need(d.bias_correction in ("none", "n4") and not (d.bias_correction != "none" and d.modality.lower() == "ct"),
         f"data.bias_correction must be none or n4 (n4 for MRI only), got {d.bias_correction!r}")
    need(0.0 <= m.output_prior < 1.0, f"model.output_prior must be in (0, 1), or 0 to leave the bias alone; "
                                      f"got {m.output_prior}")
    need(o.lr > 0 and o.lr < 10, f"optim.lr must be in (0, 10), got {o.lr}")
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    need(o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
    need(0.0 <= o.min_lr_ratio <= 1.0, f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
    need(o.grad_clip >= 0, f"optim.grad_clip must be >= 0, got {o.grad_clip}")
    need(t.steps > 0 and t.accumulate > 0 and t.checkpoint_every > 0 and t.log_every > 0,
         "train.steps, train.accumulate, train.checkpoint_every and train.log_every must be positive")
    need(t.precision in ("fp32", "bf16", "fp16"), f"train.precision must be fp32, bf16 or fp16, got {t.precision!r}")
    need(t.stop_after_steps >= 0, "train.stop_after_steps must be >= 0")
    need(v.every >= 0, f"validation.every must be >= 0 (0: no validation), got {v.every}")
    need(v.metric in validation_metric_names(),
         f"validation.metric {v.metric!r} is not one of {', '.join(validation_metric_names())}")
    need(v.patience >= 0 and v.min_delta >= 0, "validation.patience and validation.min_delta must be >= 0")
    need(0.0 <= v.overlap < 1.0, f"validation.overlap must be in [0, 1), got {v.overlap}")
    need(v.sw_batch_size >= 1 and v.max_cases >= 0, "validation.sw_batch_size must be >= 1, max_cases >= 0")
    need(v.publish in ("best", "last"), f"validation.publish must be best or last, got {v.publish!r}")
    need(not (v.patience and not v.every), "validation.patience needs validation.every > 0")
    it = config.interactive
    need(0 <= it.max_rounds <= 20, f"interactive.max_rounds must be 0..20, got {it.max_rounds}")
    need(0.0 <= it.no_click_fraction <= 1.0 and 0.0 <= it.box_fraction <= 1.0,
         "interactive.no_click_fraction and interactive.box_fraction must be in [0, 1]")
    need(it.box_margin >= 0 and 0.25 <= it.click_sigma <= 10.0,
         "interactive.box_margin must be >= 0 and interactive.click_sigma in [0.25, 10] voxels")
    if m.init_checkpoint:
        need(Path(m.init_checkpoint).is_file(), f"model.init_checkpoint {m.init_checkpoint} not found")


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
