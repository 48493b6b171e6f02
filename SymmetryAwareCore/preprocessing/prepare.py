"""Prepare a case for a network: the one path shared by inference and training.

``channels -> RAS -> mid-sagittal plane -> symmetric frame at the card's spacing
(anti-aliased when downsampling; outside the scan filled with 0 for MRI, air for CT) ->
normalisation from the card -> the brain box``.

:func:`prepare_case` (files) and :func:`prepare_image` (an :class:`Image` already loaded)
are called by ``segment_case``, ``classify_case``, the attention command, the training
datasets (through their on-disk cache, :mod:`.cache`) and ``evaluate``; nothing else
re-derives alignment or normalisation, so training and inference see the same arrays
(tested numerically).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..geometry.msp import MidSagittalPlane, estimate_msp
from ..geometry.symmetric_frame import SymmetricFrame, align_to_msp, frame_affine
from ..io.image import Image
from .intensity import anti_alias, anti_alias_sigmas, normalise
from .spec import Preprocessing

__all__ = ["PreparedCase", "prepare_case", "prepare_image", "brain_box", "unaligned_plane", "whole_scan_input"]

Box = Tuple[slice, slice, slice]
# progress(stage, fraction of that stage): stages "loading" and "aligning".
StageCallback = Callable[[str, float], None]


def _no_progress(stage: str, fraction: float) -> None:
    pass

# Voxels above this are tissue or bone in a CT frame (air and the filled outside are ~-1000).
_CT_HEAD_HU = -500.0


@dataclass
class PreparedCase:
    """A case in its symmetric frame, normalised, ready for a network.

    Attributes:
        volume: ``(C', W, H, D)`` float32 network input on the whole frame; axis 1 (frame
            axis 0) runs left -> right with the mid-sagittal plane at ``(W - 1) / 2``.
        frame: maps frame arrays back onto the input's grid (:meth:`SymmetricFrame.to_native`).
        plane: the mid-sagittal plane used.
        box: the brain box (frame voxels), symmetric about the plane.
        head: ``(W, H, D)`` bool, frame voxels inside the head.
        image: the loaded ``(C, X, Y, Z)`` scan on its own (first channel's) grid.
        label: ``(W, H, D)`` uint8 labels in the frame (training), or None.
        notes: what a report should say about the preparation.
        times: seconds per stage (``aligning``).
        bias_correction: the bias-field correction applied before everything else
            (``"n4"``), or None.
    """

    volume: np.ndarray
    frame: SymmetricFrame
    plane: MidSagittalPlane
    box: Box
    head: np.ndarray
    image: Image
    label: Optional[np.ndarray] = None
    notes: List[str] = field(default_factory=list)
    times: Dict[str, float] = field(default_factory=dict)
    bias_correction: Optional[str] = None

    @property
    def native(self) -> Image:
        """The first channel: every output lives on its grid."""
        return self.image.channel(0)

    @property
    def cropped(self) -> np.ndarray:
        """``(C', w, h, d)`` the network input inside the brain box (contiguous)."""
        return np.ascontiguousarray(self.volume[(slice(None),) + self.box])

    @property
    def cropped_label(self) -> Optional[np.ndarray]:
        return None if self.label is None else np.ascontiguousarray(self.label[self.box])

    def frame_map(self, box_map: np.ndarray) -> np.ndarray:
        """A map ``(w, h, d)`` over the brain box (as :attr:`cropped`) set on the whole frame
        ``(W, H, D)`` float32: 0 outside the box and outside the head."""
        out = np.zeros(self.head.shape, np.float32)
        out[self.box] = box_map
        out[~self.head] = 0.0
        return out


def brain_box(volume: np.ndarray, margin: int = 4) -> Box:
    """Bounding box of the non-zero voxels of a ``(C, X, Y, Z)`` aligned volume.

    The box is made symmetric about the centre of axis 0 (the mid-sagittal plane), so that
    the counterpart of every window inside it is inside it too.
    """
    any_signal = np.any(volume != 0, axis=0)
    if not any_signal.any():
        raise InputError("the aligned scan holds no signal")
    shape = any_signal.shape
    slices = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(any_signal.any(axis=other))
        lo, hi = max(0, int(idx[0]) - margin), min(shape[axis], int(idx[-1]) + 1 + margin)
        if axis == 0:  # symmetric about the centre: [lo, W - lo)
            lo = min(lo, shape[0] - hi)
            hi = shape[0] - lo
        slices.append(slice(lo, hi))
    return tuple(slices)


def unaligned_plane(image: Image) -> MidSagittalPlane:
    """The plane of an unaligned run: the image's own left-right axis through its grid centre.

    Mirror pairs on this plane are only anatomical if the head happens to sit straight in
    the field of view; that is what ``alignment: none`` means.
    """
    columns = np.asarray(image.affine, np.float64)[:3, :3]
    axis = int(np.argmax(np.abs(columns[0]) / np.linalg.norm(columns, axis=0)))
    normal = columns[:, axis] / np.linalg.norm(columns[:, axis])
    centre = image.voxel_to_world((np.asarray(image.spatial_shape, np.float64) - 1.0) / 2.0)[0]
    return MidSagittalPlane(normal, centre, float("nan"), False, "none", centre, 0.0,
                            "alignment off (preprocessing.alignment = none): mirror pairs follow the image axes")


def _roi_frame_shape(plane: MidSagittalPlane, spacing: np.ndarray, center: np.ndarray, size: np.ndarray) -> Tuple[int, int, int]:
    # Width along the plane normal: the box and its mirror, i.e. twice the farthest extent.
    distance = abs(float(plane.signed_distance(center)[0]))
    diagonal = float(np.linalg.norm(size))
    half_width = distance + diagonal / 2.0
    return (2 * int(np.ceil(half_width / spacing[0])), int(np.ceil(diagonal / spacing[1])), int(np.ceil(diagonal / spacing[2])))


def prepare_image(
    image: Image,
    spec: Preprocessing,
    *,
    plane: Optional[MidSagittalPlane] = None,
    msp_on_failure: str = "error",
    on_not_head: str = "warn",
    roi_center_ras: Optional[Sequence[float]] = None,
    roi_size_mm: Optional[Sequence[float]] = None,
    label: Optional[np.ndarray] = None,
    progress: StageCallback = _no_progress,
    bias_correction: Optional[bool] = None,
) -> PreparedCase:
    """Prepare a loaded ``(C, X, Y, Z)`` scan (any orientation) as ``spec`` says.

    Args:
        image: the scan, channels in the model's order, on one grid.
        spec: the model card's preprocessing.
        plane: a plane already estimated (else estimated here, or the image axes when
            ``spec.alignment == "none"``).
        msp_on_failure: ``"error"`` or ``"axes"``, as :func:`estimate_msp`.
        on_not_head: ``"warn"`` (a note) or ``"error"`` (refuse), as :func:`estimate_msp`.
        roi_center_ras, roi_size_mm: prepare only this RAS box and its mirror image.
        label: ``(X, Y, Z)`` integer labels on the image's grid (training), taken into the
            frame by nearest neighbour.
        progress: ``callable(stage, fraction)``, for progress bars.
        bias_correction: True: first remove each channel's bias field (N4,
            :func:`~SymmetryAwareCore.preprocessing.bias.n4_correct`), and the plane, the
            frame and everything after are computed on the corrected scan (MRI only);
            False: do not; None: as ``spec.bias_correction`` says (the model card).
    """
    started = time.perf_counter()
    progress("aligning", 0.0)
    notes: List[str] = []
    from .bias import bias_correction_applies

    card_asks = spec.bias_correction == "n4"
    corrected = bias_correction_applies(card_asks, spec.is_ct, bias_correction)
    if corrected:
        from .bias import n4_correct

        image = n4_correct(image)
        why = "as the model card's preprocessing asks" if card_asks else "asked for by the run (--bias-correction)"
        notes.append(f"bias field removed from each channel (N4) before preparation, {why}")
        progress("aligning", 0.02)
    elif card_asks:
        notes.append("bias-field correction (N4) turned off by the run (--no-bias-correction), although the model card "
                     "asks for it: a field that brightens one hemisphere reads as a one-sided lesion")
    if plane is None:
        plane = unaligned_plane(image) if spec.alignment == "none" else estimate_msp(image, on_failure=msp_on_failure, on_not_head=on_not_head)
    if spec.alignment == "none":
        notes.append(plane.message)
    elif not plane.confident:
        notes.append(f"mid-sagittal plane has low confidence: {plane.message or 'poor symmetry score'}")
    notes.extend(getattr(plane, "warnings", None) or [])
    progress("aligning", 0.5)
    spacing = np.asarray(spec.spacing, np.float64)
    shape, center = None, None
    if roi_center_ras is not None:
        center = np.asarray(roi_center_ras, np.float64)
        size = np.asarray(roi_size_mm, np.float64)
        if center.shape != (3,) or size.shape != (3,) or not np.all(np.isfinite(center)) or np.any(~(size > 0)):
            raise InputError("--roi-center and --roi-size need three numbers each (RAS mm; sizes > 0)")
        shape = _roi_frame_shape(plane, spacing, center, size)

    array = image.array if image.array.ndim == 4 else image.array[None]
    if spec.anti_alias:
        rotation = frame_affine(plane, (1.0, 1.0, 1.0), (1, 1, 1), plane.point)[:3, :3]
        sigmas = anti_alias_sigmas(image.affine, rotation, spacing)
        array = anti_alias(array, sigmas, background_zero=not spec.is_ct)
    smoothed = Image(array, image.affine, image.channel_names, image.source)
    aligned, frame = align_to_msp(smoothed, plane, spacing, shape, center=center, fill=spec.fill)
    progress("aligning", 0.9)
    raw = aligned.array if aligned.array.ndim == 4 else aligned.array[None]
    head = (raw[0] > _CT_HEAD_HU) if spec.is_ct else np.any(raw != 0, axis=0)
    volume = normalise(raw, spec, image.source)
    box = brain_box(volume)
    label_frame = None
    if label is not None:
        label_frame = frame.to_frame(np.asarray(label), "nearest").astype(np.uint8)
    return PreparedCase(volume, frame, plane, box, head, image, label_frame, notes,
                        {"aligning": round(time.perf_counter() - started, 3)}, "n4" if corrected else None)


def prepare_case(
    paths: Sequence[Path],
    channel_names: Sequence[str],
    spec: Preprocessing,
    *,
    label_path: Optional[Path] = None,
    on_grid_mismatch: str = "resample",
    progress: StageCallback = _no_progress,
    **kwargs,
) -> PreparedCase:
    """Read one file (or DICOM folder) per channel and :func:`prepare_image` it.

    ``label_path``: a labelmap on the first channel's grid (training and evaluation).
    Other keyword arguments go to :func:`prepare_image`.
    """
    from ..io.case import load_case
    from ..io.readers import read_labelmap

    started = time.perf_counter()
    progress("loading", 0.0)
    image = load_case([Path(p) for p in paths], list(channel_names), on_grid_mismatch=on_grid_mismatch)
    loading = time.perf_counter() - started
    label = None
    if label_path is not None:
        label_image = read_labelmap(label_path)
        if not label_image.same_grid(image.channel(0)):
            raise InputError(f"label is not on the grid of {Path(paths[0]).name}", label_path)
        label = label_image.array
    prepared = prepare_image(image, spec, label=label, progress=progress, **kwargs)
    prepared.times = {"loading": round(loading, 3), **prepared.times}
    return prepared


def whole_scan_input(cropped: np.ndarray, roi_size: Sequence[int]):
    """``(C, w, h, d)`` brain box -> ``(C, *roi_size)`` torch tensor, the input of scan-level
    classifiers in training and inference alike. Resizing commutes with the left-right
    flip, so the flip of the result is its exact counterpart."""
    import torch

    return torch.nn.functional.interpolate(torch.from_numpy(np.array(cropped, np.float32))[None],
                                           size=tuple(int(r) for r in roi_size), mode="trilinear",
                                           align_corners=False)[0]
