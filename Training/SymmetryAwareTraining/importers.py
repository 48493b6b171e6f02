"""``symmetryaware-train datalist``: a dataset folder as researchers have it -> a checked datalist.

Layouts understood (``--layout auto`` tells them apart):

- ``brats2021``: one folder per case, ``BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz``;
  labels 1 necrotic core, 2 oedema, 4 enhancing tumour (the project's convention).
- ``brats2023``: ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz``;
  labels 1, 2, 3 with 3 = enhancing tumour.
- ``msd``: the Medical Segmentation Decathlon's ``Task01_BrainTumour`` (``dataset.json``,
  ``imagesTr/*.nii.gz`` 4D with channels FLAIR, T1w, t1gd, T2w; ``labelsTr`` with 1 oedema,
  2 non-enhancing tumour, 3 enhancing tumour).
- ``folders``: one sub-folder per case holding four channel files and one label file (name
  containing ``seg`` or ``label``); channels are told apart by the file-name patterns of the
  BraTS model card (``*t1ce*``, ``*flair*``...), as ``symmetryaware segment`` does.

Every datalist it writes uses the project's conventions: channels ``t1, t1ce, t2, flair`` in
that order (the order of :func:`SymmetryAwareCore.inference.model_source.brats_card_fields`)
and labels 1 necrotic core, 2 oedema, 4 enhancing tumour. Where the source differs, the
mapping is explicit and recorded in the datalist's ``import`` block, and the converted files
are written beside the datalist (``<stem>_files/<case>/``); sources are only read:

- label values other than the project's (BraTS 2023's 3, MSD's 1/2/3) -> a relabelled copy
  of the label file (``<case>_seg.nii.gz``); the original path is kept in ``source_label``;
- MSD's 4D images -> one 3D file per channel (``<case>_t1.nii.gz``...), so that every reader
  of this project (training, ``segment``, Slicer) takes the list as it is; the original path
  is kept in ``source_image``.

Every case is checked before it is listed: all channels present, one grid for the channels
and the label (shape and voxel-to-world matrix from the headers, within 1e-3), label values
those of the layout. A case that fails is left out and listed in ``import.skipped`` with its
reason. Folds are seeded and stratified: cases with and without enhancing tumour apart, each
ordered by whole-tumour volume, dealt out in blocks of ``folds`` by a seeded permutation, so
every fold gets small and large tumours alike. ``--fold-file`` instead reads published splits
(JSON: a list of lists of case names, or a mapping ``name -> list``; list k is fold k).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.atomic import atomic_path

__all__ = ["LAYOUTS", "CHANNELS", "Layout", "CaseFiles", "ImportResult", "detect_layout", "discover_cases",
           "check_case", "assign_folds", "read_fold_file", "build_datalist"]

CHANNELS = ("t1", "t1ce", "t2", "flair")
"""The project's channel order (the BraTS model card's)."""

PROJECT_LABELS = {1: "necrotic tumour core", 2: "peritumoral oedema", 4: "enhancing tumour"}

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_GRID_TOL = 1e-3  # as Image.same_grid


@dataclass(frozen=True)
class Layout:
    """How one dataset layout names its files and what its labels mean.

    Attributes:
        name: ``brats2021``, ``brats2023``, ``msd`` or ``folders``.
        suffixes: project channel -> file-name ending before the extension (BraTS layouts).
        label_suffix: the label file's ending (BraTS layouts).
        label_map: source label value -> project value (identity entries included).
        channel_index: MSD: project channel -> index of the 4th axis of the 4D image.
        convention: what the source's labels are, in words, for the record.
    """

    name: str
    suffixes: Dict[str, str] = field(default_factory=dict)
    label_suffix: str = ""
    label_map: Dict[int, int] = field(default_factory=dict)
    channel_index: Dict[str, int] = field(default_factory=dict)
    convention: str = ""

    @property
    def relabels(self) -> bool:
        return any(k != v for k, v in self.label_map.items())


LAYOUTS: Dict[str, Layout] = {
    "brats2021": Layout("brats2021", {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair"}, "_seg",
                        {0: 0, 1: 1, 2: 2, 4: 4}, convention="BraTS 2021: 1 necrotic core, 2 oedema, 4 enhancing"),
    "brats2023": Layout("brats2023", {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f"}, "-seg",
                        {0: 0, 1: 1, 2: 2, 3: 4}, convention="BraTS 2023: 1 necrotic core, 2 oedema, 3 enhancing"),
    # MSD Task01 (its dataset.json): modality 0 FLAIR, 1 T1w, 2 t1gd, 3 T2w; labels 1 edema,
    # 2 non-enhancing tumor, 3 enhancing tumour. Non-enhancing tumour is the BraTS "necrotic
    # and non-enhancing tumour core" (label 1 of the project).
    "msd": Layout("msd", label_map={0: 0, 1: 2, 2: 1, 3: 4}, channel_index={"t1": 1, "t1ce": 2, "t2": 3, "flair": 0},
                  convention="MSD Task01: 1 oedema, 2 non-enhancing tumour, 3 enhancing"),
    # Plain folders: BraTS labels with ET 4 or 3 (decided per case; 3 and 4 never together).
    "folders": Layout("folders", label_map={0: 0, 1: 1, 2: 2, 4: 4}, convention="BraTS: 1, 2 and 4 (or 3) enhancing"),
}

_MSD_MODALITIES = {"0": "flair", "1": "t1w", "2": "t1gd", "3": "t2w"}
_MSD_LABELS = {"1": "edema", "2": "non-enhancing", "3": "enhancing"}


@dataclass
class CaseFiles:
    """One case as found in the source: paths per project channel (MSD: the 4D file for each)."""

    name: str
    images: Dict[str, Optional[Path]]
    label: Optional[Path]
    problem: str = ""
    """Set when the files themselves are already wrong (missing, duplicated): the case is skipped."""


@dataclass
class CheckedCase:
    name: str
    files: CaseFiles
    label_map: Dict[int, int]
    wt_ml: float
    has_et: bool
    spacing: Tuple[float, float, float]


@dataclass
class ImportResult:
    output: Path
    layout: str
    cases: int
    folds: int
    skipped: List[Dict[str, str]]
    converted: int


def _strip_ext(name: str) -> Tuple[str, str]:
    for ext in _IMAGE_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)], ext
    return name, ""


def _is_image(path: Path) -> bool:
    return path.is_file() and _strip_ext(path.name)[1] != ""


def _case_folders(source: Path, exclude: Optional[Path]) -> List[Path]:
    return sorted(p for p in source.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (exclude is None or p.resolve() != exclude.resolve()))


def detect_layout(source: Path) -> str:
    """``msd`` for a folder with ``dataset.json`` and ``imagesTr/``; else the BraTS release whose
    file endings the case folders use; else ``folders``."""
    if (source / "dataset.json").is_file() and (source / "imagesTr").is_dir():
        return "msd"
    for folder in _case_folders(source, None)[:20]:
        try:
            stems = [_strip_ext(p.name)[0].lower() for p in folder.iterdir() if _is_image(p)]
        except OSError:
            continue  # listed as skipped, with the reason, when the cases are discovered
        for name in ("brats2021", "brats2023"):
            layout = LAYOUTS[name]
            if any(s.endswith(layout.suffixes["t1ce"]) for s in stems) and any(s.endswith(layout.label_suffix) for s in stems):
                return name
    return "folders"


def _one_ending(folder: Path, ending: str) -> Tuple[Optional[Path], str]:
    try:
        found = [p for p in sorted(folder.iterdir())
                 if _is_image(p) and _strip_ext(p.name)[0].lower().endswith(ending.lower())]
    except OSError as error:  # an unreadable case folder is that case's problem, not the run's
        return None, f"cannot list the folder ({error.strerror or error})"
    if not found:
        return None, f"no *{ending}.nii.gz"
    if len(found) > 1:
        return None, f"{len(found)} files end in {ending}"
    return found[0], ""


def _brats_cases(source: Path, layout: Layout, exclude: Optional[Path]) -> List[CaseFiles]:
    cases = []
    for folder in _case_folders(source, exclude):
        images: Dict[str, Optional[Path]] = {}
        problems = []
        for channel, ending in layout.suffixes.items():
            images[channel], why = _one_ending(folder, ending)
            if why:
                problems.append(f"channel {channel}: {why}")
        label, why = _one_ending(folder, layout.label_suffix)
        if why:
            problems.append(f"label: {why}")
        cases.append(CaseFiles(folder.name, images, label, "; ".join(problems)))
    return cases


def _msd_cases(source: Path) -> List[CaseFiles]:
    try:
        meta = json.loads((source / "dataset.json").read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"dataset.json is not readable JSON ({error})", source / "dataset.json") from None
    # The channel order and the label meanings are taken from the file, never assumed silently.
    modality = {str(k): str(v).lower() for k, v in (meta.get("modality") or {}).items()}
    if modality and modality != _MSD_MODALITIES:
        raise InputError(f"dataset.json modality {meta.get('modality')} is not Task01's FLAIR, T1w, t1gd, T2w: "
                         "the channel mapping would be wrong", source / "dataset.json")
    labels = {str(k): str(v).lower() for k, v in (meta.get("labels") or {}).items() if str(k) != "0"}
    if labels and not all(_MSD_LABELS[k] in v for k, v in labels.items() if k in _MSD_LABELS) or set(labels) - set(_MSD_LABELS):
        raise InputError(f"dataset.json labels {meta.get('labels')} are not Task01's 1 edema, 2 non-enhancing, "
                         "3 enhancing: the label mapping would be wrong", source / "dataset.json")
    listed = meta.get("training")
    pairs: List[Tuple[Path, Optional[Path]]] = []
    if isinstance(listed, list) and listed:
        for item in listed:
            if not isinstance(item, dict) or not isinstance(item.get("image"), str):
                raise InputError("dataset.json 'training' entries need an 'image' path", source / "dataset.json")
            label = item.get("label")
            pairs.append(((source / item["image"]).resolve(), (source / label).resolve() if isinstance(label, str) else None))
    else:
        for image in sorted((source / "imagesTr").iterdir()):
            if _is_image(image) and not image.name.startswith("."):
                label = source / "labelsTr" / image.name
                pairs.append((image, label))
    cases = []
    for image, label in pairs:
        name = _strip_ext(image.name)[0]
        problems = []
        if not image.is_file():
            problems.append(f"image {image.name} not found")
        if label is None or not label.is_file():
            problems.append("no label in labelsTr")
        cases.append(CaseFiles(name, {c: image for c in CHANNELS}, label if label and label.is_file() else None,
                               "; ".join(problems)))
    return cases


def _folder_cases(source: Path, exclude: Optional[Path]) -> List[CaseFiles]:
    from SymmetryAwareCore.inference.cases import assign_channels
    from SymmetryAwareCore.inference.model_source import brats_card_fields

    channels = brats_card_fields()["channels"]
    cases = []
    for folder in _case_folders(source, exclude):
        try:
            files = [p for p in sorted(folder.iterdir()) if _is_image(p) and not p.name.startswith(".")]
        except OSError as error:
            cases.append(CaseFiles(folder.name, {c: None for c in CHANNELS}, None,
                                   f"cannot list the folder ({error.strerror or error})"))
            continue
        labels = [p for p in files if any(w in p.name.lower() for w in ("seg", "label"))]
        images = [p for p in files if p not in labels]
        problem, ordered = "", {}
        if len(labels) != 1:
            problem = f"{len(labels)} label files (names with 'seg' or 'label'); expected 1"
        else:
            try:
                paths, notes = assign_channels(images, channels, str(folder))
                if any(n.startswith("no file name matches") for n in notes):  # order as given: a guess
                    raise InputError(f"channel files not recognised by name ({', '.join(p.name for p in images)})")
                ordered = dict(zip(CHANNELS, paths))
            except InputError as error:
                problem = str(error).replace(f"{folder}: ", "")
        cases.append(CaseFiles(folder.name, ordered or {c: None for c in CHANNELS},
                               labels[0] if len(labels) == 1 else None, problem))
    return cases


def discover_cases(source: Path, layout: str, exclude: Optional[Path] = None) -> List[CaseFiles]:
    """The cases of ``source`` in ``layout`` (files found, not yet checked), sorted by name."""
    if layout == "msd":
        return _msd_cases(source)
    if layout in ("brats2021", "brats2023"):
        return _brats_cases(source, LAYOUTS[layout], exclude)
    return _folder_cases(source, exclude)


def _header(path: Path) -> Tuple[Tuple[int, ...], np.ndarray, Any]:
    """``(shape, voxel-to-RAS affine, nibabel image or None)`` without reading the voxels (NIfTI)."""
    if _strip_ext(path.name)[1] in (".nii", ".nii.gz"):
        import nibabel as nib

        nii = nib.load(str(path))
        return tuple(int(n) for n in nii.shape), np.asarray(nii.affine, dtype=np.float64), nii
    from SymmetryAwareCore.io.readers import read_image

    image = read_image(path, allow_channels=True)
    shape = image.array.shape if image.array.ndim == 3 else image.array.shape[1:] + (image.array.shape[0],)
    return tuple(shape), image.affine, None


def _label_values(path: Path, nii) -> np.ndarray:
    if nii is not None:
        array = np.asarray(nii.dataobj)
        if not np.issubdtype(array.dtype, np.integer):
            if not np.all(np.isfinite(array)) or np.any(np.mod(array, 1) != 0):
                raise InputError("label holds non-integer values")
            array = array.astype(np.int64)
        return array
    from SymmetryAwareCore.io.readers import read_labelmap

    return read_labelmap(path).array


def _same_grid(a: Tuple[Tuple[int, ...], np.ndarray], b: Tuple[Tuple[int, ...], np.ndarray]) -> bool:
    return a[0][:3] == b[0][:3] and np.allclose(a[1], b[1], atol=_GRID_TOL)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def check_case(case: CaseFiles, layout: Layout) -> Tuple[Optional[CheckedCase], str]:
    """``(checked case, "")`` or ``(None, reason)``: channels present, one grid, label values."""
    if case.problem:
        return None, case.problem
    try:
        grids = {}
        for channel in CHANNELS:
            path = case.images[channel]
            shape, affine, _ = _header(path)
            if layout.name == "msd":
                if len(shape) != 4 or shape[3] != len(CHANNELS):
                    return None, f"image is {shape}, not 4D with {len(CHANNELS)} channels"
            elif len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
                return None, f"channel {channel} is {len(shape)}D {shape}, not one 3D volume"
            grids[channel] = (shape, affine)
        reference = grids[CHANNELS[0]]
        for channel in CHANNELS[1:]:
            if not _same_grid(grids[channel], reference):
                return None, (f"channel {channel} is on another grid ({grids[channel][0][:3]} vs "
                              f"{reference[0][:3]} of {CHANNELS[0]}, or another voxel-to-world matrix)")
        lshape, laffine, nii = _header(case.label)
        if not _same_grid((lshape, laffine), reference):
            return None, f"label is on another grid ({lshape[:3]} vs {reference[0][:3]})"
        labels = _label_values(case.label, nii).reshape(lshape[:3])
    except InputError as error:
        return None, str(error)
    except Exception as error:  # nibabel, gzip and zlib raise many types for a broken file
        return None, f"unreadable ({_first_line(error)})"
    values = set(np.unique(labels).tolist())
    label_map = dict(layout.label_map)
    if layout.name == "folders" and 3 in values and 4 not in values:
        label_map = LAYOUTS["brats2023"].label_map  # ET written as 3 (BraTS 2023 convention)
    unexpected = sorted(values - set(label_map))
    if unexpected:
        return None, f"label values {unexpected} not in {sorted(label_map)} ({layout.convention})"
    spacing = tuple(float(s) for s in np.sqrt((reference[1][:3, :3] ** 2).sum(axis=0)))
    mapped_et = [k for k, v in label_map.items() if v == 4]
    mapped_wt = [k for k, v in label_map.items() if v != 0]
    wt_ml = float(np.isin(labels, mapped_wt).sum()) * float(np.prod(spacing)) / 1000.0
    has_et = bool(np.isin(labels, mapped_et).any())
    return CheckedCase(case.name, case, label_map, wt_ml, has_et, spacing), ""


def assign_folds(cases: Sequence[CheckedCase], folds: int, seed: int) -> Dict[str, int]:
    """Seeded folds stratified by enhancing tumour present/absent and whole-tumour volume.

    Cases without ET come first, then those with; each group ordered by WT volume (ties broken
    by a seeded draw); consecutive blocks of ``folds`` cases get a seeded permutation of the
    fold numbers. Fold sizes differ by at most one, and each fold spans the volume range.
    """
    rng = np.random.default_rng(seed)
    names = sorted(c.name for c in cases)
    tie = dict(zip(names, rng.random(len(names))))
    ranked = sorted(cases, key=lambda c: (c.has_et, c.wt_ml, tie[c.name]))
    out: Dict[str, int] = {}
    for start in range(0, len(ranked), folds):
        block = ranked[start : start + folds]
        for case, fold in zip(block, rng.permutation(folds)[: len(block)]):
            out[case.name] = int(fold)
    return out


def read_fold_file(path: Union[str, Path]) -> Tuple[List[str], List[List[str]]]:
    """``(fold names, case names per fold)`` from a JSON list of lists or mapping of lists."""
    path = Path(path)
    if not path.is_file():
        raise InputError("fold file not found", path)
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"fold file is not valid JSON ({_first_line(error)})", path) from None
    if isinstance(raw, dict):
        names, lists = [str(k) for k in raw], list(raw.values())
    elif isinstance(raw, list):
        names, lists = [f"fold{i}" for i in range(len(raw))], raw
    else:
        raise InputError("fold file must be a list of lists of case names, or a mapping name -> list", path)
    if len(lists) < 2 or not all(isinstance(l, list) and l and all(isinstance(n, str) for n in l) for l in lists):
        raise InputError("fold file needs at least two non-empty lists of case names (one per fold)", path)
    seen: Dict[str, str] = {}
    for name, members in zip(names, lists):
        for case in members:
            if case in seen:
                raise InputError(f"case {case} is in two folds ({seen[case]} and {name})", path)
            seen[case] = name
    return names, [list(l) for l in lists]


def _relative_to(path: Path, base: Path) -> str:
    """A path as the datalist stores it: relative when under the list's folder, else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _write_label(case: CheckedCase, target: Path) -> Path:
    """The case's label with the project's values (``label_map`` applied), same header."""
    import nibabel as nib

    nii = nib.load(str(case.files.label))
    labels = _label_values(case.files.label, nii).reshape(nii.shape[:3])
    lookup = np.zeros(max(case.label_map) + 1, np.uint8)
    for source, value in case.label_map.items():
        lookup[source] = value
    out = nib.Nifti1Image(lookup[labels.astype(np.int64)], nii.affine, nii.header)
    out.set_data_dtype(np.uint8)
    out.header.set_slope_inter(1, 0)
    with atomic_path(target) as tmp:
        nib.save(out, str(tmp))
    return target


def _split_channels(case: CheckedCase, folder: Path, layout: Layout) -> Dict[str, Path]:
    """MSD: one 3D NIfTI per project channel from the 4D image, same affine and header."""
    import nibabel as nib

    nii = nib.load(str(case.files.images[CHANNELS[0]]))
    data = np.asarray(nii.dataobj)
    out = {}
    for channel in CHANNELS:
        volume = np.ascontiguousarray(data[..., layout.channel_index[channel]])
        image = nib.Nifti1Image(volume, nii.affine, nii.header)
        image.set_data_dtype(volume.dtype)
        target = folder / f"{case.name}_{channel}.nii.gz"
        with atomic_path(target) as tmp:
            nib.save(image, str(tmp))
        out[channel] = target
    return out


def _check_output(output: Path, source: Path, overwrite: bool) -> None:
    """Before any work: a .json name, not a folder, not the source's own dataset.json, no
    silent replacement of an existing file, a writable place."""
    if output.suffix.lower() != ".json":
        raise InputError("the datalist must be a .json file", output)
    if output.is_dir():
        raise InputError("is a folder; give the datalist's file name", output)
    if output.resolve() == (source / "dataset.json").resolve():
        raise InputError("is the source's own dataset.json (an input)", output)
    if output.exists() and not overwrite:
        raise InputError("exists already; choose another name or pass --overwrite", output)
    parent = output.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError("cannot write the datalist here (not a writable folder)", output.parent)


def build_datalist(source: Union[str, Path], output: Union[str, Path], folds: int = 5, seed: int = 0,
                   fold_file: Optional[Union[str, Path]] = None, layout: str = "auto", overwrite: bool = False,
                   log=None) -> ImportResult:
    """Check every case of ``source`` and write the datalist ``output`` (see the module docstring).

    Nothing is written unless at least two cases pass and every case named by ``fold_file``
    exists in ``source``. Returns an :class:`ImportResult`.
    """
    log = log or (lambda text: print(text, file=sys.stderr))
    source, output = Path(source), Path(output)
    if not source.is_dir():
        raise InputError("source folder not found", source)
    if layout != "auto" and layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; known: auto, {', '.join(LAYOUTS)}")
    _check_output(output, source, overwrite)
    fold_names: List[str] = []
    fold_lists: List[List[str]] = []
    if fold_file:
        fold_names, fold_lists = read_fold_file(fold_file)
        folds = len(fold_lists)
    elif not 2 <= folds <= 100:
        raise InputError(f"--folds must be between 2 and 100, got {folds}")
    try:
        chosen = detect_layout(source) if layout == "auto" else layout
    except OSError as error:
        raise InputError(f"cannot read the source folder ({error.strerror or error})", source) from None
    spec = LAYOUTS[chosen]
    base = Path(os.path.abspath(output.parent))
    files_dir = base / f"{output.stem}_files"
    try:
        found = discover_cases(source, chosen, exclude=files_dir)
    except OSError as error:
        raise InputError(f"cannot read the source folder ({error.strerror or error})", source) from None
    if not found:
        raise InputError(f"no case found (layout {chosen})", source)
    names = [c.name for c in found]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"case names occur twice: {', '.join(dupes[:5])}", source)
    if fold_file:
        unknown = sorted(set(n for l in fold_lists for n in l) - set(names))
        if unknown:
            raise InputError(f"fold file names {len(unknown)} case(s) not in {source}: {', '.join(unknown[:10])}",
                             fold_file)

    checked: List[CheckedCase] = []
    skipped: List[Dict[str, str]] = []
    for index, case in enumerate(found, start=1):
        result, reason = check_case(case, spec)
        if result is None:
            skipped.append({"case": case.name, "reason": reason})
        else:
            checked.append(result)
        if index % 50 == 0 or index == len(found):
            log(f"symmetryaware-train datalist: checked {index}/{len(found)} case(s), {len(skipped)} skipped")

    if fold_file:
        member = {n: k for k, l in enumerate(fold_lists) for n in l}
        for case in [c for c in checked if c.name not in member]:
            skipped.append({"case": case.name, "reason": "not in the fold file"})
        checked = [c for c in checked if c.name in member]
        fold_of = {c.name: member[c.name] for c in checked}
    else:
        if len(checked) < folds:
            raise InputError(f"only {len(checked)} usable case(s) for {folds} folds"
                             + (f" ({len(skipped)} skipped, e.g. {skipped[0]['case']}: {skipped[0]['reason']})"
                                if skipped else ""), source)
        fold_of = assign_folds(checked, folds, seed)
    if len(checked) < 2:
        raise InputError(f"fewer than two usable cases ({len(skipped)} skipped)", source)

    entries, converted = [], 0
    for case in checked:
        images = {c: case.files.images[c] for c in CHANNELS}
        entry: Dict[str, Any] = {"case": case.name}
        folder = files_dir / case.name
        if chosen == "msd":
            images = _split_channels(case, folder, spec)
            entry["source_image"] = _relative_to(case.files.images[CHANNELS[0]], base)
            converted += 1
        label = case.files.label
        if any(k != v for k, v in case.label_map.items()):
            label = _write_label(case, folder / f"{case.name}_seg.nii.gz")
            entry["source_label"] = _relative_to(case.files.label, base)
            converted += chosen != "msd"
        entry.update({
            "image": [_relative_to(images[c], base) for c in CHANNELS],
            "label": _relative_to(label, base),
            "fold": fold_of[case.name],
            "status": "patient" if case.wt_ml > 0 else "healthy",
            "wt_ml": round(case.wt_ml, 3),
            "enhancing": case.has_et,
        })
        entries.append(entry)

    spacings = {c.spacing for c in checked}
    body: Dict[str, Any] = {
        "description": f"{chosen} cases from {source}, checked and split by symmetryaware-train datalist",
        "channels": list(CHANNELS),
        "labels": {str(k): v for k, v in PROJECT_LABELS.items()},
        "training": entries,
    }
    if len(spacings) == 1:
        (spacing,) = spacings
        if max(spacing) - min(spacing) < 1e-3:
            body["spacing_mm"] = round(spacing[0], 4)
    body["import"] = {
        "source": str(source.resolve()),
        "layout": chosen,
        "label_convention": spec.convention,
        "label_mapping": {str(k): v for k, v in spec.label_map.items()},
        "label_mapping_note": ("source labels rewritten with label_mapping into " + _relative_to(files_dir, base)
                               if spec.relabels else "source labels are the project's (1, 2, 4)")
        + ("; plain-folder cases with enhancing tumour 3 were rewritten 3 -> 4" if chosen == "folders" else ""),
        "channel_order": ({c: f"volume {spec.channel_index[c]} of the 4D image" for c in CHANNELS}
                          if chosen == "msd" else {c: (spec.suffixes.get(c) or "file-name pattern") for c in CHANNELS}),
        "folds": folds,
        "fold_names": fold_names or [f"fold{i}" for i in range(folds)],
        "fold_source": str(Path(fold_file).resolve()) if fold_file else
        f"seeded (seed {seed}), stratified by enhancing tumour present and whole-tumour volume",
        "cases": len(entries),
        "skipped": skipped,
    }
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(body, indent=1) + "\n")
    return ImportResult(output, chosen, len(entries), folds, skipped, converted)
