"""ClickRefiner: the light prompt stage of the two-stage interactive SA-Swin.

Why two stages: a click must cost well under a second on a CPU, and a whole SA-Swin pass
(patch encoder, SACA against the mirrored counterpart, decoder) on a 64^3 window costs
several seconds there. The heavy, symmetry-aware part does not depend on the clicks, so it
runs once per scan: the automatic segmentation model (an :class:`SASwinUNETR` with SACA,
the card named by the refiner card's ``extra.interactive.backbone``) gives its BraTS region
probabilities on the whole brain box through the pipeline's own mirror-paired sliding
window (:func:`SymmetryAwareCore.inference.pipeline.predict_box`). Each click then runs only
this small 3D U-Net (MONAI's :class:`~monai.networks.nets.UNet`) on one window, in the
manner of SAM's cached image embedding and nnInteractive's prompt encoding.

Input ``(B, C, X, Y, Z)``, the channels in this order (the one definition is
:meth:`ClickRefiner.assemble`):

1. ``image_channels``: the window of the prepared scan (the card's channels, normalised);
2. ``image_channels`` more when ``mirror`` is True: the mirrored counterpart of the window
   (the other hemisphere at the mirror position, flipped so that voxel ``v`` of it is the
   mirror of voxel ``v`` of the window): what normal tissue looks like there;
3. ``prior_channels``: the backbone's probabilities (sigmoid) of its regions in the window;
4. ``guidance_channels`` (3): positive clicks, negative clicks, box
   (:func:`SymmetryAwareCore.interactive.guidance.guidance_volume`).

Output ``(B, 1, X, Y, Z)``: the lesion logit. Axis 2 of the tensors (spatial axis 0) is
left-right, as everywhere in the project.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["ClickRefiner"]


class ClickRefiner(nn.Module):
    """A small 3D U-Net over image, mirror, backbone prior and click guidance (module docstring).

    Args:
        image_channels: image channels (the backbone card's channels, e.g. 4 for T1, T1ce, T2, FLAIR).
        prior_channels: the backbone's output channels used as prior (3: TC, WT, ET).
        guidance_channels: 3 (positive, negative, box).
        mirror: take the mirrored counterpart's image channels (False: the ablation without them).
        channels: U-Net feature channels per level (MONAI ``UNet`` ``channels``).
        strides: U-Net down-sampling strides between levels (MONAI ``UNet`` ``strides``).
        num_res_units: residual units per block (MONAI ``UNet``).

    Spatial sizes must be divisible by the product of ``strides``.
    """

    def __init__(self, image_channels: int, prior_channels: int = 3, guidance_channels: int = 3,
                 mirror: bool = True, channels: Sequence[int] = (16, 32, 64), strides: Sequence[int] = (2, 2),
                 num_res_units: int = 1) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        if image_channels <= 0 or prior_channels < 0 or guidance_channels <= 0:
            raise ValueError(f"image_channels and guidance_channels must be positive and prior_channels >= 0, got "
                             f"{image_channels}, {prior_channels}, {guidance_channels}")
        self.in_channels = int(image_channels)  # what the card's channels produce (the session's contract)
        self.prior_channels = int(prior_channels)
        self.guidance_channels = int(guidance_channels)
        self.mirror = bool(mirror)
        self.network_in_channels = self.in_channels * (2 if self.mirror else 1) + self.prior_channels + self.guidance_channels
        self.init_kwargs = {"image_channels": self.in_channels, "prior_channels": self.prior_channels,
                            "guidance_channels": self.guidance_channels, "mirror": self.mirror,
                            "channels": tuple(int(c) for c in channels), "strides": tuple(int(s) for s in strides),
                            "num_res_units": int(num_res_units)}
        self.unet = UNet(spatial_dims=3, in_channels=self.network_in_channels, out_channels=1,
                         channels=tuple(channels), strides=tuple(strides), num_res_units=num_res_units)
        # Starts near "no lesion" (sigmoid(-2) = 0.12): an empty mask is the neutral first state.
        with torch.no_grad():
            last = [m for m in self.unet.modules() if isinstance(m, nn.Conv3d) or isinstance(m, nn.ConvTranspose3d)][-1]
            if last.bias is not None:
                last.bias.fill_(-2.0)

    @property
    def divisor(self) -> int:
        out = 1
        for s in self.init_kwargs["strides"]:
            out *= s
        return out

    def assemble(self, image: torch.Tensor, counterpart: Optional[torch.Tensor], prior: torch.Tensor,
                 guidance: torch.Tensor) -> torch.Tensor:
        """The network input ``(B, network_in_channels, X, Y, Z)`` from its parts (module docstring).

        ``image``, ``counterpart`` ``(B, image_channels, ...)`` (counterpart ignored, may be None,
        when ``mirror`` is False), ``prior`` ``(B, prior_channels, ...)``, ``guidance``
        ``(B, guidance_channels, ...)``.
        """
        parts = [image]
        if self.mirror:
            if counterpart is None:
                raise ValueError("this refiner takes the mirrored counterpart: give counterpart")
            parts.append(counterpart)
        parts += [prior, guidance]
        shapes = {tuple(p.shape[2:]) for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"refiner inputs differ in spatial shape: {[tuple(p.shape) for p in parts]}")
        x = torch.cat(parts, dim=1)
        if x.shape[1] != self.network_in_channels:
            raise ValueError(f"refiner input has {x.shape[1]} channels, expected {self.network_in_channels}")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, X, Y, Z)`` of ``x`` ``(B, network_in_channels, X, Y, Z)``."""
        if x.ndim != 5 or x.shape[1] != self.network_in_channels:
            raise ValueError(f"expected (B, {self.network_in_channels}, X, Y, Z), got {tuple(x.shape)}")
        if any(int(s) % self.divisor for s in x.shape[2:]):
            raise ValueError(f"spatial sizes {tuple(x.shape[2:])} must be divisible by {self.divisor}")
        return self.unet(x)

