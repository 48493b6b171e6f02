"""Label tables: what each integer of a label map means, how to colour it, how to code it.

Terminology strings follow 3D Slicer's segment tag ``TerminologyEntry`` format
(``context~category~type~typeModifier~anatomicContext~anatomicRegion~regionModifier``,
each code as ``scheme^value^meaning``). Codes are taken only from published lists:

- Necrosis (SCT 6574001), Edema (SCT 79654002) and Hemorrhage (SCT 50960005), category
  Morphologically Altered Structure (SCT 49755003), are entries of Slicer's
  "3D Slicer General Anatomy list"; their colours are that list's recommended display
  colours, so segments look as Slicer's own terminology would show them.
- Enhancing tumour has no entry there; DICOM's brain lesion segmentation types code it as
  NCIt C113842 "Enhancing Lesion", used with the DICOM master list context. Its colour is
  a yellow chosen to stand apart from the other two.

Label values follow BraTS: 1 necrotic tumour core, 2 peritumoral oedema, enhancing tumour
4 in BraTS 2021 and earlier, 3 in BraTS 2023.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = [
    "LabelInfo",
    "brats_labels",
    "brats_regions",
    "ct_haemorrhage_labels",
    "label_table",
    "LABEL_TABLES",
]

_SLICER_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
_DICOM_CONTEXT = "Segmentation category and type - DICOM master list"
_ANATOMY_CONTEXT = "Anatomic codes - DICOM master list"
_ALTERED = "SCT^49755003^Morphologically Altered Structure"


def _term(context: str, category: str, type_: str) -> str:
    """A Slicer terminology entry string with no modifiers and no anatomic region."""
    return f"{context}~{category}~{type_}~^^~{_ANATOMY_CONTEXT}~^^~^^"


@dataclass(frozen=True)
class LabelInfo:
    """One label value of a label map.

    Attributes:
        value: the integer stored in the label map (never 0, the background).
        name: segment name shown to users.
        color: ``(r, g, b)`` in ``[0, 1]``.
        terminology: Slicer ``TerminologyEntry`` string, or ``""`` when no code is known.
    """

    value: int
    name: str
    color: Tuple[float, float, float]
    terminology: str = ""

    def __post_init__(self) -> None:
        if int(self.value) != self.value or not 0 < self.value <= 65535:
            raise ValueError(f"label value must be an integer in 1..65535, got {self.value}")
        if len(self.color) != 3 or not all(0.0 <= c <= 1.0 for c in self.color):
            raise ValueError(f"color must be three numbers in [0, 1], got {self.color}")
        object.__setattr__(self, "color", tuple(float(c) for c in self.color))


def _rgb(r: int, g: int, b: int) -> Tuple[float, float, float]:
    return (r / 255.0, g / 255.0, b / 255.0)


_NECROSIS = _term(_SLICER_CONTEXT, _ALTERED, "SCT^6574001^Necrosis")
_EDEMA = _term(_SLICER_CONTEXT, _ALTERED, "SCT^79654002^Edema")
_ENHANCING = _term(_DICOM_CONTEXT, _ALTERED, "NCIt^C113842^Enhancing Lesion")
_HEMORRHAGE = _term(_SLICER_CONTEXT, _ALTERED, "SCT^50960005^Hemorrhage")


def brats_labels(convention: int = 2021) -> Tuple[LabelInfo, ...]:
    """The BraTS glioma labels: necrotic core 1, oedema 2, enhancing tumour 4 (2021) or 3 (2023)."""
    if convention not in (2021, 2023):
        raise ValueError(f"BraTS convention must be 2021 (ET = 4) or 2023 (ET = 3), got {convention}")
    et_value = 4 if convention == 2021 else 3
    return (
        LabelInfo(1, "necrotic tumour core", _rgb(216, 191, 216), _NECROSIS),
        LabelInfo(2, "peritumoral oedema", _rgb(140, 224, 228), _EDEMA),
        LabelInfo(et_value, "enhancing tumour", _rgb(250, 210, 40), _ENHANCING),
    )


def brats_regions(convention: int = 2021) -> Dict[str, Tuple[int, ...]]:
    """The evaluated BraTS regions as sets of label values: TC, WT, ET."""
    necrosis, oedema, enhancing = (info.value for info in brats_labels(convention))
    return {
        "TC": (necrosis, enhancing),
        "WT": (necrosis, oedema, enhancing),
        "ET": (enhancing,),
    }


def ct_haemorrhage_labels() -> Tuple[LabelInfo, ...]:
    """Head CT: 1 intracranial haemorrhage."""
    return (LabelInfo(1, "intracranial haemorrhage", _rgb(188, 65, 28), _HEMORRHAGE),)


LABEL_TABLES = {
    "brats2021": lambda: brats_labels(2021),
    "brats2023": lambda: brats_labels(2023),
    "ct_haemorrhage": ct_haemorrhage_labels,
}


def label_table(name: str) -> Tuple[LabelInfo, ...]:
    """A label table by name: ``"brats2021"``, ``"brats2023"`` or ``"ct_haemorrhage"``."""
    try:
        return LABEL_TABLES[name]()
    except KeyError:
        raise ValueError(f"unknown label table {name!r}; known: {', '.join(LABEL_TABLES)}") from None
