"""SA-Swin networks, the symmetry-aware head, its losses and model cards.

Modules:
- ``saca``: the symmetry-aware cross-attention block.
- ``encoder``: MONAI's Swin encoder wiring, hidden-state layout, SACA stages.
- ``sa_swin_unetr``: :class:`SASwinUNETR` (segmentation).
- ``sa_swin_classifier``: :class:`SASwinClassifier` (scan-level multi-label).
- ``symmetry_head``: :class:`SASwinPretrainer`, the SAH, zero-shot asymmetry scores.
- ``pretext``: rotation and masking views for pretraining; ``losses``: the four losses.
- ``checkpoints``, ``monai_weights``, ``model_card``: safe weight files and MONAI weights.
- ``registry``: architecture names of model cards (imports no torch).

Names below are imported on first use, so ``import SymmetryAwareCore.models.registry``
stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SACABlock": "saca",
    "SASwinUNETR": "sa_swin_unetr",
    "PAIRINGS": "sa_swin_unetr",
    "SASwinClassifier": "sa_swin_classifier",
    "SASwinPretrainer": "symmetry_head",
    "SymmetryAwareHead": "symmetry_head",
    "asymmetry_score": "symmetry_head",
    "asymmetry_map": "symmetry_head",
    "SymmetryAwarePretrainingLoss": "losses",
    "make_pretext_view": "pretext",
    "token_grid_shape": "encoder",
    "ModelCard": "model_card",
    "InputChannel": "model_card",
    "Label": "model_card",
    "save_model": "model_card",
    "load_model": "model_card",
    "load_monai_weights": "monai_weights",
    "build_model": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
