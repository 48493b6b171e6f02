"""Datasets of mirror-paired samples read from datalist entries.

Every case is prepared by the core's one preparation path
(:func:`SymmetryAwareCore.preprocessing.prepare_case` with the run's
:class:`~SymmetryAwareCore.preprocessing.Preprocessing`, the block its model card will
carry): aligned to its mid-sagittal plane in the symmetric frame at the card's spacing,
anti-aliased, normalised, cut to the brain box. Prepared cases are kept on disk
(:class:`~SymmetryAwareCore.preprocessing.cache.PreparedStore`, content-addressed,
memory-mapped), so alignment costs once per case, not once per epoch or per worker; the
arrays are the ones inference computes for the same files and card (tested).
Each sample is a dict of ``image`` and ``counterpart`` ``(C, *roi_size)`` float32 plus the
task's targets. ``__getitem__`` takes ``(epoch, index)``: all randomness of a sample comes
from ``numpy.random.default_rng([seed, epoch, index])`` (see :mod:`.engine`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry.mirror import flip_lr
from SymmetryAwareCore.preprocessing import Preprocessing, whole_scan_input
from SymmetryAwareCore.preprocessing.cache import PreparedStore

from .crops import paired_crop
from .datalist import case_id, finding_value, status_of
from .metrics import labels_to_regions

__all__ = ["entry_paths", "PreparedCases", "PairedCropDataset", "WholeScanDataset", "BalancedWholeScanDataset",
           "whole_scan_view", "lesion_token_target"]


def entry_paths(entry: Dict[str, Any]):
    """``(channel paths, label path or None)`` of a datalist entry."""
    paths = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
    return [Path(p) for p in paths], (Path(entry["label"]) if entry.get("label") else None)


class PreparedCases:
    """Prepared brain boxes of a list of entries: ``(volume (C', w, h, d), label or None)``.

    ``cache``: also keep the memory-mapped arrays' handles in this process (the disk store
    is always used; the page cache is shared between workers).
    """

    def __init__(self, entries: Sequence[Dict[str, Any]], with_label: bool, spec: Preprocessing,
                 channel_names: Sequence[str], cache: bool = True, cache_dir: Optional[str] = None):
        self.entries, self.with_label, self.cache = list(entries), with_label, cache
        self.spec, self.channel_names = spec, list(channel_names)
        self.store = PreparedStore(Path(cache_dir) if cache_dir else None)
        self._held: Dict[int, Tuple[np.ndarray, Optional[np.ndarray]]] = {}

    def __call__(self, index: int):
        if index in self._held:
            return self._held[index]
        entry = self.entries[index]
        paths, label_path = entry_paths(entry)
        if len(paths) != len(self.channel_names):
            raise InputError(f"case {case_id(entry)} has {len(paths)} images, the model takes {len(self.channel_names)} channels")
        if self.with_label and label_path is None:
            raise InputError(f"case {case_id(entry)} has no 'label'")
        volume, label, _ = self.store.get(paths, self.channel_names, self.spec, label_path if self.with_label else None)
        item = (volume, label)
        if self.cache:
            self._held[index] = item
        return item


def _key(key) -> Tuple[int, int]:
    return (0, int(key)) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))


class PairedCropDataset(Dataset):
    """Random ``roi_size`` crops with their mirrored counterparts (segmentation, pretraining).

    Sample keys: ``image``, ``counterpart`` ``(C, *roi)``; ``label`` ``(3, *roi)`` float
    BraTS regions TC, WT, ET when ``segmentation`` (and ``label_counterpart``, the
    counterpart crop's regions, with ``counterpart_label``: mirror-pair training); ``status`` (0 healthy, 1 patient, -1
    unknown, see :func:`.datalist.status_of`); ``case``; ``start`` (the box corner in the
    padded, possibly left-right flipped volume) and ``flip_lr``.
    """

    def __init__(self, entries: Sequence[Dict[str, Any]], roi_size: Sequence[int], spec: Preprocessing,
                 channel_names: Sequence[str], seed: int = 0, segmentation: bool = False, pos_fraction: float = 0.5,
                 augment: bool = True, cache: bool = True, cache_dir: Optional[str] = None,
                 counterpart_label: bool = False):
        if not entries:
            raise InputError("no training cases")
        self.counterpart_label = counterpart_label and segmentation
        self.entries = list(entries)
        self.roi_size = tuple(int(r) for r in roi_size)
        self.seed, self.segmentation = seed, segmentation
        self.pos_fraction, self.augment = pos_fraction, augment
        self.load = PreparedCases(self.entries, segmentation, spec, channel_names, cache, cache_dir)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key) -> Dict[str, Any]:
        epoch, index = _key(key)
        rng = np.random.default_rng([self.seed, epoch, index])
        volume, label = self.load(index)
        sample = paired_crop(np.asarray(volume, np.float32), self.roi_size, rng,
                             label=None if label is None else np.asarray(label),
                             pos_fraction=self.pos_fraction if self.segmentation else 0.0, augment=self.augment,
                             counterpart_label=self.counterpart_label)
        entry = self.entries[index]
        out: Dict[str, Any] = {
            "image": torch.from_numpy(sample["image"]),
            "counterpart": torch.from_numpy(sample["counterpart"]),
            "status": status_of(entry),
            "case": case_id(entry),
            "start": torch.tensor(sample["start"]),
            "flip_lr": bool(sample["params"].flip_lr),
        }
        if self.segmentation:
            out["label"] = torch.from_numpy(labels_to_regions(sample["label"].astype(np.int64)).astype(np.float32))
        if self.counterpart_label:
            regions = labels_to_regions(sample["label_counterpart"].astype(np.int64)).astype(np.float32)
            out["label_counterpart"] = torch.from_numpy(regions)
        return out


def lesion_token_target(label: np.ndarray, values: Sequence[Sequence[int]], grid: Sequence[int]) -> torch.Tensor:
    """``(F, *grid)`` float 0/1: token ``t`` of finding ``f`` is 1 when any voxel of the brain
    box ``label`` ``(w, h, d)`` under it holds one of ``values[f]``.

    The box is split into ``grid`` equal parts along each axis, as resizing it to the ROI
    (:func:`SymmetryAwareCore.preprocessing.whole_scan_input`) and cutting the ROI into
    tokens does; the split is symmetric, so the left-right flip of the target is the
    target of the flipped box.
    """
    label = torch.from_numpy(np.asarray(label).astype(np.int64))
    masks = torch.stack([torch.isin(label, torch.tensor(list(v))) for v in values]).float()
    return torch.nn.functional.adaptive_max_pool3d(masks[None], tuple(int(g) for g in grid))[0]


def whole_scan_view(volume: np.ndarray, roi_size: Sequence[int], rng: np.random.Generator, augment: bool,
                    target: Optional[torch.Tensor] = None):
    """``(image, counterpart)`` ``(C, *roi_size)`` of a prepared brain box ``(C, w, h, d)``.

    The box is resized by :func:`SymmetryAwareCore.preprocessing.whole_scan_input` (what
    ``classify`` and the zero-shot score read); the counterpart is its left-right flip (axis 1),
    exact because resizing commutes with the flip. With ``augment``, flips along each spatial
    axis are drawn from ``rng`` (a left-right flip keeps the pair a mirror pair).
    With ``target`` (a map ``(F, x, y, z)`` over the same box, e.g. :func:`lesion_token_target`)
    the result is ``(image, counterpart, target, target of the counterpart)``, the maps
    flipped as the images are.
    """
    image = whole_scan_input(np.asarray(volume, np.float32), roi_size)
    if augment:
        for axis in (1, 2, 3):
            if rng.random() < 0.5:
                image = image.flip(axis)
                target = None if target is None else target.flip(axis)
    pair = (image.contiguous(), flip_lr(image, spatial_start=1).contiguous())
    if target is None:
        return pair
    return pair + (target.contiguous(), flip_lr(target, spatial_start=1).contiguous())


class WholeScanDataset(Dataset):
    """Whole scans resized to ``roi_size``, paired with their left-right flip (classification).

    The brain box is resized by :func:`SymmetryAwareCore.preprocessing.whole_scan_input`, as
    ``classify`` does; resizing commutes with the left-right flip, so the flip stays the exact
    counterpart.
    Sample keys: ``image``, ``counterpart``, ``target`` ``(F,)`` float, one 0/1 per name of
    ``findings`` (see :func:`.datalist.finding_value`); ``case``.
    With ``augment``, flips along Y/Z and the left-right flip of the whole scan are drawn.
    With ``lesion_labels`` (label values per finding, :func:`.datalist.finding_label_values`)
    and ``token_grid``, each case's label is read too and the sample also holds ``lesion`` and
    ``lesion_counterpart`` ``(F, *token_grid)``, :func:`lesion_token_target` of the image and
    of its counterpart; a scan whose flag and label map disagree (marked with a finding its
    map lacks, or the reverse) is an InputError: the two would contradict each other in the loss.
    """

    def __init__(self, entries: Sequence[Dict[str, Any]], roi_size: Sequence[int], findings: Sequence[str],
                 spec: Preprocessing, channel_names: Sequence[str], seed: int = 0, augment: bool = True,
                 cache: bool = True, cache_dir: Optional[str] = None,
                 lesion_labels: Optional[Sequence[Sequence[int]]] = None, token_grid: Optional[Sequence[int]] = None):
        if not entries:
            raise InputError("no cases")
        self.entries, self.findings = list(entries), list(findings)
        for entry in self.entries:
            missing = [f for f in self.findings if finding_value(entry, f) is None]
            if missing:
                raise InputError(f"case {case_id(entry)} lacks findings {', '.join(missing)}")
        self.roi_size = tuple(int(r) for r in roi_size)
        self.seed, self.augment = seed, augment
        if (lesion_labels is None) != (token_grid is None):
            raise ValueError("lesion_labels and token_grid go together")
        if lesion_labels is not None and len(lesion_labels) != len(self.findings):
            raise ValueError(f"lesion_labels has {len(lesion_labels)} entries for {len(self.findings)} findings")
        self.lesion_labels = None if lesion_labels is None else [list(v) for v in lesion_labels]
        self.token_grid = None if token_grid is None else tuple(int(g) for g in token_grid)
        self.load = PreparedCases(self.entries, self.lesion_labels is not None, spec, channel_names, cache, cache_dir)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key) -> Dict[str, Any]:
        epoch, index = _key(key)
        rng = np.random.default_rng([self.seed, epoch, index])
        volume, label = self.load(index)
        entry = self.entries[index]
        findings = torch.tensor([finding_value(entry, f) for f in self.findings])
        sample = {"target": findings, "case": case_id(entry)}
        if self.lesion_labels is None:
            sample["image"], sample["counterpart"] = whole_scan_view(volume, self.roi_size, rng, self.augment)
            return sample
        tokens = lesion_token_target(label, self.lesion_labels, self.token_grid)
        has = tokens.flatten(1).amax(dim=1)
        bad = [f"{f}={flag:g} (label map: {seen:g})" for f, flag, seen in zip(self.findings, findings.tolist(), has.tolist())
               if flag != seen]
        if bad:
            raise InputError(f"case {case_id(entry)}: its findings and its label map disagree: {', '.join(bad)} "
                             "(data.finding_labels names each finding's label values)")
        views = whole_scan_view(volume, self.roi_size, rng, self.augment, target=tokens)
        for name, value in zip(("image", "counterpart", "lesion", "lesion_counterpart"), views):
            sample[name] = value
        return sample


class BalancedWholeScanDataset(Dataset):
    """Whole-scan mirror pairs for symmetry pretraining, one healthy and one patient scan per item.

    Each item holds two scans, so every batch of ``B`` items is ``B`` healthy + ``B`` patient
    scans (the symmetry loss sees both classes in every step, whatever the list's balance).
    The input is the zero-shot score's own (:func:`whole_scan_view`): the prepared brain box
    resized to ``roi_size`` and its left-right flip, so the head is trained on exactly what
    ``report.json``'s score reads.

    Length ``max(healthy, patient)``; item ``i`` takes the ``i``-th scan of each class, or, past
    the end of the smaller class, one of it drawn from ``rng([seed, epoch, i])``.
    Sample keys: ``image``, ``counterpart`` ``(2, C, *roi_size)`` (healthy first), ``status``
    ``(2,)`` int64 ``[0, 1]``, ``case`` ``[healthy name, patient name]``.
    """

    def __init__(self, entries: Sequence[Dict[str, Any]], roi_size: Sequence[int], spec: Preprocessing,
                 channel_names: Sequence[str], seed: int = 0, augment: bool = True, cache: bool = True,
                 cache_dir: Optional[str] = None):
        entries = list(entries)
        self.healthy = [i for i, e in enumerate(entries) if status_of(e) == 0]
        self.patient = [i for i, e in enumerate(entries) if status_of(e) == 1]
        if not self.healthy or not self.patient:
            raise InputError(f"whole-scan symmetry pretraining needs healthy AND patient scans; the list has "
                             f"{len(self.healthy)} healthy and {len(self.patient)} patient (status / healthy / patient keys)")
        self.entries, self.roi_size = entries, tuple(int(r) for r in roi_size)
        self.seed, self.augment = seed, augment
        self.load = PreparedCases(entries, False, spec, channel_names, cache, cache_dir)

    def __len__(self) -> int:
        return max(len(self.healthy), len(self.patient))

    def __getitem__(self, key) -> Dict[str, Any]:
        epoch, index = _key(key)
        rng = np.random.default_rng([self.seed, epoch, index])
        picked = [group[index] if index < len(group) else group[int(rng.integers(len(group)))]
                  for group in (self.healthy, self.patient)]
        views = [whole_scan_view(self.load(i)[0], self.roi_size, rng, self.augment) for i in picked]
        return {
            "image": torch.stack([v[0] for v in views]),
            "counterpart": torch.stack([v[1] for v in views]),
            "status": torch.tensor([0, 1]),
            "case": [case_id(self.entries[i]) for i in picked],
        }
