"""DICOM Segmentation (SEG) objects that reference the series they were computed from.

A PACS or a DICOM viewer shows a segmentation over its scan only when the SEG names the
source series, study and frame of reference and its frames sit on the source slices. So
the writer does not rebuild geometry from the label map's affine: it reads the source
series, and for every source slice samples the label map at that slice's own pixel
centres (ImagePositionPatient, ImageOrientationPatient, PixelSpacing; DICOM's LPS turned
into RAS). The label map must therefore lie on the source series' grid, which is what
``segment`` writes (outputs on the first input's grid); anything else is refused.

highdicom (an optional dependency, ``pip install symmetryawareseg[dicom]``) builds the
object; pydicom reads the series.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from .atomic import atomic_path
from .labels import LabelInfo

__all__ = ["read_source_series", "labels_on_source_frames", "write_dicom_seg", "highdicom_available"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# Used when a label has no terminology entry: "Morphologically Altered Structure" / "Lesion".
_GENERIC_CATEGORY = ("49755003", "SCT", "Morphologically Altered Structure")
_GENERIC_TYPE = ("52988006", "SCT", "Lesion")


def highdicom_available() -> bool:
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def read_source_series(folder: Union[str, Path], series_uid: Optional[str] = None) -> List:
    """The image datasets of one series in ``folder``, sorted along the slice normal.

    Picks ``series_uid``, else the series with the most files (as the image reader does).
    Raises :class:`InputError` for a folder without a multi-slice image series.
    """
    import pydicom

    folder = Path(folder)
    series = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            dataset = pydicom.dcmread(str(path))
        except Exception:  # not DICOM (a DICOMDIR, a text file): not part of any series
            continue
        if "ImagePositionPatient" not in dataset or "SeriesInstanceUID" not in dataset:
            continue
        series.setdefault(str(dataset.SeriesInstanceUID), []).append(dataset)
    if not series:
        raise InputError("no DICOM image series found", folder)
    if series_uid is not None and series_uid not in series:
        raise InputError(f"no DICOM series {series_uid} here", folder)
    chosen = series[series_uid] if series_uid is not None else max(series.values(), key=len)
    if len(chosen) < 2:
        raise InputError("the DICOM series has a single slice; a 3D volume is needed", folder)
    row, col = _orientation(chosen[0])
    normal = np.cross(row, col)
    chosen.sort(key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, dtype=np.float64))))
    return chosen


def _orientation(dataset) -> Tuple[np.ndarray, np.ndarray]:
    values = np.asarray(dataset.ImageOrientationPatient, dtype=np.float64)
    return values[:3], values[3:]


def labels_on_source_frames(labels: np.ndarray, affine: np.ndarray, datasets: Sequence, tolerance: float = 0.05) -> np.ndarray:
    """The label map resampled (nearest voxel) onto the source slices.

    Args:
        labels: ``(X, Y, Z)`` integer label map.
        affine: its voxel-to-RAS matrix (4x4, mm).
        datasets: the source slices (:func:`read_source_series`).
        tolerance: how far (in voxels) a slice pixel centre may be from a label voxel centre.

    Returns:
        ``(n_frames, Rows, Columns)`` labels, frame ``f`` on ``datasets[f]``.

    Raises:
        InputError: a pixel centre falls between voxels or outside the label map: the label
            map is not on the source series' grid.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"label map must be 3D, got shape {labels.shape}")
    ras_to_voxel = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    frames = []
    for dataset in datasets:
        rows, cols = int(dataset.Rows), int(dataset.Columns)
        row_dir, col_dir = _orientation(dataset)
        # PixelSpacing is (spacing between rows, spacing between columns): the column index
        # moves along the row direction cosine by the second value.
        row_spacing, col_spacing = (float(v) for v in dataset.PixelSpacing)
        r, c = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
        lps = (
            np.asarray(dataset.ImagePositionPatient, dtype=np.float64)
            + c[..., None] * col_spacing * row_dir
            + r[..., None] * row_spacing * col_dir
        )
        ras = lps @ _LPS_TO_RAS.T
        voxel = ras @ ras_to_voxel[:3, :3].T + ras_to_voxel[:3, 3]
        index = np.rint(voxel)
        if np.max(np.abs(voxel - index)) > tolerance:
            raise InputError("the label map is not on the source DICOM series' grid (pixel centres fall between voxels)")
        index = index.astype(np.int64)
        if np.any(index < 0) or np.any(index >= np.asarray(labels.shape)):
            raise InputError("the source DICOM series reaches outside the label map: not the series it was computed on")
        frames.append(labels[index[..., 0], index[..., 1], index[..., 2]])
    return np.stack(frames)


def _code(text: str, fallback: Tuple[str, str, str]):
    """A pydicom ``Code`` from a Slicer terminology triplet ``scheme^value^meaning``."""
    from pydicom.sr.coding import Code

    parts = text.split("^") if text else []
    if len(parts) == 3 and all(parts):
        scheme, value, meaning = parts
        return Code(value, scheme, meaning)
    return Code(*fallback)


def _category_and_type(label: LabelInfo):
    # TerminologyEntry: context~category~type~typeModifier~anatomicContext~region~regionModifier
    fields = label.terminology.split("~") if label.terminology else []
    category = _code(fields[1] if len(fields) > 2 else "", _GENERIC_CATEGORY)
    type_ = _code(fields[2] if len(fields) > 2 else "", _GENERIC_TYPE)
    return category, type_


def write_dicom_seg(
    labels: np.ndarray,
    affine: np.ndarray,
    source: Union[str, Path, Sequence],
    path: Union[str, Path],
    label_infos: Sequence[LabelInfo],
    algorithm: str = "SymmetryAwareSeg SA-Swin",
    algorithm_version: str = "",
    software_version: str = "",
) -> Path:
    """Write a binary DICOM SEG of ``labels`` referencing the ``source`` series.

    Args:
        labels: ``(X, Y, Z)`` label map on the source series' grid.
        affine: its voxel-to-RAS matrix.
        source: the source series' folder, or its datasets.
        path: the ``.dcm`` file to write (atomically: temporary name, then rename).
        label_infos: one per label value; each becomes a segment (numbered 1..n in value
            order, as DICOM requires), coded with its terminology when it has one.

    Returns:
        ``path``.
    """
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError:
        raise InputError("DICOM SEG output needs highdicom: pip install highdicom") from None
    from .. import __version__

    datasets = read_source_series(source) if isinstance(source, (str, Path)) else list(source)
    frames = labels_on_source_frames(labels, affine, datasets)
    infos = sorted(label_infos, key=lambda l: l.value)
    if not infos:
        raise InputError("no labels to write into a DICOM SEG")
    segment_frames = np.zeros(frames.shape, dtype=np.uint8)
    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version or __version__
    )
    descriptions = []
    for number, info in enumerate(infos, start=1):
        segment_frames[frames == info.value] = number
        category, type_ = _category_and_type(info)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=info.name,
                segmented_property_category=category,
                segmented_property_type=type_,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm_id,
            )
        )
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=segment_frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(datasets[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="SymmetryAwareSeg",
        manufacturer_model_name=algorithm,
        software_versions=software_version or __version__,
        device_serial_number="none",
        series_description="SymmetryAwareSeg segmentation",
        omit_empty_frames=False,
    )
    with atomic_path(path) as temporary:
        seg.save_as(str(temporary))
    return Path(path)
