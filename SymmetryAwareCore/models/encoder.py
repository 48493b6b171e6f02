"""The shared pieces of every SA-Swin network: MONAI's Swin encoder and the SACA stages.

The encoder is :class:`monai.networks.nets.swin_unetr.SwinTransformer`, built with the
arguments MONAI's ``SwinUNETR`` gives it and stored under the same attribute name
(``swinViT``), so MONAI weights load key for key.

Hidden states. ``encode`` returns the list ``[x, h0, h1, h2, h3, h4]``:

============  ======================  =======================  ==========================
index         what                    channels                 spatial size
============  ======================  =======================  ==========================
0             the input ``x`` itself  ``in_channels``          ``(X, Y, Z)``
1 (``h0``)    patch embedding         ``feature_size``         ``/2``
2 (``h1``)    Swin stage 1            ``2 * feature_size``     ``/4``
3 (``h2``)    Swin stage 2            ``4 * feature_size``     ``/8``
4 (``h3``)    Swin stage 3            ``8 * feature_size``     ``/16``
5 (``h4``)    Swin stage 4            ``16 * feature_size``    ``/32`` (the bottleneck)
============  ======================  =======================  ==========================

``x`` is kept because MONAI's SwinUNETR feeds the raw input to ``encoder1`` (the
full-resolution skip). SACA stage ``s`` (1..4) works on ``h_s`` = list index ``s + 1``.
Axis 2 of every tensor (first spatial) is left-right.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from monai.networks.nets.swin_unetr import MERGING_MODE, SwinTransformer

from .saca import SACABlock

__all__ = [
    "SACA_STAGES",
    "apply_saca",
    "counterpart_indices",
    "encode_pair",
    "STRIDE",
    "build_swin_encoder",
    "build_saca_stages",
    "check_spatial_input",
    "encode",
    "stage_index",
    "token_grid_shape",
    "unused_stage_parameters",
]

STRIDE = 32
"""Every spatial size must be divisible by this (patch 2 then four 2x mergings)."""

SACA_STAGES = (1, 2, 3, 4)
"""Swin stages SACA may sit after; 4 is the bottleneck (the paper's choice)."""


def stage_index(stage: int) -> int:
    """Index in the hidden-state list of Swin stage ``stage`` (``h_stage``)."""
    return stage + 1


def token_grid_shape(spatial_shape: Sequence[int], stage: int = 4) -> Tuple[int, int, int]:
    """Token grid ``(X, Y, Z) // 2**(stage + 1)`` of SACA stage ``stage``.

    At the bottleneck (stage 4) a 96^3 window gives 3x3x3 tokens; token ``n`` is grid
    position ``(n // (Y'*Z'), (n // Z') % Y', n % Z')`` and covers the voxels
    ``[32 i, 32 i + 32)`` along each axis (first axis left-right).
    """
    if stage not in SACA_STAGES:
        raise ValueError(f"stage must be one of {SACA_STAGES}, got {stage}")
    factor = 2 ** (stage + 1)
    return tuple(int(s) // factor for s in spatial_shape)


def build_swin_encoder(
    in_channels: int,
    feature_size: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    window_size: Union[Sequence[int], int],
    qkv_bias: bool,
    mlp_ratio: float,
    drop_rate: float,
    attn_drop_rate: float,
    dropout_path_rate: float,
    patch_norm: bool,
    use_checkpoint: bool,
    downsample: str,
    use_v2: bool,
) -> SwinTransformer:
    """MONAI's 3D Swin encoder with SwinUNETR's wiring (patch size 2, LayerNorm)."""
    if in_channels <= 0:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    if feature_size <= 0 or feature_size % 12 != 0:
        raise ValueError(f"feature_size must be a positive multiple of 12, got {feature_size}")
    if len(depths) != 4 or len(num_heads) != 4:
        raise ValueError(f"depths and num_heads need 4 entries (one per Swin stage), got {depths}, {num_heads}")
    if any(d <= 0 for d in depths) or any(h <= 0 for h in num_heads):
        raise ValueError(f"depths and num_heads must be positive, got {depths}, {num_heads}")
    for i, h in enumerate(num_heads):
        if (feature_size * 2**i) % h != 0:
            raise ValueError(f"stage {i + 1} width {feature_size * 2**i} is not divisible by num_heads {h}")
    for name, rate in (("drop_rate", drop_rate), ("attn_drop_rate", attn_drop_rate), ("dropout_path_rate", dropout_path_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {rate}")
    if downsample not in MERGING_MODE:
        raise ValueError(f"downsample must be one of {tuple(MERGING_MODE)}, got {downsample!r}")
    window = (window_size,) * 3 if isinstance(window_size, int) else tuple(window_size)
    if len(window) != 3 or min(window) <= 0:
        raise ValueError(f"window_size must be a positive int or 3 ints, got {window_size}")
    return SwinTransformer(
        in_chans=in_channels,
        embed_dim=feature_size,
        window_size=window,
        patch_size=(2, 2, 2),
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        mlp_ratio=mlp_ratio,
        qkv_bias=qkv_bias,
        drop_rate=drop_rate,
        attn_drop_rate=attn_drop_rate,
        drop_path_rate=dropout_path_rate,
        norm_layer=nn.LayerNorm,
        patch_norm=patch_norm,
        use_checkpoint=use_checkpoint,
        spatial_dims=3,
        downsample=MERGING_MODE[downsample],
        use_v2=use_v2,
    )


def build_saca_stages(
    feature_size: int,
    num_heads: Sequence[int],
    saca_stages: Sequence[int],
    saca_heads: Optional[Union[int, Sequence[int]]],
    saca_mlp_ratio: float,
    saca_dropout_rate: float,
    saca_position_encoding: Optional[str],
) -> nn.ModuleDict:
    """One :class:`SACABlock` per stage in ``saca_stages``, keyed ``"stage<s>"``.

    ``saca_heads``: ``None`` uses the Swin stage's own head count (``num_heads[s - 1]``),
    an int is used at every stage, a sequence gives one count per entry of ``saca_stages``.
    """
    stages = tuple(int(s) for s in saca_stages)
    if not stages:
        raise ValueError("saca_stages is empty; set use_saca=False for a network without SACA")
    if len(set(stages)) != len(stages) or any(s not in SACA_STAGES for s in stages):
        raise ValueError(f"saca_stages must be distinct values from {SACA_STAGES}, got {tuple(saca_stages)}")
    if saca_heads is None:
        heads = [num_heads[s - 1] for s in stages]
    elif isinstance(saca_heads, int):
        heads = [saca_heads] * len(stages)
    else:
        heads = [int(h) for h in saca_heads]
        if len(heads) != len(stages):
            raise ValueError(f"saca_heads has {len(heads)} entries for {len(stages)} saca_stages")
    blocks = nn.ModuleDict()
    for s, h in zip(stages, heads):
        width = feature_size * 2**s
        if h <= 0 or width % h != 0:
            raise ValueError(f"SACA at stage {s}: width {width} is not divisible by saca_heads {h}")
        blocks[f"stage{s}"] = SACABlock(
            hidden_size=width,
            num_heads=h,
            mlp_ratio=saca_mlp_ratio,
            dropout_rate=saca_dropout_rate,
            position_encoding=saca_position_encoding,
        )
    return blocks


def check_spatial_input(x: torch.Tensor, in_channels: int, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is ``(B, in_channels, X, Y, Z)`` with sizes divisible by 32."""
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, C, X, Y, Z) tensor, got {shape}")
    if x.shape[1] != in_channels:
        raise ValueError(f"{name} has {x.shape[1]} channels, the network expects {in_channels}")
    bad = [s for s in x.shape[2:] if s % STRIDE != 0 or s == 0]
    if bad:
        raise ValueError(f"{name} spatial shape {tuple(x.shape[2:])} must be divisible by {STRIDE}")


def encode(swin: SwinTransformer, x: torch.Tensor, normalize: bool, last_stage: int = 4) -> List[Optional[torch.Tensor]]:
    """``[x, h0, h1, h2, h3, h4]`` (see the module docstring).

    ``last_stage`` < 4 stops after Swin stage ``last_stage``: the deeper entries are None and
    their stages are not run. A head that reads only stage 1 (the lesion map) then skips about
    half of the encoder's work; ``h0 .. h_last`` are exactly what the full pass gives (the
    same modules in the same order as MONAI's ``SwinTransformer.forward``, which runs them all).
    """
    if last_stage == 4:
        return [x] + list(swin(x, normalize))
    if last_stage not in SACA_STAGES:
        raise ValueError(f"last_stage must be one of {SACA_STAGES}, got {last_stage}")
    h = swin.pos_drop(swin.patch_embed(x))
    out: List[Optional[torch.Tensor]] = [x, swin.proj_out(h, normalize)]
    for stage in range(1, last_stage + 1):
        if swin.use_v2:
            h = getattr(swin, f"layers{stage}c")[0](h.contiguous())
        h = getattr(swin, f"layers{stage}")[0](h.contiguous())
        out.append(swin.proj_out(h, normalize))
    return out + [None] * (4 - last_stage)


def unused_stage_parameters(swin: SwinTransformer, last_stage: int) -> List[nn.Parameter]:
    """Parameters of the Swin stages after ``last_stage``, which ``encode(..., last_stage)`` never runs."""
    params: List[nn.Parameter] = []
    for stage in range(last_stage + 1, 5):
        for name in (f"layers{stage}", f"layers{stage}c"):
            module = getattr(swin, name, None)
            if module is not None:
                params += list(module.parameters())
    return params


def apply_saca(
    saca: nn.ModuleDict,
    features: Sequence[torch.Tensor],
    features_counterpart: Sequence[Optional[torch.Tensor]],
    attention_stage: Optional[int],
) -> Tuple[List[torch.Tensor], Optional[torch.Tensor]]:
    """Replace ``h_s`` by ``SACA(h_s, h~_s)`` for every SACA stage.

    Returns the new hidden-state list and the attention of ``attention_stage`` (or None).
    """
    if features_counterpart is None:
        raise ValueError("this network uses SACA: pass the counterpart's features")
    if len(features_counterpart) != len(features):
        raise ValueError(
            f"features_counterpart has {len(features_counterpart)} entries, features has {len(features)}"
        )
    out = list(features)
    attention = None
    for key, block in saca.items():
        s = int(key[len("stage"):])
        i = stage_index(s)
        other = features_counterpart[i]
        if other is None:
            raise ValueError(f"counterpart hidden state {i} (Swin stage {s}) is needed by SACA and is None")
        if s == attention_stage:
            out[i], attention = block(features[i], other, return_attention=True)
        else:
            out[i] = block(features[i], other)
    return out, attention


def counterpart_indices(saca: Optional[nn.ModuleDict]) -> Tuple[int, ...]:
    """Indices of the hidden states that SACA reads from the counterpart."""
    if saca is None:
        return ()
    return tuple(stage_index(int(k[len("stage"):])) for k in saca.keys())


def encode_pair(
    forward_features,
    x: torch.Tensor,
    x_counterpart: Optional[torch.Tensor],
    uses_counterpart: Sequence[int],
    mirror_pair: bool = False,
) -> Tuple[List[torch.Tensor], Optional[List[Optional[torch.Tensor]]]]:
    """``(features, counterpart features or None)`` of a patch and its mirrored counterpart,
    the one pairing rule of every SA-Swin network.

    Args:
        forward_features: the network's ``forward_features`` (``x -> [x, h0, ..., h4]``).
        x, x_counterpart: ``(B, C, X, Y, Z)``; the counterpart ALREADY mirrored.
        uses_counterpart: indices of the hidden states SACA reads from the counterpart
            (:func:`counterpart_indices`); empty for a network without SACA, whose
            counterpart is then never encoded (and may be None) unless ``mirror_pair``.
        mirror_pair: ``[x; x_counterpart]`` (``2B``) goes through the encoder in ONE call and
            each half is the other's counterpart: the token lists are swapped, nothing is
            flipped (token ``n`` of the counterpart is already the mirror of token ``n``).
            The features are then ``2B`` rows, ``x``'s first.
    """
    if mirror_pair:
        if x_counterpart is None or x_counterpart.shape != x.shape:
            got = None if x_counterpart is None else tuple(x_counterpart.shape)
            raise ValueError(f"mirror_pair needs x_counterpart of x's shape {tuple(x.shape)}, got {got}")
        features = forward_features(torch.cat([x, x_counterpart]))
        if not uses_counterpart:
            return features, None
        n = x.shape[0]
        keep = set(uses_counterpart)
        return features, [torch.cat([h[n:], h[:n]]) if i in keep else None for i, h in enumerate(features)]
    features = forward_features(x)
    if not uses_counterpart:
        return features, None
    if x_counterpart is None:
        raise ValueError("SA-Swin with SACA needs x_counterpart (the mirrored counterpart of x)")
    if x_counterpart.shape != x.shape:
        raise ValueError(f"x_counterpart shape {tuple(x_counterpart.shape)} differs from x {tuple(x.shape)}")
    return features, forward_features(x_counterpart)
