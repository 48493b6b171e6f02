"""Mirror-paired sliding-window inference, the engine of SA-Swin segmentation.

Input: a volume aligned to its mid-sagittal plane, RAS, ``(C, X, Y, Z)`` with axis 1
(spatial axis 0, X) the left-right axis and the plane at its centre. Each window is
paired with ITS counterpart cut from the whole volume
(:func:`~SymmetryAwareCore.geometry.mirror.extract_counterpart`: the mirrored box,
flipped), never with a flip of itself.

The model contract (SASwinUNETR and any test double)::

    model.forward_features(x: (B, C, *roi)) -> list of tensors, batch first (opaque here)
    model.forward_head(features, features_counterpart, return_attention=False)
        -> logits (B, out, *roi)  or  (logits, attention (B, heads, Nq, Nk))
    model.attention_token_stride  (optional, default 32: the bottleneck)
    model.attention_stage         (optional, recorded with the attention)
    model.pairing                 (optional, default "input"; see below)
    model.counterpart_channels    (optional, default False; see below)

with ``Nq == Nk`` the tokens of the SACA stage the head returns (SASwinUNETR: its finest),
grid ``roi // attention_token_stride``, row-major over (x, y, z).

Encoder work. The encoder is not flip-equivariant, so a window's own features and the
features of its flipped counterpart are different computations. The window grid is
closed under the mirror (:mod:`.window_grid`), so the distinct encoder inputs of a whole
run are exactly: every window crop, and every window's counterpart crop (the flip of
the mirror window). Each is encoded once: ``2 * n_windows`` crops (a window centred on
the plane is its own mirror, but its counterpart is its flip, still a distinct crop).
Reusing a window's features as its mirror's counterpart features would halve that, and
be wrong: the encoder sees the counterpart flipped. No more is needed for
left-right test-time augmentation (``tta_flip``): flipping the whole volume turns window
``a`` into the counterpart crop of window ``a'`` and its counterpart into window ``a'``
itself, so the flipped pass only adds decoder (head) work. A network whose head reads
nothing from the counterpart (SACA off) needs no counterpart crop: ``n_windows`` crops
without ``tta_flip``.

Mirror-pair models (``model.pairing == "mirror-pair"``, :data:`~SymmetryAwareCore.models.sa_swin_unetr.PAIRINGS`,
docs/pairing.md) were trained to segment the counterpart crop too, so without ``tta_flip``
each mirror pair of windows ``(a, a')`` (``a`` the one nearer x = 0) costs two encoder
passes, not four: window ``a`` and its counterpart crop ``flip(a')``. The head on ``a``
with context ``flip(a')`` gives ``a``'s logits; the head on ``flip(a')`` with context ``a``
gives the logits of ``flip(a')``, flipped back onto window ``a'``. So ``n_encoded ==
n_windows`` on a grid whose x count is even, and one head per window. A window centred on
the plane is its own mirror and still needs its flip encoded, as its context
(``n_encoded = n_windows + n_plane``). The head could also run on that flip (a flip-TTA
of that window at no encoder cost); it does not: the head (decoder) is most of a window's
cost at small widths, and a TTA of the plane column only would make it differ in kind
from the rest of the volume. So every window gets one head, its direct view or (the
mirror windows ``a'``) the flipped one. With ``tta_flip`` every crop is encoded as in the
input path and every window gets both views, which is what a mirror-pair model's TTA is;
the result is then the same as the input path's with ``tta_flip``.

A model with ``counterpart_channels`` (a plain Swin UNETR given the counterpart as extra
input channels, SASwinUNETR's setting) encodes each crop stacked with its counterpart on
the channel axis: window ``s`` as ``[window s, counterpart crop of s]`` and, where a view
needs it, the counterpart crop of ``s`` as ``[counterpart crop of s, window s]`` (each
crop is the other's counterpart). Its head reads nothing else, so it costs ``n_windows``
encoder passes without ``tta_flip``, as SACA off does.

Memory. Windows are handled in groups of mirror pairs; a group's hidden states are
cached on the compute device until every head of the group has run, then dropped. At
most ``sw_batch_size + 3`` crops' hidden states are held at once (a group closes as soon
as it has ``sw_batch_size`` crops, and one pair adds at most 4; 2 in mirror-pair
inference without TTA, so ``sw_batch_size + 1``). A model with a
``counterpart_feature_indices`` attribute (the hidden states its head reads from the
counterpart; SASwinUNETR: the bottleneck only) lets counterpart crops keep only those
when ``tta_flip`` is off, so about half the cache is skip features of windows; one whose
head reads nothing from it (SACA off) has no counterpart crop encoded at all. The padded
input and the blending accumulators live on the compute device in float32: ``(C + out + 1)``
volumes (on a GPU as in MONAI's sliding window; the blended logits cross to the host once,
divided in place). With attention, each window's head-averaged ``(N, N)`` attention is
copied to the host per batch and kept there (``4 N^2`` bytes a window: 1 MiB at
stage 2 of a 64^3 window, 12 MiB of a 96^3 one) and the maps are built from them
(:mod:`.attention_maps`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map

from ..geometry.mirror import extract_counterpart, flip_lr
from ..models.sa_swin_unetr import PAIRINGS
from .device import autocast, resolve_device
from .attention_maps import DEFAULT_RADIUS, AttentionWindows, WindowAttention, flip_token_layout, mirror_focus_map
from .hemispheric import BOTTLENECK_STRIDE, token_grid
from .window_grid import mirror_pairs, padding_for_roi, window_starts

__all__ = ["PairedResult", "mirror_paired_sliding_window"]

Start = Tuple[int, int, int]
# A crop the encoder sees: ("window", start) is volume[box]; ("counterpart", start) is
# extract_counterpart(volume, start, roi), the flipped mirror of that box.
CropKey = Tuple[str, Start]


@dataclass
class PairedResult:
    """What :func:`mirror_paired_sliding_window` returns.

    Attributes:
        logits: ``(out, X, Y, Z)`` float32 CPU tensor on the input grid (X = left-right).
        attention: ``(X, Y, Z)`` float32 CPU tensor, the mirror focus of the attention
            stage (:func:`.attention_maps.mirror_focus_map`, not masked), blended like the
            logits; None unless asked for.
        attention_windows: every window's head-averaged attention, from which
            :mod:`.attention_maps` builds the maps; None unless asked for.
        n_windows: windows in the grid (after padding).
        n_encoded: crops passed through ``forward_features`` (each distinct crop once):
            ``2 * n_windows`` with input pairing, ``n_windows + n_plane`` with mirror-pair
            pairing without TTA (see the module docstring), ``n_windows`` for a model whose
            head reads nothing from the counterpart (empty ``counterpart_feature_indices``)
            without TTA.
        windows: the window start corners on the padded grid.
        padding: ``(before, after)`` per spatial axis that was added and cropped away.
        pairing: the pairing that ran (``"input"`` or ``"mirror-pair"``).
    """

    logits: torch.Tensor
    attention: Optional[torch.Tensor] = None
    n_windows: int = 0
    n_encoded: int = 0
    windows: List[Start] = field(default_factory=list)
    padding: List[Tuple[int, int]] = field(default_factory=list)
    attention_windows: Optional[AttentionWindows] = None
    pairing: str = "input"


def _as_volume(volume) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(volume) if isinstance(volume, np.ndarray) else volume)
    if t.ndim != 4:
        raise ValueError(f"volume must be (C, X, Y, Z) with X the left-right axis, got shape {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float32)


def _crop(volume: torch.Tensor, key: CropKey, roi: Sequence[int]) -> torch.Tensor:
    kind, start = key
    if kind == "window":
        return volume[(slice(None),) + tuple(slice(s, s + r) for s, r in zip(start, roi))]
    return extract_counterpart(volume, start, roi, spatial_start=1)


def _crop_with_counterpart(volume: torch.Tensor, key: CropKey, roi: Sequence[int]) -> torch.Tensor:
    """``[crop, its counterpart]`` on the channel axis: a window's counterpart is its counterpart
    crop, and the counterpart crop's counterpart is the window (the mirror relation is an
    involution), so either kind of key has one."""
    kind, start = key
    partner = ("counterpart" if kind == "window" else "window", start)
    return torch.cat([_crop(volume, key, roi), _crop(volume, partner, roi)])


def _group_pairs(pairs, sw_batch_size: int, two_crops_a_pair: bool = False) -> List[List[Tuple[Start, Start]]]:
    groups, current, crops = [], [], 0
    for start, mirror in pairs:
        current.append((start, mirror))
        crops += 2 if (start == mirror or two_crops_a_pair) else 4
        if crops >= sw_batch_size:
            groups.append(current)
            current, crops = [], 0
    if current:
        groups.append(current)
    return groups


def mirror_paired_sliding_window(
    volume,
    model,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    mode: str = "gaussian",
    device: Union[str, torch.device, None] = "cpu",
    amp_dtype: Optional[torch.dtype] = None,
    return_attention: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
    tta_flip: bool = False,
    sigma_scale: float = 0.125,
    pad_value: float = 0.0,
    attention_radius: int = DEFAULT_RADIUS,
    pairing: Optional[str] = None,
) -> PairedResult:
    """Segment an aligned volume window by window, each window paired with its counterpart.

    Args:
        volume: ``(C, X, Y, Z)`` numpy array or tensor, RAS, aligned so that the
            mid-sagittal plane is the centre of X (the left-right axis).
        model: follows the contract in the module docstring, already on ``device`` and in
            eval mode (this function does not change either).
        roi_size: window ``(rx, ry, rz)``; each a multiple of 32 for SwinUNETR-style models.
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
        sw_batch_size: crops per encoder call and windows per head call.
        mode: ``"gaussian"`` or ``"constant"`` blending (monai's importance map).
        device: where the model runs (see :func:`.device.resolve_device`).
        amp_dtype: autocast dtype (``torch.float16`` on CUDA...), or None for full precision.
        return_attention: also collect the attention of the model's attention stage and
            build the mirror-focus map.
        progress: called as ``progress(done_windows, total_windows)`` after each window.
        tta_flip: average with the prediction on the left-right flipped volume, flipped
            back (head work only for a network with SACA; twice the encoder passes for one
            without SACA or with ``counterpart_channels``: see the module docstring).
        sigma_scale: Gaussian sigma as a fraction of the window size.
        pad_value: value of the padding added to volumes smaller than the window.
        attention_radius: token neighbourhood of the mirror position counted as "mirror"
            in ``PairedResult.attention``.
        pairing: ``"input"`` or ``"mirror-pair"`` (see the module docstring); None (the
            default) takes the model's ``pairing`` attribute, which a model card sets,
            else ``"input"``.

    Returns:
        :class:`PairedResult` on the CPU, on the input grid.
    """
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be at least 1, got {sw_batch_size}")
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != 3 or min(roi) < 1:
        raise ValueError(f"roi_size must be 3 positive sizes, got {tuple(roi_size)}")
    pairing = getattr(model, "pairing", "input") if pairing is None else pairing
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    # With TTA every crop is needed anyway and every window gets both views: the input path.
    shared = pairing == "mirror-pair" and not tta_flip
    device = resolve_device(device)
    # The volume, the blend and its weights live on the compute device, as in MONAI's
    # sliding_window_inference: on a GPU, copying every window's logits to the host and
    # blending them there serialised the pipeline (measured on an H200, docs/pairing.md).
    vol = _as_volume(volume).to(device)
    shape = tuple(vol.shape[1:])

    padding = padding_for_roi(shape, roi)
    if any(b or a for b, a in padding):
        # F.pad lists the last axis first.
        flat = [p for pair in reversed(padding) for p in pair]
        vol = F.pad(vol, flat, mode="constant", value=pad_value)
    padded_shape = tuple(vol.shape[1:])

    starts = window_starts(padded_shape, roi, overlap)
    groups = _group_pairs(mirror_pairs(starts, roi, padded_shape), sw_batch_size, two_crops_a_pair=shared)
    importance = compute_importance_map(roi, mode=mode, sigma_scale=sigma_scale, device=device).float()
    stride = int(getattr(model, "attention_token_stride", None) or BOTTLENECK_STRIDE)
    grid = token_grid(roi, stride) if return_attention else None
    n_tokens = int(np.prod(grid)) if grid is not None else 0

    out_sum: Optional[torch.Tensor] = None
    weight_sum = torch.zeros(padded_shape, dtype=torch.float32, device=device)
    # Per window: the sum of its views' head-averaged attention, and the number of views.
    att_sum: Dict[Start, torch.Tensor] = {}
    att_views: Dict[Start, int] = {}
    n_encoded, done, total = 0, 0, len(starts)

    # Without TTA a counterpart crop only feeds the head's counterpart side; a model that
    # says which hidden states that side reads lets the cache drop the rest. In mirror-pair
    # inference counterpart crops are also heads' own crops: keep everything.
    keep = getattr(model, "counterpart_feature_indices", None)
    keep = None if tta_flip or shared or keep is None else set(int(i) for i in keep)
    # A head that reads nothing from the counterpart (SACA off: a plain Swin UNETR card) needs
    # no counterpart crop at all; encoding them anyway doubled such a model's encoder work.
    no_context = keep is not None and not keep
    cut = _crop_with_counterpart if getattr(model, "counterpart_channels", False) else _crop

    def encode(keys: List[CropKey]) -> Dict[CropKey, List[Optional[torch.Tensor]]]:
        cache: Dict[CropKey, List[Optional[torch.Tensor]]] = {}
        for i in range(0, len(keys), sw_batch_size):
            chunk = keys[i : i + sw_batch_size]
            batch = torch.stack([cut(vol, k, roi) for k in chunk])
            with autocast(device, amp_dtype):
                hidden = model.forward_features(batch)
            for b, key in enumerate(chunk):
                only_counterpart = keep is not None and key[0] == "counterpart"
                cache[key] = [
                    None if only_counterpart and n not in keep else h[b : b + 1] for n, h in enumerate(hidden)
                ]
            del hidden, batch
        return cache

    def stack(entries: List[Optional[torch.Tensor]]) -> Optional[torch.Tensor]:
        return None if any(e is None for e in entries) else torch.cat(entries)

    with torch.no_grad():
        for group in groups:
            windows = [s for pair in group for s in dict.fromkeys(pair)]
            # One head job per (window, view): the direct view (own crop "window" s, context
            # its counterpart crop), and the view from the flipped volume (own crop the
            # counterpart crop of the mirror window m, context window m), whose output is
            # flipped back onto s. Input pairing: the direct view of every window, plus the
            # flipped view with TTA. Mirror-pair: pair (a, m) gives a's direct view and m's
            # flipped view from the same two crops (a window on the plane: its direct view).
            jobs = []
            if shared:
                for a, m in group:
                    jobs.append((a, ("window", a), ("counterpart", a), False))
                    if m != a:
                        jobs.append((m, ("counterpart", a), ("window", a), True))
            else:
                for s in windows:
                    jobs.append((s, ("window", s), ("counterpart", s), False))
                    if tta_flip:
                        m = (padded_shape[0] - roi[0] - s[0],) + s[1:]
                        jobs.append((s, ("counterpart", m), ("window", m), True))
            if shared:
                keys = list(dict.fromkeys(k for job in jobs for k in job[1:3]))
            elif no_context:  # every window, nothing else
                keys = [("window", s) for s in windows]
            else:  # every window and its counterpart crop, in window order
                keys = list(dict.fromkeys(k for s in windows for k in (("window", s), ("counterpart", s))))
            cache = encode(keys)
            n_encoded += len(keys)
            views_left = {s: 0 for s in windows}
            for s, *_ in jobs:
                views_left[s] += 1
            # Each view of a window weighs 1 / its views (exact for 1 and 2: TTA's halves give
            # the same bits as the plain sum), so every window weighs the same in the blend.
            view_weight = {s: importance if n == 1 else importance * (1.0 / n) for s, n in views_left.items()}

            for i in range(0, len(jobs), sw_batch_size):
                chunk = jobs[i : i + sw_batch_size]
                n_hidden = len(cache[chunk[0][1]])
                own = [stack([cache[j[1]][h] for j in chunk]) for h in range(n_hidden)]
                mirror = [None] * n_hidden if no_context else [stack([cache[j[2]][h] for j in chunk]) for h in range(n_hidden)]
                with autocast(device, amp_dtype):
                    output = model.forward_head(own, mirror, return_attention=return_attention)
                logits, attention = output if return_attention else (output, None)
                if return_attention and attention is None:
                    raise ValueError("return_attention was asked for but the model's head returned no attention")
                logits = logits.float()
                if attention is not None:
                    if attention.ndim != 4 or tuple(attention.shape[-2:]) != (n_tokens, n_tokens):
                        raise ValueError(
                            f"attention of shape {tuple(attention.shape)} does not match the token grid {grid} "
                            f"(roi {roi} // token stride {stride})"
                        )
                    attention = attention.float().mean(dim=1).cpu()  # (B, Nq, Nk), heads averaged
                for b, (s, _, _, flip_back) in enumerate(chunk):
                    box = tuple(slice(a, a + r) for a, r in zip(s, roi))
                    win = flip_lr(logits[b], 1) if flip_back else logits[b]
                    if out_sum is None:
                        out_sum = torch.zeros((win.shape[0],) + padded_shape, dtype=torch.float32, device=device)
                    out_sum[(slice(None),) + box] += view_weight[s] * win
                    weight_sum[box] += view_weight[s]
                    if attention is not None:
                        a = flip_token_layout(attention[b], grid) if flip_back else attention[b]
                        att_sum[s] = att_sum[s] + a if s in att_sum else a.clone()
                        att_views[s] = att_views.get(s, 0) + 1
                    views_left[s] -= 1
                    if views_left[s] == 0:
                        done += 1
                        if progress is not None:
                            progress(done, total)
            del cache

    crop = tuple(slice(b, n - a) for (b, a), n in zip(padding, padded_shape))
    out_sum.div_(weight_sum)  # in place: no second full-size volume on the device
    logits = out_sum[(slice(None),) + crop].cpu().contiguous()
    attention_map, windows_attention = None, None
    if return_attention:
        windows_attention = AttentionWindows(
            roi, stride, getattr(model, "attention_stage", None), padded_shape, padding,
            [WindowAttention(s, att_sum[s] / att_views[s]) for s in starts], mode, sigma_scale,
        )  # fmt: skip
        attention_map = torch.from_numpy(mirror_focus_map(windows_attention, attention_radius))
    return PairedResult(logits, attention_map, total, n_encoded, list(starts), padding, windows_attention, pairing)
