"""Checks on user-supplied images: each failure is an :class:`InputError` naming the file.

The readers call these at the boundary, so everything past :func:`read_image` can trust
that an image is a real 3D volume with finite voxels and a sane voxel-to-world matrix.
Limits are module constants so that messages and documentation quote the same numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import InputError
from .outputs import check_output_path  # re-exported: writers and older callers import it from here

__all__ = [
    "IMAGE_SUFFIXES",
    "MIN_SPACING_MM",
    "MAX_SPACING_MM",
    "image_format",
    "check_input_path",
    "check_shape",
    "check_voxels",
    "check_affine",
    "check_output_path",
    "VOXEL_BUDGET_ENV",
    "DEFAULT_MAX_VOXELS",
    "MAX_ABS_INTENSITY",
    "max_voxels",
    "parse_voxel_count",
    "check_voxel_budget",
    "check_resampled_budget",
]

PathLike = Union[str, Path]

# Lower-case file-name endings and the format each one names; ".nii.gz" before ".gz"-less forms.
IMAGE_SUFFIXES = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "meta",
    ".mhd": "meta",
}

# Voxels smaller than 50 micrometres or larger than 2 cm are not a brain scan: such a value
# almost always means a header in metres or microns, or a broken conversion.
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0

# Memory budget: images (and the aligned grids made from them) may hold at most this many
# voxels, checked from the header before any voxel is read, because a few MB of gzip can
# claim gigabytes. 2**28 voxels is 1 GiB as float32, more than any head scan needs
# (512 x 512 x 1024 CT); the environment variable or the commands' --max-voxels raises it.
VOXEL_BUDGET_ENV = "SYMMETRYAWARE_MAX_VOXELS"
DEFAULT_MAX_VOXELS = 2**28

# No scanner writes intensities beyond 1e12 (CT: -1024..3071 HU; MRI: arbitrary units,
# rarely above 1e6); such values come from a broken scaling and would overflow the
# float32 statistics of normalisation (1e30 squared is infinite).
MAX_ABS_INTENSITY = 1e12


def image_format(path: PathLike) -> str:
    """``"nifti"``, ``"nrrd"``, ``"meta"`` or ``"dicom"`` (a folder), from the name alone.

    Raises:
        InputError: for any other file name (``.dcm`` files get a hint to pass their folder).
    """
    path = Path(path)
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    for suffix, kind in IMAGE_SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    if name.endswith(".dcm") or name.endswith(".ima"):
        raise InputError("a single DICOM file was given; pass the folder that holds the whole series", path)
    known = ", ".join(IMAGE_SUFFIXES) + " or a DICOM folder"
    raise InputError(f"unsupported file type (expected {known})", path)


def check_input_path(path: PathLike) -> str:
    """Check that ``path`` exists and has a supported type; return its format (see :func:`image_format`)."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    kind = image_format(path)
    if kind != "dicom" and path.stat().st_size == 0:
        raise InputError("file is empty (0 bytes)", path)
    return kind


def max_voxels() -> int:
    """The voxel budget: ``$SYMMETRYAWARE_MAX_VOXELS`` (an integer such as 500000000 or 5e8)
    if set, else :data:`DEFAULT_MAX_VOXELS`."""
    text = os.environ.get(VOXEL_BUDGET_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    return parse_voxel_count(text, VOXEL_BUDGET_ENV)


def parse_voxel_count(text: str, where: str = "--max-voxels") -> int:
    """``"5e8"`` or ``"500000000"`` -> 500000000; InputError for anything else or < 1."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where} must be a number of voxels such as 5e8, got {text!r}") from None
    if not np.isfinite(value) or value < 1 or value != int(value):
        raise InputError(f"{where} must be a whole number of voxels of at least 1, got {text!r}")
    return int(value)


def check_voxel_budget(count: float, what: str, path: Optional[PathLike] = None) -> None:
    """InputError when ``count`` voxels exceed :func:`max_voxels`; ``what`` says what they are
    (``"image of 1024 x 1024 x 1024"``)."""
    budget = max_voxels()
    if count > budget:
        raise InputError(
            f"{what} has {count:,.0f} voxels, above the budget of {budget:,} "
            f"(raise it with --max-voxels or the environment variable {VOXEL_BUDGET_ENV})",
            path,
        )


def check_resampled_budget(shape, voxel_mm3: float, spacing, what: str, path: Optional[PathLike] = None) -> None:
    """The budget for a grid resampled at ``spacing`` (mm) over the field of view of an image of
    ``shape`` voxels of ``voxel_mm3`` mm^3 each: a 10 m field of view (512 voxels of 20 mm)
    at 1 mm would be 10^12 voxels. The estimate is the field of view's volume over the new
    voxel's; an aligned (rotated) grid covers somewhat more."""
    spacing = [float(s) for s in spacing]
    estimate = float(np.prod([float(n) for n in shape])) * float(voxel_mm3) / float(np.prod(spacing))
    shown = " x ".join(f"{s:g}" for s in spacing)
    check_voxel_budget(estimate, f"{what} at {shown} mm", path)


def check_shape(shape: Sequence[int], path: PathLike, allow_channels: bool = False) -> None:
    """Check the array shape of a freshly read image, channels first: ``(X, Y, Z)`` or ``(C, X, Y, Z)``.

    A volume with fewer than 2 voxels along any spatial axis is a 2D image, not a 3D one.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3:
        raise InputError(f"image is {len(shape)}D (shape {shape}); a 3D volume is needed", path)
    if len(shape) > 4:
        raise InputError(f"image is {len(shape)}D (shape {shape}); a 3D volume is needed", path)
    if any(s == 0 for s in shape):
        raise InputError(f"image has no voxels (shape {shape})", path)
    spatial = shape[-3:]
    if min(spatial) < 2:
        raise InputError(f"image is a single slice (spatial shape {spatial}); a 3D volume is needed", path)
    if len(shape) == 4 and not allow_channels:
        raise InputError(
            f"image holds {shape[0]} volumes (4D, shape {shape[1:]} x {shape[0]}); give one 3D volume per file", path
        )


def check_voxels(array: np.ndarray, path: PathLike, allow_constant: bool = False) -> None:
    """Reject arrays with no voxels, NaN or infinite voxels, or (unless allowed) one value everywhere."""
    if array.size == 0:
        raise InputError(f"image has no voxels (shape {tuple(array.shape)})", path)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            n_nan = int(np.isnan(array).sum())
            n_inf = int(array.size - finite.sum()) - n_nan
            parts = [f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
            raise InputError(f"image contains {' and '.join(parts)} voxels", path)
    if array.dtype.kind in "fiu" and array.size:
        peak = max(abs(float(array.min())), abs(float(array.max())))
        if peak > MAX_ABS_INTENSITY:
            raise InputError(
                f"voxel values reach {peak:.3g}, beyond +-{MAX_ABS_INTENSITY:.0e}; is the header's scaling broken?", path
            )
    if not allow_constant:
        lo, hi = array.min(), array.max()
        if lo == hi:
            raise InputError(f"image is empty: every voxel equals {lo:g}", path)


def check_affine(affine: np.ndarray, path: PathLike) -> None:
    """Reject singular or non-finite voxel-to-world matrices and absurd voxel sizes.

    Voxel sizes are the norms of the affine's first three columns, in mm; they must lie in
    ``[MIN_SPACING_MM, MAX_SPACING_MM]``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError("voxel-to-world matrix is not a finite 4x4 matrix", path)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    shown = " x ".join(f"{s:g}" for s in spacing)
    if np.any(spacing <= 0):
        raise InputError(f"voxel size {shown} mm has a zero axis", path)
    # Scale-free test: the determinant relative to the product of column norms is the
    # volume of the parallelepiped spanned by the unit axis directions (1 when orthogonal).
    if abs(np.linalg.det(affine[:3, :3])) / np.prod(spacing) < 1e-6:
        raise InputError("voxel-to-world matrix is singular (two voxel axes are parallel)", path)
    if np.any(spacing < MIN_SPACING_MM) or np.any(spacing > MAX_SPACING_MM):
        raise InputError(
            f"voxel size {shown} mm is outside [{MIN_SPACING_MM:g}, {MAX_SPACING_MM:g}] mm "
            "(header in metres or microns?)",
            path,
        )
