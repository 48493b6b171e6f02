"""Multi-modal cases: several scans of one patient stacked as channels on one grid.

The first file sets the grid. Two grids are the same when their spatial shapes are equal
and every voxel centre of one lies within ``tolerance_mm`` (default 0.01 mm) of the same
voxel centre of the other; checking the 8 corner voxels suffices because both maps are
affine. 0.01 mm absorbs float32 header rounding between tools and is a hundredth of a
1 mm voxel, far below any effect on interpolation.

Channels on other grids are either resampled onto the first (trilinear, in physical
space: output voxel ``ijk`` samples the other image at ``inv(A_other) @ A_first @ ijk``,
so orientation, obliquity and spacing differences are all handled) with a logged warning,
or refused with an :class:`InputError` naming both files. A channel that covers less than
:data:`MIN_CHANNEL_COVERAGE` (half) of the first channel's voxel centres is refused too: the
rest of it would be filled with air, and the model would see a channel that is mostly
missing (a slab, another session's field of view, a wrong file).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .image import Image
from .readers import read_image

__all__ = ["load_case", "grid_distance_mm", "resample_to", "GRID_TOLERANCE_MM", "MIN_CHANNEL_COVERAGE"]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

GRID_TOLERANCE_MM = 0.01

# Share of the first channel's grid that a resampled channel must cover (see module docstring).
MIN_CHANNEL_COVERAGE = 0.5


def grid_distance_mm(a: Image, b: Image) -> float:
    """Largest distance in mm between corresponding corner voxel centres; ``inf`` if shapes differ."""
    if a.spatial_shape != b.spatial_shape:
        return float("inf")
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in a.spatial_shape], indexing="ij")).reshape(3, -1).T
    return float(np.max(np.linalg.norm(a.voxel_to_world(corners) - b.voxel_to_world(corners), axis=1)))


def resample_to(image: Image, reference: Image, order: int = 1) -> Image:
    """Resample a scalar ``image`` onto ``reference``'s grid, in physical (RAS mm) space.

    Args:
        image: ``(X', Y', Z')`` on any grid.
        reference: the target grid (its array is not used).
        order: spline order, 1 = trilinear, 0 = nearest (label maps).
    Returns:
        float32 ``(X, Y, Z)`` with ``reference``'s affine. Points outside ``image`` take its
        minimum value (air, rather than 0, which is mid-grey on CT).
    """
    if image.array.ndim != 3:
        raise ValueError("resample_to takes a scalar (X, Y, Z) image")
    ref_to_img = np.linalg.inv(image.affine) @ reference.affine
    out = ndimage.affine_transform(
        image.array.astype(np.float32, copy=False),
        ref_to_img[:3, :3],
        offset=ref_to_img[:3, 3],
        output_shape=reference.spatial_shape,
        order=order,
        mode="constant",
        cval=float(image.array.min()),
    )
    return Image(out.astype(np.float32, copy=False), reference.affine.copy(), source=image.source)


def _overlap_fraction(image: Image, reference: Image) -> float:
    """Fraction of ``reference``'s voxel centres that fall inside ``image``'s voxel grid."""
    step = max(1, min(reference.spatial_shape) // 16)  # a coarse lattice is enough for a fraction
    axes = [np.arange(0, n, step) for n in reference.spatial_shape]
    ijk = np.array(np.meshgrid(*axes, indexing="ij")).reshape(3, -1).T
    inside = image.world_to_voxel(reference.voxel_to_world(ijk))
    upper = np.asarray(image.spatial_shape) - 0.5
    ok = np.all((inside >= -0.5) & (inside <= upper), axis=1)
    return float(ok.mean())


def load_case(
    paths: Sequence[PathLike],
    channel_names: Sequence[str],
    on_grid_mismatch: str = "resample",
    tolerance_mm: float = GRID_TOLERANCE_MM,
) -> Image:
    """Read one file per channel and stack them on the grid of the first.

    Args:
        paths: one 3D image per channel (any format :func:`read_image` reads).
        channel_names: one name per path, unique (``("t1", "t1ce", "t2", "flair")``).
        on_grid_mismatch: ``"resample"`` (trilinear onto the first grid, logged) or
            ``"error"`` (an :class:`InputError` naming both files).
        tolerance_mm: grids closer than this are the same (see module docstring).

    Returns:
        :class:`Image` with a float32 ``(C, X, Y, Z)`` array in the first file's voxel order
        and affine, ``channel_names`` set, ``source`` the first path.
    """
    paths = [Path(p) for p in paths]
    names = tuple(str(n) for n in channel_names)
    if on_grid_mismatch not in ("resample", "error"):
        raise ValueError(f"on_grid_mismatch must be 'resample' or 'error', got {on_grid_mismatch!r}")
    if not paths:
        raise InputError("a case needs at least one image")
    if len(names) != len(paths):
        raise InputError(f"{len(paths)} images were given for {len(names)} channels ({', '.join(names)})")
    if len(set(names)) != len(names):
        raise InputError(f"channel names repeat: {', '.join(names)}")

    reference = read_image(paths[0])
    channels = [reference.array]
    for path, name in zip(paths[1:], names[1:]):
        image = read_image(path)
        distance = grid_distance_mm(image, reference)
        if distance <= tolerance_mm:
            channels.append(image.array)
            continue
        what = (
            f"shape {image.spatial_shape} vs {reference.spatial_shape}"
            if image.spatial_shape != reference.spatial_shape
            else f"voxel positions differ by up to {distance:.3g} mm"
        )
        if on_grid_mismatch == "error":
            raise InputError(f"grid differs from {paths[0]} ({what})", path)
        overlap = _overlap_fraction(image, reference)
        if overlap == 0.0:
            raise InputError(f"does not overlap {paths[0]} in space; is it the same patient and session?", path)
        if overlap < MIN_CHANNEL_COVERAGE:
            raise InputError(
                f"covers only {100 * overlap:.0f}% of the grid of {paths[0]} (at least "
                f"{100 * MIN_CHANNEL_COVERAGE:.0f}% is needed); is it the same patient and session?",
                path,
            )
        logger.warning(
            "%s (%s): grid differs from %s (%s); resampled onto it (trilinear), %.0f%% of it covered",
            path, name, paths[0], what, 100 * overlap,
        )
        channels.append(resample_to(image, reference).array)
    return Image(np.stack(channels).astype(np.float32, copy=False), reference.affine.copy(), names, str(paths[0]))
