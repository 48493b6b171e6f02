"""Hemispheric attention maps that researchers can read: mirror focus and point attention.

Where the numbers come from. SACA (:mod:`SymmetryAwareCore.models.saca`) lets every token
of a window (query) attend to every token of the window's counterpart (keys): the mirrored
box, flipped, so key token ``(i, j, k)`` covers the mirror image of the region of query
token ``(i, j, k)``. The maps use the attention of the model's FINEST SACA stage
(``SASwinUNETR.attention_stage``; stage ``s`` has tokens of ``2**(s+1)`` voxels per edge:
8 at stage 2, 32 at the bottleneck), averaged over its heads, as the mirror-paired sliding
window collects it (:class:`AttentionWindows`; with left-right test-time augmentation
the flipped view's attention is put back in the direct view's layout and averaged in).

Mirror focus (:func:`mirror_focus_map`), a scalar map in ``[0, 1]``. For a query token it
is the attention mass, averaged over heads, that the token puts on the key tokens within
``radius`` tokens (Chebyshev distance, so a ``(2r+1)^3`` block, cut at the window's edge)
of its own mirror position (default 0: the mirror token itself). 1: the region looks only
at its mirror position; 0: it looks only elsewhere in the other hemisphere's window.
Uniform attention gives ``block / N`` (:func:`chance_focus`; 1/512 = 0.002 at radius 0,
27/512 = 0.053 at radius 1, on an 8^3 token grid).
Tokens become voxels by trilinear interpolation between token centres (``align_corners``
False: a token's value sits at the centre of its voxel block, constant beyond the outer
centres), windows are blended with the same Gaussian importance map as the logits
(MONAI's ``compute_importance_map``, sigma 0.125 of the window), so window seams do not
show, and the map is set to 0 outside the head (voxels where every input channel is 0).

Point attention (:func:`point_attention_map`). For one voxel ``v`` of the aligned volume:
in every window that holds ``v``, the row of the query token that holds ``v``, i.e. a
probability distribution over the counterpart's tokens, spread evenly over each token's
voxels (piecewise constant, so mass is kept exactly) and put back at the mirrored box; the
windows' distributions are averaged with weights = the Gaussian importance of ``v`` in
each window. The result is a probability mass per voxel that sums to 1 over the
counterpart boxes (less any share on padding added around volumes smaller than a window,
which :class:`PointAttention` reports).

What the maps cannot mean. They are the weights of one cross-attention layer, not a
saliency or a cause: a high focus says where the features the layer mixes in come from,
not that the model "compares" tissue, nor that the result depends on it. A token is a
block of ``stride^3`` voxels, so nothing finer than a token is resolved. All positions are
in the symmetric frame: "mirror" is the mirror across the estimated mid-sagittal plane.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map

from ..errors import InputError
from ..geometry.mirror import LR_AXIS, counterpart_start, flip_lr
from .hemispheric import mirror_token_focus, token_grid

__all__ = [
    "DEFAULT_RADIUS",
    "WindowAttention",
    "AttentionWindows",
    "PointAttention",
    "NativeAttentionMaps",
    "chance_focus",
    "flip_token_layout",
    "head_mask",
    "mirror_focus_map",
    "point_attention_map",
    "tokens_to_voxels",
    "attention_point_voxel",
    "native_attention_maps",
]

DEFAULT_RADIUS = 0
"""Mirror neighbourhood of the mirror focus, in tokens: 0, the mirror token itself (at stage 2
and 3 mm already a 24 mm block). Radius 1 (the mirror token and its 26 neighbours, 72 mm at
3 mm) saturates near 1 for any network that prefers the mirror position at all, so it hides
the differences a reader is looking for."""

Start = Tuple[int, int, int]


@dataclass
class WindowAttention:
    """One window's SACA attention.

    Attributes:
        start: window corner ``(x, y, z)`` on the engine's padded grid (x = left-right).
        weights: ``(N, N)`` float32 CPU, averaged over heads (and test-time views); rows are
            the window's tokens (queries), columns the counterpart's tokens (keys), both
            row-major over the token grid ``(gx, gy, gz)``, gx along left-right. Each row sums to 1.
    """

    start: Start
    weights: torch.Tensor


@dataclass
class AttentionWindows:
    """The attention of a whole mirror-paired sliding-window run (one SACA stage).

    Attributes:
        roi_size: window size in voxels.
        stride: voxels per token edge (``2**(stage+1)``); divides every ``roi_size``.
        stage: the SACA stage (None when the model does not say).
        padded_shape: the engine's grid after padding; ``padding``: ``(before, after)`` per axis.
        windows: one :class:`WindowAttention` per window.
        mode, sigma_scale: the importance map used to blend windows (as for the logits).
    """

    roi_size: Tuple[int, int, int]
    stride: int
    stage: Optional[int]
    padded_shape: Tuple[int, int, int]
    padding: List[Tuple[int, int]]
    windows: List[WindowAttention] = field(default_factory=list)
    mode: str = "gaussian"
    sigma_scale: float = 0.125

    @property
    def grid(self) -> Tuple[int, int, int]:
        """Token grid of a window ``roi // stride``."""
        return token_grid(self.roi_size, self.stride)

    @property
    def shape(self) -> Tuple[int, int, int]:
        """The engine's input grid (padding removed)."""
        return tuple(n - b - a for n, (b, a) in zip(self.padded_shape, self.padding))

    def importance(self) -> torch.Tensor:
        return compute_importance_map(self.roi_size, mode=self.mode, sigma_scale=self.sigma_scale, device="cpu").float()

    def _crop(self) -> Tuple[slice, slice, slice]:
        return tuple(slice(b, n - a) for (b, a), n in zip(self.padding, self.padded_shape))


@dataclass
class PointAttention:
    """Where one voxel's query token looks in the other hemisphere.

    Attributes:
        mass: ``(X, Y, Z)`` float32 on the engine's grid: attention probability per voxel.
        voxel: the query voxel; ``mirror_voxel``: its mirror ``(X - 1 - x, y, z)``.
        share_outside: attention mass on padding outside the grid (``1 - mass.sum()``).
        windows: how many windows held the voxel.
    """

    mass: np.ndarray
    voxel: Start
    mirror_voxel: Start
    share_outside: float
    windows: int


def chance_focus(grid: Sequence[int], radius: int = DEFAULT_RADIUS) -> float:
    """Mirror focus of uniform attention for a token away from the window's edge."""
    block = np.prod([min(2 * radius + 1, int(g)) for g in grid])
    return float(block / np.prod(grid))


def flip_token_layout(weights: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Reindex ``(..., N, N)`` attention for a left-right flip of both token grids.

    The flipped test-time view of a window sees the window flipped as its queries and the
    mirror box unflipped as its keys; flipping both token indices along gx puts its
    attention in the direct view's layout.
    """
    gx, gy, gz = (int(g) for g in grid)
    perm = torch.arange(gx * gy * gz).reshape(gx, gy, gz).flip(0).reshape(-1).to(weights.device)
    return weights.index_select(-2, perm).index_select(-1, perm)


def tokens_to_voxels(token_maps: torch.Tensor, roi_size: Sequence[int]) -> torch.Tensor:
    """``(B, gx, gy, gz)`` token values -> ``(B, *roi)`` voxels, trilinear between token centres."""
    return F.interpolate(token_maps[:, None].float(), size=tuple(roi_size), mode="trilinear", align_corners=False)[:, 0]


def head_mask(volume) -> np.ndarray:
    """``(X, Y, Z)`` bool: voxels where any channel of a ``(C, X, Y, Z)`` volume (or the one
    channel of an ``(X, Y, Z)`` one) is non-zero: the head of a skull-stripped, or
    background-free, scan."""
    v = np.asarray(volume)
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4:
        raise ValueError(f"volume must be (C, X, Y, Z) or (X, Y, Z), got shape {v.shape}")
    return np.any(v != 0, axis=0)


def _box(start: Sequence[int], roi: Sequence[int]) -> Tuple[slice, slice, slice]:
    return tuple(slice(int(s), int(s) + int(r)) for s, r in zip(start, roi))


def mirror_focus_map(
    attention: AttentionWindows, radius: int = DEFAULT_RADIUS, mask: Optional[np.ndarray] = None
) -> np.ndarray:
    """The blended mirror-focus map (module docstring), ``(X, Y, Z)`` float32 in ``[0, 1]``.

    Args:
        attention: from :func:`~.sliding_window.mirror_paired_sliding_window` (``return_attention``).
        radius: mirror neighbourhood in tokens.
        mask: ``(X, Y, Z)`` bool on the same grid (e.g. :func:`head_mask`); 0 outside it.

    Returns:
        the map on the engine's input grid (padding removed), axis 0 left-right.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0 tokens, got {radius}")
    grid, roi = attention.grid, attention.roi_size
    importance = attention.importance()
    acc = torch.zeros(attention.padded_shape, dtype=torch.float32)
    weight = torch.zeros(attention.padded_shape, dtype=torch.float32)
    for w in attention.windows:
        focus = mirror_token_focus(w.weights[None, None], grid, radius)  # (1, gx, gy, gz)
        box = _box(w.start, roi)
        acc[box] += importance * tokens_to_voxels(focus, roi)[0]
        weight[box] += importance
    out = (acc / weight.clamp_min(1e-12))[attention._crop()].numpy().astype(np.float32)
    out = np.clip(out, 0.0, 1.0)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != out.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the map's {out.shape}")
        out[~mask] = 0.0
    return out


def point_attention_map(attention: AttentionWindows, voxel: Sequence[int]) -> PointAttention:
    """Where the token holding ``voxel`` attends in the counterpart (module docstring).

    Args:
        attention: from the sliding window.
        voxel: ``(x, y, z)`` integer index on the engine's input grid, x = left-right.

    Returns:
        :class:`PointAttention`; its ``mass`` sums to ``1 - share_outside``.
    """
    shape = attention.shape
    v = tuple(int(round(float(c))) for c in voxel)
    if len(v) != 3 or any(c < 0 or c >= n for c, n in zip(v, shape)):
        raise ValueError(f"voxel {tuple(voxel)} is outside the grid {shape}")
    roi, stride, grid = attention.roi_size, attention.stride, attention.grid
    if any(int(r) != g * stride for r, g in zip(roi, grid)):
        raise ValueError(f"roi_size {roi} is not a whole number of {stride}-voxel tokens")
    padded = np.asarray(v) + np.asarray([b for b, _ in attention.padding])
    importance = attention.importance()
    acc = torch.zeros(attention.padded_shape, dtype=torch.float32)
    total, used = 0.0, 0
    for w in attention.windows:
        local = padded - np.asarray(w.start)
        if np.any(local < 0) or np.any(local >= np.asarray(roi)):
            continue
        alpha = float(importance[tuple(local)])
        token = np.ravel_multi_index(tuple(local // stride), grid)
        row = w.weights[token].reshape(grid).float()
        density = row
        for axis in range(3):
            density = density.repeat_interleave(stride, dim=axis)
        density = density / float(stride**3)
        # Key token (i, j, k) lies in the counterpart crop, the mirror box flipped: flip it
        # back and put it where the mirror box is.
        mirror = list(w.start)
        mirror[LR_AXIS] = counterpart_start(w.start[LR_AXIS], roi[LR_AXIS], attention.padded_shape[LR_AXIS])
        acc[_box(mirror, roi)] += alpha * flip_lr(density, 0)
        total += alpha
        used += 1
    if used == 0:
        raise ValueError(f"no window holds voxel {v}")
    mass = (acc / total)[attention._crop()].numpy().astype(np.float32)
    mirror_voxel = (shape[0] - 1 - v[0], v[1], v[2])
    return PointAttention(mass, v, mirror_voxel, float(max(0.0, 1.0 - float(mass.sum(dtype=np.float64)))), used)


# ---- the pipeline's side: frame <-> input grid, report summary -------------------------


@dataclass
class NativeAttentionMaps:
    """The maps on the input's grid, as ``segment_case`` writes them.

    Attributes:
        mirror_focus: ``(X, Y, Z)`` float32 in ``[0, 1]`` on the first input's grid, 0 outside the head.
        point_density: attention per mL on the input grid for ``--attention-from`` (or None);
            its sum times the voxel volume in mL is the share of the point's attention
            that lands on the input grid.
        summary: JSON-ready dict for report.json.
    """

    mirror_focus: np.ndarray
    point_density: Optional[np.ndarray]
    summary: Dict


def attention_point_voxel(frame, box: Sequence[slice], ras: Sequence[float]) -> Start:
    """Voxel of the brain box (the engine's grid) nearest to the RAS point ``ras`` (mm).

    Raises:
        InputError: the point is not inside the head's box in the aligned scan.
    """
    ras = np.asarray(ras, np.float64)
    if ras.shape != (3,) or not np.all(np.isfinite(ras)):
        raise InputError("--attention-from needs three numbers R,A,S in mm")
    ijk = (np.linalg.inv(frame.affine) @ np.append(ras, 1.0))[:3]
    index = np.round(ijk).astype(int)
    local = tuple(int(i - s.start) for i, s in zip(index, box))
    if any(c < 0 or c >= s.stop - s.start for c, s in zip(local, box)):
        raise InputError(
            f"--attention-from point {ras.tolist()} (RAS mm) lies outside the head's bounding box in the aligned scan"
        )
    return local


def _stats(values: np.ndarray) -> Optional[Dict]:
    if values.size == 0:
        return None
    return {"mean": round(float(values.mean()), 4), "median": round(float(np.median(values)), 4), "voxels": int(values.size)}


def native_attention_maps(
    attention: AttentionWindows,
    volume: np.ndarray,
    box: Sequence[slice],
    frame,
    labels_frame: np.ndarray,
    point_voxel: Optional[Sequence[int]] = None,
    native_volume: Optional[np.ndarray] = None,
    radius: int = DEFAULT_RADIUS,
) -> NativeAttentionMaps:
    """Mirror focus (and point attention) in the frame, summarised, then on the input grid.

    Args:
        attention: the run's :class:`AttentionWindows` (engine grid = ``volume[box]``).
        volume: ``(C, X, Y, Z)`` normalised aligned volume, the whole frame; the head is
            where a channel is non-zero.
        box: the brain box the engine ran on (slices of the frame).
        frame: the :class:`~SymmetryAwareCore.geometry.symmetric_frame.SymmetricFrame`.
        labels_frame: ``(X, Y, Z)`` labels in the frame; lesion = label > 0.
        point_voxel: the ``--attention-from`` voxel on the engine's grid
            (:func:`attention_point_voxel`), or None.
        native_volume: the input's channels on its own grid; where all are 0 the mirror
            focus is set to 0 on that grid too (linear resampling would smear the frame's
            head edge over a voxel of air).
        radius: mirror neighbourhood in tokens.
    """
    head = head_mask(volume)
    box = tuple(box)
    focus = np.zeros(head.shape, np.float32)
    focus[box] = mirror_focus_map(attention, radius, head[box])
    lesion = np.asarray(labels_frame) > 0
    mirror_region = flip_lr(lesion) & ~lesion & head
    inside, mirrored = focus[lesion & head], focus[mirror_region]
    summary: Dict = {
        "map": "mirror focus: per voxel, the attention mass (mean over heads) of its SACA token on the "
        f"counterpart tokens within {radius} token(s) of its mirror position; 0 = none, 1 = all; 0 outside the head",
        "saca_stage": attention.stage,
        "token_voxels": attention.stride,
        "token_mm": [round(float(s) * attention.stride, 2) for s in frame.spacing],
        "radius_tokens": radius,
        "chance_level": float(f"{chance_focus(attention.grid, radius):.4g}"),
        "lesion_source": "the model's own segmentation (label > 0); its mirror across the plane, minus the lesion",
        "head": _stats(focus[head]),
        "lesion": _stats(inside),
        "contralateral_mirror": _stats(mirrored),
        "lesion_minus_mirror": None
        if inside.size == 0 or mirrored.size == 0
        else round(float(inside.mean() - mirrored.mean()), 4),
    }
    if chance_focus(attention.grid, radius) >= 1.0:
        summary["note"] = (
            f"the mirror neighbourhood ({radius} token(s)) holds every token of a window ({attention.grid}), so the "
            "focus is 1 by construction and carries no information; maps need SACA at a finer stage"
        )
    native_focus = np.clip(frame.to_native(focus, "linear"), 0.0, 1.0).astype(np.float32)
    if native_volume is not None:
        native_focus[~head_mask(native_volume)] = 0.0
    density = None
    if point_voxel is not None:
        point = point_attention_map(attention, point_voxel)
        mass = np.zeros(head.shape, np.float32)
        mass[box] = point.mass
        voxel_ml = float(np.prod(frame.spacing)) / 1000.0
        density = np.clip(frame.to_native(mass / voxel_ml, "linear"), 0.0, None).astype(np.float32)
        offset = np.asarray([s.start for s in box])

        def ras(local):
            return [round(float(c), 2) for c in (frame.affine @ np.append(np.asarray(local) + offset, 1.0))[:3]]

        peak = np.unravel_index(int(np.argmax(point.mass)), point.mass.shape)
        native_ml = float(np.prod(np.linalg.norm(frame.native_affine[:3, :3], axis=0))) / 1000.0
        summary["point"] = {
            "query_ras": ras(point.voxel),
            "mirror_ras": ras(point.mirror_voxel),
            "peak_ras": ras(peak),
            "peak_to_mirror_mm": round(float(np.linalg.norm(np.subtract(ras(peak), ras(point.mirror_voxel)))), 2),
            "share_in_head": round(float(mass[head].sum()), 4),
            "share_on_input_grid": round(float(density.sum() * native_ml), 4),
            "windows": point.windows,
            "map": "attention_from: attention per mL of the query point's SACA token over the counterpart; "
            "integrates to 1 over the mirrored windows",
        }
    return NativeAttentionMaps(native_focus, density, summary)
