"""Finding cases and their channel files: explicit files, a folder, folders of cases, a CSV.

A model card declares its input channels in order, each with filename patterns
(``{"name": "t1ce", "patterns": ["*t1c*", "*t1ce*"]}``). Files are matched to channels by
those patterns (case-insensitive, on the file name), so the order a user types them in does
not matter; when no file name matches any pattern and the count is right, the given order is
used and the caller is told so.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from ..contract import IMAGE_SUFFIXES, ChannelMatchError, case_id_from_files, case_id_from_path, match_channels
from ..errors import InputError

__all__ = [
    "Case",
    "ChannelSpec",
    "discover_cases",
    "assign_channels",
    "case_id_from_path",
    "case_id_from_files",
    "check_case_id",
]


@dataclass(frozen=True)
class ChannelSpec:
    """One input channel of a model: its name and the filename patterns that identify it."""

    name: str
    patterns: Sequence[str] = ()


@dataclass
class Case:
    """One case to process: an id and one path per model channel, in the model's order."""

    case_id: str
    paths: List[Path]
    notes: List[str] = field(default_factory=list)


def check_case_id(case_id: str, where: Optional[str] = None) -> str:
    """A case id names a folder inside the output folder: refuse ids that would leave it,
    hide it (a leading dot is the staging folders' mark) or cannot be a file name."""
    text = str(case_id)
    bad = set('/\\:*?"<>|')
    if (
        not text.strip()
        or text in (".", "..")
        or text.startswith(".")
        or any(ord(c) < 32 or c in bad for c in text)
        or text != text.strip()
        or len(text.encode("utf-8")) > 200
    ):
        raise InputError(f"case id {text!r} cannot be a folder name (no path separators, leading dot, control "
                         "or reserved characters, surrounding spaces; at most 200 bytes)", where)
    return text


def _entries(folder: Path) -> List[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as error:
        raise InputError(f"cannot list the folder: {error.strerror or error}", folder) from None


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def _is_dicom_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    files = [p for p in _entries(path) if p.is_file() and not p.name.startswith(".")]
    return bool(files) and not any(_is_image_file(p) for p in files) and any(
        p.suffix.lower() in (".dcm", ".ima", "") for p in files
    )


def assign_channels(paths: Sequence[Path], channels: Sequence[ChannelSpec], where: str = "") -> tuple[List[Path], List[str]]:
    """Order ``paths`` as the model's ``channels`` expect (the rule: :func:`..contract.match_channels`).

    Returns:
        the paths in channel order and notes for the user (e.g. "order taken as given").
    Raises:
        InputError: wrong number of files, or patterns that match ambiguously or not at all.
    """
    paths = [Path(p) for p in paths]
    try:
        order, notes = match_channels([p.name for p in paths], [(c.name, tuple(c.patterns)) for c in channels])
    except ChannelMatchError as error:
        raise InputError(str(error), where or None) from None
    return [paths[i] for i in order], notes


def _case_from_files(case_id: str, files: Sequence[Path], channels: Sequence[ChannelSpec], where: str) -> Case:
    ordered, notes = assign_channels(files, channels, where)
    return Case(case_id, ordered, notes)


def _folder_cases(folder: Path, channels: Sequence[ChannelSpec]) -> List[Case]:
    entries = _entries(folder)
    images = [p for p in entries if _is_image_file(p)]
    subdirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    if images:
        return [_case_from_files(folder.name, images, channels, str(folder))]
    if _is_dicom_folder(folder):
        return [_case_from_files(folder.name, [folder], channels, str(folder))]
    cases = []
    for sub in subdirs:
        sub_images = [p for p in _entries(sub) if _is_image_file(p)]
        if sub_images:
            cases.append(_case_from_files(sub.name, sub_images, channels, str(sub)))
        elif _is_dicom_folder(sub):
            cases.append(_case_from_files(sub.name, [sub], channels, str(sub)))
    if not cases:
        raise InputError("no images (.nii, .nii.gz, .nrrd, .mha, DICOM) found in this folder or its sub-folders", folder)
    return cases


def _csv_cases(table: Path, channels: Sequence[ChannelSpec]) -> List[Case]:
    """Rows of ``case_id,<channel name>,...``; relative paths are relative to the CSV."""
    try:
        with open(table, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"cannot read the case table: {error}", table) from None
    names = [c.name for c in channels]
    if not rows:
        raise InputError("the case table has no rows", table)
    header = set(rows[0].keys())
    missing = [n for n in ["case_id", *names] if n not in header]
    if missing:
        raise InputError(f"the case table lacks column(s) {', '.join(missing)} (expected case_id,{','.join(names)})", table)
    cases = []
    for row in rows:
        if any(row.get(n) is None for n in ["case_id", *names]):
            raise InputError(f"row {len(cases) + 2} of the case table has too few columns", table)
        paths = [(table.parent / row[n].strip()) if not Path(row[n].strip()).is_absolute() else Path(row[n].strip()) for n in names]
        cases.append(Case(row["case_id"].strip(), paths))
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"duplicate case_id(s) in the case table: {', '.join(dupes)}", table)
    return cases


def discover_cases(inputs: Sequence[str], channels: Sequence[ChannelSpec], case_id: Optional[str] = None) -> List[Case]:
    """Turn the command line's inputs into cases.

    - image files: one case, its channel files (matched by pattern);
    - one folder of images: one case; one folder of sub-folders: one case per sub-folder;
      a folder of DICOM files: one single-channel case;
    - one ``.csv`` file: one case per row.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise InputError("no input given")
    for p in paths:
        if not p.exists():
            raise InputError("no such file or folder", p)
    table = len(paths) == 1 and paths[0].suffix.lower() == ".csv"
    if table:
        cases = _csv_cases(paths[0], channels)
    elif len(paths) == 1 and paths[0].is_dir():
        cases = _folder_cases(paths[0], channels)
    else:
        for p in paths:
            if p.is_dir() and not _is_dicom_folder(p):
                raise InputError("give either image files or one folder, not both", p)
        cases = [_case_from_files(case_id_from_files(paths), paths, channels, "")]
    if case_id and len(cases) == 1 and not table:
        cases[0].case_id = case_id
    folded: Dict[str, str] = {}
    for case in cases:
        check_case_id(case.case_id, str(paths[0]) if len(paths) == 1 else None)
        # On case-insensitive file systems (macOS, Windows) these would share one folder.
        other = folded.setdefault(case.case_id.casefold(), case.case_id)
        if other != case.case_id:
            raise InputError(f"case ids {other!r} and {case.case_id!r} differ only in letter case; "
                             "they would share one output folder", str(paths[0]) if len(paths) == 1 else None)
    return cases
