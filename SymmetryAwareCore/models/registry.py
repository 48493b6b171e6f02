"""Architecture names used in model cards, mapped to the classes that build them.

The table holds import paths, not classes, so listing the architectures (and checking a
card's name) needs no torch import.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Mapping, Tuple

__all__ = ["ARCHITECTURES", "architecture_names", "get_architecture", "architecture_name", "build_model"]

ARCHITECTURES: Dict[str, str] = {
    "SASwinUNETR": "SymmetryAwareCore.models.sa_swin_unetr:SASwinUNETR",
    "SASwinClassifier": "SymmetryAwareCore.models.sa_swin_classifier:SASwinClassifier",
    "SASwinPretrainer": "SymmetryAwareCore.models.symmetry_head:SASwinPretrainer",
    "PromptableSASwinUNETR": "SymmetryAwareCore.models.promptable:PromptableSASwinUNETR",
    "ClickRefiner": "SymmetryAwareCore.models.click_refiner:ClickRefiner",
}


def architecture_names() -> Tuple[str, ...]:
    return tuple(sorted(ARCHITECTURES))


def get_architecture(name: str):
    """The class registered as ``name``; ValueError naming the known ones otherwise."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(architecture_names())}")
    module, attr = ARCHITECTURES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def architecture_name(model) -> str:
    """The registered name of ``model``'s class (ValueError if it is not registered)."""
    for name, path in ARCHITECTURES.items():
        module, attr = path.split(":")
        cls = type(model)
        if cls.__module__ == module and cls.__name__ == attr:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered architecture ({', '.join(architecture_names())})")


def build_model(name: str, kwargs: Mapping[str, Any]):
    """Build architecture ``name`` from the keyword arguments stored in a model card.

    Lists stored by JSON are turned back into tuples, the type the constructors declare.
    """
    cls = get_architecture(name)
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return cls(**fixed)
    except TypeError as exc:  # unknown or missing keyword: a card problem, not a bug
        raise ValueError(f"cannot build {name} from {sorted(fixed)}: {exc}") from exc
