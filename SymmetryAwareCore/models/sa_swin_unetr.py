"""SA-Swin segmentation network: Swin UNETR with symmetry-aware cross-attention.

Ma et al., "Symmetry Awareness Encoded Deep Learning Framework for Brain Imaging
Analysis", MICCAI 2024, on top of Hatamizadeh et al., "Swin UNETR" (arXiv:2201.01266).
MONAI's Swin encoder and UNETR blocks are used through their API; the attribute names
(``swinViT``, ``encoder1..4``, ``encoder10``, ``decoder5..1``, ``out``) are MONAI
SwinUNETR's, so its weights load key for key and, with ``use_saca=False``, this network
is MONAI's SwinUNETR.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock

from .encoder import (
    apply_saca,
    build_saca_stages,
    build_swin_encoder,
    check_spatial_input,
    counterpart_indices,
    encode,
    encode_pair,
)

__all__ = ["PAIRINGS", "SASwinUNETR"]

PAIRINGS = ("input", "mirror-pair")
"""How patch and counterpart are paired in training and inference (``SASwinUNETR.pairing``).

``"input"`` (the paper's input-space pairing): the counterpart is encoded only as context
for the patch; only the patch is supervised, and sliding-window inference encodes every
window and every window's counterpart crop (two encoder passes per window).
``"mirror-pair"``: patch P and counterpart C are each other's counterparts exactly, so the
batch ``[P; C]`` is encoded once, SACA of P reads C's tokens and SACA of C reads P's, and
both are supervised (:meth:`SASwinUNETR.forward` with ``mirror_pair=True``); at inference a
window and its mirror window's counterpart crop serve each other (one encoder pass per
window, :mod:`SymmetryAwareCore.inference.sliding_window`). The network function is the
same; the setting says how it was trained and how inference should pair windows.
See docs/pairing.md.
"""


class SASwinUNETR(nn.Module):
    """SA-Swin for segmentation.

    The patch and its mirrored counterpart go through the same Swin encoder; SACA lets
    the patch's tokens attend to the counterpart's at the chosen stages (the bottleneck by
    default); a UNETR decoder builds the mask from the patch's own skips, with the SACA
    output in place of the hidden state of each SACA stage.

    How a SACA stage feeds the decoder. SACA at stage ``s`` replaces the hidden state
    ``h_s`` by ``SACA(h_s, h~_s) = h_s + attention + MLP`` (a residual block, so at
    initialisation it adds to the skip rather than replacing it), and that is the feature
    the decoder reads at that resolution: stage 4 through ``encoder10`` (the bottleneck),
    stage 3 as ``decoder5``'s skip, stage 2 through ``encoder4`` as ``decoder4``'s skip,
    stage 1 through ``encoder3``. The deeper Swin stages still see the plain ``h_s``: the
    encoder runs once per crop, untouched by SACA, so one crop's features can serve both
    as a window and as another window's counterpart (see
    :mod:`SymmetryAwareCore.inference.sliding_window`), and with ``saca_stages=(4,)`` the
    network is the paper's. SACA is global over the stage's tokens: at stage ``s`` a
    ``r^3`` window has ``(r / 2**(s+1))**3`` tokens and the attention matrix is that
    squared per head (stage 2, 96^3: 1728 tokens), so stage 1 is rarely affordable.
    The attention maps (:mod:`SymmetryAwareCore.inference.attention_maps`) come from the
    finest SACA stage (:attr:`attention_stage`).

    Shapes: inputs ``(B, in_channels, X, Y, Z)`` with X, Y, Z divisible by 32 (at least
    64 for the bottleneck's instance norm); output logits ``(B, out_channels, X, Y, Z)``.
    Axis 2 (first spatial) is left-right in an MSP-aligned RAS array.

    Args:
        in_channels: image channels (e.g. 4 for BraTS T1, T1ce, T2, FLAIR).
        out_channels: output channels (labels, background included if softmax).
        feature_size: encoder width, a multiple of 12 (48 in the paper).
        depths, num_heads, window_size, qkv_bias, mlp_ratio, norm_name, drop_rate,
        attn_drop_rate, dropout_path_rate, normalize, patch_norm, use_checkpoint,
        downsample, use_v2: as in MONAI's ``SwinUNETR``.
        spatial_dims: must be 3 (the mirror relation is defined on 3D volumes).
        use_saca: False gives exactly MONAI's SwinUNETR (no counterpart needed).
        saca_stages: Swin stages (1..4) followed by SACA; ``(4,)`` is the bottleneck
            (the paper, and the default: checkpoints without this key load unchanged);
            e.g. ``(2, 4)`` adds SACA at 1/8 resolution for attention maps that show anatomy.
        saca_heads: SACA heads; None takes the Swin stage's ``num_heads``.
        saca_mlp_ratio, saca_dropout_rate: of the SACA blocks.
        saca_position_encoding: None (paper), ``"sinusoidal"`` or ``"learned"``.
        pairing: ``"input"`` (default, the paper's; cards without the key load as before)
            or ``"mirror-pair"``: see :data:`PAIRINGS`. Read by the training task and by
            the sliding window; the weights and ``forward(x, x_counterpart)`` do not depend
            on it.
        counterpart_channels: give the mirrored counterpart to the encoder as extra input
            channels (``[x, x_counterpart]`` stacked on the channel axis: a subtraction of
            the other hemisphere that the network can learn, the voxel mirror-difference
            baseline's information handed to a plain Swin UNETR). Needs ``use_saca=False``
            and ``pairing="input"``; the patch embedding and ``encoder1`` then take
            ``2 * in_channels``. Not in the paper: an arm of the symmetry study
            (docs/symmetry_study.md, thirteenth amendment).

    Raises:
        ValueError: bad arguments (in ``__init__``) or bad input shapes (in ``forward``).
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
        norm_name: Union[Tuple, str] = "instance",
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
        saca_stages: Sequence[int] = (4,),
        saca_heads: Optional[Union[int, Sequence[int]]] = None,
        saca_mlp_ratio: float = 4.0,
        saca_dropout_rate: float = 0.0,
        saca_position_encoding: Optional[str] = None,
        pairing: str = "input",
        counterpart_channels: bool = False,
    ) -> None:
        # Kept for the model card, which rebuilds the network from name + kwargs.
        init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.init_kwargs = init_kwargs
        if spatial_dims != 3:
            raise ValueError(f"SA-Swin is defined for 3D volumes (spatial_dims=3), got spatial_dims={spatial_dims}")
        if out_channels <= 0:
            raise ValueError(f"out_channels must be positive, got {out_channels}")
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
        if not isinstance(counterpart_channels, bool):
            raise ValueError(f"counterpart_channels must be True or False, got {counterpart_channels!r}")
        if counterpart_channels and (use_saca or pairing != "input"):
            raise ValueError("counterpart_channels gives the counterpart as input channels: it needs use_saca=False "
                             f"and pairing='input', got use_saca={use_saca}, pairing={pairing!r}")
        self.pairing = pairing
        self.in_channels = in_channels
        self.counterpart_channels = bool(counterpart_channels)
        # What the encoder reads: the image channels, and with counterpart_channels the
        # counterpart's after them.
        self.encoder_in_channels = in_channels * (2 if counterpart_channels else 1)
        self.normalize = normalize
        fs = feature_size
        self.swinViT = build_swin_encoder(
            self.encoder_in_channels, fs, depths, num_heads, window_size, qkv_bias, mlp_ratio,
            drop_rate, attn_drop_rate, dropout_path_rate, patch_norm, use_checkpoint, downsample, use_v2,
        )  # fmt: skip

        def basic(ch_in: int, ch_out: int) -> UnetrBasicBlock:
            return UnetrBasicBlock(3, ch_in, ch_out, kernel_size=3, stride=1, norm_name=norm_name, res_block=True)

        def up(ch_in: int, ch_out: int) -> UnetrUpBlock:
            return UnetrUpBlock(
                3, ch_in, ch_out, kernel_size=3, upsample_kernel_size=2, norm_name=norm_name, res_block=True
            )

        # Same order and names as MONAI's SwinUNETR, so state_dict keys (and order) match.
        self.encoder1 = basic(self.encoder_in_channels, fs)
        self.encoder2 = basic(fs, fs)
        self.encoder3 = basic(2 * fs, 2 * fs)
        self.encoder4 = basic(4 * fs, 4 * fs)
        self.encoder10 = basic(16 * fs, 16 * fs)
        self.decoder5 = up(16 * fs, 8 * fs)
        self.decoder4 = up(8 * fs, 4 * fs)
        self.decoder3 = up(4 * fs, 2 * fs)
        self.decoder2 = up(2 * fs, fs)
        self.decoder1 = up(fs, fs)
        self.out = UnetOutBlock(spatial_dims=3, in_channels=fs, out_channels=out_channels)
        self.saca = (
            build_saca_stages(fs, num_heads, saca_stages, saca_heads, saca_mlp_ratio, saca_dropout_rate, saca_position_encoding)
            if use_saca
            else None
        )

    @property
    def use_saca(self) -> bool:
        return self.saca is not None

    @property
    def counterpart_use(self) -> str:
        """How the network reads the mirrored counterpart: ``"saca"`` (cross-attention),
        ``"input channels"`` (:attr:`counterpart_channels`) or ``"none"`` (plain Swin UNETR)."""
        return "saca" if self.saca is not None else "input channels" if self.counterpart_channels else "none"

    @property
    def saca_stages(self) -> Tuple[int, ...]:
        return () if self.saca is None else tuple(int(k[len("stage"):]) for k in self.saca.keys())

    @property
    def attention_stage(self) -> Optional[int]:
        """The finest SACA stage (smallest ``s``): the one whose attention ``forward_head``
        returns by default and the attention maps are made of; None without SACA."""
        return min(self.saca_stages) if self.saca is not None else None

    @property
    def attention_token_stride(self) -> Optional[int]:
        """Voxels per token edge at :attr:`attention_stage` (``2**(s+1)``: 8 at stage 2)."""
        stage = self.attention_stage
        return None if stage is None else 2 ** (stage + 1)

    @property
    def counterpart_feature_indices(self) -> Tuple[int, ...]:
        """Entries of ``forward_features(x_counterpart)`` that ``forward_head`` reads.

        An inference engine may keep only these for windows used as counterparts.
        """
        return counterpart_indices(self.saca)

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Run the Swin encoder once: ``[x, h0, h1, h2, h3, h4]``.

        ``x`` is ``(B, in_channels, X, Y, Z)``, X/Y/Z divisible by 32, axis 2 left-right;
        with ``counterpart_channels`` ``(B, 2 * in_channels, X, Y, Z)``: the crop's channels,
        then its mirrored counterpart's (:attr:`encoder_in_channels`). Entry 0 is ``x`` itself (``encoder1`` needs it for the full-resolution skip); ``h_s``
        has ``feature_size * 2**s`` channels at ``1 / 2**(s+1)`` resolution (``h4``: the
        bottleneck, 1/32). The same call encodes a counterpart window, so an engine can
        encode each window once and reuse its features as another window's counterpart.
        """
        check_spatial_input(x, self.encoder_in_channels)
        return encode(self.swinViT, x, self.normalize)

    def forward_head(
        self,
        features: Sequence[torch.Tensor],
        features_counterpart: Optional[Sequence[Optional[torch.Tensor]]] = None,
        return_attention: bool = False,
        attention_stage: Optional[int] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """SACA and the UNETR decoder.

        Args:
            features: ``forward_features(x)`` of the patch.
            features_counterpart: ``forward_features(x_counterpart)`` of its mirrored
                counterpart, same shapes; entries not in ``counterpart_feature_indices``
                may be None. Ignored (may be None) when ``use_saca`` is False.
            return_attention: also return SACA's attention weights.
            attention_stage: which SACA stage's weights to return (default: the finest,
                :attr:`attention_stage`).

        Returns:
            logits ``(B, out_channels, X, Y, Z)``; with ``return_attention``
            ``(logits, attention)``, attention ``(B, heads, N, N)`` where
            ``N = X' * Y' * Z'`` tokens of that stage's grid (``(X, Y, Z) / 2**(s+1)``:
            ``/ 32`` at the bottleneck, ``/ 8`` at stage 2; see :func:`~SymmetryAwareCore.models.encoder.token_grid_shape`),
            rows = patch tokens (queries), columns = counterpart tokens (keys), both
            row-major over ``(x, y, z)``; counterpart token ``n`` is the mirror of patch
            token ``n``.
        """
        if len(features) != 6:
            raise ValueError(f"features must be the 6 entries of forward_features, got {len(features)}")
        attention = None
        if self.saca is not None:
            stage = self.attention_stage if attention_stage is None else attention_stage
            if return_attention and stage not in self.saca_stages:
                raise ValueError(f"attention_stage {stage} is not a SACA stage {self.saca_stages}")
            features, attention = apply_saca(
                self.saca, features, features_counterpart, stage if return_attention else None
            )
        elif return_attention:
            raise ValueError("return_attention needs a network with SACA (use_saca=True)")
        x, h0, h1, h2, h3, h4 = features
        enc0 = self.encoder1(x)
        enc1 = self.encoder2(h0)
        enc2 = self.encoder3(h1)
        enc3 = self.encoder4(h2)
        dec4 = self.encoder10(h4)
        dec3 = self.decoder5(dec4, h3)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        logits = self.out(self.decoder1(dec0, enc0))
        return (logits, attention) if return_attention else logits

    def forward(
        self,
        x: torch.Tensor,
        x_counterpart: Optional[torch.Tensor] = None,
        return_attention: bool = False,
        mirror_pair: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Segment a patch given its mirrored counterpart (and, with ``mirror_pair``, the counterpart too).

        Args:
            x: ``(B, in_channels, X, Y, Z)``, X/Y/Z divisible by 32, axis 2 left-right.
            x_counterpart: same shape: the counterpart ALREADY mirrored
                (:func:`SymmetryAwareCore.geometry.mirror.extract_counterpart`); the
                network never flips anything. Optional when ``use_saca`` is False, unless
                ``counterpart_channels`` (then stacked after ``x``'s channels).
            return_attention: see :meth:`forward_head`.
            mirror_pair: segment both: ``[x; x_counterpart]`` (``2B`` crops) goes through the
                encoder in ONE call, SACA of crop ``b`` reads the tokens of crop ``b + B`` and
                vice versa (the token lists are swapped, nothing is flipped: token ``n`` of
                the counterpart is already the mirror of token ``n`` of the patch). The
                result is exactly ``forward(cat[x, xc], cat[xc, x])`` at one encoder pass per
                crop instead of two. Training with ``pairing="mirror-pair"`` uses it.

        Returns:
            ``(B, out_channels, X, Y, Z)`` logits (and attention, see :meth:`forward_head`);
            with ``mirror_pair`` ``(2B, out_channels, X, Y, Z)``: rows ``:B`` for ``x``, rows
            ``B:`` for ``x_counterpart`` in the counterpart's own (flipped) layout.
        """
        if self.counterpart_channels:
            if mirror_pair:
                raise ValueError("mirror_pair needs a network with pairing='mirror-pair', not counterpart_channels")
            check_spatial_input(x, self.in_channels)
            if x_counterpart is None or x_counterpart.shape != x.shape:
                got = None if x_counterpart is None else tuple(x_counterpart.shape)
                raise ValueError(f"counterpart_channels needs x_counterpart of x's shape {tuple(x.shape)}, got {got}")
            return self.forward_head(self.forward_features(torch.cat([x, x_counterpart], dim=1)), None, return_attention)
        features, counterpart = encode_pair(self.forward_features, x, x_counterpart, self.counterpart_feature_indices,
                                            mirror_pair)
        return self.forward_head(features, counterpart, return_attention)
