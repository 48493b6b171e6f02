"""A promptable SA-Swin: image channels plus click / box guidance, one binary output.

Interactive segmentation in the manner of DeepEdit (Diaz-Pinto et al., 2022) and the
iterative click-training scheme of Sakinis et al. (2019), on SA-Swin (Ma et al., MICCAI 2024).

Input of the patch: ``(B, image_channels + guidance_channels, X, Y, Z)``, the image
channels first (the model card's channels, normalised as its preprocessing says), then the
guidance channels of :mod:`SymmetryAwareCore.interactive.guidance`, in this order:

0. positive clicks: ``max_k exp(-|v - c_k|^2 / (2 sigma^2))`` over the positive clicks ``c_k``
   (frame voxels; ``sigma`` in the card's ``interactive.click_sigma_voxels``);
1. negative clicks: the same over the negative clicks;
2. box: 1 inside the user's box (its bounding box in the frame), 0 elsewhere and when there is none.

The mirrored counterpart gets the image channels of the mirror window and EMPTY guidance
(all zeros): clicks are about the patch, and the counterpart stands for what normal tissue
looks like there. Its encoding therefore does not depend on the clicks and can be computed
once per window and cached (:meth:`PromptableSASwinUNETR.encode_counterpart`).

Output: ``(B, 1, X, Y, Z)`` logits, sigmoid -> probability of lesion.

Everything else (encoder, SACA, decoder, shapes, the left-right axis = axis 2) is
:class:`~SymmetryAwareCore.models.sa_swin_unetr.SASwinUNETR`'s; the state-dict keys are
its keys, so its weights initialise this network with the guidance weights of the input
convolutions (``swinViT.patch_embed.proj``, ``encoder1``) set to zero: the network then
starts as the automatic model whatever the clicks
(:func:`SymmetryAwareTraining.tasks.load_init_weights` with a channel adapter).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

from .sa_swin_unetr import SASwinUNETR

__all__ = ["PromptableSASwinUNETR", "GUIDANCE_NAMES"]

GUIDANCE_NAMES: Tuple[str, ...] = ("positive", "negative", "box")
"""The guidance channels, in network order (after the image channels)."""


class PromptableSASwinUNETR(SASwinUNETR):
    """SA-Swin UNETR taking image + guidance channels (see the module docstring).

    Args:
        image_channels: image channels (the model card's channels, e.g. 4 for T1, T1ce, T2, FLAIR).
        guidance_channels: guidance channels after them (3: positive, negative, box).
        out_channels: 1 (binary lesion logit).
        **kwargs: :class:`SASwinUNETR`'s other arguments (feature_size, use_saca, ...).

    Attribute ``in_channels`` is the number of IMAGE channels (what the model card's
    channels and preprocessing produce); ``network_in_channels`` counts the guidance too.
    Shapes: X, Y, Z divisible by 32 (at least 64); axis 2 is left-right.
    """

    def __init__(self, image_channels: int, guidance_channels: int = len(GUIDANCE_NAMES), out_channels: int = 1,
                 **kwargs) -> None:
        if "in_channels" in kwargs:
            raise ValueError("PromptableSASwinUNETR takes image_channels and guidance_channels, not in_channels")
        if image_channels <= 0 or guidance_channels < 0:
            raise ValueError(f"image_channels must be positive and guidance_channels >= 0, got "
                             f"{image_channels}, {guidance_channels}")
        if kwargs.get("counterpart_channels"):
            # Its encoder reads image + guidance; a stacked counterpart would need its own channels.
            raise ValueError("PromptableSASwinUNETR does not take counterpart_channels")
        super().__init__(in_channels=image_channels + guidance_channels, out_channels=out_channels, **kwargs)
        self.init_kwargs = {"image_channels": image_channels, "guidance_channels": guidance_channels,
                            "out_channels": out_channels, **{k: v for k, v in self.init_kwargs.items()
                                                             if k not in ("in_channels", "out_channels")}}
        self.network_in_channels = image_channels + guidance_channels
        self.in_channels = image_channels
        self.guidance_channels = guidance_channels

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``[x, h0, .., h4]`` of ``x`` ``(B, image + guidance channels, X, Y, Z)``."""
        from .encoder import check_spatial_input, encode

        check_spatial_input(x, self.network_in_channels)
        return encode(self.swinViT, x, self.normalize)

    def with_empty_guidance(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, image_channels, ...)`` -> ``(B, image + guidance channels, ...)`` with zero guidance."""
        zeros = image.new_zeros((image.shape[0], self.guidance_channels) + tuple(image.shape[2:]))
        return torch.cat([image, zeros], dim=1)

    def encode_counterpart(self, counterpart_image: torch.Tensor) -> List[Optional[torch.Tensor]]:
        """Features of a counterpart ``(B, image_channels, X, Y, Z)`` (already mirrored), with
        empty guidance; only the entries SACA reads are kept (the rest None), for caching."""
        features = self.forward_features(self.with_empty_guidance(counterpart_image))
        keep = set(self.counterpart_feature_indices)
        return [f if i in keep else None for i, f in enumerate(features)]

    def forward(self, x: torch.Tensor, x_counterpart: Optional[torch.Tensor] = None,
                return_attention: bool = False,
                counterpart_features: Optional[Sequence[Optional[torch.Tensor]]] = None,
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Logits ``(B, out_channels, X, Y, Z)``.

        Args:
            x: ``(B, image + guidance channels, X, Y, Z)``.
            x_counterpart: the mirrored counterpart's IMAGE channels ``(B, image_channels, X, Y, Z)``
                (a tensor with guidance channels too has them dropped: the counterpart's
                guidance is always empty).
            counterpart_features: :meth:`encode_counterpart` of it, cached (then
                ``x_counterpart`` is not needed): a click costs the patch encoder and the head.
        """
        features = self.forward_features(x)
        if self.saca is None:
            return self.forward_head(features, None, return_attention)
        if counterpart_features is None:
            if x_counterpart is None:
                raise ValueError("SA-Swin with SACA needs x_counterpart (the mirrored counterpart's image channels)")
            if x_counterpart.shape[1] == self.network_in_channels:
                x_counterpart = x_counterpart[:, : self.in_channels]
            if x_counterpart.shape[2:] != x.shape[2:] or x_counterpart.shape[1] != self.in_channels:
                raise ValueError(f"x_counterpart shape {tuple(x_counterpart.shape)} does not match x "
                                 f"{tuple(x.shape)} with {self.in_channels} image channels")
            counterpart_features = self.encode_counterpart(x_counterpart)
        return self.forward_head(features, counterpart_features, return_attention)
