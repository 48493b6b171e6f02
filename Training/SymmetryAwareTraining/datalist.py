"""MONAI-style datalists: cases, folds, and the leakage check.

A datalist is JSON like MONAI's Decathlon lists::

    {"training": [{"case": "sub-001", "image": ["t1.nii.gz", "flair.nii.gz"],
                   "label": "seg.nii.gz", "fold": 0, "status": "patient"}, ...],
     "validation": [...]}

Paths are relative to the JSON file's folder (or to its ``base_dir``, itself relative to the
file). ``image`` is one file or a list (one per channel). Absolute paths are taken as they
are; a relative path that climbs out of the base folder (``../``) is followed, with a notice
on stderr naming how many do, so a list that reaches outside its own folder is never silent. The evaluation set of fold ``k`` is the ``training`` entries with ``"fold": k``
(the others train); a list without folds uses its ``validation`` entries instead.
A case's identity is its ``case`` (or ``id``, ``name``) field, otherwise the first image
path. Image-level labels are read in either of two spellings: a ``findings`` mapping
(``{"haemorrhage": 1}``) or top-level flags (``"haemorrhage": 1``, as the phantom
generator writes them); the status is ``"status": "healthy"|"patient"`` or the flags
``"healthy": 1`` / ``"patient": 1``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

from SymmetryAwareCore.errors import InputError

__all__ = ["Datalist", "load_datalist", "case_id", "finding_value", "finding_label_values", "status_of",
           "check_leakage", "LeakageError", "subset_fraction"]

_PATH_KEYS = ("image", "label")


class LeakageError(InputError):
    """A pretraining list holds cases of a downstream evaluation fold."""


def case_id(entry: Dict[str, Any]) -> str:
    """Stable identity of a case: ``case``/``id`` if given, else its first image's resolved path."""
    for key in ("case", "id", "name"):
        if entry.get(key):
            return str(entry[key])
    image = entry["image"]
    return str(image[0] if isinstance(image, list) else image)


def finding_value(entry: Dict[str, Any], finding: str):
    """The entry's 0/1 value for ``finding``, or None when it does not say."""
    findings = entry.get("findings")
    if isinstance(findings, dict) and finding in findings:
        return float(findings[finding])
    value = entry.get(finding)
    return float(value) if isinstance(value, (int, float)) else None


def finding_label_values(findings: Sequence[str], explicit: Dict[str, Sequence[int]],
                         datalist_labels: Any) -> List[List[int]]:
    """The label-map values of each finding's voxels, in ``findings`` order.

    ``explicit`` (``data.finding_labels``, ``{finding: [values]}``) wins; otherwise the
    datalist's own ``labels`` block (``{finding: {"value": name}}``, as the phantom generator
    writes it). InputError naming the finding when neither says, or a value is not a
    positive integer (0 is the background).
    """
    out = []
    for finding in findings:
        values = explicit.get(finding) if explicit else None
        if values is None and isinstance(datalist_labels, dict) and isinstance(datalist_labels.get(finding), dict):
            values = list(datalist_labels[finding].keys())
        if not values:
            raise InputError(f"no label values for finding {finding!r}: set data.finding_labels "
                             f"(e.g. {{{finding}: [1]}}) or give the datalist a 'labels' block")
        try:
            ints = [int(v) for v in values]
        except (TypeError, ValueError):
            raise InputError(f"label values of finding {finding!r} must be integers, got {values}") from None
        if any(v <= 0 for v in ints):
            raise InputError(f"label values of finding {finding!r} must be positive (0 is background), got {ints}")
        out.append(sorted(set(ints)))
    return out


def status_of(entry: Dict[str, Any]) -> int:
    """0 healthy, 1 patient, -1 unknown."""
    status = str(entry.get("status", "")).lower()
    if status in ("healthy", "patient"):
        return int(status == "patient")
    if entry.get("patient") == 1:
        return 1
    if entry.get("healthy") == 1:
        return 0
    return -1


def _outside(value: str, base: Path) -> bool:
    """True for a relative path that climbs out of ``base`` (judged on the text, before
    symlinks: a data folder made of links is inside)."""
    if os.path.isabs(value):
        return False
    joined = os.path.normpath(os.path.join(str(base), value))
    return os.path.commonpath([joined, str(base)]) != str(base)


def _resolve(entry: Dict[str, Any], base: Path, path: Path, where: str, outside: List[str]) -> Dict[str, Any]:
    if not isinstance(entry, dict) or "image" not in entry:
        raise InputError(f"{where}: every entry needs an 'image'", path)
    out = dict(entry)
    for key in _PATH_KEYS:
        if key not in out or out[key] is None or isinstance(out[key], (int, float)):
            continue
        value = out[key]
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, str) and v for v in values):
            raise InputError(f"{where}: '{key}' must be a path or a list of paths", path)
        outside.extend(v for v in values if _outside(v, base))
        resolved = [str((base / v).resolve()) for v in values]
        out[key] = resolved if isinstance(value, (list, tuple)) else resolved[0]
    return out


_NOTICED: set = set()


def _notice_outside(path: Path, base: Path, outside: List[str]) -> None:
    key = (str(path.resolve()), len(outside))
    if outside and key not in _NOTICED:
        _NOTICED.add(key)
        print(f"symmetryaware-train: note: {path}: {len(outside)} relative path(s) lie outside the list's folder "
              f"{base} (e.g. {outside[0]})", file=sys.stderr)


@dataclass
class Datalist:
    """Resolved entries of one datalist file, by section (``training``, ``validation``...)."""

    path: Path
    sections: Dict[str, List[Dict[str, Any]]]

    @property
    def has_folds(self) -> bool:
        return any("fold" in e for e in self.sections.get("training", []))

    def split(self, fold: int) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
        """``(train, evaluation)`` entries for evaluation fold ``fold``."""
        training = self.sections.get("training", [])
        if self.has_folds:
            evaluation = [e for e in training if int(e.get("fold", -1)) == fold]
            if not evaluation:
                folds = sorted({int(e["fold"]) for e in training if "fold" in e})
                raise InputError(f"fold {fold} has no cases (folds present: {folds})", self.path)
            train = [e for e in training if int(e.get("fold", -1)) != fold]
            return train, evaluation
        return list(training), list(self.sections.get("validation", []))

    def all_entries(self) -> List[Dict[str, Any]]:
        return [e for entries in self.sections.values() for e in entries]

    def held_out(self, fold: int) -> List[Tuple[str, Dict[str, Any]]]:
        """Every entry training must not see, with where it is held: the evaluation fold's
        entries and every entry of every section other than ``training`` (``validation``,
        ``testing``...), whether or not the list uses folds."""
        out = [(f"fold {fold}", e) for e in self.split(fold)[1]] if self.has_folds else []
        for name, entries in self.sections.items():
            if name != "training":
                out += [(name, e) for e in entries]
        return out


def load_datalist(path: Union[str, Path]) -> Datalist:
    """Read a datalist JSON and resolve its paths against the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError("datalist not found", path)
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"datalist is not valid JSON ({error})", path) from None
    if not isinstance(raw, dict):
        raise InputError("datalist must be a JSON object with a 'training' list", path)
    base = path.parent.resolve()
    if isinstance(raw.get("base_dir"), str):
        base = (base / raw["base_dir"]).resolve()
    sections = {}
    outside: List[str] = []
    for key, entries in raw.items():
        # Sections are lists of case objects; other lists (e.g. "channels") are metadata.
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            continue
        sections[key] = [_resolve(e, base, path, f"{key}[{i}]", outside) for i, e in enumerate(entries)]
    _notice_outside(path, base, outside)
    if not sections.get("training") and not sections.get("validation"):
        raise InputError("datalist has no 'training' or 'validation' entries", path)
    return Datalist(path, sections)


def _identities(entry: Dict[str, Any]) -> set:
    """Every name a case can be recognised by: its id and each of its image files."""
    ids = {case_id(entry)}
    image = entry.get("image")
    ids.update(image if isinstance(image, list) else [image])
    return {str(i) for i in ids if i}


def check_leakage(pretrain: Datalist, downstream: Datalist, fold: int) -> None:
    """Refuse a pretraining list that holds any case ``downstream`` holds out of training.

    Held out (:meth:`Datalist.held_out`): evaluation fold ``fold`` and every section other than
    ``training`` (``validation``, ``testing``...). Cases match by id or by any shared image
    file. Raises :class:`LeakageError` naming them and where each is held out.
    """
    held_out: Dict[str, Tuple[str, str]] = {}
    for where, entry in downstream.held_out(fold):
        for ident in _identities(entry):
            held_out.setdefault(ident, (case_id(entry), where))
    leaked = sorted({held_out[i] for entry in pretrain.all_entries() for i in _identities(entry) if i in held_out})
    if leaked:
        shown = ", ".join(f"{case} ({where})" for case, where in leaked[:10])
        shown += f" and {len(leaked) - 10} more" if len(leaked) > 10 else ""
        raise LeakageError(
            f"leakage: the pretraining list {pretrain.path} holds {len(leaked)} case(s) that {downstream.path} "
            f"holds out of training: {shown}"
        )


def subset_fraction(entries: Sequence[Dict[str, Any]], fraction: float, seed: int) -> List[Dict[str, Any]]:
    """A reproducible ``fraction`` of ``entries`` (label-efficiency runs: 10/30/50/80 %)."""
    import numpy as np

    if not 0 < fraction <= 1:
        raise InputError(f"data.label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(entries)
    count = max(1, int(round(fraction * len(entries))))
    order = np.random.default_rng(seed).permutation(len(entries))[:count]
    return [entries[i] for i in sorted(order)]
