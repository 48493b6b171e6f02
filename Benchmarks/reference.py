"""The reference network of the cost benchmarks, behind SA-Swin's call signature."""

from __future__ import annotations

import torch.nn as nn


class PatchOnly(nn.Module):
    """MONAI SwinUNETR behind SA-Swin's call signature (the counterpart is ignored), so one
    training loop times both networks."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x, x_counterpart=None):
        return self.inner(x)
