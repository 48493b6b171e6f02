"""Datasets of mirror-paired samples read from datalist entries.

Images are read with :mod:`SymmetryAwareCore.io.readers` and either reoriented to RAS (an
exact permutation; the files must already be aligned to their mid-sagittal plane) or, with
``data.align``, resampled into their symmetric frame; either way array axis X is left-right
and the plane is at its centre.
Each sample is a dict of ``image`` and ``counterpart`` ``(C, *roi_size)`` float32 plus the
task's targets. ``__getitem__`` takes ``(epoch, index)``: all randomness of a sample comes
from ``numpy.random.default_rng([seed, epoch, index])`` (see :mod:`.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry.mirror import flip_lr
from SymmetryAwareCore.geometry.orientation import to_ras
from SymmetryAwareCore.io.image import Image
from SymmetryAwareCore.io.readers import read_image, read_labelmap

from .crops import paired_crop
from .datalist import case_id, finding_value, status_of
from .metrics import labels_to_regions

__all__ = ["LoadedCase", "load_case", "normalise", "PairedCropDataset", "WholeScanDataset"]


def normalise(volume: np.ndarray) -> np.ndarray:
    """Per-channel z-score over the non-zero voxels (the head), background left at 0."""
    out = np.zeros_like(volume, dtype=np.float32)
    for c in range(volume.shape[0]):
        mask = volume[c] != 0
        if mask.sum() < 2:
            continue
        values = volume[c][mask]
        out[c][mask] = (values - values.mean()) / max(float(values.std()), 1e-6)
    return out


@dataclass
class LoadedCase:
    """One case ready for pairing: arrays on a grid whose axis X is left-right.

    Attributes:
        volume: ``(C, X, Y, Z)`` float32.
        label: ``(X, Y, Z)`` integer labels on the same grid, or None.
        affine: voxel -> RAS of that grid.
        frame: the :class:`~SymmetryAwareCore.geometry.symmetric_frame.SymmetricFrame` when
            the case was aligned to its estimated mid-sagittal plane (``frame.to_native`` puts
            results back on the file's grid); None when it was only reoriented to RAS.
    """

    volume: np.ndarray
    label: Optional[np.ndarray]
    affine: np.ndarray
    frame: Any = None


def load_case(entry: Dict[str, Any], with_label: bool, align: bool = False) -> LoadedCase:
    """Read one datalist entry (one file per channel, all on one grid).

    ``align=False`` only reorients to RAS (an exact permutation): the files must already be
    aligned to their mid-sagittal plane. ``align=True`` estimates the plane on the first
    channel (:func:`~SymmetryAwareCore.geometry.msp.estimate_msp`) and resamples the case into
    its symmetric frame (linear for images, nearest for the label), keeping the voxel size.
    """
    paths = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
    images = [read_image(p) for p in paths]
    for path, image in zip(paths[1:], images[1:]):
        if not image.same_grid(images[0]):
            raise InputError(f"not on the grid of the case's first image {paths[0]}", path)
    stacked = Image(np.stack([i.array for i in images]).astype(np.float32), images[0].affine, source=str(paths[0]))
    label_image = None
    if with_label:
        if not entry.get("label"):
            raise InputError(f"case {case_id(entry)} has no 'label'")
        label_image = read_labelmap(entry["label"])
        if not label_image.same_grid(images[0]):
            raise InputError(f"label is not on the grid of {paths[0]}", entry["label"])
    if align:
        from SymmetryAwareCore.geometry.msp import estimate_msp
        from SymmetryAwareCore.geometry.symmetric_frame import align_to_msp

        plane = estimate_msp(images[0], on_failure="error")
        aligned, frame = align_to_msp(stacked, plane, spacing=None)
        label = None if label_image is None else frame.to_frame(label_image.array, "nearest")
        return LoadedCase(aligned.array.astype(np.float32), label, aligned.affine, frame)
    ras, _ = to_ras(stacked)
    label = None if label_image is None else to_ras(label_image)[0].array
    return LoadedCase(ras.array.astype(np.float32), label, ras.affine, None)


class _CaseCache:
    def __init__(self, entries: Sequence[Dict[str, Any]], with_label: bool, cache: bool, align: bool):
        self.entries, self.with_label, self.cache, self.align = list(entries), with_label, cache, align
        self._store: Dict[int, Tuple[np.ndarray, Optional[np.ndarray]]] = {}

    def __call__(self, index: int):
        if index in self._store:
            return self._store[index]
        case = load_case(self.entries[index], self.with_label, self.align)
        item = (normalise(case.volume), case.label)
        if self.cache:
            self._store[index] = item
        return item


def _key(key) -> Tuple[int, int]:
    return (0, int(key)) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))


class PairedCropDataset(Dataset):
    """Random ``roi_size`` crops with their mirrored counterparts (segmentation, pretraining).

    Sample keys: ``image``, ``counterpart`` ``(C, *roi)``; ``label`` ``(3, *roi)`` float
    BraTS regions TC, WT, ET when ``segmentation``; ``status`` (0 healthy, 1 patient, -1
    unknown, see :func:`.datalist.status_of`); ``case``; ``start`` (the box corner in the
    padded, possibly left-right flipped volume) and ``flip_lr``.
    """

    def __init__(self, entries: Sequence[Dict[str, Any]], roi_size: Sequence[int], seed: int = 0,
                 segmentation: bool = False, pos_fraction: float = 0.5, augment: bool = True, cache: bool = True,
                 align: bool = False):
        if not entries:
            raise InputError("no training cases")
        self.entries = list(entries)
        self.roi_size = tuple(int(r) for r in roi_size)
        self.seed, self.segmentation = seed, segmentation
        self.pos_fraction, self.augment = pos_fraction, augment
        self.load = _CaseCache(self.entries, segmentation, cache, align)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key) -> Dict[str, Any]:
        epoch, index = _key(key)
        rng = np.random.default_rng([self.seed, epoch, index])
        volume, label = self.load(index)
        sample = paired_crop(volume, self.roi_size, rng, label=label,
                             pos_fraction=self.pos_fraction if self.segmentation else 0.0, augment=self.augment)
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
        return out


class WholeScanDataset(Dataset):
    """Whole scans resized to ``roi_size``, paired with their left-right flip (classification).

    Resizing commutes with the left-right flip, so the flip stays the exact counterpart.
    Sample keys: ``image``, ``counterpart``, ``target`` ``(F,)`` float, one 0/1 per name of
    ``findings`` (see :func:`.datalist.finding_value`); ``case``.
    With ``augment``, flips along Y/Z and the left-right flip of the whole scan are drawn.
    """

    def __init__(self, entries: Sequence[Dict[str, Any]], roi_size: Sequence[int], findings: Sequence[str],
                 seed: int = 0, augment: bool = True, cache: bool = True, align: bool = False):
        if not entries:
            raise InputError("no cases")
        self.entries, self.findings = list(entries), list(findings)
        for entry in self.entries:
            missing = [f for f in self.findings if finding_value(entry, f) is None]
            if missing:
                raise InputError(f"case {case_id(entry)} lacks findings {', '.join(missing)}")
        self.roi_size = tuple(int(r) for r in roi_size)
        self.seed, self.augment = seed, augment
        self.load = _CaseCache(self.entries, False, cache, align)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key) -> Dict[str, Any]:
        epoch, index = _key(key)
        rng = np.random.default_rng([self.seed, epoch, index])
        volume, _ = self.load(index)
        image = torch.nn.functional.interpolate(torch.from_numpy(volume)[None], size=self.roi_size,
                                                mode="trilinear", align_corners=False)[0]
        if self.augment:
            for axis in (1, 2, 3):
                if rng.random() < 0.5:
                    image = image.flip(axis)
        entry = self.entries[index]
        return {
            "image": image.contiguous(),
            "counterpart": flip_lr(image, spatial_start=1).contiguous(),
            "target": torch.tensor([finding_value(entry, f) for f in self.findings]),
            "case": case_id(entry),
        }
