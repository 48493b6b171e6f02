"""Checks on user-supplied images: each failure is an :class:`InputError` naming the file.

The readers call these at the boundary, so everything past :func:`read_image` can trust
that an image is a real 3D volume with finite voxels and a sane voxel-to-world matrix.
Limits are module constants so that messages and documentation quote the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import InputError

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


def check_output_path(out: PathLike, inputs: Sequence[Optional[PathLike]]) -> Path:
    """Refuse to write ``out`` over one of the ``inputs`` it was computed from.

    Paths are compared after resolving links and ``..``; an existing file reached by another
    name (a hard link) is caught too. ``None`` entries in ``inputs`` are ignored.

    Returns:
        ``out`` as a :class:`Path`.
    Raises:
        InputError: naming ``out`` when it is one of the inputs.
    """
    out = Path(out)
    target = out.resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item)
        same = source.resolve() == target
        if not same and source.exists() and out.exists():
            try:
                same = out.samefile(source)
            except OSError:
                same = False
        if same:
            raise InputError(f"refusing to overwrite the input {source} with a result", out)
    return out
