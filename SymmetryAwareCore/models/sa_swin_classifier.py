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
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .encoder import apply_saca, build_saca_stages, build_swin_encoder, check_spatial_input, encode, stage_index

__all__ = ["SASwinClassifier", "POOLING"]

POOLING = ("mean", "multiscale")
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
        saca_heads, saca_mlp_ratio, saca_dropout_rate, saca_position_encoding: of the
            bottleneck SACA block.
        head_dropout_rate: dropout before the final linear layer.
        pooling: ``"mean"``, the mean of the bottleneck tokens (``16*feature_size`` features);
            ``"multiscale"``, the mean and the max over the tokens of each of stages 1-4, each
            stage layer-normalised (``2 * (2+4+8+16) * feature_size`` features).
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
        saca_heads: Optional[int] = None,
        saca_mlp_ratio: float = 4.0,
        saca_dropout_rate: float = 0.0,
        saca_position_encoding: Optional[str] = None,
        head_dropout_rate: float = 0.0,
        pooling: str = "mean",
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
        self.in_channels = in_channels
        self.normalize = normalize
        self.pooling = pooling
        self.swinViT = build_swin_encoder(
            in_channels, feature_size, depths, num_heads, window_size, qkv_bias, mlp_ratio,
            drop_rate, attn_drop_rate, dropout_path_rate, patch_norm, use_checkpoint, downsample, use_v2,
        )  # fmt: skip
        self.saca = (
            build_saca_stages(
                feature_size, num_heads, (4,), saca_heads, saca_mlp_ratio, saca_dropout_rate, saca_position_encoding
            )
            if use_saca
            else None
        )
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
        return () if self.saca is None else (stage_index(4),)

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``[x, h0, h1, h2, h3, h4]``, as :meth:`SASwinUNETR.forward_features`."""
        check_spatial_input(x, self.in_channels)
        return encode(self.swinViT, x, self.normalize)

    def pooled_tokens(
        self,
        features: Sequence[torch.Tensor],
        features_counterpart: Optional[Sequence[Optional[torch.Tensor]]] = None,
        return_attention: bool = False,
    ):
        """Pooled tokens after SACA and LayerNorm: ``(B, 16*feature_size)`` for ``pooling="mean"``,
        ``(B, 60*feature_size)`` (mean and max of stages 1-4) for ``"multiscale"``."""
        attention = None
        if self.saca is not None:
            features, attention = apply_saca(self.saca, features, features_counterpart, 4 if return_attention else None)
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
        result = self.pooled_tokens(features, features_counterpart, return_attention)
        pooled, attention = result if return_attention else (result, None)
        logits = self.head_fc(self.head_dropout(pooled))
        return (logits, attention) if return_attention else logits

    def forward(
        self, x: torch.Tensor, x_counterpart: Optional[torch.Tensor] = None, return_attention: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Classify a scan; ``x_counterpart`` is its already-mirrored counterpart (same shape)."""
        features = self.forward_features(x)
        if self.saca is None:
            return self.forward_head(features, None, return_attention)
        if x_counterpart is None:
            raise ValueError("SA-Swin with SACA needs x_counterpart (the mirrored counterpart of x)")
        if x_counterpart.shape != x.shape:
            raise ValueError(f"x_counterpart shape {tuple(x_counterpart.shape)} differs from x {tuple(x.shape)}")
        return self.forward_head(features, self.forward_features(x_counterpart), return_attention)
