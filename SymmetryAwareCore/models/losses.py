"""Losses of symmetry-aware pretraining (Ma et al., MICCAI 2024).

Four proxy tasks, each loss returned apart and in a weighted sum (the authors weight the
symmetry loss 0.5 and the others 1):

1. rotation: cross-entropy over the 4 rotations about the left-right axis;
2. contrastive: NT-Xent between two views of the same patches;
3. inpainting: L1 on the corrupted voxels only;
4. symmetry: binary cross-entropy on ``p = (1 + cos(z, z~)) / 2`` with target 1 for a
   healthy scan (patch and counterpart pulled together) and 0 for a patient (pushed
   apart). ``1 - p`` is exactly the zero-shot asymmetry score.
"""

from __future__ import annotations

from typing import Dict, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pretext import PretextView

__all__ = [
    "nt_xent_loss",
    "inpainting_loss",
    "symmetry_loss",
    "token_symmetry_loss",
    "rotation_loss",
    "SymmetryAwarePretrainingLoss",
    "TASKS",
    "balanced_weights",
]

TASKS = ("rotation", "contrastive", "inpainting", "symmetry")
"""The four proxy tasks, in the order of the loss's weights."""


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (SimCLR) between ``(B, D)`` embeddings of two views; row ``b`` of each is
    the same patch. The negatives are the other ``2B - 2`` rows, so ``B >= 2`` is needed
    (with one sample the loss is constant and trains nothing)."""
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must be (B, D) of equal shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError("the contrastive loss needs at least 2 samples per batch (the other samples are its negatives)")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.t() / temperature
    # Built from the tensor's own size (never from a configured batch size).
    self_mask = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def inpainting_loss(reconstruction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the corrupted voxels only.

    ``reconstruction`` and ``target`` ``(B, C, X, Y, Z)``; ``mask`` ``(B, 1, X, Y, Z)``
    bool, True where corrupted.
    """
    if reconstruction.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ")
    if mask.shape[0] != target.shape[0] or mask.shape[2:] != target.shape[2:] or mask.shape[1] not in (1, target.shape[1]):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit target {tuple(target.shape)}")
    weight = mask.to(torch.float32).expand_as(target)
    count = weight.sum()
    if count == 0:
        raise ValueError("the inpainting mask is empty: nothing was corrupted")
    return ((reconstruction.float() - target.float()).abs() * weight).sum() / count


def symmetry_loss(z: torch.Tensor, z_counterpart: torch.Tensor, healthy: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """BCE on ``p = (1 + cos(z, z~)) / 2`` against ``healthy``.

    ``z`` and ``z_counterpart`` ``(B, D)``; ``healthy`` ``(B,)``: 1 healthy, 0 patient,
    -1 unknown (left out of the mean; a batch with no known label gives 0).
    """
    if z.ndim != 2 or z.shape != z_counterpart.shape:
        raise ValueError(f"z and z_counterpart must be (B, D) of equal shape, got {tuple(z.shape)}, {tuple(z_counterpart.shape)}")
    p = (1.0 + F.cosine_similarity(z.float(), z_counterpart.float(), dim=1, eps=eps)) / 2.0
    return _bce_healthy(p, healthy, eps)


def token_symmetry_loss(tokens: torch.Tensor, tokens_counterpart: torch.Tensor, healthy: torch.Tensor,
                        eps: float = 1e-6) -> torch.Tensor:
    """The symmetry loss region by region, for a counterpart that is the whole input's flip.

    ``tokens``, ``tokens_counterpart`` ``(B, D, X', Y', Z')`` (token ``i`` of the counterpart is
    the mirror region of token ``i``); ``healthy`` as :func:`symmetry_loss`. BCE on
    ``p = 1 - max_i a_i``, ``a_i = (1 - cos(z_i, z~_i)) / 2``: a healthy scan has every region
    like its mirror, a patient at least one that is not (multiple-instance form); ``1 - p`` is
    the zero-shot scan score (:func:`~SymmetryAwareCore.models.symmetry_head.scan_asymmetry`).
    Pooled embeddings cannot serve here: see :mod:`~SymmetryAwareCore.models.symmetry_head`.
    """
    from .symmetry_head import asymmetry_map, scan_asymmetry

    p = 1.0 - scan_asymmetry(asymmetry_map(tokens, tokens_counterpart))
    return _bce_healthy(p, healthy, eps)


def _bce_healthy(p: torch.Tensor, healthy, eps: float) -> torch.Tensor:
    healthy = torch.as_tensor(healthy, device=p.device).float().reshape(-1)
    if healthy.shape[0] != p.shape[0]:
        raise ValueError(f"healthy has {healthy.shape[0]} labels for a batch of {p.shape[0]}")
    if not torch.all((healthy == 0) | (healthy == 1) | (healthy == -1)):
        raise ValueError("healthy labels must be 1 (healthy), 0 (patient) or -1 (unknown)")
    p = p.clamp(eps, 1.0 - eps)
    known = healthy >= 0
    # Written out rather than F.binary_cross_entropy, which autocast refuses.
    per_scan = -(healthy * p.log() + (1.0 - healthy) * (1.0 - p).log())
    # Multiplying keeps the graph (and zero gradients) when no label is known.
    return (per_scan * known).sum() / known.sum().clamp(min=1)


def rotation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``(B, 4)`` rotation logits against ``(B,)`` labels."""
    return F.cross_entropy(logits.float(), labels.to(logits.device).long())


class SymmetryAwarePretrainingLoss(nn.Module):
    """Weighted sum of the four proxy losses over two views.

    Args:
        rotation_weight, contrastive_weight, inpainting_weight: default 1.
        symmetry_weight: default 0.5 (as the authors).
        temperature: NT-Xent temperature.
        token_symmetry: the region-by-region form (:func:`token_symmetry_loss`), for whole
            inputs whose counterpart is their exact flip; default the pooled form (crops).

    ``forward(out1, out2, view1, view2, healthy)`` takes the outputs of
    :class:`~SymmetryAwareCore.models.symmetry_head.SASwinPretrainer` on the two
    :class:`~SymmetryAwareCore.models.pretext.PretextView` and returns a dict with
    ``"rotation"``, ``"contrastive"``, ``"inpainting"``, ``"symmetry"`` (each averaged
    over the views where it applies) and ``"total"`` (the weighted sum). A task with
    weight 0 is not computed and reported as 0 (so ``healthy`` may then be None).
    """

    def __init__(
        self,
        rotation_weight: float = 1.0,
        contrastive_weight: float = 1.0,
        inpainting_weight: float = 1.0,
        symmetry_weight: float = 0.5,
        temperature: float = 0.5,
        token_symmetry: bool = False,
    ) -> None:
        super().__init__()
        self.token_symmetry = token_symmetry
        weights = dict(
            rotation=rotation_weight, contrastive=contrastive_weight, inpainting=inpainting_weight, symmetry=symmetry_weight
        )
        for name, w in weights.items():
            if w < 0:
                raise ValueError(f"{name}_weight must be >= 0, got {w}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.weights = weights
        self.temperature = temperature

    def forward(
        self,
        out1: Mapping[str, torch.Tensor],
        out2: Mapping[str, torch.Tensor],
        view1: PretextView,
        view2: PretextView,
        healthy=None,
    ) -> Dict[str, torch.Tensor]:
        device = out1["rotation"].device
        zero = torch.zeros((), device=device)
        losses = {name: zero for name in self.weights}
        if self.weights["rotation"] > 0:
            losses["rotation"] = (rotation_loss(out1["rotation"], view1.rotation) + rotation_loss(out2["rotation"], view2.rotation)) / 2
        if self.weights["contrastive"] > 0:
            losses["contrastive"] = nt_xent_loss(out1["contrastive"], out2["contrastive"], self.temperature)
        if self.weights["inpainting"] > 0:
            losses["inpainting"] = (
                inpainting_loss(out1["reconstruction"], view1.target, view1.mask)
                + inpainting_loss(out2["reconstruction"], view2.target, view2.mask)
            ) / 2
        if self.weights["symmetry"] > 0:
            if healthy is None:
                raise ValueError("the symmetry loss needs healthy labels (1 healthy, 0 patient, -1 unknown)")
            if self.token_symmetry:
                losses["symmetry"] = (
                    token_symmetry_loss(out1["token_embedding"], out1["token_embedding_counterpart"], healthy)
                    + token_symmetry_loss(out2["token_embedding"], out2["token_embedding_counterpart"], healthy)
                ) / 2
            else:
                losses["symmetry"] = (
                    symmetry_loss(out1["embedding"], out1["embedding_counterpart"], healthy)
                    + symmetry_loss(out2["embedding"], out2["embedding_counterpart"], healthy)
                ) / 2
        losses["total"] = sum(self.weights[name] * losses[name] for name in self.weights)
        return losses


def balanced_weights(gradient_norms: Mapping[str, float], total: float = 1.0) -> Dict[str, float]:
    """Loss weights that give every task the same share of the encoder gradient.

    ``gradient_norms``: each task's encoder gradient norm ``g_t = ||d L_t / d theta_enc||`` for
    an unweighted loss, measured on the same batches at the same weights (initialisation).
    Returns ``w_t = total / (n * g_t)``, so each weighted task contributes a gradient of norm
    ``total / n`` and their sum has norm at most ``total``. With the authors' weights
    (1, 1, 1, 0.5) this project measured g = 18.9, 0.53, 0.22 and 10.0 at initialisation:
    rotation and symmetry took over 97 % of the gradient, and clipping at 1 kept only them.

    Raises ValueError for an unknown task or a norm that is not positive and finite.
    """
    import math

    unknown = sorted(set(gradient_norms) - set(TASKS))
    if unknown or not gradient_norms:
        raise ValueError(f"gradient_norms must name tasks among {', '.join(TASKS)}, got {sorted(gradient_norms)}")
    for name, g in gradient_norms.items():
        if not (math.isfinite(float(g)) and float(g) > 0):
            raise ValueError(f"the {name} gradient norm must be positive and finite, got {g}")
    if not total > 0:
        raise ValueError(f"total must be positive, got {total}")
    n = len(gradient_norms)
    return {name: total / (n * float(g)) for name, g in gradient_norms.items()}
