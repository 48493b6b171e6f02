"""The main job, as one API function shared by the command line, Slicer and batch runs.

``segment_case`` runs three parts, each usable on its own (the attention command, the
training package's evaluation and interactive runs reuse them):

1. **prepare** (:func:`prepare_for_model`, i.e. :func:`SymmetryAwareCore.preprocessing.prepare_case`
   with the card's preprocessing): channel files -> mid-sagittal plane -> symmetric frame
   at the card's spacing -> normalisation -> brain box;
2. **predict** (:func:`predict_case`): mirror-paired sliding-window inference in the frame,
   giving probabilities (and attention) on the whole frame;
3. **back to the input grid** (:func:`outputs_on_native`): probabilities resampled linearly
   onto the FIRST input's own grid and only then thresholded / argmaxed there, so label
   borders are decided at the scan's resolution, not the model's; maps likewise;
4. **write** (:func:`write_case_outputs`): files and the report into a hidden temporary
   folder renamed into place at the end, so a failed case leaves nothing behind and a
   finished case is recognisable by its folder alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import __version__
from ..contract import OUTPUT_FILES  # re-exported here for compatibility; defined in the contract
from ..contract import RunOptions
from ..errors import InputError
from ..geometry.markups import write_plane_markups
from ..io.atomic import staged_folder
from ..io.image import Image
from ..io.labels import LABEL_TABLES, LabelInfo, label_table
from ..io.validate import check_output_path
from ..io.writers import write_labelmap_nifti, write_map, write_seg_nrrd
from ..geometry.symmetric_frame import resample_to_grid
from ..preprocessing import PreparedCase, Preprocessing, brain_box, prepare_case
from .attention_maps import NativeAttentionMaps, attention_point_voxel, head_mask, native_attention_maps
from .engine import InferenceSettings, run_paired_inference
from .hemispheric import signed_asymmetry
from .model_source import LoadedModel
from .overview import write_overview_png
from .postprocess import (check_threshold, effective_threshold, labels_from_probabilities, outside_probabilities,
                          probabilities_from_logits)
from .report import lesion_report, write_report_json
from .zero_shot import DEFINITION as ZERO_SHOT_DEFINITION
from .zero_shot import SymmetryHead, load_symmetry_head, zero_shot_for_model

__all__ = ["SegmentOptions", "CaseResult", "OUTPUT_FILES", "segment_case", "brain_box", "model_preprocessing",
           "prepare_for_model", "prepare_loaded_for_model", "Prediction", "predict_case", "NativeOutputs", "outputs_on_native",
           "predict_box", "probabilities_to_native", "native_labels", "threshold_to_native", "outside_head_native", "roi_mask_native", "write_case_outputs", "model_symmetry_head",
           "unit_map_on_native", "StageProgress"]

log = logging.getLogger(__name__)

_RUN_DEFAULTS = RunOptions()

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
        tta: average with the left-right flipped prediction (decoder passes only with SACA;
            twice the encoder passes without, see :mod:`.sliding_window`).
        amp: ``"auto"``, ``"off"``, ``"float16"``, ``"bfloat16"``.
        require_head: refuse a scan that the head check says is not a head (else a warning).
        msp_on_failure: ``"error"`` refuses a scan whose plane cannot be found; ``"axes"``
            uses the image axes through the head's centre and says so in the report.
        roi_center_ras, roi_size_mm: run on this box only (RAS mm); its mirror image across
            the plane is included automatically, and labels outside the box stay 0.
        overview: write the PNG overview.
        overwrite: replace an existing result folder of the same case.
        outputs: keys of :data:`OUTPUT_FILES` to write (the report always is); None: all.
        attention_from_ras: a RAS point (mm) whose SACA attention over the other hemisphere
            is written as ``attention_from.nii.gz`` (models with SACA only).
        threshold: label each region where its probability reaches this, instead of at the
            card's threshold (region models only); None: the card's.
        bias_correction: True: remove each channel's bias field (N4) before anything else
            (MRI models only; :mod:`SymmetryAwareCore.preprocessing.bias`); False: do not;
            None: as the model card's preprocessing says.
    """

    # Defaults are the contract's (the one definition the CLI and Slicer share).
    device: str = _RUN_DEFAULTS.device
    overlap: float = _RUN_DEFAULTS.overlap
    sw_batch_size: int = _RUN_DEFAULTS.sw_batch
    tta: bool = _RUN_DEFAULTS.tta
    amp: str = _RUN_DEFAULTS.amp
    msp_on_failure: str = _RUN_DEFAULTS.msp_fallback
    require_head: bool = _RUN_DEFAULTS.require_head
    roi_center_ras: Optional[Sequence[float]] = None
    roi_size_mm: Optional[Sequence[float]] = None
    overview: bool = True
    overwrite: bool = False
    outputs: Optional[Sequence[str]] = None
    attention_from_ras: Optional[Sequence[float]] = None
    threshold: Optional[float] = _RUN_DEFAULTS.threshold
    bias_correction: Optional[bool] = _RUN_DEFAULTS.bias_correction

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


class StageProgress:
    """Turns per-stage fractions into one overall fraction and records stage times.

    ``table``: ``(stage, share of the bar)`` in run order (segmentation's by default)."""

    def __init__(self, progress: Optional[Progress], table: Sequence[Tuple[str, float]] = _STAGES):
        self.progress = progress
        self.times: Dict[str, float] = {}
        self._start = 0.0
        self._offsets = {}
        acc = 0.0
        for name, share in table:
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

    def stage(self, name: str, fraction: float) -> None:
        """Begin ``name`` if it is not the current stage, then report ``fraction`` of it."""
        if name != self._current:
            self.begin(name)
        self.update(fraction)

    def end(self) -> None:
        if self._current is not None:
            self.times[self._current] = round(time.perf_counter() - self._start, 3)
            self._current = None


def model_preprocessing(model: LoadedModel) -> Preprocessing:
    """The model card's preprocessing, validated; a card that lacks it is refused (one line)."""
    card = model.card
    spec = Preprocessing.from_card(card.preprocessing, source=card.name or card.architecture)
    expected = getattr(model.network, "in_channels", None)
    given = spec.network_channels(len(card.channels))
    if isinstance(expected, int) and expected != given:
        raise InputError(f"model card {card.name or card.architecture}: {len(card.channels)} channels give {given} network "
                         f"inputs after preprocessing, the network takes {expected}")
    return spec


def _preparation_options(options: "SegmentOptions") -> dict:
    return {"msp_on_failure": options.msp_on_failure, "on_not_head": "error" if options.require_head else "warn",
            "roi_center_ras": options.roi_center_ras, "roi_size_mm": options.roi_size_mm,
            "bias_correction": options.bias_correction}


def prepare_for_model(paths: Sequence[Path], model: LoadedModel, options: Optional["SegmentOptions"] = None,
                      progress: Optional[Callable[[str, float], None]] = None) -> PreparedCase:
    """Part 1: the case prepared exactly as the model's card says (as training prepared it).

    ``progress(stage, fraction)``: stages ``loading`` and ``aligning``.
    """
    options = options or SegmentOptions()
    extra = {} if progress is None else {"progress": progress}
    return prepare_case(
        [Path(p) for p in paths],
        [c.name for c in model.card.channels],
        model_preprocessing(model),
        **_preparation_options(options),
        **extra,
    )


def prepare_loaded_for_model(image: Image, model: LoadedModel,
                             options: Optional["SegmentOptions"] = None) -> PreparedCase:
    """Part 1 for a scan already loaded, channels in the model's order, on the grid outputs
    must have (the interactive session keeps the grid of the FIRST file the user gave,
    whichever channel it is)."""
    from ..preprocessing import prepare_image

    return prepare_image(image, model_preprocessing(model), **_preparation_options(options or SegmentOptions()))


@dataclass
class Prediction:
    """Part 2's result, on the whole symmetric frame.

    Attributes:
        probabilities: ``(out, W, H, D)`` float32, the card's activation applied; voxels
            outside the brain box hold the background probabilities.
        attention: the finest SACA stage's per-window attention (for :mod:`.attention_maps`),
            or None for a model without SACA.
        attention_point: the ``--attention-from`` voxel on the brain box's grid, or None.
        settings: the inference settings used.
        n_windows, n_encoded: windows and encoder passes.
        device: where it finally ran; ``events``: out-of-memory fallbacks.
    """

    probabilities: np.ndarray
    attention: Optional[object]
    settings: InferenceSettings
    n_windows: int
    n_encoded: int
    device: str
    events: List[str] = field(default_factory=list)
    attention_point: Optional[Tuple[int, int, int]] = None


def _inference_settings(model: LoadedModel, options: "SegmentOptions", cpu_fallback: bool,
                        return_attention: bool) -> InferenceSettings:
    return InferenceSettings(
        roi_size=tuple(model_preprocessing(model).roi_size),
        overlap=options.overlap,
        sw_batch_size=options.sw_batch_size,
        device=options.device,
        amp=options.amp,
        tta_flip=options.tta,
        return_attention=return_attention,
        cpu_fallback=cpu_fallback,
    )


def predict_box(cropped: np.ndarray, model: LoadedModel, options: Optional["SegmentOptions"] = None,
                cpu_fallback: bool = True) -> np.ndarray:
    """``(out, w, h, d)`` float32 probabilities (the card's activation applied) of a prepared
    brain box ``cropped`` ``(C, w, h, d)`` (``PreparedCase.cropped``, or the training store's
    array for the same files and card): the mirror-paired sliding window of
    :func:`predict_case` without the attention. The interactive session's backbone prior and
    its training use this one function.
    """
    options = options or SegmentOptions()
    settings = _inference_settings(model, options, cpu_fallback, False)
    with torch.inference_mode():
        result, _ = run_paired_inference(torch.from_numpy(np.array(cropped, np.float32)), model.network,
                                         settings, None, log)
    return probabilities_from_logits(result.logits.numpy(), model.card).astype(np.float32, copy=False)


def predict_case(
    prepared: PreparedCase,
    model: LoadedModel,
    options: Optional["SegmentOptions"] = None,
    on_window: Optional[Callable[[int, int], None]] = None,
    cpu_fallback: bool = True,
) -> Prediction:
    """Part 2: mirror-paired sliding-window inference on the prepared brain box.

    ``cpu_fallback=False`` keeps the network where it is on out-of-memory (validation
    during training must never move the model being trained).
    """
    options = options or SegmentOptions()
    card = model.card
    if hasattr(model.network, "guidance_channels"):
        raise InputError(f"model {card.name or card.architecture} is interactive (it takes clicks): use "
                         "`symmetryaware interactive` or the Slicer module's click tools")
    attention_point = None
    if options.attention_from_ras is not None:  # checked before the costly part
        if not getattr(model.network, "use_saca", False):
            raise InputError("--attention-from needs a model with symmetry-aware cross-attention (SACA)")
        attention_point = attention_point_voxel(prepared.frame, prepared.box, options.attention_from_ras)
    settings = _inference_settings(model, options, cpu_fallback, bool(getattr(model.network, "use_saca", False)))
    with torch.inference_mode():
        result, fallback = run_paired_inference(torch.from_numpy(prepared.cropped), model.network, settings, on_window, log)
    box = prepared.box
    full_shape = prepared.frame.shape
    outside = outside_probabilities(card)
    probabilities = np.empty((len(outside),) + tuple(full_shape), np.float32)
    probabilities[:] = outside[:, None, None, None]
    probabilities[(slice(None),) + box] = probabilities_from_logits(result.logits.numpy(), card)
    return Prediction(probabilities, result.attention_windows, settings, result.n_windows, result.n_encoded,
                      str(fallback.device), list(fallback.events), attention_point)


def probabilities_to_native(probabilities: np.ndarray, prepared: PreparedCase, card,
                            region: Optional[Tuple[Sequence[int], Sequence[int]]] = None) -> np.ndarray:
    """``(out, W, H, D)`` frame probabilities -> ``(out, X, Y, Z)`` float16 on the input's grid.

    Linear, one channel at a time (the float32 working copy is one channel; the result is
    kept in float16, ample for thresholds at 0.5); native voxels outside the frame get the
    background probabilities. ``region = (ijk_min, ijk_max)`` (half-open, native voxels)
    computes only that block of the input's grid, voxel for voxel what the whole grid would
    hold there (interactive updates).
    """
    outside = outside_probabilities(card)
    frame = prepared.frame
    if region is None:
        out = np.empty((probabilities.shape[0],) + tuple(frame.native_shape), np.float16)
        for c in range(probabilities.shape[0]):
            out[c] = frame.to_native(probabilities[c], "linear", fill=float(outside[c]))
        return out
    lo, hi = (np.asarray(v, int) for v in region)
    block = np.eye(4)
    block[:3, 3] = lo
    out = np.empty((probabilities.shape[0],) + tuple(int(v) for v in hi - lo), np.float16)
    for c in range(probabilities.shape[0]):
        out[c] = resample_to_grid(probabilities[c], frame.affine, frame.native_affine @ block, hi - lo, "linear",
                                  fill=float(outside[c]))
    return out


def threshold_to_native(probability: np.ndarray, prepared: PreparedCase, threshold: float, fill: float,
                        region: Tuple[Sequence[int], Sequence[int]]) -> np.ndarray:
    """``(x, y, z)`` bool block ``region`` of the input's grid: ``probability`` ``(W, H, D)`` (one
    frame channel, ``fill`` outside the frame) mapped there as :func:`probabilities_to_native`
    maps it (linear, kept in float16), then ``>= threshold``: the same labels, computed faster.

    Why it is faster and still the same: a linear value is a convex mix of its 8 frame
    neighbours, all within the 3 x 3 x 3 block around the nearest frame voxel. Where that
    block's minimum is above the threshold (or its maximum below it) by more than float16's
    rounding at the threshold, the label is decided without interpolating; only the voxels
    near a border are interpolated (the interactive session's masks at 1 mm).
    """
    import scipy.ndimage as ndi

    lo, hi = (np.asarray(v, int) for v in region)
    shape = tuple(int(v) for v in hi - lo)
    frame = prepared.frame
    block = np.eye(4)
    block[:3, 3] = lo
    m = np.linalg.inv(frame.affine) @ (frame.native_affine @ block)
    # Only the frame block the region reads (its corners' frame positions, +2 voxels: the
    # filters' reach); outside the frame stays outside (the fill), so clipping is exact.
    corners = np.array([[x, y, z] for x in (0, shape[0]) for y in (0, shape[1]) for z in (0, shape[2])], np.float64)
    where = corners @ m[:3, :3].T + m[:3, 3]
    full = np.asarray(probability.shape)
    f_lo = np.clip(np.floor(where.min(0)).astype(int) - 2, 0, full)
    f_hi = np.clip(np.ceil(where.max(0)).astype(int) + 3, 0, full)
    if np.any(f_hi <= f_lo):
        return np.full(shape, np.float16(fill) >= threshold)
    window = tuple(slice(a, b) for a, b in zip(f_lo, f_hi))
    p = np.asarray(probability, np.float32)
    sub = p[window]
    margin = 2.0 ** -9 * max(1.0, abs(threshold))  # > float16's half step near the threshold
    code = np.full(sub.shape, 2, np.uint8)  # 2: undecided
    # Filters see the whole frame's edge behaviour only where the block touches the frame's edge
    # ("nearest" there, as the linear mapping holds edge values); inside, the +2 margin covers them.
    code[ndi.minimum_filter(sub, 3, mode="nearest") >= threshold + margin] = 1
    code[ndi.maximum_filter(sub, 3, mode="nearest") < threshold - margin] = 0
    inner = np.ones(sub.shape, bool)  # block voxels whose 3^3 lies inside the block or the frame edge
    for axis in range(3):
        index = [slice(None)] * 3
        if f_lo[axis] > 0:
            index[axis] = 0
            inner[tuple(index)] = False
        if f_hi[axis] < full[axis]:
            index[axis] = -1
            inner[tuple(index)] = False
    code[~inner] = 2
    m_sub = m.copy()
    m_sub[:3, 3] -= f_lo
    outside_code = 1 if np.float16(fill) >= threshold else 0
    # Nearest frame voxel, cell semantics (outside the frame cells: fill), as resample_to_grid.
    decided = ndi.affine_transform(code, m_sub[:3, :3], m_sub[:3, 3], output_shape=shape, order=0,
                                   mode="grid-constant", cval=3)
    # 3: outside the block. Outside the frame it is the fill; a voxel inside the frame but
    # outside the block cannot be, as the block holds every corner's reach (kept exact anyway).
    beyond = decided == 3
    if beyond.any():
        idx = np.argwhere(beyond)
        coords = (m[:3, :3] @ idx.T.astype(np.float64)) + m[:3, 3:4]
        outside = np.any((coords < -0.5) | (coords >= full[:, None] - 0.5), axis=0)
        decided[tuple(idx[outside].T)] = outside_code
        decided[tuple(idx[~outside].T)] = 2
    out = decided == 1
    undecided = np.argwhere(decided == 2)
    if len(undecided):
        coords = (m[:3, :3] @ undecided.T.astype(np.float64)) + m[:3, 3:4]
        values = ndi.map_coordinates(p, coords, order=1, mode="nearest").astype(np.float16)
        out[tuple(undecided.T)] = values >= threshold
    return out


def outside_head_native(prepared: PreparedCase, spec: Preprocessing,
                        region: Optional[Tuple[Sequence[int], Sequence[int]]] = None) -> Optional[np.ndarray]:
    """``(X, Y, Z)`` bool (or the ``region`` block): input voxels that never get a label, or None.

    Models normalised ``zscore-nonzero`` only ever saw the head: voxels outside it (all
    channels 0) get no label.
    """
    if spec.normalisation != "zscore-nonzero":
        return None
    scan = prepared.image.array if prepared.image.array.ndim == 4 else prepared.image.array[None]
    if region is not None:
        scan = scan[(slice(None),) + tuple(slice(int(a), int(b)) for a, b in zip(*region))]
    return ~np.any(scan != 0, axis=0)


def _foreground(probabilities: np.ndarray, card) -> np.ndarray:
    """``(W, H, D)`` probability of any lesion label (softmax: 1 - background; regions: max)."""
    if (card.postprocessing or {}).get("activation", "softmax") == "softmax":
        return (1.0 - probabilities[0]).astype(np.float32)
    return probabilities.max(axis=0).astype(np.float32)


@dataclass
class NativeOutputs:
    """Part 3's result: everything on the input's own grid (the first channel's).

    Attributes:
        labels: ``(X, Y, Z)`` uint8 label values of the card.
        asymmetry: ``(X, Y, Z)`` float32 ``p(x) - p(mirror x)`` of the lesion probability.
        attention: mirror focus (and point attention) on the input grid with their summary
            (:class:`~.attention_maps.NativeAttentionMaps`), or None.
        zero_shot_score: the symmetry head's score in [0, 1] (:mod:`.zero_shot`), or None;
            ``zero_shot_reason`` says why it is None.
        zero_shot_map: ``(X, Y, Z)`` float32 its per-region map on the input grid, or None.
        zero_shot_head: the head's name, card and SHA-256 for the report.
    """

    labels: np.ndarray
    asymmetry: np.ndarray
    attention: Optional[NativeAttentionMaps] = None
    zero_shot_score: Optional[float] = None
    zero_shot_map: Optional[np.ndarray] = None
    zero_shot_reason: Optional[str] = None
    zero_shot_head: Optional[dict] = None


def model_symmetry_head(model: LoadedModel) -> Tuple[Optional[SymmetryHead], Optional[str]]:
    """The symmetry head the model's card names (:mod:`.zero_shot`), or ``(None, reason)``.

    Raises InputError for a head that is named but unusable: call it before heavy work.
    """
    spec = model_preprocessing(model)
    return load_symmetry_head(model.card, _card_file(model), spec, spec.network_channels(len(model.card.channels)))


def native_labels(native_probabilities: np.ndarray, prepared: PreparedCase, model: LoadedModel,
                  options: Optional["SegmentOptions"] = None, threshold: Optional[float] = None) -> np.ndarray:
    """``(X, Y, Z)`` uint8 labels on the input's grid from ``(out, X, Y, Z)`` probabilities
    already there (:func:`probabilities_to_native`): the card's rule, then 0 outside the head
    and outside the run's box. The one definition :func:`outputs_on_native` uses;
    ``threshold`` replaces ``options.threshold``, which replaces a region card's own
    (operating-point sweeps; at the same threshold the labels are exactly the segmentation's).
    """
    options = options or SegmentOptions()
    labels = labels_from_probabilities(native_probabilities, model.card,
                                       options.threshold if threshold is None else threshold)
    outside = outside_head_native(prepared, model_preprocessing(model))
    if outside is not None:
        labels[outside] = 0
    if options.roi_center_ras is not None:
        labels[~roi_mask_native(prepared.native, options.roi_center_ras, options.roi_size_mm)] = 0
    return labels


def outputs_on_native(prepared: PreparedCase, prediction: Prediction, model: LoadedModel,
                      options: Optional["SegmentOptions"] = None,
                      symmetry_head: Optional[Tuple[Optional[SymmetryHead], Optional[str]]] = None) -> NativeOutputs:
    """Part 3: probabilities and maps onto the input's grid; labels decided there.

    ``symmetry_head``: :func:`model_symmetry_head`'s result, for the zero-shot score and
    map; None computes none (evaluation needs only the labels).
    """
    options = options or SegmentOptions()
    card = model.card
    labels = native_labels(probabilities_to_native(prediction.probabilities, prepared, card), prepared, model, options)
    asymmetry = prepared.frame.to_native(signed_asymmetry(_foreground(prediction.probabilities, card)), "linear")
    attention = None
    if prediction.attention is not None:
        # The lesion for the map's summary is the frame's own reading of the probabilities.
        attention = native_attention_maps(prediction.attention, prepared.volume, prepared.box, prepared.frame,
                                          labels_from_probabilities(prediction.probabilities, card, options.threshold),
                                          prediction.attention_point, prepared.image.array)
    score, native_map, head_info = None, None, None
    head, reason = symmetry_head if symmetry_head is not None else (None, "not computed by this caller")
    if head is not None:
        result = zero_shot_for_model(prepared, head, prediction.device)
        native_map = unit_map_on_native(prepared, result.frame_map)
        score, head_info = result.score, head.describe_for(prepared.bias_correction)
    return NativeOutputs(labels, asymmetry, attention, score, native_map, reason, head_info)


def unit_map_on_native(prepared: PreparedCase, frame_map: np.ndarray) -> np.ndarray:
    """A ``[0, 1]`` map on the frame ``(W, H, D)`` (:meth:`PreparedCase.frame_map`) resampled
    onto the input's grid (linear), float32 in ``[0, 1]``, 0 outside the head."""
    native_map = np.clip(prepared.frame.to_native(frame_map, "linear"), 0.0, 1.0).astype(np.float32)
    # 0 outside the head on the input's grid too, as the mirror focus: linear resampling
    # smears the frame's head edge over a voxel of air.
    native_map[~head_mask(prepared.image.array)] = 0.0
    return native_map


def _card_file(model: LoadedModel) -> Optional[Path]:
    """The model's card file, when it was loaded from one (its head's card lies beside it)."""
    path = Path(model.source)
    return path if path.suffix == ".json" and path.is_file() else None


def _label_infos(model: LoadedModel) -> List[LabelInfo]:
    """The card's labels for the .seg.nrrd, with terminology where a known table names them."""
    known = {(t.value, t.name): t.terminology for name in LABEL_TABLES for t in label_table(name)}
    return [
        LabelInfo(l.value, l.name, tuple(c / 255.0 for c in l.color), known.get((l.value, l.name), ""))
        for l in model.card.labels
    ]


def roi_mask_native(like: Image, center, size_mm,
                    region: Optional[Tuple[Sequence[int], Sequence[int]]] = None) -> np.ndarray:
    """Voxels of ``like``'s grid (or of its ``region`` block, half-open ``(ijk_min, ijk_max)``)
    whose centres lie inside the axis-aligned RAS box ``center`` +- size / 2."""
    lo, hi = ((0, 0, 0), like.spatial_shape) if region is None else region
    shape = tuple(int(b) - int(a) for a, b in zip(lo, hi))
    ijk = np.stack(np.meshgrid(*[np.arange(int(a), int(b)) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
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

    stages = StageProgress(progress)
    started = time.perf_counter()
    check_threshold(model.card, options.threshold)  # before the heavy work
    symmetry_head = model_symmetry_head(model)  # a broken head reference fails before the heavy work

    prepared = prepare_for_model(paths, model, options, progress=stages.stage)

    stages.begin("inference")

    def on_window(done: int, total: int) -> None:
        stages.update(done / max(total, 1))
        if window_progress is not None:
            window_progress(done, total)

    prediction = predict_case(prepared, model, options, on_window)

    stages.begin("writing")
    native_outputs = outputs_on_native(prepared, prediction, model, options, symmetry_head)
    files, report = write_case_outputs(case_dir, case_id, paths, prepared, prediction, native_outputs, model, options,
                                       stages, started)
    if progress is not None:
        progress(1.0, "done")
    return CaseResult(case_id, case_dir, files, report)


def write_case_outputs(
    case_dir: Path,
    case_id: str,
    paths: Sequence[Path],
    prepared: PreparedCase,
    prediction: Prediction,
    outputs: NativeOutputs,
    model: LoadedModel,
    options: SegmentOptions,
    stages: Optional[StageProgress] = None,
    started: Optional[float] = None,
) -> Tuple[Dict[str, Path], dict]:
    """Part 4: every output file and the report into ``case_dir``, all or nothing.

    Files go into a hidden temporary folder beside ``case_dir`` that is renamed into place
    at the end. Returns ``(files, report)``.
    """
    card = model.card
    stages = stages or StageProgress(None)
    started = time.perf_counter() if started is None else started
    native = prepared.native
    plane, frame, box = prepared.plane, prepared.frame, prepared.box
    labels_native = outputs.labels
    notes: List[str] = list(model.notes) + list(prepared.notes) + list(prediction.events)
    files: Dict[str, Path] = {}
    with staged_folder(case_dir, overwrite=options.overwrite) as tmp_dir:

        def out(key: str) -> Path:
            files[key] = case_dir / OUTPUT_FILES[key]
            return tmp_dir / OUTPUT_FILES[key]

        if options.wants("labelmap"):
            write_labelmap_nifti(labels_native, native, out("labelmap"), inputs=paths)
        if options.wants("segmentation"):
            write_seg_nrrd(labels_native, native, out("segmentation"), _label_infos(model), inputs=paths)
        if outputs.attention is not None and options.wants("attention"):
            write_map(outputs.attention.mirror_focus, native, out("attention"), "uint8", paths)
        if outputs.attention is not None and outputs.attention.point_density is not None and options.wants("attention_from"):
            write_map(outputs.attention.point_density, native, out("attention_from"), "float16", paths)
        if options.wants("asymmetry"):
            write_map(outputs.asymmetry, native, out("asymmetry"), "float16", paths)
        if outputs.zero_shot_map is not None and options.wants("zero_shot"):
            write_map(outputs.zero_shot_map, native, out("zero_shot"), "float16", paths)
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
                # A map that is 1 by construction (SACA only over the whole-window bottleneck)
                # would only fill the figure with one colour: no row then.
                maps=None if outputs.attention is None or outputs.attention.summary.get("chance_level", 0.0) >= 1.0
                else {"mirror focus": outputs.attention.mirror_focus},
            )
        stages.end()
        report = lesion_report(native, labels_native, plane.normal, plane.point, names)
        # "labels" is the model's label table (value, name, colour 0-1), as the Slicer module
        # reads it; the per-label volumes move to "lesions".
        report["lesions"] = report.pop("labels")
        settings = prediction.settings
        report.update(
            {
                "case_id": case_id,
                "inputs": [str(p) for p in paths],
                "channels": [c.name for c in card.channels],
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
                "preprocessing": model_preprocessing(model).to_card(),
                "model": model.describe(),
                "device": prediction.device,
                "inference": {
                    "roi_size": list(settings.roi_size),
                    "overlap": settings.overlap,
                    "tta": settings.tta_flip,
                    "windows": prediction.n_windows,
                    "encoded_crops": prediction.n_encoded,
                    "pairing": str(getattr(model.network, "pairing", "input")),
                    # SACA, input channels or none (SASwinUNETR.counterpart_use); None for a network that does not say.
                    "counterpart": getattr(model.network, "counterpart_use", None),
                    "brain_box": [[s.start, s.stop] for s in box],
                    "labels_decided_on": "input grid (probabilities resampled linearly from the frame, then thresholded)",
                    "threshold": effective_threshold(card, options.threshold),
                    "bias_correction": prepared.bias_correction,
                },
                "maps": {
                    "attention": "uint8, value = scl_inter + scl_slope * stored, in [0, 1]: mirror focus "
                    "(see 'attention' and docs/attention.md), 0 outside the head",
                    "attention_from": "float16 precision (stored float32): SACA attention per mL of the "
                    "--attention-from point over the other hemisphere",
                    "asymmetry": "float16 precision (stored float32): p(x) - p(mirror x), foreground probability, in [-1, 1]",
                    "zero_shot": "float16 precision (stored float32): the symmetry head's per-region zero-shot "
                    "asymmetry in [0, 1] (token map resized to the brain box), 0 outside the head; only for "
                    "models whose card names a symmetry head",
                },
                "roi": None
                if options.roi_center_ras is None
                else {"center_ras": list(map(float, options.roi_center_ras)), "size_mm": list(map(float, options.roi_size_mm))},
                "zero_shot_asymmetry": None if outputs.zero_shot_score is None else {
                    "score": round(outputs.zero_shot_score, 6),
                    "map": OUTPUT_FILES["zero_shot"] if "zero_shot" in files else None,
                    "head": outputs.zero_shot_head,
                    "definition": ZERO_SHOT_DEFINITION,
                },
                "zero_shot_asymmetry_reason": outputs.zero_shot_reason,
                "attention": None if outputs.attention is None else outputs.attention.summary,
                "notes": notes,
                "software": {"symmetryaware": __version__, "torch": torch.__version__},
                "runtime_s": {**prepared.times, **stages.times, "total": round(time.perf_counter() - started, 3)},
            }
        )
        write_report_json(report, out("report"))
    return files, report
