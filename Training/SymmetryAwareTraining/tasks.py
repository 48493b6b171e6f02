"""The tasks behind the commands: segmentation, classification and pretraining.

Each task builds its model from ``config.model`` (a name from :data:`MODELS` or a
``module:Class`` path, with MONAI-style keyword arguments), builds its dataset from the
datalist's training folds, and turns a batch into a dict of losses whose ``loss`` entry
is what is optimised (see :mod:`.engine`).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from SymmetryAwareCore.errors import InputError

from .config import RunConfig
from .data import BalancedWholeScanDataset, PairedCropDataset, WholeScanDataset
from .datalist import check_leakage, load_datalist, subset_fraction
from .metrics import REGIONS

__all__ = ["build_model", "load_init_weights", "channel_adapter", "resolve_callable", "set_output_prior",
           "SegmentationTask", "ClassificationTask", "PretrainTask", "InteractiveSegmentationTask", "task_for",
           "pretrain_gradient_norms", "freeze_parameters"]



def resolve_callable(spec: str) -> Callable:
    """``package.module:name`` -> the object."""
    if ":" not in spec:
        raise InputError(f"{spec!r} must look like package.module:name")
    module, name = spec.split(":", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise InputError(f"cannot import {spec} ({error})") from None


def build_model(name: str, kwargs: Dict[str, Any]) -> nn.Module:
    """A registered architecture (:mod:`SymmetryAwareCore.models.registry`) or a ``module:Class``."""
    from SymmetryAwareCore.models.registry import ARCHITECTURES
    from SymmetryAwareCore.models.registry import build_model as build_registered

    try:
        if name in ARCHITECTURES:
            return build_registered(name, kwargs)
        if ":" not in name:
            raise InputError(f"unknown model.name {name!r}; known: {', '.join(sorted(ARCHITECTURES))} "
                             "(or a package.module:Class)")
        return resolve_callable(name)(**kwargs)
    except (TypeError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"model {name}: bad model.kwargs ({error})") from None


_REQUIRED_PREFIXES = ("swinViT.", "saca.")
"""Model keys an init checkpoint must provide (the encoder and the SACA blocks): the parts
pretraining trains. Decoders and heads may be fresh."""


def channel_adapter(output_channels: Optional[Sequence[int]] = None, image_channels: Optional[int] = None) -> Callable:
    """An ``adapt`` for :func:`load_init_weights` when the new network has more INPUT channels
    and/or fewer OUTPUT channels than the checkpoint's (e.g. the promptable SA-Swin from the
    automatic glioma model).

    - A tensor whose axis 1 (input channels) is larger in the model, all other axes equal (the
      input convolutions ``swinViT.patch_embed.proj.weight``, ``encoder1...conv.weight``): the
      checkpoint's channels first, the extra channels' weights ZERO, so the extra inputs
      (guidance) change nothing until training moves them.
    - A tensor of the output layer ``out.*`` whose axis 0 (output channels) differs: the
      checkpoint's channels ``output_channels`` in that order (e.g. ``[1]``: WT of TC, WT, ET).

    Anything else is returned unchanged (and reported by the loader if it does not fit).
    ``image_channels``: the model's image channels, which the checkpoint's inputs must be. A
    checkpoint whose input convolution reads more (a model given the counterpart as input
    channels) is refused: its extra channels' weights would land on the guidance channels.
    """

    def adapt(key: str, value, own):
        import torch

        if value.ndim == own.ndim >= 2 and value.shape[1] < own.shape[1] and value.shape[0] == own.shape[0] \
                and value.shape[2:] == own.shape[2:]:
            if image_channels is not None and value.shape[1] != image_channels:
                raise InputError(f"the init checkpoint's {key} reads {value.shape[1]} input channels, the network's "
                                 f"image has {image_channels}: only a checkpoint whose inputs are the image channels "
                                 "(not, e.g., a model given the counterpart as input channels) can be widened")
            out = torch.zeros_like(own, dtype=value.dtype)
            out[:, : value.shape[1]] = value
            return out
        if output_channels is not None and key.startswith("out.") and value.ndim == own.ndim >= 1 \
                and value.shape[0] != own.shape[0] and len(output_channels) == own.shape[0]:
            picked = value[list(output_channels)]
            return picked if picked.shape == own.shape else value
        return value

    return adapt


def load_init_weights(model: nn.Module, path: str, allow_partial: bool = False, log=None,
                      adapt: Optional[Callable] = None) -> Dict[str, int]:
    """Initialise ``model`` from a training checkpoint, card weights or MONAI/SSL weights.

    Any weight file the project reads (``.safetensors``; ``.pt``/``.pth``/``.ckpt`` with
    ``weights_only=True``; wrapped in ``model``/``state_dict`` or bare; ``module.`` prefixes
    and MONAI's self-supervised key names understood, see
    :func:`SymmetryAwareCore.models.monai_weights.normalise_monai_keys`). A file that cannot
    be read is one :class:`InputError` line.

    Every encoder (``swinViT.*``) and SACA (``saca.*``) tensor of the model must load, with
    its shape: the authors' loader used ``strict=False`` and could load nothing but SACA
    without a word. Missing or unexpected keys are named, every one. Keys of modules the model
    does not have (pretraining heads) are reported as ignored. ``allow_partial`` loads what
    matches instead, and says how much. A network without encoder or SACA keys (a plug-in)
    needs at least one matching tensor.

    ``adapt(key, checkpoint tensor, model tensor) -> tensor``, applied to every tensor whose
    shape differs from the model's before anything is checked (see :func:`channel_adapter`);
    the count of tensors it reshaped is ``adapted``.

    Returns counts: ``loaded``, ``required``, ``required_loaded``, ``fresh``, ``ignored``, ``adapted``.
    """
    from SymmetryAwareCore.models.checkpoints import read_state_dict
    from SymmetryAwareCore.models.monai_weights import normalise_monai_keys

    log = log or (lambda text: print(text, file=sys.stderr))
    source = Path(path)
    try:
        state = normalise_monai_keys(read_state_dict(source))
    except InputError:
        raise
    except Exception as error:  # a foreign or broken file of any kind: the user's input
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"not a usable weights file ({first})", source) from None
    own = model.state_dict()
    adapted = 0
    if adapt is not None:
        for k in list(state):
            if k in own and state[k].shape != own[k].shape:
                new = adapt(k, state[k], own[k])
                if new.shape != state[k].shape:
                    state[k], adapted = new, adapted + 1
    top = {k.split(".")[0] for k in own}
    required = {k for k in own if k.startswith(_REQUIRED_PREFIXES)}
    missing = sorted(required - set(state))
    unexpected = sorted(k for k in state if k not in own and k.split(".")[0] in top)
    ignored = sorted(k for k in state if k.split(".")[0] not in top)
    wrong = sorted(f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in state
                   if k in own and state[k].shape != own[k].shape)
    usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    problems = []
    if missing:
        problems.append(f"{len(missing)} encoder/SACA key(s) missing: {', '.join(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) have another shape than the model's: {', '.join(wrong)}")
    if not usable:
        raise InputError(f"no tensor of the checkpoint matches the model (wrong architecture?)"
                         + (f"; {'; '.join(problems)}" if problems else ""), source)
    if problems and not allow_partial:
        raise InputError("; ".join(problems) + " (model.init_allow_partial / --allow-partial loads what matches)",
                         source)
    model.load_state_dict(usable, strict=False)
    counts = {"loaded": len(usable), "required": len(required), "required_loaded": len(required & set(usable)),
              "fresh": len(set(own) - set(usable)), "ignored": len(ignored) + len(unexpected) + len(wrong),
              "adapted": adapted}
    line = (f"symmetryaware-train: init weights {source.name}: loaded {counts['loaded']} of {len(own)} tensors "
            f"(encoder+SACA {counts['required_loaded']}/{counts['required']}), {counts['fresh']} left as initialised")
    if adapted:
        line += f"; {adapted} tensor(s) adapted (extra input channels zero, output channels selected)"
    if ignored:
        line += f"; ignored {len(ignored)} key(s) of modules the model lacks: {', '.join(ignored)}"
    if problems:
        line += f"; partial load allowed: {'; '.join(problems)}"
    log(line)
    return counts


def freeze_parameters(model: nn.Module, prefixes: Sequence[str]) -> int:
    """Stop training every parameter whose name starts with one of ``prefixes``; returns how many.

    A prefix that matches no parameter is an InputError (a typo would silently train everything).
    """
    count = 0
    for prefix in prefixes:
        hits = [p for n, p in model.named_parameters() if n.startswith(prefix)]
        if not hits:
            raise InputError(f"model.freeze: no parameter of {type(model).__name__} starts with {prefix!r}")
        for p in hits:
            p.requires_grad_(False)
            count += 1
    return count


def set_output_prior(model: nn.Module, prior: float) -> None:
    """Set the bias of the network's output convolution (``model.out``) to logit(prior)."""
    import math

    if not 0 < prior < 1:
        raise InputError(f"model.output_prior must be in (0, 1), or 0 to leave the bias alone; got {prior}")
    out = getattr(model, "out", None)
    convs = [m for m in out.modules() if isinstance(m, nn.modules.conv._ConvNd)] if out is not None else []
    if len(convs) != 1 or convs[0].bias is None:
        raise InputError(f"model.output_prior: {type(model).__name__} has no single biased output convolution "
                         "(model.out); set model.output_prior=0")
    nn.init.constant_(convs[0].bias, math.log(prior / (1 - prior)))


def _train_entries(config: RunConfig):
    if not config.data.datalist:
        raise InputError("data.datalist is not set")
    datalist = load_datalist(config.data.datalist)
    if config.data.pretrain_datalist:
        check_leakage(load_datalist(config.data.pretrain_datalist), datalist, config.data.fold)
    train, _ = datalist.split(config.data.fold)
    return subset_fraction(train, config.data.label_fraction, config.train.seed)


def _datalist_field(config: RunConfig, key: str):
    """A top-level field of the datalist JSON (``channels``, ``spacing_mm``), or None."""
    import json

    try:
        return json.loads(Path(config.data.datalist).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _channel_names(config: RunConfig):
    """``data.channels``, else the datalist's own ``channels`` list, else ``channel0``..."""
    if config.data.channels:
        return list(config.data.channels)
    named = _datalist_field(config, "channels")
    count = int(config.model.kwargs.get("in_channels", 1))
    if isinstance(named, list) and len(named) == count:
        return [str(n) for n in named]
    return [f"channel{i}" for i in range(count)]


def run_preprocessing(config: RunConfig):
    """The run's :class:`~SymmetryAwareCore.preprocessing.Preprocessing`: what its model card
    will record and what every training case is prepared with (one definition, the core's).

    Spacing comes from ``data.spacing``, else the datalist's ``spacing_mm``, else the first
    case's own voxel size (RAS order, from its header), so a card always states it.
    """
    from SymmetryAwareCore.preprocessing import Preprocessing
    from SymmetryAwareCore.preprocessing.spec import windows_or_default

    d = config.data
    spacing = list(d.spacing)
    if not spacing:
        stated = _datalist_field(config, "spacing_mm")
        if isinstance(stated, (int, float)) and stated > 0:
            spacing = [float(stated)] * 3
        elif isinstance(stated, list) and len(stated) == 3:
            spacing = [float(v) for v in stated]
    if not spacing:
        spacing = _first_case_spacing(config)
    is_ct = d.modality.lower() == "ct"
    normalisation = d.normalisation or ("ct-windows" if is_ct else "zscore-nonzero")
    windows = windows_or_default(d.ct_windows) if normalisation == "ct-windows" else ()
    spec = Preprocessing(spacing=spacing, roi_size=d.roi_size, normalisation=normalisation, ct_windows=windows,
                         alignment="msp" if d.align else "none", anti_alias=d.anti_alias,
                         bias_correction=d.bias_correction)
    channels = len(_channel_names(config))
    expected = config.model.kwargs.get("in_channels")
    if expected is not None and int(expected) != spec.network_channels(channels):
        raise InputError(f"model.kwargs.in_channels is {expected}, but {channels} channel(s) with normalisation "
                         f"{normalisation} give {spec.network_channels(channels)} network inputs")
    return spec


def _first_case_spacing(config: RunConfig):
    from SymmetryAwareCore.geometry.orientation import to_ras
    from SymmetryAwareCore.io.image import Image
    from SymmetryAwareCore.io.readers import read_image

    from .data import entry_paths

    datalist = load_datalist(config.data.datalist)
    entries = datalist.all_entries()
    if not entries:
        raise InputError("the datalist holds no cases", config.data.datalist)
    first = read_image(entry_paths(entries[0])[0][0])
    ras, _ = to_ras(Image(np.zeros((1, 1, 1), np.uint8), first.affine))
    return [round(float(v), 3) for v in np.linalg.norm(ras.affine[:3, :3], axis=0)]


def _card_common(config: RunConfig, task: str, labels=(), extra=None, description: str = "") -> Dict[str, Any]:
    spec = run_preprocessing(config)
    preprocessing = {**spec.to_card(), "orientation": "RAS"}
    if spec.alignment == "none":
        preprocessing["note"] = "trained UNALIGNED (data.align=false): mirror pairs follow the image axes"
    return {
        "channels": _channel_names(config),
        "modality": config.data.modality,
        "labels": list(labels),
        "description": description,
        "preprocessing": preprocessing,
        "extra": {"task": task, **(extra or {})},
    }


class _ModelTask:
    def __init__(self, config: RunConfig):
        self.config = config

    def describe_model(self) -> Dict[str, Any]:
        return {"name": self.config.model.name, "kwargs": dict(self.config.model.kwargs)}

    def build_model(self) -> nn.Module:
        model = build_model(self.config.model.name, self.config.model.kwargs)
        self.initialise(model)
        if self.config.model.init_checkpoint:  # after initialise: loaded tensors win
            load_init_weights(model, self.config.model.init_checkpoint, self.config.model.init_allow_partial)
        freeze_parameters(model, self.config.model.freeze)
        return model

    def initialise(self, model: nn.Module) -> None:
        """Task-specific initialisation of a freshly built network (none by default)."""


class SegmentationTask(_ModelTask):
    """BraTS-style regions TC, WT, ET as 3 sigmoid channels; loss Dice + BCE.

    ``model.kwargs.pairing`` (:data:`SymmetryAwareCore.models.sa_swin_unetr.PAIRINGS`, docs/pairing.md):
    ``input`` (default) supervises the patch of each sample, its counterpart encoded as
    context only; ``mirror-pair`` supervises both crops of each sample (the counterpart with
    its own label, cropped and flipped as the counterpart was), encoded once each in one
    encoder call. ``data.batch_size`` counts samples (pairs) either way, so a mirror-pair
    step supervises ``2 * batch_size`` crops (:attr:`supervised_per_item`); the Dice and BCE
    are means over all supervised crops.
    """

    def __init__(self, config: RunConfig):
        super().__init__(config)
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True)
        self.bce = nn.BCEWithLogitsLoss()
        self.pairing = config.model.kwargs.get("pairing", "input")
        self.supervised_per_item = 2 if self.pairing == "mirror-pair" else 1
        """Supervised crops per dataset item: the engine counts throughput in these."""

    def card_metadata(self) -> Dict[str, Any]:
        from SymmetryAwareCore.io.labels import brats_labels

        from SymmetryAwareCore.inference.model_source import brats_card_fields

        labels = [(i.value, i.name, [round(255 * c) for c in i.color]) for i in brats_labels(2021)]
        card = _card_common(self.config, "segmentation", labels=labels,
                            extra={"regions": list(REGIONS), "activation": "sigmoid"},
                            description="SA-Swin UNETR: BraTS regions TC, WT, ET as sigmoid channels")
        card["postprocessing"] = brats_card_fields()["postprocessing"]  # channels TC, WT, ET as trained
        return card

    def initialise(self, model: nn.Module) -> None:
        if self.config.model.output_prior:
            set_output_prior(model, self.config.model.output_prior)

    def validation_entries(self):
        """The held-out cases validated during training: the evaluation fold (``data.fold``),
        or the list's ``validation`` section when it has no folds."""
        if not hasattr(self, "_held_out"):
            if not self.config.data.datalist:
                raise InputError("data.datalist is not set")
            _, held_out = load_datalist(self.config.data.datalist).split(self.config.data.fold)
            if not held_out:
                raise InputError("validation needs held-out cases: the datalist has neither folds nor a "
                                 "'validation' section", self.config.data.datalist)
            missing = [e for e in held_out if not e.get("label")]
            if missing:
                raise InputError(f"held-out case {missing[0].get('case', missing[0]['image'])} has no 'label' to "
                                 "validate against", self.config.data.datalist)
            self._held_out = held_out
        return self._held_out

    def validate(self, model, env):
        from .validation import validate_segmentation

        return validate_segmentation(model, self.validation_entries(), self.config, env)

    def train_dataset(self):
        d = self.config.data
        return PairedCropDataset(_train_entries(self.config), d.roi_size, run_preprocessing(self.config),
                                 _channel_names(self.config), self.config.train.seed, segmentation=True,
                                 pos_fraction=d.pos_fraction, augment=d.augment, cache=d.cache, cache_dir=d.cache_dir,
                                 counterpart_label=self.pairing == "mirror-pair")

    def loss(self, model, batch):
        # Losses in float32 whatever the autocast dtype: sums over 64^3 voxels in bfloat16 lose
        # the foreground (8 significant bits).
        if self.pairing == "mirror-pair":
            # [P; C] through the encoder once, SACA across the pair, both supervised.
            logits = model(batch["image"], batch["counterpart"], mirror_pair=True).float()
            label = torch.cat([batch["label"], batch["label_counterpart"]])
        else:
            logits = model(batch["image"], batch["counterpart"]).float()
            label = batch["label"]
        dice, bce = self.dice(logits, label), self.bce(logits, label)
        return {"loss": dice + bce, "dice": dice, "bce": bce}


class ClassificationTask(_ModelTask):
    """Scan-level multi-label findings (``data.findings``); loss BCE with logits.

    ``model.kwargs.pooling: lesion`` (:class:`SymmetryAwareCore.models.SASwinClassifier`) also
    trains the network's token map on the lesion masks: every token of the map is a 0/1
    target (does any voxel under it hold the finding, :func:`.data.lesion_token_target`),
    scored by a class-balanced BCE (the mean over lesion tokens and the mean over the other
    tokens, halved: a 2 mL bleed covers a few of 4096 tokens, and a plain mean would teach
    the map to say "no" everywhere). ``model.kwargs.pairing: mirror-pair`` encodes each scan
    and its left-right flip once each and supervises both, each with the other as SACA's
    counterpart (2 supervised views per item).
    """

    def __init__(self, config: RunConfig):
        super().__init__(config)
        if not config.data.findings:
            raise InputError("data.findings is empty: name the findings to classify")
        self.bce = nn.BCEWithLogitsLoss()
        self.pairing = config.model.kwargs.get("pairing", "input")
        self.supervised_per_item = 2 if self.pairing == "mirror-pair" else 1
        self.lesion = config.model.kwargs.get("pooling") == "lesion"

    def card_metadata(self) -> Dict[str, Any]:
        extra = {"findings": list(self.config.data.findings), "activation": "sigmoid",
                 "input": "whole scan resized to roi_size"}
        if self.lesion:
            extra["lesion_map"] = "token logits of Swin stage 1 (roi/4 per axis); the scan logit is their maximum"
        return _card_common(self.config, "classification", extra=extra,
                            description="SA-Swin classifier: one sigmoid logit per finding")

    def train_dataset(self):
        d = self.config.data
        lesion_labels = token_grid = None
        if self.lesion:
            from SymmetryAwareCore.models.encoder import token_grid_shape
            from SymmetryAwareCore.models.sa_swin_classifier import LESION_STAGE

            from .datalist import finding_label_values

            lesion_labels = finding_label_values(d.findings, d.finding_labels, _datalist_field(self.config, "labels"))
            token_grid = token_grid_shape(d.roi_size, LESION_STAGE)
        return WholeScanDataset(_train_entries(self.config), d.roi_size, d.findings, run_preprocessing(self.config),
                                _channel_names(self.config), self.config.train.seed, augment=d.augment, cache=d.cache,
                                cache_dir=d.cache_dir, lesion_labels=lesion_labels, token_grid=token_grid)

    def balanced_bce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Half the mean BCE over positive tokens plus half over negative ones (the negatives
        alone when a batch has no positive token)."""
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        positive = target > 0.5
        negative_mean = loss[~positive].mean()
        if not positive.any():
            return negative_mean
        return 0.5 * (loss[positive].mean() + negative_mean)

    def loss(self, model, batch):
        mirror = self.pairing == "mirror-pair"
        target = torch.cat([batch["target"]] * 2) if mirror else batch["target"]
        if not self.lesion:
            logits = model(batch["image"], batch["counterpart"], mirror_pair=mirror)
            bce = self.bce(logits.float(), target)
            return {"loss": bce, "bce": bce}
        logits, lesion = model(batch["image"], batch["counterpart"], mirror_pair=mirror, return_map=True)
        lesion_target = torch.cat([batch["lesion"], batch["lesion_counterpart"]]) if mirror else batch["lesion"]
        bce = self.bce(logits.float(), target)
        tokens = self.balanced_bce(lesion.float(), lesion_target)
        return {"loss": bce + tokens, "bce": bce, "token_bce": tokens}


class PretrainTask(_ModelTask):
    """Symmetry-aware pretraining (SASwinPretrainer): rotation, contrastive, inpainting, symmetry.

    Each batch of mirror-paired crops gives two pretext views
    (:func:`SymmetryAwareCore.models.pretext.make_pretext_view`: patch and counterpart rotated
    about the left-right axis and masked alike), run through the model in one call (the
    two views concatenated along the batch), and scored by
    :class:`SymmetryAwareCore.models.losses.SymmetryAwarePretrainingLoss` with the weights
    of ``config.pretrain``. The leakage check runs before anything else.
    """

    def __init__(self, config: RunConfig):
        super().__init__(config)
        d = config.data
        if not d.datalist:
            raise InputError("data.datalist is not set")
        if not d.exclude_datalist:
            raise InputError("pretraining needs data.exclude_datalist (the downstream list whose evaluation fold "
                             "must stay unseen); see the leakage check")
        check_leakage(load_datalist(d.datalist), load_datalist(d.exclude_datalist), d.exclude_fold)
        if config.pretrain.contrastive_weight > 0 and d.batch_size * self.supervised_per_item < 2:
            raise InputError("the contrastive task needs data.batch_size >= 2 (the other samples are its negatives); "
                             "or set pretrain.contrastive_weight=0")
        from SymmetryAwareCore.models.losses import SymmetryAwarePretrainingLoss

        p = config.pretrain
        # Whole scans: the counterpart is the exact flip, so symmetry is compared region by region.
        self.criterion = SymmetryAwarePretrainingLoss(p.rotation_weight, p.contrastive_weight, p.inpainting_weight,
                                                      p.symmetry_weight, p.temperature,
                                                      token_symmetry=p.input == "whole-scan")

    def card_metadata(self) -> Dict[str, Any]:
        return _card_common(self.config, "pretraining", extra={"pretrain": vars(self.config.pretrain)},
                            description="SA-Swin encoder pretrained with the symmetry-aware head")

    def train_dataset(self):
        d = self.config.data
        entries = load_datalist(d.datalist).all_entries()
        if self.config.pretrain.input == "whole-scan":
            return BalancedWholeScanDataset(entries, d.roi_size, run_preprocessing(self.config),
                                            _channel_names(self.config), self.config.train.seed, augment=d.augment,
                                            cache=d.cache, cache_dir=d.cache_dir)
        return PairedCropDataset(entries, d.roi_size, run_preprocessing(self.config), _channel_names(self.config),
                                 self.config.train.seed, segmentation=False, augment=d.augment, cache=d.cache,
                                 cache_dir=d.cache_dir)

    def loss(self, model, batch):
        return self.losses(model, batch)

    def losses(self, model, batch, weighted: bool = True):
        """The step's losses (``loss``: the weighted sum; each task's unweighted loss apart).

        Two pretext views when the contrastive task is on (it compares them), else one: the
        other three tasks need only one, and a view costs two encoder passes.
        ``weighted=False``: every task whose weight is not 0 at weight 1 (for
        :func:`pretrain_gradient_norms`).
        """
        import torch

        from SymmetryAwareCore.models.pretext import make_pretext_view

        p = self.config.pretrain
        image, counterpart, status = batch["image"], batch["counterpart"], batch["status"]
        if image.ndim == 6:  # whole-scan items of (healthy, patient): (B, 2, C, X, Y, Z) -> (2B, C, X, Y, Z)
            image, counterpart, status = image.flatten(0, 1), counterpart.flatten(0, 1), status.reshape(-1)
        n_views = 2 if p.contrastive_weight > 0 else 1
        views = [make_pretext_view(image, counterpart, p.mask_ratio, p.block_size) for _ in range(n_views)]
        out = model(torch.cat([v.image for v in views]), torch.cat([v.counterpart for v in views]))
        n = image.shape[0]
        out1 = {k: v[:n] for k, v in out.items()}
        out2 = {k: v[n:] for k, v in out.items()} if n_views == 2 else out1
        # status: 1 patient, 0 healthy, -1 unknown; the loss wants 1 healthy
        healthy = torch.where(status < 0, status, 1 - status)
        criterion = self.criterion if weighted else self._unit
        losses = criterion(out1, out2, views[0], views[-1], healthy)
        return {"loss": losses.pop("total"), **losses}

    @property
    def active_tasks(self):
        """The proxy tasks whose weight is not 0."""
        return tuple(name for name, w in self.criterion.weights.items() if w > 0)

    @property
    def supervised_per_item(self) -> int:
        """Scans per dataset item: 2 for whole-scan (healthy, patient) items, else 1."""
        return 2 if self.config.pretrain.input == "whole-scan" else 1

    @property
    def _unit(self):
        from SymmetryAwareCore.models.losses import SymmetryAwarePretrainingLoss

        on = self.active_tasks
        return SymmetryAwarePretrainingLoss(*(float(t in on) for t in ("rotation", "contrastive", "inpainting", "symmetry")),
                                            temperature=self.config.pretrain.temperature,
                                            token_symmetry=self.criterion.token_symmetry)


def pretrain_gradient_norms(model: nn.Module, task: "PretrainTask", batches, prefix: str = "swinViT.") -> Dict[str, float]:
    """Each active proxy task's encoder gradient norm, unweighted, averaged over ``batches``.

    Only the TRAINABLE encoder parameters count (``model.freeze`` ones have no gradient).
    For every batch the task losses are computed once (one pair of views) and the
    gradient of each with respect to the encoder parameters (names starting with ``prefix``)
    is taken apart; the result is the mean norm per task. Used to set the loss weights by
    :func:`SymmetryAwareCore.models.losses.balanced_weights` (``Training/scripts/pretrain_balance.py``).
    """
    params = [p for n, p in model.named_parameters() if n.startswith(prefix) and p.requires_grad]
    if not params:
        raise InputError(f"the model has no trainable parameters named {prefix}*")
    sums = {name: 0.0 for name in task.active_tasks}
    count = 0
    for batch in batches:
        losses = task.losses(model, batch, weighted=False)
        for name in sums:
            grads = torch.autograd.grad(losses[name], params, retain_graph=True, allow_unused=True)
            sums[name] += float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))
        count += 1
    if count == 0:
        raise InputError("no batch to measure gradient norms on")
    return {name: v / count for name, v in sums.items()}


class InteractiveSegmentationTask(SegmentationTask):
    """Click training of the promptable SA-Swin (``finetune-interactive``).

    Standard iterative scheme (Sakinis et al. 2019; DeepEdit; RITM): per sample, the
    simulated annotator (:func:`SymmetryAwareCore.interactive.clicker.next_click`, the one
    clicker) gives a first click inside the object; then ``0..interactive.max_rounds``
    rounds (drawn per batch) run the network WITHOUT gradient on the current guidance and
    add the clicker's next click on its errors; the last pass is supervised (Dice + BCE on
    the binary target ``interactive.region`` of the BraTS regions, WT by default). With
    probability ``interactive.no_click_fraction`` a sample has no guidance at all, so the
    network stays an automatic model with empty guidance (the automatic first pass); with
    ``interactive.box_fraction`` it also gets a box (the object's bounding box grown by
    0..``interactive.box_margin`` voxels per side).

    The counterpart is encoded once per batch without gradient and with EMPTY guidance, as
    the session caches it; clicks are drawn on the crop after augmentation, so they follow
    the crop's flips and turns. Random draws use torch's global generator, whose state
    the engine checkpoints, so a resumed run continues the same stream.
    """

    def __init__(self, config: RunConfig):
        super().__init__(config)
        from .metrics import REGIONS

        i = config.interactive
        if i.region not in REGIONS:
            raise InputError(f"interactive.region must be one of {', '.join(REGIONS)}, got {i.region!r}")
        self.region = REGIONS.index(i.region)

    def build_model(self) -> nn.Module:
        model = build_model(self.config.model.name, self.config.model.kwargs)
        if not hasattr(model, "guidance_channels"):
            raise InputError(f"finetune-interactive needs a promptable network (PromptableSASwinUNETR), "
                             f"not {self.config.model.name}")
        self.initialise(model)
        if self.config.model.init_checkpoint:
            channels = self.config.interactive.init_output_channels or None
            load_init_weights(model, self.config.model.init_checkpoint, self.config.model.init_allow_partial,
                              adapt=channel_adapter(channels, model.in_channels))
        return model

    def card_metadata(self) -> Dict[str, Any]:
        from SymmetryAwareCore.interactive.session import card_interactive_block

        i = self.config.interactive
        card = _card_common(self.config, "interactive", labels=[(1, "lesion", [250, 120, 40])],
                            extra={"interactive": card_interactive_block(i.click_sigma, i.region)},
                            description="Promptable SA-Swin UNETR: image + guidance (positive clicks, negative "
                                        "clicks, box) -> binary lesion")
        card["postprocessing"] = {"activation": "sigmoid", "regions": {"lesion": [1]}, "threshold": 0.5}
        return card

    def validate(self, model, env):  # the 3-region validation does not apply
        raise InputError("finetune-interactive has no validation during training; set validation.every=0 "
                         "(Benchmarks/interactive_benchmark.py scores clicks on held-out cases)")

    def loss(self, model, batch):
        import torch

        from SymmetryAwareCore.interactive.clicker import next_click
        from SymmetryAwareCore.interactive.guidance import Guidance, guidance_volume

        from .checkpoint import unwrap

        i = self.config.interactive
        net = unwrap(model)
        image, counterpart = batch["image"], batch["counterpart"]
        target = batch["label"][:, self.region : self.region + 1]
        truths = [(t[0] > 0.5).cpu().numpy() for t in target]
        shape = tuple(image.shape[2:])
        guides = []
        for truth in truths:
            g = Guidance()
            if float(torch.rand(())) >= i.no_click_fraction:
                first = next_click(None, truth)
                if first is not None:
                    g.add(first.voxel, first.positive)
                if truth.any() and float(torch.rand(())) < i.box_fraction:
                    idx = np.argwhere(truth)
                    grow = torch.randint(0, i.box_margin + 1, (2, 3)).numpy()
                    g.box = (tuple(idx.min(0) - grow[0]), tuple(idx.max(0) + grow[1]))
            guides.append(g)

        def inputs():
            maps = np.stack([guidance_volume(shape, g, i.click_sigma) for g in guides])
            return torch.cat([image, torch.from_numpy(maps).to(image.device, image.dtype)], dim=1)

        with torch.no_grad():
            cached = net.encode_counterpart(counterpart)
            rounds = int(torch.randint(0, i.max_rounds + 1, ()))
            for _ in range(rounds):
                active = [not g.empty for g in guides]
                if not any(active):
                    break
                pred = (net(inputs(), counterpart_features=cached) > 0).cpu().numpy()[:, 0]
                for b, g in enumerate(guides):
                    if active[b]:
                        click = next_click(pred[b], truths[b])
                        if click is not None:
                            g.add(click.voxel, click.positive)
        logits = model(inputs(), counterpart_features=cached).float()
        dice, bce = self.dice(logits, target), self.bce(logits, target)
        return {"loss": dice + bce, "dice": dice, "bce": bce, "rounds": torch.tensor(float(rounds))}


_TASKS = {"pretrain": PretrainTask, "finetune-seg": SegmentationTask, "finetune-cls": ClassificationTask,
          "finetune-interactive": InteractiveSegmentationTask}


def task_for(command: str, config: RunConfig):
    """The task a command trains; ``train.task`` (``module:callable(config)``) overrides it."""
    if config.train.task:
        return resolve_callable(config.train.task)(config)
    return _TASKS[command](config)
