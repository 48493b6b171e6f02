"""Intensity steps of preparation: anti-aliasing before downsampling, and normalisation.

Both are written once here and used by inference and training alike (see :mod:`.prepare`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import scipy.ndimage as ndi

from ..errors import InputError
from .spec import Preprocessing

__all__ = ["anti_alias_sigmas", "anti_alias", "normalise", "MIN_HEAD_VOXELS"]

# Fewer head voxels than this in a channel and its statistics mean nothing: the channel is
# (nearly) empty after alignment, which is a broken scan, not something to normalise.
MIN_HEAD_VOXELS = 10


def anti_alias_sigmas(native_affine: np.ndarray, frame_rotation: np.ndarray, frame_spacing: Sequence[float]) -> np.ndarray:
    """Gaussian sigma (in native voxels) per native array axis before resampling to the frame.

    ``frame_rotation`` is ``(3, 3)`` with the frame's unit axes as columns. Along native axis
    ``k`` (unit direction ``d_k``, spacing ``s_k``) the frame samples every
    ``t_k = sqrt(sum_j (d_k . e_j)^2 t_j^2)`` mm; when ``t_k > s_k`` the rule
    ``sigma = (t_k / s_k - 1) / 2`` (as scikit-image's rescale) removes what the coarser
    grid cannot hold. 0 where the frame is as fine or finer.
    """
    affine = np.asarray(native_affine, np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    directions = affine[:3, :3] / spacing
    cosines = directions.T @ np.asarray(frame_rotation, np.float64)  # (native axis, frame axis)
    target = np.sqrt((cosines**2) @ (np.asarray(frame_spacing, np.float64) ** 2))
    return np.maximum(0.0, (target / spacing - 1.0) / 2.0)


def anti_alias(array: np.ndarray, sigmas: Sequence[float], background_zero: bool) -> np.ndarray:
    """Low-pass ``(C, X, Y, Z)`` scan intensities by ``sigmas`` (native voxels, per axis).

    With ``background_zero`` (skull-stripped MRI) the filter is normalised by the head
    mask (any channel non-zero): head voxels average only head voxels and the background
    stays exactly 0, so the head's outline and its statistics do not blur into the air.
    """
    sig = np.asarray(sigmas, np.float64)
    if not np.any(sig > 0.05):  # below 1/20 voxel the filter changes nothing measurable
        return array
    out = np.empty(array.shape, np.float32)
    if background_zero:
        mask = np.any(array != 0, axis=0)
        weight = ndi.gaussian_filter(mask.astype(np.float32), sig, mode="constant")
        for c in range(array.shape[0]):
            smooth = ndi.gaussian_filter(np.where(mask, array[c], 0).astype(np.float32), sig, mode="constant")
            out[c] = np.where(mask, smooth / np.maximum(weight, 1e-6), 0.0)
        return out
    for c in range(array.shape[0]):
        out[c] = ndi.gaussian_filter(array[c].astype(np.float32), sig, mode="nearest")
    return out


def normalise(array: np.ndarray, spec: Preprocessing, source: Optional[str] = None) -> np.ndarray:
    """``(C, X, Y, Z)`` aligned scan intensities -> ``(C', X, Y, Z)`` float32 network input.

    ``zscore-nonzero``: per channel, mean 0 and standard deviation 1 over its non-zero
    voxels (the head of a skull-stripped scan; the frame's outside is 0 too); zero voxels
    stay 0. Statistics are taken in float64 so extreme values cannot overflow; a flat
    channel (standard deviation below 1e-6 of its scale) is only centred.
    ``ct-windows``: for each channel and each HU window ``[lo, hi]``,
    ``(clip(x, lo, hi) - lo) / (hi - lo)``, channels ordered channel-major
    (``c0w0, c0w1, ..., c1w0, ...``). Air and the frame's outside (-1024 HU) give 0 in every
    window whose low end is above -1024. ``none``: as is.
    """
    if array.ndim != 4:
        raise ValueError(f"expected (C, X, Y, Z), got shape {array.shape}")
    if spec.normalisation == "none":
        return array.astype(np.float32)
    if spec.normalisation == "ct-windows":
        out = np.empty((array.shape[0] * len(spec.ct_windows),) + array.shape[1:], np.float32)
        k = 0
        for c in range(array.shape[0]):
            for lo, hi in spec.ct_windows:
                out[k] = (np.clip(array[c], lo, hi) - lo) / (hi - lo)
                k += 1
        return out
    out = np.zeros(array.shape, np.float32)
    for c in range(array.shape[0]):
        channel = array[c]
        inside = channel != 0
        count = int(inside.sum())
        if count < MIN_HEAD_VOXELS:
            raise InputError(f"channel {c} of the scan is (nearly) empty after alignment ({count} non-zero voxels)", source)
        values = channel[inside].astype(np.float64)
        mean = float(values.mean())
        std = float(values.std())
        if not np.isfinite(mean) or not np.isfinite(std):
            raise InputError(f"channel {c} of the scan has intensities too large to normalise", source)
        if std <= 1e-6 * max(1.0, abs(mean)):
            std = 1.0
        out[c][inside] = ((values - mean) / std).astype(np.float32)
    return out
