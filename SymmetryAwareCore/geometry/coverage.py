"""What a scanner may record of a head: slabs, partial fields of view, thick slices, gantry shear.

These turn a volume with a known mid-sagittal plane into the incomplete or coarse scans the
plane search must cope with. World positions never change (only which voxels exist and
where their centres lie), so a known plane stays the truth of the result. The MSP tests
and ``Benchmarks/msp_benchmark.py`` build their hard cases with them.

All functions take and return :class:`~SymmetryAwareCore.io.image.Image`, scalar ``(X, Y, Z)``
or ``(C, X, Y, Z)``; axes are voxel axes of the array, whatever the orientation.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from ..io.image import Image

__all__ = ["crop_fraction", "thick_slices", "gantry_shear", "add_noise"]


def _spatial(image: Image) -> np.ndarray:
    return image.array if image.array.ndim == 3 else image.array[0]


def crop_fraction(image: Image, axis: int, start: float, stop: float) -> Image:
    """Keep the voxels of ``axis`` between the fractions ``start`` and ``stop`` of its length.

    ``crop_fraction(img, 2, 0.2, 0.77)`` is a slab of 57 % of the field of view along the
    third voxel axis; ``crop_fraction(img, 0, 0.25, 1.0)`` cuts a quarter off the low end
    of the first axis (one side of the head, for a RAS or LPS volume).
    """
    if not 0.0 <= start < stop <= 1.0:
        raise ValueError(f"need 0 <= start < stop <= 1, got {start}, {stop}")
    n = image.spatial_shape[axis]
    i0, i1 = int(round(start * n)), max(int(round(stop * n)), int(round(start * n)) + 1)
    index = [slice(None)] * 3
    index[axis] = slice(i0, i1)
    lead = (slice(None),) if image.array.ndim == 4 else ()
    affine = image.affine.copy()
    affine[:3, 3] = image.voxel_to_world(np.eye(3)[axis] * i0)[0]
    return Image(np.ascontiguousarray(image.array[lead + tuple(index)]), affine, image.channel_names, image.source)


def thick_slices(image: Image, factor: int, axis: int = 2) -> Image:
    """Slices ``factor`` times thicker along ``axis``: each new slice is the mean of
    ``factor`` old ones (partial-volume averaging), centred on their mean position."""
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    arrays = [image.array] if image.array.ndim == 3 else list(image.array)
    n = (arrays[0].shape[axis] // factor) * factor
    out = []
    for a in arrays:
        a = np.take(a, np.arange(n), axis=axis)
        shape = list(a.shape)
        shape[axis : axis + 1] = [n // factor, factor]
        out.append(a.reshape(shape).mean(axis=axis + 1).astype(np.float32))
    affine = image.affine.copy()
    affine[:3, 3] = image.voxel_to_world(np.eye(3)[axis] * (factor - 1) / 2.0)[0]
    affine[:3, axis] *= factor
    array = out[0] if image.array.ndim == 3 else np.stack(out)
    return Image(array, affine, image.channel_names, image.source)


def gantry_shear(image: Image, degrees: float, fill: float = 0.0) -> Image:
    """Resample onto a grid whose slices are shifted along the second axis as the gantry
    tilt of a CT would shift them: the third voxel axis leans by ``degrees`` towards the
    second, so the affine has a shear. ``fill`` is the value outside the original grid."""
    from .symmetric_frame import resample_to_grid

    affine = image.affine.copy()
    lean = np.tan(np.radians(degrees)) * np.linalg.norm(affine[:3, 2])
    affine[:3, 2] = affine[:3, 2] + lean * affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    shape = image.spatial_shape
    # Keep the centre of the grid where it was.
    centre = (np.array(shape) - 1) / 2.0
    affine[:3, 3] += image.voxel_to_world(centre)[0] - (affine[:3, :3] @ centre + affine[:3, 3])
    arrays = [image.array] if image.array.ndim == 3 else list(image.array)
    out = []
    for a in arrays:
        moved = resample_to_grid(a, image.affine, affine, shape)
        inside = resample_to_grid(np.ones(shape, np.uint8), image.affine, affine, shape, order="nearest")
        out.append(np.where(inside > 0, moved, fill).astype(np.float32))
    return Image(out[0] if image.array.ndim == 3 else np.stack(out), affine, image.channel_names, image.source)


def add_noise(image: Image, relative_sigma: float, seed: int = 0, smooth_voxels: float = 0.0) -> Image:
    """Gaussian noise of ``relative_sigma`` times the 2-98 percentile range of the first
    channel, optionally smoothed (``smooth_voxels``, sigma in voxels) to mimic correlated noise."""
    rng = np.random.default_rng(seed)
    lo, hi = np.percentile(_spatial(image), [2, 98])
    noise = rng.normal(0.0, 1.0, image.array.shape).astype(np.float32)
    if smooth_voxels > 0:
        axes = range(image.array.ndim - 3, image.array.ndim)
        sigma = [smooth_voxels if i in axes else 0.0 for i in range(image.array.ndim)]
        noise = ndi.gaussian_filter(noise, sigma)
        noise /= max(float(noise.std()), 1e-12)
    return image.with_array(image.array + relative_sigma * float(hi - lo) * noise)

