"""Writers: every output lands on the grid of the image it belongs to, written atomically.

Every writer goes through :func:`~SymmetryAwareCore.io.atomic.atomic_path` (a reader never
sees half a file, a failure leaves nothing behind) and through
:func:`~SymmetryAwareCore.io.validate.check_output_path`, which refuses to write over the
file the result was computed from (``like.source``, ``image.source`` and any ``inputs``).

Arrays are indexed ``[i, j, k]`` on the grid of ``like`` (its affine maps them to RAS mm);
results computed on the RAS grid of :func:`SymmetryAwareCore.geometry.to_ras` must first be
put back with :func:`SymmetryAwareCore.geometry.from_ras`.

Formats by file name: ``.nii`` / ``.nii.gz`` through nibabel (affine stored in the sform,
and in the qform too when it is a rotation and scaling, which the qform can hold);
``.nrrd`` / ``.nhdr`` / ``.mha`` / ``.mhd`` through SimpleITK (LPS, ``[k, j, i]``, converted
here); ``.seg.nrrd`` through slicerio.

Quantised maps (:func:`write_map`): value = offset + scale * stored. NIfTI keeps
``scale, offset`` in ``scl_slope, scl_inter``; NRRD in the custom fields
``SymmetryAware_value_scale`` and ``SymmetryAware_value_offset`` (``key:=value`` lines),
which :func:`SymmetryAwareCore.io.readers.read_image` applies. Neither NIfTI-1 nor NRRD has
a 16-bit float type, so ``dtype="float16"`` rounds values to float16 precision and stores
them as float32; under gzip the zeroed low mantissa bits make a continuous map about half
the size of full float32 (MNI-grid probability map: 4.9 MB vs 8.7 MB; uint8: 1.8 MB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import nibabel as nib
import numpy as np

from ..errors import InputError
from .atomic import atomic_path
from .image import LPS_TO_RAS, Image
from .labels import LabelInfo
from .readers import VALUE_OFFSET_KEY, VALUE_SCALE_KEY
from .validate import check_output_path, image_format

__all__ = [
    "write_nifti",
    "write_image",
    "write_labelmap_nifti",
    "write_seg_nrrd",
    "write_map",
    "check_output_path",
]

PathLike = Union[str, Path]


def write_nifti(image: Image, path: PathLike, dtype: Optional[np.dtype] = None, inputs: Iterable[PathLike] = ()) -> Path:
    """Write ``image`` as NIfTI (``.nii`` or ``.nii.gz``) with its exact affine.

    Multi-channel images are written as ``(X, Y, Z, C)`` (NIfTI keeps channels last).
    """
    path = check_output_path(path, [image.source, *inputs])
    array = image.array if dtype is None else image.array.astype(dtype)
    if array.ndim == 4:
        array = np.moveaxis(array, 0, -1)
    _save_nifti(_nifti(np.ascontiguousarray(array), image.affine), path)
    return path


def write_image(image: Image, path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """Write ``image`` as NIfTI, NRRD or MetaImage, chosen by the file name, geometry exact.

    Args:
        image: ``(X, Y, Z)`` or ``(C, X, Y, Z)``; channels become NIfTI's 4th axis or the
            vector components of NRRD / MetaImage pixels.
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd``.
        inputs: further files that must not be overwritten (``image.source`` always is).
    """
    kind = _output_format(path)
    if kind == "nifti":
        return write_nifti(image, path, inputs=inputs)
    path = check_output_path(path, [image.source, *inputs])
    _save_sitk(_to_sitk(image.array, image.affine), path)
    return path


def write_labelmap_nifti(labels: np.ndarray, like: Image, path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """Write a label map on ``like``'s grid as NIfTI: same shape, same affine, voxel for voxel.

    Args:
        labels: ``(X, Y, Z)`` non-negative integers indexed like ``like.array`` (not the RAS
            grid unless ``like`` is RAS); stored as uint8, or uint16 above 255.
        like: the image the labels were computed for.
    """
    path = check_output_path(path, [like.source, *inputs])
    if _output_format(path) != "nifti":
        raise ValueError(f"{path}: write_labelmap_nifti writes .nii or .nii.gz")
    stored = _label_array(labels, like)
    _save_nifti(_nifti(stored, like.affine), path)
    return path


def write_seg_nrrd(
    labels: np.ndarray,
    like: Image,
    path: PathLike,
    label_infos: Sequence[LabelInfo],
    inputs: Iterable[PathLike] = (),
) -> Path:
    """Write a 3D Slicer segmentation (``.seg.nrrd``) with named, coloured segments.

    One segment per entry of ``label_infos`` (absent labels give empty segments, so every
    class shows in Slicer's list), all in one layer, keeping the label values as stored
    (BraTS 2021's enhancing tumour stays 4). The file's IJK-to-LPS matrix is
    ``diag(-1, -1, 1, 1) @ like.affine``, so Slicer's IJK-to-RAS is ``like.affine`` exactly,
    and the reference image geometry is set to ``like``'s grid.

    Args:
        labels: ``(X, Y, Z)`` non-negative integers on ``like``'s grid.
        label_infos: one :class:`LabelInfo` for every non-zero value present.
    Raises:
        ValueError: a value present in ``labels`` has no :class:`LabelInfo`, or values repeat.
    """
    import slicerio

    path = check_output_path(path, [like.source, *inputs])
    if not Path(path).name.lower().endswith(".seg.nrrd"):
        raise ValueError(f"{path}: write_seg_nrrd writes .seg.nrrd files")
    stored = _label_array(labels, like)
    infos = list(label_infos)
    values = [info.value for info in infos]
    if len(set(values)) != len(values):
        raise ValueError(f"label values repeat in label_infos: {values}")
    present = set(np.unique(stored).tolist()) - {0}
    missing = sorted(present - set(values))
    if missing:
        raise ValueError(f"labels hold values {missing} that have no LabelInfo")

    segments = []
    for info in infos:
        mask = stored == info.value
        if mask.any():
            idx = np.nonzero(mask)
            extent = [int(v) for axis in idx for v in (axis.min(), axis.max())]
        else:
            extent = [0, -1, 0, -1, 0, -1]
        segment = {
            "id": f"Segment_{info.value}",
            "name": info.name,
            "color": list(info.color),
            "colorAutoGenerated": False,
            "nameAutoGenerated": False,
            "labelValue": int(info.value),
            "layer": 0,
            "extent": extent,
        }
        if info.terminology:
            # Passed as a raw tag so that the string is written exactly as given.
            segment["tags"] = {"TerminologyEntry": info.terminology}
        segments.append(segment)

    shape = stored.shape
    geometry = ";".join(f"{v:.17g}" for v in like.affine.ravel()) + ";"
    geometry += "".join(f"0;{n - 1};" for n in shape)
    segmentation = {
        "voxels": stored,
        "ijkToLPS": LPS_TO_RAS @ like.affine,
        "segments": segments,
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0],
        "conversionParameters": [
            {
                "name": "Reference image geometry",
                "value": geometry,
                "description": "Image geometry description string determining the geometry of the labelmap "
                "that is created in course of conversion.",
            }
        ],
    }
    with atomic_path(path) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation)
    return path


def write_map(
    array: np.ndarray,
    like: Image,
    path: PathLike,
    dtype: str = "float16",
    inputs: Iterable[PathLike] = (),
) -> Path:
    """Write a float map (probability, attention, asymmetry) on ``like``'s grid, compactly.

    Args:
        array: ``(X, Y, Z)`` finite floats on ``like``'s grid.
        path: ``.nii``, ``.nii.gz``, ``.nrrd`` or ``.nhdr``.
        dtype: ``"float16"``: values rounded to float16 precision (relative error at most
            2**-11), stored as float32. ``"uint8"``: 256 levels spanning ``[min, max]``;
            value = offset + scale * stored with offset = min and scale = (max - min) / 255,
            so the error is at most scale / 2.
    """
    path = check_output_path(path, [like.source, *inputs])
    kind = _output_format(path)
    if kind not in ("nifti", "nrrd"):
        raise ValueError(f"{path}: maps are written as NIfTI or NRRD")
    values = np.asarray(array, dtype=np.float64)
    _check_grid(values, like)
    if not np.isfinite(values).all():
        raise ValueError("map contains NaN or infinite values")

    if dtype == "float16":
        if np.abs(values).max() > np.finfo(np.float16).max:
            raise ValueError(f"map values up to {np.abs(values).max():g} overflow float16")
        stored = values.astype(np.float16).astype(np.float32)
        scale, offset = None, None
    elif dtype == "uint8":
        lo, hi = float(values.min()), float(values.max())
        scale = (hi - lo) / 255.0 if hi > lo else 1.0
        offset = lo
        stored = np.clip(np.rint((values - lo) / scale), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"dtype must be 'float16' or 'uint8', got {dtype!r}")

    if kind == "nifti":
        nii = _nifti(stored, like.affine)
        if scale is not None:
            nii.header.set_slope_inter(scale, offset)
        _save_nifti(nii, path)
    else:
        image = _to_sitk(stored, like.affine)
        if scale is not None:
            image.SetMetaData(VALUE_SCALE_KEY, f"{scale:.17g}")
            image.SetMetaData(VALUE_OFFSET_KEY, f"{offset:.17g}")
        _save_sitk(image, path)
    return path


# ----------------------------------------------------------------------------- helpers


def _output_format(path: PathLike) -> str:
    # image_format() reads the name only (plus is_dir, false for a file to be written).
    try:
        kind = image_format(path)
    except InputError:
        raise ValueError(f"{path}: cannot tell the output format from the name") from None
    if kind == "dicom":
        raise ValueError(f"{path}: is a folder; writers take a file name")
    return kind


def _check_grid(array: np.ndarray, like: Image) -> None:
    if array.ndim != 3 or tuple(array.shape) != like.spatial_shape:
        raise ValueError(f"array of shape {array.shape} is not on the grid of like, {like.spatial_shape}")


def _label_array(labels: np.ndarray, like: Image) -> np.ndarray:
    labels = np.asarray(labels)
    _check_grid(labels, like)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError("labels must be integers")
    lo, hi = (labels.min(), labels.max()) if labels.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ValueError(f"labels must lie in 0..65535, got {lo}..{hi}")
    dtype = np.uint8 if hi <= 255 else np.uint16
    return np.ascontiguousarray(labels.astype(dtype))


def _nifti(array: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    nii = nib.Nifti1Image(array, affine)
    nii.set_sform(affine, code=1)
    # The qform can only hold rotation, positive scaling and a flip of k; when the affine has
    # shear, a qform would be an approximation that some readers prefer, so it is left unset.
    linear = affine[:3, :3]
    gram = linear.T @ linear
    if np.allclose(gram, np.diag(np.diag(gram)), atol=1e-6 * np.max(np.diag(gram))):
        nii.set_qform(affine, code=1)
    else:
        nii.set_qform(None, code=0)
    nii.header.set_xyzt_units("mm")
    return nii


def _save_nifti(nii: nib.Nifti1Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        nib.save(nii, str(tmp))


def _to_sitk(array: np.ndarray, affine: np.ndarray):
    """``[i, j, k]`` (or ``(C, i, j, k)``) and a RAS affine -> SimpleITK image in LPS."""
    import SimpleITK as sitk

    ijk_to_lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    direction = ijk_to_lps[:3, :3] / spacing
    if array.ndim == 4:
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (3, 2, 1, 0))), isVector=True)
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin(ijk_to_lps[:3, 3].tolist())
    return image


def _save_sitk(image, path: Path) -> None:
    import SimpleITK as sitk

    with atomic_path(path) as tmp:
        if tmp.name.lower().endswith(".nhdr") or tmp.name.lower().endswith(".mhd"):
            # Detached headers name their data file; a temporary name would be baked in.
            raise ValueError(f"{path}: write a single-file .nrrd or .mha instead of a detached header")
        sitk.WriteImage(image, str(tmp), True)
