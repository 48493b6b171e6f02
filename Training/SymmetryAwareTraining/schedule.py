"""Learning-rate schedule: linear warm-up then cosine decay, per optimiser step."""

from __future__ import annotations

import math

__all__ = ["WarmupCosine"]


class WarmupCosine:
    """Multiplier for ``torch.optim.lr_scheduler.LambdaLR``.

    Rises linearly from ``1 / (warmup_steps + 1)`` to 1 over ``warmup_steps`` steps, then
    follows a half cosine down to ``min_ratio`` at ``total_steps``. A callable object (not a
    lambda) so that LambdaLR's ``state_dict`` stores it and a resumed run restores it.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(f"need total_steps > 0 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
