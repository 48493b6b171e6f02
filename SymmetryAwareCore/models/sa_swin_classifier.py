"""SA-Swin for scan-level classification (e.g. CT: haemorrhage, fracture, midline shift).

Ma et al., MICCAI 2024: a head on the SACA tokens. The bottleneck tokens of the patch,
updated by SACA with its counterpart, are normalised, averaged over ALL tokens (the
authors' code read token 0, a corner of the volume) and mapped to one logit per label
(multi-label: use a sigmoid / BCE, not a softmax).

``pooling="multiscale"`` adds what a whole-head window needs to find a small lesion: the
mean and the max over the tokens of stages 1-3 (16^3, 8^3 and 4^3 tokens for a 64^3 input)
beside the SACA bottleneck's. Measured on CT phantoms (docs/models.md): with the mean of the
2 x 2 x 2 bottleneck tokens alone, every subject shares one anatomy, so the pooled vector
varied between scans by 0.2 % of its spread over positions and training stayed at chance
for 626 steps of batch 16; a bleed of a few voxels moves the max of a finer stage, not the
mean of eight 32-voxel tokens.

``pooling="lesion"`` reads the scan from a map: a linear layer scores every token of Swin
stage 1 (16^3 tokens of ~4 voxels for a 64^3 input) and the scan logit is the map's maximum,
so a finding is where its most suspicious token is. Trained with the lesion masks as well
(the training task's token loss), the map is supervised directly and is also the
classifier's localisation (:meth:`SASwinClassifier.lesion_map`). With ``saca_stages``
including 1, every stage-1 token is compared with the tokens of its mirror image before it
is scored: the symmetry reaches the map.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .encoder import (
    apply_saca,
    build_saca_stages,
    build_swin_encoder,
    check_spatial_input,
    counterpart_indices,
    encode,
    encode_pair,
    stage_index,
    unused_stage_parameters,
)
from .sa_swin_unetr import PAIRINGS

__all__ = ["SASwinClassifier", "POOLING", "LESION_STAGE"]

POOLING = ("mean", "multiscale", "lesion")
LESION_STAGE = 1
"""Swin stage whose tokens ``pooling="lesion"`` scores: the finest stage SACA may sit after."""
# Stages whose tokens the multiscale head pools, finest first; the bottleneck (4) comes after SACA.
MULTISCALE_STAGES = (1, 2, 3, 4)


class SASwinClassifier(nn.Module):
    """Scan-level multi-label logits from pooled SACA bottleneck tokens.

    Shapes: ``x`` and ``x_counterpart`` ``(B, in_channels, X, Y, Z)``, X/Y/Z divisible by
    32, axis 2 left-right, ``x_counterpart`` already mirrored (for a whole scan: the
    left-right flip of ``x``); output ``(B, out_channels)`` logits.

    Args:
        in_channels: image channels.
        out_channels: number of labels (one logit each).
        feature_size, depths, num_heads, window_size, qkv_bias, mlp_ratio, drop_rate,
        attn_drop_rate, dropout_path_rate, normalize, patch_norm, use_checkpoint,
        downsample, use_v2: the Swin encoder, as in MONAI's ``SwinUNETR`` (the encoder is
        stored as ``swinViT`` so SwinUNETR and SSL weights load into it).
        spatial_dims: must be 3.
        use_saca: False pools the patch's own bottleneck tokens (a plain Swin baseline).
        saca_stages: Swin stages (1-4) followed by a SACA block; 4 is the paper's bottleneck.
            The head reads stage 4 (``"mean"``, ``"multiscale"``) or stage 1 (``"lesion"``, whose
            encoder stops after stage 1, so a deeper SACA stage is a ValueError). ``None``: the
            stage the head reads, ``(4,)`` or ``(1,)``.
        saca_heads, saca_mlp_ratio, saca_dropout_rate, saca_position_encoding: of the
            bottleneck SACA block.
        head_dropout_rate: dropout before the final linear layer.
        pooling: ``"mean"``, the mean of the bottleneck tokens (``16*feature_size`` features);
            ``"multiscale"``, the mean and the max over the tokens of each of stages 1-4, each
            stage layer-normalised (``2 * (2+4+8+16) * feature_size`` features);
            ``"lesion"``, the maximum of the per-token logits of stage 1 (:meth:`lesion_map`).
        pairing: how training pairs scans (:data:`SymmetryAwareCore.models.sa_swin_unetr.PAIRINGS`):
            ``"input"`` classifies each scan with its flip as context, ``"mirror-pair"``
            encodes the scan and its flip once each and classifies both (``forward`` with
            ``mirror_pair=True``). Kept on the network so the model card records it; a whole
            scan is classified the same way either way.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: Union[Sequence[int], int] = 7,
        qkv_bias: bool = True,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        dropout_path_rate: float = 0.0,
        normalize: bool = True,
        patch_norm: bool = False,
        use_checkpoint: bool = False,
        spatial_dims: int = 3,
        downsample: str = "merging",
        use_v2: bool = False,
        use_saca: bool = True,
        saca_stages: Optional[Sequence[int]] = None,
        saca_heads: Optional[int] = None,
        saca_mlp_ratio: float = 4.0,
        saca_dropout_rate: float = 0.0,
        saca_position_encoding: Optional[str] = None,
        head_dropout_rate: float = 0.0,
        pooling: str = "mean",
        pairing: str = "input",
    ) -> None:
        # Kept for the model card, which rebuilds the network from name + kwargs.
        init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.init_kwargs = init_kwargs
        if spatial_dims != 3:
            raise ValueError(f"SA-Swin is defined for 3D volumes (spatial_dims=3), got spatial_dims={spatial_dims}")
        if out_channels <= 0:
            raise ValueError(f"out_channels must be positive, got {out_channels}")
        if not 0.0 <= head_dropout_rate <= 1.0:
            raise ValueError(f"head_dropout_rate must be in [0, 1], got {head_dropout_rate}")
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {', '.join(POOLING)}, got {pooling!r}")
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
        self.pairing = pairing
        # The deepest Swin stage the head reads. The lesion head reads stage 1 only, so the
        # encoder stops there and stages 2-4 are frozen below (never run, so never trained). They stay
        # in the module, so SwinUNETR / SSL weights and earlier checkpoints load key for key.
        self.encoder_last_stage = LESION_STAGE if pooling == "lesion" else 4
        if saca_stages is None:
            saca_stages = (self.encoder_last_stage,)
            init_kwargs["saca_stages"] = saca_stages
        if use_saca and any(int(s) > self.encoder_last_stage for s in saca_stages):
            raise ValueError(
                f"pooling={pooling!r} reads Swin stage {self.encoder_last_stage}: SACA at a deeper stage "
                f"({tuple(saca_stages)}) would never be run"
            )
        self.in_channels = in_channels
        self.normalize = normalize
        self.pooling = pooling
        self.swinViT = build_swin_encoder(
            in_channels, feature_size, depths, num_heads, window_size, qkv_bias, mlp_ratio,
            drop_rate, attn_drop_rate, dropout_path_rate, patch_norm, use_checkpoint, downsample, use_v2,
        )  # fmt: skip
        self.saca = (
            build_saca_stages(
                feature_size, num_heads, saca_stages, saca_heads, saca_mlp_ratio, saca_dropout_rate, saca_position_encoding
            )
            if use_saca
            else None
        )
        for p in unused_stage_parameters(self.swinViT, self.encoder_last_stage):
            p.requires_grad_(False)
        if pooling == "lesion":
            width = feature_size * 2**LESION_STAGE
            self.lesion_norm = nn.LayerNorm(width)
            self.lesion_fc = nn.Linear(width, out_channels)
            return
        width = 16 * feature_size
        self.head_norm = nn.LayerNorm(width)
        if pooling == "multiscale":
            # Stage s has feature_size * 2**s channels; the bottleneck's norm is head_norm.
            self.stage_norms = nn.ModuleList(nn.LayerNorm(feature_size * 2**s) for s in MULTISCALE_STAGES[:-1])
            width = 2 * sum(feature_size * 2**s for s in MULTISCALE_STAGES)
        self.head_dropout = nn.Dropout(head_dropout_rate)
        self.head_fc = nn.Linear(width, out_channels)

    @property
    def counterpart_feature_indices(self) -> Tuple[int, ...]:
        """Entries of ``forward_features(x_counterpart)`` that ``forward_head`` reads."""
        return counterpart_indices(self.saca)

    @property
    def attention_stage(self) -> int:
        """The SACA stage whose attention ``return_attention`` gives: the one the head reads."""
        return LESION_STAGE if self.pooling == "lesion" else 4

    def lesion_map(
        self,
        features: Sequence[torch.Tensor],
        features_counterpart: Optional[Sequence[Optional[torch.Tensor]]] = None,
        return_attention: bool = False,
    ):
        """Per-token logits ``(B, out_channels, X/4, Y/4, Z/4)`` of Swin stage 1 (axis 2
        left-right), after SACA when stage 1 has it; ``pooling="lesion"`` only."""
        if self.pooling != "lesion":
            raise ValueError(f"lesion_map needs pooling='lesion', this network pools {self.pooling!r}")
        attention = None
        if self.saca is not None:
            attn_at = self.attention_stage if return_attention else None
            features, attention = apply_saca(self.saca, features, features_counterpart, attn_at)
            if return_attention and attention is None:
                raise ValueError(f"return_attention: this network has no SACA at stage {self.attention_stage}")
        elif return_attention:
            raise ValueError("return_attention needs a network with SACA (use_saca=True)")
        h = features[stage_index(LESION_STAGE)]
        tokens = self.lesion_norm(h.flatten(2).transpose(1, 2))  # (B, N, D)
        logits = self.lesion_fc(tokens).transpose(1, 2).reshape(h.shape[0], -1, *h.shape[2:])
        return (logits, attention) if return_attention else logits

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``[x, h0, h1, h2, h3, h4]``, as :meth:`SASwinUNETR.forward_features`; entries after
        :attr:`encoder_last_stage` (``pooling="lesion"``: ``h2 .. h4``) are None, not computed."""
        check_spatial_input(x, self.in_channels)
        return encode(self.swinViT, x, self.normalize, self.encoder_last_stage)

    def pooled_tokens(
        self,
        features: Sequence[torch.Tensor],
        features_counterpart: Optional[Sequence[Optional[torch.Tensor]]] = None,
        return_attention: bool = False,
    ):
        """Pooled tokens after SACA and LayerNorm: ``(B, 16*feature_size)`` for ``pooling="mean"``,
        ``(B, 60*feature_size)`` (mean and max of stages 1-4) for ``"multiscale"``."""
        if self.pooling == "lesion":
            raise ValueError("pooling='lesion' has no pooled tokens: the scan logit is the max of lesion_map")
        attention = None
        if self.saca is not None:
            features, attention = apply_saca(self.saca, features, features_counterpart, 4 if return_attention else None)
            if return_attention and attention is None:
                raise ValueError("return_attention: this network has no SACA at the bottleneck (stage 4)")
        elif return_attention:
            raise ValueError("return_attention needs a network with SACA (use_saca=True)")
        tokens = self.head_norm(features[stage_index(4)].flatten(2).transpose(1, 2))  # (B, N, D)
        if self.pooling == "mean":
            pooled = tokens.mean(dim=1)
        else:
            parts = []
            for norm, stage in zip(list(self.stage_norms) + [None], MULTISCALE_STAGES):
                t = tokens if norm is None else norm(features[stage_index(stage)].flatten(2).transpose(1, 2))
                parts += [t.mean(dim=1), t.amax(dim=1)]
            pooled = torch.cat(parts, dim=1)
        return (pooled, attention) if return_attention else pooled

    def forward_head(
        self,
        features: Sequence[torch.Tensor],
        features_counterpart: Optional[Sequence[Optional[torch.Tensor]]] = None,
        return_attention: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Logits ``(B, out_channels)``; with ``return_attention`` also the bottleneck
        attention ``(B, heads, N, N)``, ``N = (X/32)(Y/32)(Z/32)`` row-major over (x, y, z)."""
        if len(features) != 6:
            raise ValueError(f"features must be the 6 entries of forward_features, got {len(features)}")
        if self.pooling == "lesion":
            result = self.lesion_map(features, features_counterpart, return_attention)
            lesion, attention = result if return_attention else (result, None)
            logits = lesion.flatten(2).amax(dim=2)
            return (logits, attention) if return_attention else logits
        result = self.pooled_tokens(features, features_counterpart, return_attention)
        pooled, attention = result if return_attention else (result, None)
        logits = self.head_fc(self.head_dropout(pooled))
        return (logits, attention) if return_attention else logits

    def paired_features(self, x: torch.Tensor, x_counterpart: Optional[torch.Tensor], mirror_pair: bool = False):
        """``(features, counterpart features or None)`` of a scan and its mirrored counterpart.

        With ``mirror_pair``, ``[x; x_counterpart]`` goes through the encoder in ONE call and
        each half is the other's counterpart (the token lists are swapped, nothing is flipped),
        so both are classified at one encoder pass each; rows ``B:`` of every output are for
        ``x_counterpart``. For a whole scan, whose counterpart is its own left-right flip, that
        is the scan and its mirror image, each with the other as counterpart.
        """
        return encode_pair(self.forward_features, x, x_counterpart, self.counterpart_feature_indices, mirror_pair)

    def forward(
        self,
        x: torch.Tensor,
        x_counterpart: Optional[torch.Tensor] = None,
        return_attention: bool = False,
        mirror_pair: bool = False,
        return_map: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Classify a scan; ``x_counterpart`` is its already-mirrored counterpart (same shape).

        Returns ``(B, out_channels)`` logits (``2B`` with ``mirror_pair``, see
        :meth:`paired_features`); with ``return_map`` (``pooling="lesion"``) also the lesion
        map ``(B, out_channels, X/4, Y/4, Z/4)`` whose maximum the logits are; with
        ``return_attention`` also the attention of :attr:`attention_stage`, last.
        """
        features, counterpart = self.paired_features(x, x_counterpart, mirror_pair)
        if not return_map:
            return self.forward_head(features, counterpart, return_attention)
        result = self.lesion_map(features, counterpart, return_attention)
        lesion = result[0] if return_attention else result
        logits = lesion.flatten(2).amax(dim=2)
        return (logits, lesion, result[1]) if return_attention else (logits, lesion)
