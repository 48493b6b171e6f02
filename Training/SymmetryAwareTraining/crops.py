"""Mirror-paired training crops and the augmentations that keep the mirror relation.

Volumes are ``(C, X, Y, Z)`` RAS arrays aligned to their mid-sagittal plane, so axis 1 of
the array (spatial axis 0, X) is left-right and the mirror of voxel ``x`` is ``W - 1 - x``.
Every crop comes with its counterpart from
:func:`SymmetryAwareCore.geometry.mirror.extract_counterpart`: voxel ``i`` of the
counterpart is the mirror of voxel ``i`` of the patch.

Which augmentations keep that relation (each is tested in Testing/test_training_crops.py):

- Flips along Y or Z, rotations by 90 degrees in the Y-Z plane (about the left-right axis)
  and per-channel intensity scale/shift commute with the left-right flip, so applying the
  SAME transform to patch, counterpart and label keeps voxel ``i`` of the counterpart the
  mirror of voxel ``i`` of the patch.
- A left-right flip does not commute with taking a counterpart *of a crop*: it is applied
  to the whole volume (and label) before cropping. For a box at the same place it simply
  swaps the roles: the new patch is the old counterpart and vice versa.
- Voxel-wise random noise is NOT applied to crops: where a patch overlaps its own mirror
  (near the midline) one voxel would get two different noises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from SymmetryAwareCore.geometry.mirror import LR_AXIS, extract_counterpart, flip_lr

__all__ = [
    "pad_to_roi",
    "sample_box",
    "crop",
    "crop_pair",
    "AugmentParams",
    "draw_augment",
    "augment_pair",
    "paired_crop",
]

# Spatial axes start after the channel axis of (C, X, Y, Z) arrays.
_SPATIAL = 1


def pad_to_roi(volume: np.ndarray, roi_size: Sequence[int], label: Optional[np.ndarray] = None):
    """Zero-pad ``(C, X, Y, Z)`` (and an ``(X, Y, Z)`` label) so each axis is at least ``roi_size``.

    The left-right axis is padded by the SAME amount on both sides, so the mid-sagittal plane
    stays at the centre of axis X and the mirror relation ``x <-> W - 1 - x`` still holds.
    """
    pads = []
    for axis, roi in enumerate(roi_size):
        need = max(0, int(roi) - volume.shape[_SPATIAL + axis])
        if axis == LR_AXIS:
            half = (need + 1) // 2
            pads.append((half, half))
        else:
            pads.append((need // 2, need - need // 2))
    if not any(a or b for a, b in pads):
        return volume, label
    volume = np.pad(volume, [(0, 0)] + pads)
    if label is not None:
        label = np.pad(label, pads)
    return volume, label


def sample_box(shape: Sequence[int], roi_size: Sequence[int], rng: np.random.Generator,
               centre: Optional[Sequence[int]] = None) -> Tuple[int, int, int]:
    """Start corner of a ``roi_size`` box inside spatial ``shape``: uniform, or around ``centre``."""
    start = []
    for axis, (size, roi) in enumerate(zip(shape, roi_size)):
        high = int(size) - int(roi)
        if high < 0:
            raise ValueError(f"roi {tuple(roi_size)} larger than volume {tuple(shape)}")
        if centre is None:
            start.append(int(rng.integers(0, high + 1)))
        else:
            start.append(int(np.clip(int(centre[axis]) - int(roi) // 2, 0, high)))
    return tuple(start)


def crop(volume, start: Sequence[int], size: Sequence[int], spatial_start: int = _SPATIAL):
    index = [slice(None)] * spatial_start + [slice(int(a), int(a) + int(n)) for a, n in zip(start, size)]
    return volume[tuple(index)]


def crop_pair(volume: np.ndarray, start: Sequence[int], size: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """``(patch, counterpart)`` of a ``(C, X, Y, Z)`` volume for the box ``start``..``start+size``."""
    return crop(volume, start, size), extract_counterpart(volume, start, size, spatial_start=_SPATIAL)


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the mirror-commuting augmentations (see the module docstring).

    ``flip_lr`` acts on the whole volume before cropping; the others act on the crops.
    ``rot90`` is a number of quarter turns in the Y-Z plane (about the left-right axis).
    ``scale``/``shift`` are per channel.
    """

    flip_lr: bool = False
    flip_y: bool = False
    flip_z: bool = False
    rot90: int = 0
    scale: Tuple[float, ...] = ()
    shift: Tuple[float, ...] = ()


def draw_augment(rng: np.random.Generator, channels: int, roi_size: Sequence[int],
                 intensity: float = 0.1) -> AugmentParams:
    """Random :class:`AugmentParams`. Quarter turns that would swap Y and Z need a square Y-Z roi."""
    square = int(roi_size[1]) == int(roi_size[2])
    turns = int(rng.integers(0, 4)) if square else 2 * int(rng.integers(0, 2))
    return AugmentParams(
        flip_lr=bool(rng.random() < 0.5),
        flip_y=bool(rng.random() < 0.5),
        flip_z=bool(rng.random() < 0.5),
        rot90=turns,
        scale=tuple(float(v) for v in 1.0 + rng.uniform(-intensity, intensity, channels)),
        shift=tuple(float(v) for v in rng.uniform(-intensity, intensity, channels)),
    )


def augment_pair(patch: np.ndarray, counterpart: np.ndarray, label: Optional[np.ndarray], params: AugmentParams):
    """Apply the crop-level part of ``params`` identically to patch ``(C, X, Y, Z)``, counterpart
    and label ``(X, Y, Z)`` (or ``(R, X, Y, Z)`` with ``label.ndim == 4``). Returns copies."""

    def spatial(a: np.ndarray, offset: int) -> np.ndarray:
        if params.flip_y:
            a = np.flip(a, offset + 1)
        if params.flip_z:
            a = np.flip(a, offset + 2)
        if params.rot90 % 4:
            a = np.rot90(a, params.rot90, axes=(offset + 1, offset + 2))
        return np.ascontiguousarray(a)

    def intensity(a: np.ndarray) -> np.ndarray:
        if not params.scale:
            return a
        scale = np.asarray(params.scale, dtype=a.dtype).reshape(-1, 1, 1, 1)
        shift = np.asarray(params.shift, dtype=a.dtype).reshape(-1, 1, 1, 1)
        return a * scale + shift

    patch = intensity(spatial(patch, _SPATIAL))
    counterpart = intensity(spatial(counterpart, _SPATIAL))
    if label is not None:
        label = spatial(label, label.ndim - 3)
    return patch, counterpart, label


def paired_crop(volume: np.ndarray, roi_size: Sequence[int], rng: np.random.Generator,
                label: Optional[np.ndarray] = None, pos_fraction: float = 0.0,
                augment: bool = False, params: Optional[AugmentParams] = None,
                counterpart_label: bool = False) -> Dict[str, object]:
    """One training sample: a random box of ``volume`` with its mirrored counterpart.

    Args:
        volume: ``(C, X, Y, Z)`` RAS, aligned to the mid-sagittal plane (X left-right).
        label: optional ``(X, Y, Z)`` integer map on the same grid.
        pos_fraction: probability that the box is centred on a random foreground voxel.
        augment: draw :class:`AugmentParams` from ``rng`` and apply them.
        params: apply these instead of drawing (tests, reproducing a sample).
        counterpart_label: also return ``label_counterpart``, the label of the counterpart
            crop: the label's mirror box, flipped and augmented exactly as the counterpart
            was (mirror-pair training supervises the counterpart too).
    Returns a dict with ``image`` and ``counterpart`` ``(C, *roi_size)`` float32, ``label``
    (and with ``counterpart_label`` ``label_counterpart``) ``(*roi_size)`` when given,
    ``start`` (the box, in the padded and possibly LR-flipped volume) and ``params``.
    """
    roi_size = tuple(int(r) for r in roi_size)
    if params is None:
        params = draw_augment(rng, volume.shape[0], roi_size) if augment else AugmentParams()
    if params.flip_lr:
        volume = flip_lr(volume, spatial_start=_SPATIAL)
        if label is not None:
            label = flip_lr(label, spatial_start=0)
    volume, label = pad_to_roi(volume, roi_size, label)
    centre = None
    if label is not None and pos_fraction > 0 and rng.random() < pos_fraction:
        foreground = np.argwhere(label > 0)
        if len(foreground):
            centre = foreground[int(rng.integers(0, len(foreground)))]
    start = sample_box(volume.shape[1:], roi_size, rng, centre)
    patch, counterpart = crop_pair(volume, start, roi_size)
    label_crop = None if label is None else crop(label, start, roi_size, spatial_start=0)
    pair_labels = counterpart_label and label is not None
    if pair_labels:
        # Stacked, so the crop-level transforms act on both labels in one call, identically.
        label_crop = np.stack([label_crop, extract_counterpart(label, start, roi_size, spatial_start=0)])
    patch, counterpart, label_crop = augment_pair(patch, counterpart, label_crop, params)
    label_counterpart = None
    if pair_labels:
        label_crop, label_counterpart = label_crop[0], label_crop[1]
    out: Dict[str, object] = {
        "image": np.ascontiguousarray(patch, dtype=np.float32),
        "counterpart": np.ascontiguousarray(counterpart, dtype=np.float32),
        "start": start,
        "params": params,
    }
    if label_crop is not None:
        out["label"] = np.ascontiguousarray(label_crop)
    if label_counterpart is not None:
        out["label_counterpart"] = np.ascontiguousarray(label_counterpart)
    return out
