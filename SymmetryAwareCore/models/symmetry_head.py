"""The Symmetry-Aware Head (SAH) for pretraining, and zero-shot asymmetry scores.

Ma et al., MICCAI 2024. :class:`SASwinPretrainer` is the Swin encoder (``swinViT``, key
compatible with MONAI's SwinUNETR, so the pretrained encoder moves to the segmentation or
classification network as is), a bottleneck SACA block and :class:`SymmetryAwareHead`:

- rotation logits ``(B, 4)`` and a contrastive embedding from the pooled SACA tokens;
- a reconstruction ``(B, C, X, Y, Z)`` of the corrupted patch from the SACA token map;
- symmetry embeddings: a token-wise projection of the patch's and of the counterpart's
  OWN bottleneck tokens (before SACA, which would mix the two), per token and pooled.

Zero-shot asymmetry: ``(1 - cos(z, z~)) / 2`` in ``[0, 1]`` per bottleneck token
(:func:`asymmetry_map`, ``(B, X/32, Y/32, Z/32)``, first axis left-right: each region against
its mirror region); the scan's score is the map's MAXIMUM (:func:`scan_asymmetry`: a lesion
makes at least one region differ from its mirror). Not the cosine of token-pooled
embeddings (:func:`asymmetry_score`): when the counterpart is the exact left-right flip of the
whole input, its tokens are the patch's tokens mirrored, and a mean over tokens is the same
for both whatever the scan holds (exactly so for a mirror-equivariant encoder); only
what the encoder's own left-right asymmetry adds would remain.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoder import apply_saca, build_saca_stages, build_swin_encoder, check_spatial_input, encode, stage_index
from .pretext import ROTATION_CLASSES

__all__ = ["SymmetryAwareHead", "SASwinPretrainer", "asymmetry_score", "asymmetry_map", "scan_asymmetry"]


def asymmetry_score(z: torch.Tensor, z_counterpart: torch.Tensor) -> torch.Tensor:
    """``(1 - cos(z, z~)) / 2`` of ``(B, D)`` embeddings: ``(B,)`` in ``[0, 1]``, 0 = symmetric."""
    if z.ndim != 2 or z.shape != z_counterpart.shape:
        raise ValueError(f"z and z_counterpart must be (B, D) of equal shape, got {tuple(z.shape)}, {tuple(z_counterpart.shape)}")
    return (1.0 - F.cosine_similarity(z.float(), z_counterpart.float(), dim=1)) / 2.0


def asymmetry_map(tokens: torch.Tensor, tokens_counterpart: torch.Tensor) -> torch.Tensor:
    """Per-region score from ``(B, D, X', Y', Z')`` token embeddings: ``(B, X', Y', Z')``.

    Value ``[b, i, j, k]`` compares the patch's token at ``(i, j, k)`` with the
    counterpart's token at the same index, i.e. with the mirror region (the counterpart
    is already flipped). At the bottleneck each token covers 32^3 voxels.
    """
    if tokens.ndim != 5 or tokens.shape != tokens_counterpart.shape:
        raise ValueError(
            f"token maps must be (B, D, X, Y, Z) of equal shape, got {tuple(tokens.shape)}, {tuple(tokens_counterpart.shape)}"
        )
    return (1.0 - F.cosine_similarity(tokens.float(), tokens_counterpart.float(), dim=1)) / 2.0


def scan_asymmetry(token_map: torch.Tensor) -> torch.Tensor:
    """A scan's score from its ``(B, X', Y', Z')`` token map: ``(B,)``, the largest region score."""
    if token_map.ndim != 4:
        raise ValueError(f"token_map must be (B, X, Y, Z), got {tuple(token_map.shape)}")
    return token_map.flatten(1).amax(dim=1)


class SymmetryAwareHead(nn.Module):
    """Heads of the four proxy tasks on ``(B, D, X', Y', Z')`` bottleneck maps.

    Args:
        in_features: bottleneck width ``D`` (``16 * feature_size``).
        out_channels: image channels to reconstruct.
        rotation_classes: 4 (multiples of 90 degrees about the left-right axis).
        contrastive_size: width of the contrastive embedding.
        projection_size: width of the symmetry embedding.
    """

    def __init__(
        self,
        in_features: int,
        out_channels: int,
        rotation_classes: int = ROTATION_CLASSES,
        contrastive_size: int = 128,
        projection_size: int = 128,
    ) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_channels", out_channels), ("rotation_classes", rotation_classes),
                        ("contrastive_size", contrastive_size), ("projection_size", projection_size)):  # fmt: skip
            if v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if in_features % 32 != 0:
            raise ValueError(f"in_features must be divisible by 32 (five halvings), got {in_features}")
        self.norm = nn.LayerNorm(in_features)
        self.rotation = nn.Linear(in_features, rotation_classes)
        self.contrastive = nn.Linear(in_features, contrastive_size)
        self.symmetry_norm = nn.LayerNorm(in_features)
        self.projector = nn.Sequential(
            nn.Linear(in_features, in_features), nn.GELU(), nn.Linear(in_features, projection_size)
        )
        layers: List[nn.Module] = []
        ch = in_features
        for _ in range(5):  # back from 1/32 to full resolution
            layers += [
                nn.ConvTranspose3d(ch, ch // 2, kernel_size=2, stride=2),
                nn.InstanceNorm3d(ch // 2, affine=True),
                nn.LeakyReLU(0.01),
            ]
            ch //= 2
        layers.append(nn.Conv3d(ch, out_channels, kernel_size=1))
        self.reconstruction = nn.Sequential(*layers)

    def symmetry_tokens(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Token-wise symmetry projection ``(B, D, X', Y', Z')`` -> ``(B, P, X', Y', Z')``."""
        tokens = feature_map.flatten(2).transpose(1, 2)
        z = self.projector(self.symmetry_norm(tokens))
        return z.transpose(1, 2).reshape(z.shape[0], z.shape[2], *feature_map.shape[2:])

    def forward(self, fused: torch.Tensor, own: torch.Tensor, own_counterpart: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``fused``: SACA output; ``own`` / ``own_counterpart``: encoder bottlenecks."""
        pooled = self.norm(fused.flatten(2).transpose(1, 2)).mean(dim=1)
        tokens = self.symmetry_tokens(own)
        tokens_c = self.symmetry_tokens(own_counterpart)
        return {
            "rotation": self.rotation(pooled),
            "contrastive": self.contrastive(pooled),
            "reconstruction": self.reconstruction(fused),
            "token_embedding": tokens,
            "token_embedding_counterpart": tokens_c,
            "embedding": tokens.flatten(2).mean(dim=2),
            "embedding_counterpart": tokens_c.flatten(2).mean(dim=2),
        }


class SASwinPretrainer(nn.Module):
    """Swin encoder + bottleneck SACA + :class:`SymmetryAwareHead`, for pretraining.

    ``forward(x, x_counterpart)``: both ``(B, in_channels, X, Y, Z)``, X/Y/Z divisible by
    32, axis 2 left-right, the counterpart already mirrored. Returns a dict:
    ``rotation`` ``(B, 4)``, ``contrastive`` ``(B, contrastive_size)``,
    ``reconstruction`` ``(B, in_channels, X, Y, Z)``, ``embedding`` and
    ``embedding_counterpart`` ``(B, projection_size)``, ``token_embedding`` and
    ``token_embedding_counterpart`` ``(B, projection_size, X/32, Y/32, Z/32)``.

    Args: the encoder's as in :class:`~SymmetryAwareCore.models.sa_swin_unetr.SASwinUNETR`
    (SACA always on, at the bottleneck), plus ``contrastive_size`` and ``projection_size``.
    """

    def __init__(
        self,
        in_channels: int,
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
        saca_heads: Optional[int] = None,
        saca_mlp_ratio: float = 4.0,
        saca_dropout_rate: float = 0.0,
        saca_position_encoding: Optional[str] = None,
        contrastive_size: int = 128,
        projection_size: int = 128,
    ) -> None:
        # Kept for the model card, which rebuilds the network from name + kwargs.
        init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.init_kwargs = init_kwargs
        if spatial_dims != 3:
            raise ValueError(f"SA-Swin is defined for 3D volumes (spatial_dims=3), got spatial_dims={spatial_dims}")
        self.in_channels = in_channels
        self.normalize = normalize
        self.swinViT = build_swin_encoder(
            in_channels, feature_size, depths, num_heads, window_size, qkv_bias, mlp_ratio,
            drop_rate, attn_drop_rate, dropout_path_rate, patch_norm, use_checkpoint, downsample, use_v2,
        )  # fmt: skip
        self.saca = build_saca_stages(
            feature_size, num_heads, (4,), saca_heads, saca_mlp_ratio, saca_dropout_rate, saca_position_encoding
        )
        self.head = SymmetryAwareHead(16 * feature_size, in_channels, ROTATION_CLASSES, contrastive_size, projection_size)

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``[x, h0, h1, h2, h3, h4]`` as :meth:`SASwinUNETR.forward_features`."""
        check_spatial_input(x, self.in_channels)
        return encode(self.swinViT, x, self.normalize)

    def forward(self, x: torch.Tensor, x_counterpart: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x_counterpart is None or x_counterpart.shape != x.shape:
            raise ValueError("the pretrainer needs x_counterpart of the same shape as x (already mirrored)")
        f = self.forward_features(x)
        fc = self.forward_features(x_counterpart)
        fused, _ = apply_saca(self.saca, f, fc, None)
        i = stage_index(4)
        return self.head(fused[i], f[i], fc[i])

    @torch.no_grad()
    def asymmetry(self, x: torch.Tensor, x_counterpart: torch.Tensor):
        """Zero-shot asymmetry: ``(score (B,), map (B, X/32, Y/32, Z/32))`` in ``[0, 1]``; the
        score is the map's maximum (:func:`scan_asymmetry`). Patch and counterpart are encoded
        in one call."""
        check_spatial_input(x, self.in_channels)
        check_spatial_input(x_counterpart, self.in_channels, "x_counterpart")
        if x_counterpart.shape != x.shape:
            raise ValueError("x_counterpart must have the shape of x")
        both = self.head.symmetry_tokens(self.forward_features(torch.cat([x, x_counterpart]))[stage_index(4)])
        tokens, tokens_c = both[: x.shape[0]], both[x.shape[0]:]
        amap = asymmetry_map(tokens, tokens_c)
        return scan_asymmetry(amap), amap
