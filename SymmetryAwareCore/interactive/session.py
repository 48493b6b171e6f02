"""InteractiveSession: click / box segmentation with a promptable SA-Swin, kept warm between clicks.

The Python API behind ``symmetryaware interactive`` (:mod:`.worker`), usable directly::

    s = InteractiveSession()
    s.load(["case_t1.nii.gz", "case_t1ce.nii.gz", "case_t2.nii.gz", "case_flair.nii.gz"])
    s.click([-30.0, 12.0, 20.0], positive=True)      # RAS mm
    s.undo(); s.save("lesion.nii.gz")

Two kinds of model are served:

- **two-stage** (the bundled ``interactive-glioma-saswin-f12``): a
  :class:`~SymmetryAwareCore.models.click_refiner.ClickRefiner` whose card names its backbone,
  an automatic SA-Swin segmentation card beside it (:func:`load_backbone`). At ``load`` the
  backbone runs ONCE over the brain box (the pipeline's mirror-paired sliding window,
  :func:`~SymmetryAwareCore.inference.pipeline.predict_box`) and its probabilities are kept;
  a click runs only the small refiner on one window (image, mirrored counterpart, backbone
  prior, guidance);
- **one-stage**: a :class:`~SymmetryAwareCore.models.promptable.PromptableSASwinUNETR`; a click
  runs the patch encoder + SACA + decoder with the counterpart's encoding cached.

What is kept between interactions: the model (and backbone); the scan prepared ONCE by the
pipeline's own preparation (:func:`SymmetryAwareCore.inference.pipeline.prepare_for_model`:
mid-sagittal plane, symmetric frame at the card's spacing, normalisation, brain box); per
window used so far, its counterpart (encoding, or image for the refiner; clicks never change
it); the backbone prior; the frame probabilities; the mask on the input's grid; an undo stack.

A click costs: guidance drawn for one ``roi_size`` window (the grid window of the brain box
whose centre is nearest the click; at the bundled model's 3 mm frame and 64^3 windows one or
two windows cover the head), ONE forward pass (refiner, or encoder + SACA + decoder), and an
update of the mask limited to where it can change (:meth:`InteractiveSession._native_region`):
only the block of the input's grid around frame voxels that changed where a label can flip
is recomputed, voxel for voxel what the whole-grid mapping gives there
(:func:`~SymmetryAwareCore.inference.pipeline.threshold_to_native` for a binary model, which
interpolates only near the mask's border).

Geometry: the mask lives on the grid of the FIRST file given to :meth:`load` (whichever channel
it is; the other channels are resampled onto it when their grids differ, as ``segment`` does
with its first channel), shape and affine exact, ``[i, j, k]`` in that file's voxel order (not
necessarily RAS). Clicks and boxes
are RAS millimetres; a click outside the image's field of view, or outside the brain box the
model works on, is refused (InputError) and changes nothing. A box limits the mask to the
voxels whose RAS centres lie inside it (as ``segment --roi-center/--roi-size``) and is a
guidance channel (its bounding box in the frame).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.ndimage as ndi
import torch

from ..errors import InputError
from ..models.promptable import GUIDANCE_NAMES
from .guidance import DEFAULT_SIGMA, Guidance, guidance_volume

__all__ = ["InteractiveSession", "EditResult", "card_interactive_block", "load_backbone", "BACKBONE_KEY", "BACKBONE_SHA_KEY",
           "CLICK_PROTOCOL", "MAX_UNDO"]

CLICK_PROTOCOL = ("first click at the object's deepest interior point (max of its distance transform); each next "
                  "click at the deepest point of the largest 6-connected error component, positive for a miss, "
                  "negative for a false positive (SymmetryAwareCore.interactive.clicker)")

MAX_UNDO = 100
"""Interactions kept for undo (each holds the changed block of the mask and the frame probabilities)."""

Region = Tuple[Tuple[int, int, int], Tuple[int, int, int]]


def card_interactive_block(click_sigma: float, region: str = "WT") -> Dict[str, Any]:
    """The model card's ``extra.interactive`` block: how guidance is encoded (the session reads it)."""
    return {
        "guidance_channels": list(GUIDANCE_NAMES),
        "click_sigma_voxels": float(click_sigma),
        "click_encoding": "Gaussian blob exp(-d^2 / (2 sigma^2)) in frame voxels, max over clicks of one kind",
        "box_encoding": "1 inside the box's bounding box in the frame, 0 elsewhere (and when there is no box)",
        "counterpart_guidance": "empty (zeros): the counterpart encoding does not depend on clicks",
        "target": f"BraTS region {region} as one binary lesion mask",
        "click_protocol": CLICK_PROTOCOL,
        "auto": True,
    }


BACKBONE_KEY = "backbone"
"""Key of a two-stage model card's ``extra.interactive``: the file name of the automatic
segmentation model's card, beside the refiner's card (its weights' SHA-256 is checked on load)."""

BACKBONE_SHA_KEY = "backbone_sha256"
"""Key beside :data:`BACKBONE_KEY`: the SHA-256 of the backbone weights the refiner was trained
on. The refiner reads the backbone's probabilities as an input channel, so other weights under
the same name (a re-bundled default) would feed it priors it never saw: refused on load."""


def load_backbone(refiner, device=None):
    """The backbone (a loaded automatic segmentation model) a two-stage refiner's card names.

    Raises InputError when it is missing, not beside the card, or prepared differently.
    """
    from ..inference.model_source import resolve_model
    from ..inference.pipeline import model_preprocessing

    name = ((refiner.card.extra or {}).get("interactive") or {}).get(BACKBONE_KEY)
    where = f"model card extra.interactive.{BACKBONE_KEY}"
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".json"):
        raise InputError(f"{where} must be the file name of a segmentation model card (.json) beside the card, "
                         f"got {name!r}")
    card_path = Path(refiner.source)
    if card_path.suffix != ".json" or not card_path.is_file():
        raise InputError(f"{where} names {name}, but the model was not loaded from a card file to look beside")
    path = card_path.parent / name
    if not path.is_file():
        raise InputError(f"backbone card named by {where} not found", path)
    backbone = resolve_model(str(path), device or "cpu")
    trained_on = ((refiner.card.extra or {}).get("interactive") or {}).get(BACKBONE_SHA_KEY)
    if trained_on and trained_on != backbone.card.sha256:
        raise InputError(f"the refiner was trained on backbone weights {str(trained_on)[:12]}..., but {name} now holds "
                         f"{str(backbone.card.sha256)[:12]}...; keep the backbone it was trained on or retrain the refiner",
                         path)
    if hasattr(backbone.network, "guidance_channels") or hasattr(backbone.network, "assemble"):
        raise InputError(f"the backbone {name} must be an automatic segmentation model", path)
    names = [c.name for c in backbone.card.channels]
    if names != [c.name for c in refiner.card.channels]:
        raise InputError(f"the backbone's channels {names} differ from the refiner's "
                         f"{[c.name for c in refiner.card.channels]}", path)
    a, b = model_preprocessing(backbone), model_preprocessing(refiner)
    for field_name in ("spacing", "normalisation", "alignment", "roi_size"):
        if getattr(a, field_name) != getattr(b, field_name):
            raise InputError(f"the backbone was trained with preprocessing.{field_name} {getattr(a, field_name)}, "
                             f"the refiner with {getattr(b, field_name)}", path)
    prior = int(getattr(refiner.network, "prior_channels", 0))
    given = getattr(backbone.network, "init_kwargs", {}).get("out_channels")
    if given is not None and prior != int(given):
        raise InputError(f"the refiner takes {prior} prior channels, the backbone gives {given}", path)
    return backbone


@dataclass
class EditResult:
    """What an edit did: the mask's voxel count and volume, the interactions so far, and the
    half-open box of the input's grid holding every voxel whose value changed (None: none)."""

    voxels: int
    volume_ml: float
    clicks: int
    changed: Optional[Region]
    seconds: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"voxels": self.voxels, "volume_ml": round(self.volume_ml, 4), "clicks": self.clicks,
                "changed": None if self.changed is None else {"ijk_min": list(self.changed[0]),
                                                              "ijk_max": list(self.changed[1])},
                "timing": {k: round(v, 4) for k, v in self.seconds.items()}}


@dataclass
class _State:
    """One undoable state: guidance (frame voxels), the RAS box, the interaction count."""

    guidance: Guidance
    box_ras: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]
    clicks: int


def _bbox(mask: np.ndarray) -> Optional[Region]:
    if not mask.any():
        return None
    idx = np.argwhere(mask)
    return tuple(int(v) for v in idx.min(0)), tuple(int(v) + 1 for v in idx.max(0))


class InteractiveSession:
    """One scan, one promptable model, one mask (see the module docstring).

    Args:
        device: ``"cpu"`` (default), ``"cuda"``, ``"auto"``...
        threads: torch CPU threads (None: leave torch's setting).
        ablation: ``None`` (the method), or how the counterpart is replaced for the benchmark's
            ablation: ``"self"`` (the window's own image channels, so SACA compares the patch
            with itself and learns nothing about the other hemisphere) or ``"zeros"``.
    """

    def __init__(self, device: str = "cpu", threads: Optional[int] = None, ablation: Optional[str] = None):
        if ablation not in (None, "self", "zeros"):
            raise ValueError(f"ablation must be None, 'self' or 'zeros', got {ablation!r}")
        from ..inference.device import resolve_device

        self.device = resolve_device(device) if device != "cpu" else torch.device("cpu")
        if threads:
            torch.set_num_threads(int(threads))
        self.ablation = ablation
        self.model = None
        self._model_name: Optional[str] = None
        self._backbone = None
        self.prepared = None
        self._reset_case()

    # ---------------------------------------------------------------- state
    def _reset_case(self) -> None:
        self.paths: List[Path] = []
        self.mask: Optional[np.ndarray] = None
        self._prob: Optional[np.ndarray] = None
        self._state = _State(Guidance(), None, 0)
        self._undo: List[Tuple[_State, np.ndarray, Optional[Region], Optional[np.ndarray]]] = []
        self._cache: Dict[Tuple[int, int, int], List[Optional[torch.Tensor]]] = {}
        self.last_changed: Optional[Region] = None
        self.notes: List[str] = []

    @property
    def loaded(self) -> bool:
        return self.prepared is not None

    def _need(self) -> None:
        if not self.loaded:
            raise InputError("no scan loaded: send load first")

    # ---------------------------------------------------------------- load
    def load(self, images: Sequence[str], model: Optional[str] = None, bias_correction: Optional[bool] = None) -> Dict[str, Any]:
        """Read and prepare the scan; keep the model. Returns what the worker replies.

        ``images``: one file (or DICOM folder) per model channel, in any order (matched by the
        card's file-name patterns, as ``segment``). ``model``: a bundled name or card path
        (default: the bundled interactive model). ``bias_correction``: True: remove each
        channel's bias field (N4) first, as ``segment --bias-correction``; False: do not;
        None: as the model card's preprocessing says.
        """
        from ..inference.cases import ChannelSpec, assign_channels
        from ..inference.model_source import list_models, resolve_model
        from ..inference.pipeline import SegmentOptions, model_preprocessing, prepare_loaded_for_model
        from ..io.case import load_case
        from ..io.image import Image

        if not isinstance(images, (list, tuple)) or not images or not all(isinstance(p, str) for p in images):
            raise InputError("images must be a non-empty list of file paths")
        paths = [Path(p) for p in images]
        for p in paths:
            if not p.exists():
                raise InputError("image not found", p)
        loaded = self.model
        if loaded is None or (model or DEFAULT_MODEL) != self._model_name:
            if model is None and not any(row["name"] == DEFAULT_MODEL for row in list_models()):
                # None is shipped yet (docs/interactive.md): say so, not just "unknown model".
                raise InputError(f"no interactive model is installed ({DEFAULT_MODEL} is missing from this "
                                 "installation, see docs/interactive.md); give a promptable model's card as \"model\"")
            loaded = resolve_model(model or DEFAULT_MODEL, self.device)
            if not hasattr(loaded.network, "guidance_channels"):
                raise InputError(f"model {loaded.card.name or model} is not promptable (no guidance channels); "
                                 f"use an interactive model such as {DEFAULT_MODEL}")
            backbone = load_backbone(loaded, self.device) if hasattr(loaded.network, "assemble") else None
        else:
            backbone = self._backbone
        names = [c.name for c in loaded.card.channels]
        ordered, notes = assign_channels(paths, [ChannelSpec(c.name, tuple(c.patterns)) for c in loaded.card.channels])
        spec = model_preprocessing(loaded)
        # Read in the GIVEN order, so the grid of every output is the first given file's, then
        # put the channels in the model's order.
        order = [paths.index(p) for p in ordered]
        given = load_case(paths, [names[ordered.index(p)] for p in paths])
        array = given.array if given.array.ndim == 4 else given.array[None]
        image = Image(np.ascontiguousarray(array[order]), given.affine, names, str(paths[0]))
        prepared = prepare_loaded_for_model(image, loaded, SegmentOptions(bias_correction=bias_correction))
        # Only now, with everything read, replace the session's case (a failed load keeps the old one).
        self.model, self._model_name, self._backbone = loaded, model or DEFAULT_MODEL, backbone
        self.prepared, self.spec = prepared, spec
        self._reset_case()
        self.paths = paths
        self.notes = list(notes) + list(prepared.notes)
        block = (loaded.card.extra or {}).get("interactive", {})
        self.sigma = float(block.get("click_sigma_voxels", DEFAULT_SIGMA))
        self.auto_available = bool(block.get("auto", False))
        self._prepare_windows()
        self.mask = np.zeros(prepared.native.spatial_shape, np.uint8)
        self._prob = np.zeros((1,) + tuple(prepared.frame.shape), np.float32)
        native = prepared.native
        self._voxel_ml = float(abs(np.linalg.det(native.affine[:3, :3]))) / 1000.0
        started = time.perf_counter()
        if self._backbone is not None:
            self._prepare_prior()
        backbone_seconds = time.perf_counter() - started
        started = time.perf_counter()
        self._counterpart(self._windows[len(self._windows) // 2])  # the central window, ready for a click
        return {
            "shape": list(native.spatial_shape),
            "affine": native.affine.tolist(),
            "grid_file": str(paths[0]),
            "channels": [c.name for c in loaded.card.channels],
            "files": {name: str(p) for name, p in zip(names, ordered)},
            "model": loaded.card.name,
            "model_version": loaded.card.version,
            "bias_correction": prepared.bias_correction,
            "plane_confidence": bool(prepared.plane.confident),
            "plane_symmetry_score": float(prepared.plane.symmetry_score),
            "auto_available": self.auto_available,
            "windows": len(self._windows),
            "notes": self.notes,
            "timing": {**prepared.times, "backbone": round(backbone_seconds, 3),
                       "counterpart_encoding": round(time.perf_counter() - started, 3)},
        }

    def _prepare_windows(self) -> None:
        """The brain box padded to the window (mirror-safe) and its window grid."""
        from ..inference.window_grid import pad_for_roi, padding_for_roi, window_starts

        roi = tuple(int(r) for r in self.spec.roi_size)
        cropped = self.prepared.cropped
        pads = padding_for_roi(cropped.shape[1:], roi)
        volume = pad_for_roi(cropped, roi)
        self._roi = roi
        self._volume = torch.from_numpy(np.ascontiguousarray(volume, np.float32))
        # Frame voxel of padded voxel 0.
        self._origin = np.array([s.start - p[0] for s, p in zip(self.prepared.box, pads)], int)
        self._windows = window_starts(volume.shape[1:], roi, 0.5)

    def _prepare_prior(self) -> None:
        """Two-stage models: the backbone's probabilities on the brain box, once per scan (the
        pipeline's mirror-paired sliding window), padded like the volume."""
        from ..inference.pipeline import predict_box
        from ..inference.window_grid import pad_for_roi

        prior = predict_box(self.prepared.cropped, self._backbone)
        self._prior = torch.from_numpy(np.ascontiguousarray(pad_for_roi(prior, self._roi)))

    def _counterpart(self, start):
        """The window's mirrored counterpart as the network uses it, cached: its encoding
        (one-stage model) or its image channels (two-stage refiner)."""
        from ..geometry.mirror import extract_counterpart

        key = tuple(int(s) for s in start)
        if key not in self._cache:
            net = self.model.network
            if self.ablation == "self":
                image = self._window(key)
            elif self.ablation == "zeros":
                image = torch.zeros((self._volume.shape[0],) + self._roi)
            else:
                image = extract_counterpart(self._volume, key, self._roi, spatial_start=1)
            image = image[None].contiguous().to(self.device)
            if hasattr(net, "assemble"):
                self._cache[key] = image
            else:
                with torch.inference_mode():
                    self._cache[key] = net.encode_counterpart(image)
        return self._cache[key]

    def _window(self, start) -> torch.Tensor:
        return self._volume[(slice(None),) + tuple(slice(s, s + r) for s, r in zip(start, self._roi))]

    # ---------------------------------------------------------------- coordinates
    def _ras_to_frame(self, ras) -> np.ndarray:
        """RAS mm -> continuous frame voxel (refused outside the image's field of view)."""
        p = np.asarray(ras, np.float64)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise InputError(f"a point needs three finite RAS coordinates in mm, got {ras!r}")
        native = self.prepared.native
        ijk = (np.linalg.inv(native.affine) @ np.append(p, 1.0))[:3]
        if np.any(ijk < -0.5) or np.any(ijk >= np.asarray(native.spatial_shape) - 0.5):
            raise InputError(f"the point RAS {[round(float(v), 2) for v in p]} mm is outside the image")
        return (np.linalg.inv(self.prepared.frame.affine) @ np.append(p, 1.0))[:3]

    def _nearest_window(self, padded_point: np.ndarray):
        centres = np.array([[s + r / 2.0 for s, r in zip(w, self._roi)] for w in self._windows])
        return self._windows[int(np.argmin(np.linalg.norm(centres - padded_point, axis=1)))]

    # ---------------------------------------------------------------- prediction
    def _predict(self, starts, guidance: Guidance) -> Tuple[np.ndarray, Dict[str, float]]:
        """New frame probabilities ``(1, W, H, D)``: ``starts`` windows re-run with ``guidance``
        (averaged where they overlap), the rest of the frame unchanged."""
        timing = {"counterpart": 0.0, "forward": 0.0}
        net = self.model.network
        prob = self._prob.copy()
        shape = self._volume.shape[1:]
        acc = np.zeros(shape, np.float32)
        count = np.zeros(shape, np.float32)
        for start in starts:
            t = time.perf_counter()
            cached = self._counterpart(start)
            timing["counterpart"] += time.perf_counter() - t
            t = time.perf_counter()
            offset = self._origin + np.asarray(start)  # frame voxel of the window's voxel 0
            guide = torch.from_numpy(guidance_volume(self._roi, guidance.shifted(offset), self.sigma))
            with torch.inference_mode():
                if hasattr(net, "assemble"):  # two-stage: the refiner on image, mirror, prior, guidance
                    prior = self._prior[(slice(None),) + tuple(slice(s, s + r) for s, r in zip(start, self._roi))]
                    x = net.assemble(self._window(start)[None].to(self.device), cached,
                                     prior[None].to(self.device), guide[None].to(self.device))
                    logits = net(x)
                else:
                    x = torch.cat([self._window(start), guide])[None].to(self.device)
                    logits = net(x, counterpart_features=cached)
            window = tuple(slice(s, s + r) for s, r in zip(start, self._roi))
            acc[window] += torch.sigmoid(logits.float())[0, 0].cpu().numpy()
            count[window] += 1
            timing["forward"] += time.perf_counter() - t
        # Padded volume -> frame: only voxels inside the brain box (the padding is not the frame).
        box = self.prepared.box
        inner = tuple(slice(b.start - o, b.stop - o) for b, o in zip(box, self._origin))
        seen = count[inner] > 0
        target = prob[0][box]
        target[seen] = acc[inner][seen] / count[inner][seen]
        return prob, timing

    def _apply(self, prob: np.ndarray, state: _State, region: Optional[Region]) -> EditResult:
        """Make ``prob`` and ``state`` current; update the mask inside ``region`` of the input's grid
        (None: where the frame change can matter); push the undo entry."""
        from ..inference.pipeline import (outside_head_native, probabilities_to_native, roi_mask_native,
                                          threshold_to_native)
        from ..inference.postprocess import labels_from_probabilities, outside_probabilities

        t = time.perf_counter()
        if region is None:
            region = self._native_region(self._prob[0], prob[0])
        changed = None
        old_block = None
        if region is not None:
            lo, hi = region
            index = tuple(slice(a, b) for a, b in zip(lo, hi))
            post = self.model.card.postprocessing or {}
            if post.get("activation") == "sigmoid" and prob.shape[0] == 1:
                # One binary channel: the same labels as the general path, computed only near borders.
                new = threshold_to_native(prob[0], self.prepared, float(post.get("threshold", 0.5)),
                                          float(outside_probabilities(self.model.card)[0]), region).astype(np.uint8)
            else:
                labels = labels_from_probabilities(probabilities_to_native(prob, self.prepared, self.model.card,
                                                                           region), self.model.card)
                new = (labels > 0).astype(np.uint8)
            outside = outside_head_native(self.prepared, self.spec, region)
            if outside is not None:
                new[outside] = 0
            if state.box_ras is not None:
                (a, b) = (np.asarray(v, np.float64) for v in state.box_ras)
                new[~roi_mask_native(self.prepared.native, (a + b) / 2.0, b - a, region)] = 0
            diff = _bbox(new != self.mask[index])
            if diff is not None:
                changed = (tuple(int(l + d) for l, d in zip(lo, diff[0])), tuple(int(l + d) for l, d in zip(lo, diff[1])))
                cindex = tuple(slice(a, b) for a, b in zip(*changed))
                old_block = self.mask[cindex].copy()
                self.mask[cindex] = new[tuple(slice(a - l, b - l) for a, b, l in zip(*changed, lo))]
        self._undo.append((self._state, self._prob, changed, old_block))
        del self._undo[:-MAX_UNDO]
        self._state, self._prob = state, prob
        self.last_changed = changed
        voxels = int(np.count_nonzero(self.mask))
        return EditResult(voxels, voxels * self._voxel_ml, state.clicks, changed,
                          {"mask_update": time.perf_counter() - t})

    def _native_region(self, old: np.ndarray, new: np.ndarray, everywhere: bool = False) -> Optional[Region]:
        """The block of the input's grid whose labels can differ between frame probabilities
        ``old`` and ``new`` (``everywhere``: the whole brain box)."""
        if everywhere:
            relevant = np.zeros(old.shape, bool)
            relevant[self.prepared.box] = True
            frame_box = _bbox(relevant)
        else:
            changed = _bbox(old != new)
            if changed is None:
                return None
            # Work on the changed block grown by 2 voxels (the two dilations' reach), not the frame.
            lo = np.maximum(np.asarray(changed[0]) - 2, 0)
            hi = np.minimum(np.asarray(changed[1]) + 2, old.shape)
            block = tuple(slice(a, b) for a, b in zip(lo, hi))
            old, new = old[block], new[block]
            # A native label is a convex mix of its 8 frame neighbours (kept in float16, whose
            # rounding near 0.5 is under 2^-9): it is 1 when they are all clearly above 0.5, 0
            # when all clearly below. So it can change only where a frame voxel changed in a
            # block that is not clearly one-sided before or after, or that went from clearly
            # above to clearly below (every voxel of such a 2^3 block sees the others in its 3^3).
            cube, margin = np.ones((3, 3, 3), bool), 2.0 ** -9
            straddle = np.zeros(old.shape, bool)
            for p in (old, new):
                straddle |= ndi.binary_dilation(p < 0.5 + margin, cube) & ndi.binary_dilation(p >= 0.5 - margin, cube)
            straddle |= (old >= 0.5 + margin) & (new < 0.5 - margin) | (old < 0.5 - margin) & (new >= 0.5 + margin)
            relevant = ndi.binary_dilation((old != new) & straddle, cube)
            frame_box = _bbox(relevant)
            if frame_box is not None:
                frame_box = (tuple(int(v) for v in np.add(frame_box[0], lo)), tuple(int(v) for v in np.add(frame_box[1], lo)))
        if frame_box is None:
            return None
        lo, hi = (np.asarray(v, np.float64) for v in frame_box)
        corners = np.array([[x, y, z] for x in (lo[0] - 1, hi[0]) for y in (lo[1] - 1, hi[1]) for z in (lo[2] - 1, hi[2])])
        to_native = np.linalg.inv(self.prepared.frame.native_affine) @ self.prepared.frame.affine
        ijk = (to_native[:3, :3] @ corners.T).T + to_native[:3, 3]
        shape = np.asarray(self.prepared.native.spatial_shape)
        a = np.clip(np.floor(ijk.min(0)).astype(int) - 1, 0, shape)
        b = np.clip(np.ceil(ijk.max(0)).astype(int) + 2, 0, shape)
        if np.any(b <= a):
            return None
        return tuple(int(v) for v in a), tuple(int(v) for v in b)

    # ---------------------------------------------------------------- edits
    def click(self, ras: Sequence[float], positive: bool = True) -> EditResult:
        """A positive (lesion here) or negative (not lesion here) click at RAS mm."""
        self._need()
        if not isinstance(positive, bool):
            raise InputError(f"positive must be true or false, got {positive!r}")
        point = self._ras_to_frame(ras)
        padded = point - self._origin
        if np.any(padded < -0.5) or np.any(padded >= np.asarray(self._volume.shape[1:]) - 0.5):
            raise InputError(f"the point RAS {[round(float(v), 2) for v in ras]} mm is outside the head region the "
                             "model works on")
        guidance = self._state.guidance.copy()
        guidance.add(point, positive)
        prob, timing = self._predict([self._nearest_window(padded)], guidance)
        result = self._apply(prob, _State(guidance, self._state.box_ras, self._state.clicks + 1), None)
        result.seconds.update(timing)
        return result

    def box(self, ras_min: Sequence[float], ras_max: Sequence[float]) -> EditResult:
        """A box (RAS mm, two opposite corners): the lesion is inside it. Replaces any earlier box."""
        self._need()
        a, b = np.asarray(ras_min, np.float64), np.asarray(ras_max, np.float64)
        if a.shape != (3,) or b.shape != (3,) or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise InputError("a box needs ras_min and ras_max, three finite RAS coordinates each (mm)")
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        if np.any(hi - lo <= 0):
            raise InputError("the box is empty (ras_min and ras_max must differ in every coordinate)")
        # Refused when it misses the image entirely.
        native = self.prepared.native
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        ijk = (np.linalg.inv(native.affine) @ np.c_[corners, np.ones(8)].T).T[:, :3]
        shape = np.asarray(native.spatial_shape)
        if np.any(ijk.max(0) < -0.5) or np.any(ijk.min(0) >= shape - 0.5):
            raise InputError("the box is outside the image")
        frame = (np.linalg.inv(self.prepared.frame.affine) @ np.c_[corners, np.ones(8)].T).T[:, :3]
        guidance = self._state.guidance.copy()
        guidance.box = (tuple(frame.min(0)), tuple(frame.max(0)))
        centre = (frame.min(0) + frame.max(0)) / 2.0 - self._origin
        prob, timing = self._predict([self._nearest_window(centre)], guidance)
        state = _State(guidance, (tuple(lo), tuple(hi)), self._state.clicks + 1)
        # The box also clears the mask outside it: the whole head may change.
        result = self._apply(prob, state, self._native_region(self._prob[0], prob[0], everywhere=True))
        result.seconds.update(timing)
        return result

    def auto(self) -> EditResult:
        """The model's result with no guidance, over every window (the automatic first pass);
        clicks and box are cleared."""
        self._need()
        if not self.auto_available:
            raise InputError(f"model {self.model.card.name} offers no automatic first pass")
        prob, timing = self._predict(self._windows, Guidance())
        result = self._apply(prob, _State(Guidance(), None, self._state.clicks + 1),
                             self._native_region(self._prob[0], prob[0], everywhere=True))
        result.seconds.update(timing)
        return result

    def reset(self) -> EditResult:
        """Empty mask, no clicks, no box (undoable)."""
        self._need()
        prob = np.zeros_like(self._prob)
        return self._apply(prob, _State(Guidance(), None, 0), _bbox(self.mask > 0))

    def undo(self) -> EditResult:
        """Back to the state before the last edit, exactly (mask, clicks, box, probabilities)."""
        self._need()
        if not self._undo:
            raise InputError("nothing to undo")
        state, prob, changed, block = self._undo.pop()
        if changed is not None:
            self.mask[tuple(slice(a, b) for a, b in zip(*changed))] = block
        self._state, self._prob = state, prob
        self.last_changed = changed
        voxels = int(np.count_nonzero(self.mask))
        return EditResult(voxels, voxels * self._voxel_ml, state.clicks, changed)

    # ---------------------------------------------------------------- output
    def save(self, path: str, region: Optional[str] = None) -> Dict[str, Any]:
        """Write the mask (uint8, 1 = lesion) atomically on the input's grid, exactly.

        ``.nii``/``.nii.gz``/``.nrrd``: the whole mask, the first channel file's shape and
        affine. ``.npy`` with ``region="changed"``: only the last changed block, ``[i, j, k]``
        of that grid, shape ``ijk_max - ijk_min`` (empty ``(0, 0, 0)`` when nothing changed).
        """
        from ..io.atomic import atomic_path
        from ..io.image import Image
        from ..io.outputs import check_output_path
        from ..io.writers import write_image, write_labelmap_nifti

        self._need()
        if not isinstance(path, str) or not path:
            raise InputError("save needs a path")
        out = Path(path)
        name = out.name.lower()
        inputs = [str(p) for p in self.paths]
        if region is not None and region != "changed":
            raise InputError(f"region must be 'changed' (or absent), got {region!r}")
        if name.endswith(".npy"):
            if region != "changed":
                raise InputError("a .npy save is for the last changed block: add \"region\": \"changed\"")
            check_output_path(out, inputs)
            changed = self.last_changed
            block = (np.zeros((0, 0, 0), np.uint8) if changed is None
                     else self.mask[tuple(slice(a, b) for a, b in zip(*changed))])
            with atomic_path(out) as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, np.ascontiguousarray(block, np.uint8))
            return {"path": str(out), "changed": None if changed is None else
                    {"ijk_min": list(changed[0]), "ijk_max": list(changed[1])}}
        if region is not None:
            raise InputError("region 'changed' is for .npy saves")
        native = self.prepared.native
        if name.endswith((".nii", ".nii.gz")):
            write_labelmap_nifti(self.mask, native, out, inputs=inputs)
        elif name.endswith(".nrrd"):
            write_image(Image(self.mask.copy(), native.affine.copy()), out, inputs=inputs)
        else:
            raise InputError("save writes .nii.gz, .nii, .nrrd, or .npy with region 'changed'", out)
        return {"path": str(out), "shape": list(self.mask.shape), "voxels": int(np.count_nonzero(self.mask))}

    def status(self) -> Dict[str, Any]:
        """Loaded?, the model, interactions so far, clicks, mask voxels, undo depth."""
        if not self.loaded:
            return {"loaded": False}
        g = self._state.guidance
        return {"loaded": True, "model": self.model.card.name, "files": [str(p) for p in self.paths],
                "shape": list(self.mask.shape), "clicks": self._state.clicks, "positive": len(g.positive),
                "negative": len(g.negative), "box": None if self._state.box_ras is None else
                {"ras_min": list(self._state.box_ras[0]), "ras_max": list(self._state.box_ras[1])},
                "voxels": int(np.count_nonzero(self.mask)), "undo_depth": len(self._undo),
                "cached_windows": len(self._cache), "windows": len(self._windows)}


DEFAULT_MODEL = "interactive-glioma-saswin-f12"
"""The bundled interactive model (its card's name)."""
