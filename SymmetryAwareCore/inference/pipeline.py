"""The main job, as one API function shared by the command line, Slicer and batch runs.

``segment_case``: channel files -> one multi-channel image -> mid-sagittal plane ->
symmetric frame (RAS, plane at the centre of axis 0, the model's spacing) -> intensity
normalisation from the model card -> mirror-paired sliding-window inference -> labels,
hemispheric attention and signed asymmetry mapped back onto the FIRST input's own grid ->
files. All outputs of a case are written into a hidden temporary folder that is renamed
into place at the end, so a failed case leaves nothing behind and a finished case is
recognisable by its folder alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import __version__
from ..errors import InputError
from ..geometry.markups import write_plane_markups
from ..geometry.msp import MidSagittalPlane, estimate_msp
from ..geometry.symmetric_frame import SymmetricFrame, align_to_msp
from ..io.case import load_case
from ..io.image import Image
from ..io.labels import LABEL_TABLES, LabelInfo, label_table
from ..io.validate import check_output_path
from ..io.writers import write_labelmap_nifti, write_map, write_seg_nrrd
from .attention_maps import attention_point_voxel, native_attention_maps
from .engine import InferenceSettings, run_paired_inference
from .hemispheric import signed_asymmetry
from .model_source import LoadedModel
from .overview import write_overview_png
from .postprocess import foreground_from_logits, labels_from_logits
from .report import lesion_report, write_report_json

__all__ = ["SegmentOptions", "CaseResult", "OUTPUT_FILES", "segment_case", "normalise_intensities", "brain_box"]

log = logging.getLogger(__name__)

# File names inside <output_dir>/<case_id>/ (the contract the Slicer module reads).
OUTPUT_FILES = {
    "labelmap": "segmentation.nii.gz",
    "segmentation": "segmentation.seg.nrrd",
    "attention": "attention.nii.gz",
    "attention_from": "attention_from.nii.gz",
    "asymmetry": "asymmetry.nii.gz",
    "plane": "msp.mrk.json",
    "report": "report.json",
    "overview": "overview.png",
}

# Share of the progress bar per stage (inference dominates).
_STAGES = (("loading", 0.03), ("aligning", 0.12), ("inference", 0.75), ("writing", 0.10))

Progress = Callable[[float, str], None]


@dataclass
class SegmentOptions:
    """Settings of one segmentation run (model-independent).

    Attributes:
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        overlap: sliding-window overlap in ``[0, 1)``.
        sw_batch_size: windows per forward pass (halved on GPU out-of-memory).
        tta: average with the left-right flipped prediction (costs decoder passes only).
        amp: ``"auto"``, ``"off"``, ``"float16"``, ``"bfloat16"``.
        msp_on_failure: ``"error"`` refuses a scan whose plane cannot be found; ``"axes"``
            uses the image axes through the head's centre and says so in the report.
        roi_center_ras, roi_size_mm: run on this box only (RAS mm); its mirror image across
            the plane is included automatically, and labels outside the box stay 0.
        overview: write the PNG overview.
        overwrite: replace an existing result folder of the same case.
        outputs: keys of :data:`OUTPUT_FILES` to write (the report always is); None: all.
        attention_from_ras: a RAS point (mm) whose SACA attention over the other hemisphere
            is written as ``attention_from.nii.gz`` (models with SACA only).
    """

    device: str = "auto"
    overlap: float = 0.25
    sw_batch_size: int = 2
    tta: bool = False
    amp: str = "auto"
    msp_on_failure: str = "error"
    roi_center_ras: Optional[Sequence[float]] = None
    roi_size_mm: Optional[Sequence[float]] = None
    overview: bool = True
    overwrite: bool = False
    outputs: Optional[Sequence[str]] = None
    attention_from_ras: Optional[Sequence[float]] = None

    def wants(self, key: str) -> bool:
        if key == "overview" and not self.overview:
            return False
        return key == "report" or self.outputs is None or key in self.outputs


@dataclass
class CaseResult:
    """Where a case's outputs went and what its report says."""

    case_id: str
    output_dir: Path
    files: Dict[str, Path]
    report: dict
    skipped: bool = False


class _Stages:
    """Turns per-stage fractions into one overall fraction and records stage times."""

    def __init__(self, progress: Optional[Progress]):
        self.progress = progress
        self.times: Dict[str, float] = {}
        self._start = 0.0
        self._offsets = {}
        acc = 0.0
        for name, share in _STAGES:
            self._offsets[name] = (acc, share)
            acc += share
        self._current = None

    def begin(self, name: str) -> None:
        self.end()
        self._current = name
        self._start = time.perf_counter()
        self.update(0.0)

    def update(self, fraction: float) -> None:
        if self.progress is not None and self._current is not None:
            base, share = self._offsets[self._current]
            self.progress(min(1.0, base + share * float(np.clip(fraction, 0.0, 1.0))), self._current)

    def end(self) -> None:
        if self._current is not None:
            self.times[self._current] = round(time.perf_counter() - self._start, 3)
            self._current = None


def normalise_intensities(image: Image, method: str = "zscore-nonzero") -> np.ndarray:
    """Per-channel intensity normalisation as the model card asks, ``(C, X, Y, Z)`` float32.

    ``zscore-nonzero``: mean 0, standard deviation 1 over each channel's non-zero voxels
    (skull-stripped MRI, as BraTS); zero voxels stay 0. ``ct-window``: Hounsfield units
    clipped to [-100, 200] and scaled to [0, 1] (brain window wide enough for blood and bone
    edges). ``none``: as is.
    """
    array = image.array if image.array.ndim == 4 else image.array[None]
    out = np.zeros_like(array, dtype=np.float32)
    if method == "none":
        return array.astype(np.float32)
    if method == "ct-window":
        return ((np.clip(array, -100.0, 200.0) + 100.0) / 300.0).astype(np.float32)
    if method != "zscore-nonzero":
        raise InputError(f"unknown normalisation {method!r} in the model card")
    for c in range(array.shape[0]):
        channel = array[c]
        inside = channel != 0
        if inside.sum() < 10:
            raise InputError(f"channel {c} of the scan is (nearly) empty after alignment", image.source)
        values = channel[inside]
        std = float(values.std()) or 1.0
        out[c][inside] = (values - float(values.mean())) / std
    return out


def brain_box(volume: np.ndarray, margin: int = 4) -> Tuple[slice, slice, slice]:
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


def _label_infos(model: LoadedModel) -> List[LabelInfo]:
    """The card's labels for the .seg.nrrd, with terminology where a known table names them."""
    known = {(t.value, t.name): t.terminology for name in LABEL_TABLES for t in label_table(name)}
    return [
        LabelInfo(l.value, l.name, tuple(c / 255.0 for c in l.color), known.get((l.value, l.name), ""))
        for l in model.card.labels
    ]


def _case_frame(image: Image, plane: MidSagittalPlane, spacing, options: SegmentOptions):
    """The aligned image: the whole field of view, or the ROI and its mirror image."""
    if options.roi_center_ras is None:
        return align_to_msp(image, plane, spacing)
    center = np.asarray(options.roi_center_ras, np.float64)
    size = np.asarray(options.roi_size_mm, np.float64)
    if center.shape != (3,) or size.shape != (3,) or np.any(size <= 0):
        raise InputError("--roi-center and --roi-size need three numbers each (RAS mm; sizes > 0)")
    # Width along the plane normal: the box and its mirror, i.e. twice the farthest extent.
    distance = abs(float(plane.signed_distance(center)[0]))
    half_width = distance + float(np.linalg.norm(size)) / 2.0
    shape = (
        2 * int(np.ceil(half_width / spacing[0])),
        int(np.ceil(float(np.linalg.norm(size)) / spacing[1])),
        int(np.ceil(float(np.linalg.norm(size)) / spacing[2])),
    )
    return align_to_msp(image, plane, spacing, shape, center=center)


def _roi_mask_native(like: Image, center, size_mm) -> np.ndarray:
    """Voxels of ``like``'s grid inside the axis-aligned RAS box ``center`` +- size / 2."""
    shape = like.spatial_shape
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = like.voxel_to_world(ijk)
    inside = np.all(np.abs(xyz - np.asarray(center)) <= np.asarray(size_mm) / 2.0, axis=1)
    return inside.reshape(shape)


def segment_case(
    paths: Sequence[Path],
    output_dir: Path,
    model: LoadedModel,
    options: Optional[SegmentOptions] = None,
    case_id: Optional[str] = None,
    progress: Optional[Progress] = None,
    window_progress: Optional[Callable[[int, int], None]] = None,
) -> CaseResult:
    """Segment one case and write every output into ``output_dir / case_id``.

    Args:
        paths: one file (or DICOM folder) per model input channel, in the model's order.
        output_dir: the parent folder of the case folder.
        model: from :func:`~SymmetryAwareCore.inference.model_source.resolve_model`.
        options: run settings.
        case_id: name of the case folder; default: the common prefix of the file names.
        progress: ``callable(fraction 0..1, stage name)``.
        window_progress: ``callable(done, total)`` per window, for a second progress bar.

    Returns:
        the output files and the report. An existing case folder is kept and reported as
        skipped unless ``options.overwrite``.

    Raises:
        InputError: bad inputs, wrong channels, outputs that would overwrite inputs.
    """
    from .cases import case_id_from_files

    options = options or SegmentOptions()
    paths = [Path(p) for p in paths]
    case_id = case_id or case_id_from_files(paths)
    output_dir = Path(output_dir)
    case_dir = output_dir / case_id
    for p in paths:
        resolved = p.resolve()
        if resolved == case_dir.resolve() or case_dir.resolve() in resolved.parents:
            raise InputError("the output folder would hold (and overwrite) this input; choose another --output-dir", p)
    check_output_path(case_dir, paths)
    if case_dir.exists() and not options.overwrite:
        report_path = case_dir / OUTPUT_FILES["report"]
        if report_path.is_file():
            import json

            return CaseResult(case_id, case_dir, {}, json.loads(report_path.read_text()), skipped=True)
        raise InputError("output folder exists and holds no finished result; use --overwrite to replace it", case_dir)

    card = model.card
    stages = _Stages(progress)
    started = time.perf_counter()
    notes: List[str] = list(model.notes)

    stages.begin("loading")
    channel_names = [c.name for c in card.channels]
    image = load_case(paths, channel_names, on_grid_mismatch="resample")
    native = image.channel(0)  # every output lives on the first channel's grid

    stages.begin("aligning")
    plane = estimate_msp(image, on_failure=options.msp_on_failure)
    if not plane.confident:
        notes.append(f"mid-sagittal plane has low confidence: {plane.message or 'poor symmetry score'}")
    spacing = np.asarray(card.preprocessing.get("spacing", (1.0, 1.0, 1.0)), np.float64)
    aligned, frame = _case_frame(image, plane, spacing, options)
    stages.update(0.8)
    volume = normalise_intensities(aligned, card.preprocessing.get("normalisation", "zscore-nonzero"))
    box = brain_box(volume)
    cropped = np.ascontiguousarray(volume[(slice(None),) + box])
    # Attention maps (issue 17, attention_maps.py): the --attention-from point is checked here, before inference.
    attention_point = None
    if options.attention_from_ras is not None:
        if not getattr(model.network, "use_saca", False):
            raise InputError("--attention-from needs a model with symmetry-aware cross-attention (SACA)")
        attention_point = attention_point_voxel(frame, box, options.attention_from_ras)

    stages.begin("inference")
    settings = InferenceSettings(
        roi_size=tuple(card.preprocessing.get("roi_size", (96, 96, 96))),
        overlap=options.overlap,
        sw_batch_size=options.sw_batch_size,
        device=options.device,
        amp=options.amp,
        tta_flip=options.tta,
        return_attention=bool(getattr(model.network, "use_saca", False)),
    )

    def on_window(done: int, total: int) -> None:
        stages.update(done / max(total, 1))
        if window_progress is not None:
            window_progress(done, total)

    with torch.inference_mode():
        result, fallback = run_paired_inference(torch.from_numpy(cropped), model.network, settings, on_window, log)
    notes.extend(fallback.events)
    logits = result.logits.numpy()

    stages.begin("writing")
    full_shape = aligned.spatial_shape
    labels_frame = np.zeros(full_shape, np.uint8)
    labels_frame[box] = labels_from_logits(logits, card)
    if card.preprocessing.get("normalisation", "zscore-nonzero") == "zscore-nonzero":
        # Such models only ever saw the head: voxels outside it (all channels 0) get no label.
        labels_frame[~np.any(volume != 0, axis=0)] = 0
    probability = np.zeros(full_shape, np.float32)
    probability[box] = foreground_from_logits(logits, card)
    asym_frame = signed_asymmetry(probability)
    labels_native = frame.to_native(labels_frame, "nearest").astype(np.uint8)
    # Attention maps (issue 17): mirror focus (and point attention) from the finest SACA stage, on the input grid.
    attention_maps = None
    if result.attention_windows is not None:
        attention_maps = native_attention_maps(
            result.attention_windows, volume, box, frame, labels_frame, attention_point, image.array
        )
    if options.roi_center_ras is not None:
        labels_native[~_roi_mask_native(native, options.roi_center_ras, options.roi_size_mm)] = 0
    files: Dict[str, Path] = {}
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{case_id}.", suffix=".partial", dir=output_dir))
    try:

        def out(key: str) -> Path:
            files[key] = case_dir / OUTPUT_FILES[key]
            return tmp_dir / OUTPUT_FILES[key]

        if options.wants("labelmap"):
            write_labelmap_nifti(labels_native, native, out("labelmap"), inputs=paths)
        if options.wants("segmentation"):
            write_seg_nrrd(labels_native, native, out("segmentation"), _label_infos(model), inputs=paths)
        if attention_maps is not None and options.wants("attention"):
            write_map(attention_maps.mirror_focus, native, out("attention"), "uint8", paths)
        if attention_maps is not None and attention_maps.point_density is not None and options.wants("attention_from"):
            write_map(attention_maps.point_density, native, out("attention_from"), "float16", paths)
        if options.wants("asymmetry"):
            write_map(frame.to_native(asym_frame, "linear"), native, out("asymmetry"), "float16", paths)
        if options.wants("plane"):
            write_plane_markups(plane, out("plane"))
        names = {l.value: l.name for l in card.labels}
        if options.wants("overview"):
            write_overview_png(
                native,
                labels_native,
                out("overview"),
                plane_normal=plane.normal,
                plane_point=plane.point,
                label_colors={l.value: l.color for l in card.labels},
                label_names=names,
                title=f"{case_id} - {card.name or card.architecture} {card.version}",
                maps=None if attention_maps is None else {"mirror focus": attention_maps.mirror_focus},
            )
        stages.end()
        report = lesion_report(native, labels_native, plane.normal, plane.point, names)
        # "labels" is the model's label table (value, name, colour 0-1), as the Slicer module
        # reads it; the per-label volumes move to "lesions".
        report["lesions"] = report.pop("labels")
        report.update(
            {
                "case_id": case_id,
                "inputs": [str(p) for p in paths],
                "channels": channel_names,
                "labels": [
                    {"value": l.value, "name": l.name, "color": [c / 255.0 for c in l.color]} for l in card.labels
                ],
                "volumes_ml": {
                    e["name"]: {"left": e["left_ml"], "right": e["right_ml"], "midline": e["midline_ml"], "total": e["volume_ml"]}
                    for e in report["lesions"]
                    if e.get("name")
                },
                "asymmetry_index": report["total"]["asymmetry_index"],
                "msp": plane.to_dict(),
                "symmetric_frame": frame.to_dict(),
                "model": model.describe(),
                "device": str(fallback.device),
                "inference": {
                    "roi_size": list(settings.roi_size),
                    "overlap": settings.overlap,
                    "tta": settings.tta_flip,
                    "windows": result.n_windows,
                    "encoded_crops": result.n_encoded,
                    "brain_box": [[s.start, s.stop] for s in box],
                },
                "maps": {
                    "attention": "uint8, value = scl_inter + scl_slope * stored, in [0, 1]: mirror focus "
                    "(see 'attention' and docs/attention.md), 0 outside the head",
                    "attention_from": "float16 precision (stored float32): SACA attention per mL of the "
                    "--attention-from point over the other hemisphere",
                    "asymmetry": "float16 precision (stored float32): p(x) - p(mirror x), foreground probability, in [-1, 1]",
                },
                "roi": None
                if options.roi_center_ras is None
                else {"center_ras": list(map(float, options.roi_center_ras)), "size_mm": list(map(float, options.roi_size_mm))},
                "zero_shot_asymmetry": None,
                "attention": None if attention_maps is None else attention_maps.summary,
                "notes": notes,
                "software": {"symmetryaware": __version__, "torch": torch.__version__},
                "runtime_s": {**stages.times, "total": round(time.perf_counter() - started, 3)},
            }
        )
        write_report_json(report, out("report"))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_dir, 0o777 & ~umask)  # mkdtemp made it owner-only
        if case_dir.exists():
            shutil.rmtree(case_dir)
        tmp_dir.rename(case_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    if progress is not None:
        progress(1.0, "done")
    return CaseResult(case_id, case_dir, files, report)
