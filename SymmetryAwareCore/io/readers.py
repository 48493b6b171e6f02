"""Readers: NIfTI, NRRD, MetaImage and DICOM series into one :class:`Image`, geometry intact.

NIfTI goes through nibabel, whose ``affine`` is already voxel ``[i, j, k]`` to RAS mm
(sform if set, else qform), so it is taken as stored, shear and obliquity included.
NRRD, MetaImage and DICOM go through SimpleITK, which thinks in LPS and hands out arrays
indexed ``[k, j, i]``; both are converted here, once:

    ijk_to_lps = [direction * spacing | origin],   affine = LPS_TO_RAS @ ijk_to_lps,
    array[i, j, k] = sitk_array[k, j, i].

A DICOM folder holding several series: the series with the most files is read and a
warning names it and the others (``series_uid`` picks one explicitly). Images come back
as float32; label maps (:func:`read_labelmap`) as the smallest unsigned integer type.

Maps written by :func:`SymmetryAwareCore.io.writers.write_map` as uint8 NRRD carry their
scale in the custom fields ``SymmetryAware_value_scale`` and ``SymmetryAware_value_offset``
(value = offset + scale * stored); the reader applies them. NIfTI maps use the standard
``scl_slope`` / ``scl_inter``, applied by nibabel.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from ..errors import InputError
from .image import LPS_TO_RAS, Image
from .validate import check_affine, check_input_path, check_shape, check_voxel_budget, check_voxels

__all__ = ["read_image", "read_labelmap", "read_header", "VALUE_SCALE_KEY", "VALUE_OFFSET_KEY"]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

# Custom NRRD / MetaImage fields for quantised maps: value = offset + scale * stored.
VALUE_SCALE_KEY = "SymmetryAware_value_scale"
VALUE_OFFSET_KEY = "SymmetryAware_value_offset"


def read_image(
    path: PathLike,
    *,
    allow_channels: bool = False,
    allow_constant: bool = False,
    series_uid: Optional[str] = None,
) -> Image:
    """Read a 3D image (or a 4D multi-volume one as channels) with its exact voxel-to-RAS affine.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, or a folder
            holding a DICOM series.
        allow_channels: accept several volumes (4D NIfTI, multi-component NRRD/MHA) and
            return them as channels; otherwise such files are refused.
        allow_constant: accept an image whose voxels all have one value (an empty label map).
        series_uid: for a DICOM folder with several series, the one to read.

    Returns:
        :class:`Image` with a float32 array ``(X, Y, Z)``, or ``(C, X, Y, Z)`` when
        ``allow_channels`` and the file holds C > 1 volumes; axis 0 is the file's first voxel
        axis (not necessarily left-right: see :func:`SymmetryAwareCore.geometry.to_ras`).
        Trailing axes of length 1 (a 4D NIfTI with one volume) are dropped.

    Raises:
        InputError: missing, unsupported, unreadable, 2D, 5D, multi-volume, empty,
            non-finite, or absurd-geometry input; the message names the file.
    """
    array, affine = _read_raw(path, series_uid)
    array = array.astype(np.float32, copy=False)
    return _validated(array, affine, path, allow_channels, allow_constant)


def read_labelmap(path: PathLike, *, series_uid: Optional[str] = None) -> Image:
    """Read a 3D label map: integer voxel values, all-background allowed.

    Returns:
        :class:`Image` with an ``(X, Y, Z)`` array of dtype uint8 or uint16 (the smallest that
        holds the largest label), on the file's own grid.

    Raises:
        InputError: as :func:`read_image`, and for non-integer or negative values.
    """
    array, affine = _read_raw(path, series_uid)
    image = _validated(array, affine, path, allow_channels=False, allow_constant=True)
    values = image.array
    if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
        raise InputError("label map has non-integer values", path)
    if values.min() < 0:
        raise InputError(f"label map has negative values (minimum {values.min():g})", path)
    if values.max() > np.iinfo(np.uint16).max:
        raise InputError(f"label map value {values.max():g} exceeds 65535", path)
    dtype = np.uint8 if values.max() <= np.iinfo(np.uint8).max else np.uint16
    return image.with_array(values.astype(dtype))


def read_header(path: PathLike) -> Tuple[Tuple[int, int, int], float]:
    """The spatial shape ``(X, Y, Z)`` and the voxel volume in mm^3 of an image, from its
    header alone (no voxel is read), after the same header checks as :func:`read_image`
    (voxel budget, affine). For a DICOM folder, the first file's in-plane size and spacing
    with one slice per file.

    Raises:
        InputError: as :func:`read_image` for everything the header shows.
    """
    kind = check_input_path(path)
    if kind == "nifti":
        nii = _load_nifti_header(Path(path))
        shape, affine = nii.shape, nii.affine
        _check_header(shape, affine, path)
        shape = tuple(shape)
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        check_shape(shape[3:][::-1] + shape[:3] if len(shape) > 3 else shape, path, allow_channels=True)
        return tuple(int(s) for s in shape[:3]), float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    if kind == "dicom":
        try:
            series = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))
            files = max((list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), uid)) for uid in series), key=len, default=[])
        except RuntimeError as err:
            raise InputError(f"cannot scan folder for DICOM: {_first_line(err)}", path) from None
        if not files:
            raise InputError("folder holds no DICOM series", path)
        reader.SetFileName(files[0])
    else:
        reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"cannot read image: {_first_line(err)}", path) from None
    size = list(reader.GetSize())
    if kind == "dicom":
        size = size[:2] + [len(files)]
    _check_sitk_header(size, reader.GetNumberOfComponents(), path)
    if len(size) < 3:
        raise InputError(f"image is {len(size)}D (size {tuple(size)}); a 3D volume is needed", path)
    spacing = np.asarray(reader.GetSpacing(), np.float64)[:3]
    return tuple(int(s) for s in size[:3]), float(np.prod(np.resize(spacing, 3)))


def _validated(array: np.ndarray, affine: np.ndarray, path: PathLike, allow_channels: bool, allow_constant: bool) -> Image:
    # Arrays arrive channels-last (nibabel's and our SimpleITK conversion's convention).
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    shape = array.shape if array.ndim <= 3 else (array.shape[3:][::-1] + array.shape[:3])
    check_shape(shape, path, allow_channels=allow_channels)
    if array.ndim == 4:
        array = np.moveaxis(array, -1, 0)
    array = np.ascontiguousarray(array)
    check_affine(affine, path)
    check_voxels(array, path, allow_constant=allow_constant)
    return Image(array, affine, source=str(path))


def _read_raw(path: PathLike, series_uid: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
    """``(array indexed [i, j, k, ...], voxel-to-RAS affine)`` in the file's own data type."""
    kind = check_input_path(path)
    if kind == "nifti":
        return _read_nifti(Path(path))
    import SimpleITK as sitk

    if kind == "dicom":
        array, affine = _sitk_to_raw(_read_dicom_series(Path(path), series_uid), path)
        _check_dtype(array.dtype, path)
        return array, affine
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"cannot read image: {_first_line(err)}", path) from None
    _check_sitk_header(reader.GetSize(), reader.GetNumberOfComponents(), path)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"cannot read image: {_first_line(err)}", path) from None
    array, affine = _sitk_to_raw(image, path)
    _check_dtype(array.dtype, path)
    keys = set(reader.GetMetaDataKeys())
    if VALUE_SCALE_KEY in keys or VALUE_OFFSET_KEY in keys:
        try:
            scale = float(reader.GetMetaData(VALUE_SCALE_KEY)) if VALUE_SCALE_KEY in keys else 1.0
            offset = float(reader.GetMetaData(VALUE_OFFSET_KEY)) if VALUE_OFFSET_KEY in keys else 0.0
        except ValueError:
            raise InputError(f"bad {VALUE_SCALE_KEY} / {VALUE_OFFSET_KEY} field", path) from None
        array = offset + scale * array.astype(np.float64)
    return array, affine


def _check_header(shape, affine, path: PathLike) -> None:
    """Checks that need only the header, run before any voxel is read (a small gzip file can
    claim, and hold, gigabytes): no empty axis, the voxel budget, a sane affine."""
    shape = tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape):
        raise InputError(f"image has no voxels (shape {shape})", path)
    check_voxel_budget(float(np.prod([float(s) for s in shape])), "image of " + " x ".join(map(str, shape)), path)
    check_affine(affine, path)


def _load_nifti_header(path: Path):
    """``nib.load`` (the header only), refusing what nibabel would silently patch up.

    nibabel replaces a zero voxel size (``pixdim``) by 1 mm with a log line; when the
    affine comes from the pixdims (no sform), that would be a guessed geometry, so it is
    refused here instead. Negative pixdims are taken as their absolute values (nibabel's
    reading, the common one), without its log line.
    """
    import nibabel as nib
    from nibabel.imageglobals import LoggingOutputSuppressor
    from nibabel.openers import ImageOpener

    try:
        with LoggingOutputSuppressor():
            nii = nib.load(str(path))
            shape, affine = nii.shape, nii.affine
        header = nii.header
        if "pixdim" in header and "sform_code" in header and int(header["sform_code"]) == 0:
            with ImageOpener(str(path)) as handle:
                raw = type(header).from_fileobj(handle, check=False)
            pixdim = np.asarray(raw["pixdim"][1:4], np.float64)
            if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0):
                raise InputError(f"header voxel size (pixdim) {pixdim.tolist()} has a zero or non-finite axis", path)
    except InputError:
        raise
    except Exception as err:  # nibabel raises many types for a broken header
        raise InputError(f"cannot read NIfTI image: {_first_line(err)}", path) from None
    return nii


def _check_dtype(dtype, path: PathLike) -> None:
    """Scalar real voxels only: casting complex data to float would drop the imaginary part
    (with a warning), and RGB / structured voxels have no single intensity."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise InputError("voxels are complex numbers (phase or k-space data?); give a magnitude image", path)
    if dtype.kind not in "biuf":
        raise InputError(f"voxels of type {dtype} (RGB or structured) are not scalar intensities", path)


def _read_nifti(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    nii = _load_nifti_header(path)  # the header only; the voxels are read below
    _check_header(nii.shape, nii.affine, path)
    _check_dtype(nii.get_data_dtype(), path)
    try:
        # Reading the data here, not lazily later, so that a truncated file fails inside this try.
        # A header scaling (scl_slope) can push values past float32: an error, not a warning.
        with np.errstate(over="raise", invalid="raise"):
            if np.issubdtype(nii.get_data_dtype(), np.integer) and _unscaled(nii):
                array = np.asarray(nii.dataobj)
            else:
                array = np.asarray(nii.dataobj, dtype=np.float64 if nii.get_data_dtype() == np.float64 else np.float32)
    except FloatingPointError:
        raise InputError("voxel values overflow 32-bit floats; is the header's scaling (scl_slope) broken?", path) from None
    except Exception as err:  # nibabel, gzip and zlib raise many types for a broken file
        raise InputError(f"cannot read NIfTI image: {_first_line(err)}", path) from None
    if int(nii.header["sform_code"]) == 0 and int(nii.header["qform_code"]) == 0:
        # nibabel then builds an affine from the voxel sizes alone: left and right are a guess.
        logger.warning("%s: NIfTI header has no sform or qform; its orientation (left/right) is a guess", path)
    return array, np.asarray(nii.affine, dtype=np.float64)


def _check_sitk_header(size, components: int, path: PathLike) -> None:
    size = tuple(int(s) for s in size)
    if not size or any(s <= 0 for s in size):
        raise InputError(f"image has no voxels (size {size})", path)
    count = float(np.prod([float(s) for s in size])) * max(1, int(components))
    what = "image of " + " x ".join(map(str, size)) + (f" x {components} components" if components > 1 else "")
    check_voxel_budget(count, what, path)


def _unscaled(nii) -> bool:
    slope, inter = nii.dataobj.slope, nii.dataobj.inter
    return (slope in (None, 1.0) or not np.isfinite(slope)) and (inter in (None, 0.0) or not np.isfinite(inter))


def _read_dicom_series(folder: Path, series_uid: Optional[str]):
    import SimpleITK as sitk

    try:
        series = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as err:
        raise InputError(f"cannot scan folder for DICOM: {_first_line(err)}", folder) from None
    if not series:
        raise InputError("folder holds no DICOM series", folder)
    files = {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in series}
    if series_uid is not None:
        if series_uid not in files:
            raise InputError(f"no DICOM series {series_uid} here; found {', '.join(series)}", folder)
        chosen = series_uid
    else:
        chosen = max(series, key=lambda uid: len(files[uid]))
        if len(series) > 1:
            others = ", ".join(f"{uid} ({len(files[uid])} files)" for uid in series if uid != chosen)
            logger.warning(
                "%s: %d DICOM series; reading the largest, %s (%d files); others: %s",
                folder, len(series), chosen, len(files[chosen]), others,
            )
    if len(files[chosen]) < 2:
        raise InputError(f"DICOM series {chosen} has a single slice; a 3D volume is needed", folder)
    try:
        first = sitk.ImageFileReader()
        first.SetFileName(files[chosen][0])
        first.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"cannot read DICOM series {chosen}: {_first_line(err)}", folder) from None
    size = list(first.GetSize())
    size[2:] = [len(files[chosen])]  # one slice per file
    _check_sitk_header(size[:3], first.GetNumberOfComponents(), folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files[chosen])
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise InputError(f"cannot read DICOM series {chosen}: {_first_line(err)}", folder) from None


def _sitk_to_raw(image, path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """SimpleITK image -> (array ``[i, j, k(, c)]``, voxel-to-RAS affine)."""
    import SimpleITK as sitk

    dim = image.GetDimension()
    if dim < 3:
        raise InputError(f"image is {dim}D (size {image.GetSize()}); a 3D volume is needed", path)
    array = sitk.GetArrayViewFromImage(image)
    n_comp = image.GetNumberOfComponentsPerPixel()
    # SimpleITK arrays are [(t,) k, j, i] with a trailing component axis for vector pixels.
    lead = dim
    order = list(range(lead))[::-1] + ([lead] if n_comp > 1 else [])
    array = np.array(np.transpose(array, order))  # now [i, j, k, (t,) (c)]
    if dim > 3:
        # Extra ITK dimensions (4D MetaImage / NRRD) become trailing volumes, as in NIfTI.
        extra = array.shape[3:dim]
        array = array.reshape(array.shape[:3] + (int(np.prod(extra)),) + array.shape[dim:])
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)[:3]
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * spacing  # scales column c by spacing[c]
    ijk_to_lps[:3, 3] = origin
    return array, LPS_TO_RAS @ ijk_to_lps


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # ITK messages start with file/line noise; the last line states the problem.
    return (lines[-1] if lines else type(err).__name__)[:200]
