"""The contract between the ``symmetryaware segment`` command and the programs that drive it.

The Slicer module, the headless batch script and the command line all import this module,
so each rule below is written once:

- :class:`RunOptions`: every option of a segmentation run, with its default, range or
  choices and help text (in the dataclass fields' metadata). The command line's arguments
  are generated from it (:func:`add_run_option_arguments`), a driver turns options into
  argv with :meth:`RunOptions.as_arg_list` / :func:`segment_command`, and the command
  parses that argv back with the same definition (:meth:`RunOptions.from_namespace`).
- :data:`OUTPUT_FILES`: the names of the files a finished case folder holds.
- :func:`case_id_from_path`, :func:`case_id_from_files`: how a case is named.
- :func:`match_channels`: how input names (file names or Slicer node names) are assigned
  to a model's channels by the model card's filename patterns.
- :func:`card_findings`: whether a model card is a scan-level classifier, and of what.

Pure standard library: no torch, numpy, Slicer or Qt, so it imports in Slicer's own
Python (which may be 3.9) before any dependency is installed.
"""

from __future__ import annotations

import math

import argparse
import dataclasses
import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

__all__ = [
    "OUTPUT_FILES",
    "DICOM_SEG_FILE",
    "IMAGE_SUFFIXES",
    "DEVICE_CHOICES",
    "PROGRESS_PROTOCOL",
    "RUN_SUBCOMMANDS",
    "RunOptions",
    "OptionError",
    "ChannelMatchError",
    "option_field",
    "card_is_ct",
    "card_bias_correction",
    "add_run_option_arguments",
    "segment_command",
    "case_id_from_path",
    "case_id_from_files",
    "match_channels",
    "card_findings",
    "default_model",
    "BUNDLED_MODELS_DIR",
    "finding_map_file",
    "classify_command",
    "card_has_lesion_map",
]

# ---------------------------------------------------------------------------------------
# Output files
# ---------------------------------------------------------------------------------------
OUTPUT_FILES: Dict[str, str] = {
    "labelmap": "segmentation.nii.gz",
    "segmentation": "segmentation.seg.nrrd",
    "attention": "attention.nii.gz",
    "asymmetry": "asymmetry.nii.gz",
    "plane": "msp.mrk.json",
    "report": "report.json",
    "overview": "overview.png",
    "attention_from": "attention_from.nii.gz",
    "zero_shot": "zero_shot_asymmetry.nii.gz",
}
"""File names inside ``<output_dir>/<case_id>/``, by key (``attention_from`` only with
``--attention-from``; ``zero_shot`` only for models whose card names a symmetry head; the
others on every run)."""

def finding_map_file(case_id: str, finding: str) -> str:
    """File name of one finding's map from ``symmetryaware classify --maps DIR`` (a classifier
    with a lesion map): ``<case_id>_<finding>_map.nii.gz``, characters other than letters,
    digits, ``-``, ``_`` and ``.`` in the finding's name replaced by ``_``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", finding) or "finding"
    return f"{case_id}_{safe}_map.nii.gz"


DICOM_SEG_FILE = "segmentation.dcm"
"""The DICOM Segmentation object written with ``--dicom-seg`` (DICOM inputs only)."""

RUN_SUBCOMMANDS = ("segment", "attention")
"""Subcommands that take :class:`RunOptions` (``attention``: maps, plane and report only)."""

PROGRESS_PROTOCOL = ("<filter-progress>", "</filter-progress>", "<filter-stage>", "</filter-stage>")
"""Tags of ``--progress machine`` lines (Slicer's CLI convention): fraction 0..1, stage name."""

# ---------------------------------------------------------------------------------------
# Case ids
# ---------------------------------------------------------------------------------------
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""Image files the command reads (besides DICOM folders); longest first where they overlap."""


def case_id_from_path(path: Union[str, Path]) -> str:
    """File name without its image extension (``sub-01_t1.nii.gz`` -> ``sub-01_t1``).

    A folder (a DICOM series) or an unknown extension keeps its whole name.
    """
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_id_from_files(paths: Sequence[Union[str, Path]]) -> str:
    """A case name for several channel files: their common name prefix.

    ``BraTS_001_t1.nii.gz``, ``BraTS_001_flair.nii.gz`` -> ``BraTS_001``; one file, or no
    common prefix: the first file's :func:`case_id_from_path`.
    """
    if not paths:
        raise ValueError("no input paths")
    names = [case_id_from_path(p) for p in paths]
    prefix = os.path.commonprefix(names).rstrip("_-. ")
    return prefix if len(names) > 1 and prefix else names[0]


# ---------------------------------------------------------------------------------------
# Channels
# ---------------------------------------------------------------------------------------
class ChannelMatchError(ValueError):
    """Inputs cannot be assigned to the model's channels (count, ambiguity)."""


def _name_variants(name: str) -> Tuple[str, ...]:
    # Slicer node names lack the extension the patterns were written for ("case_t1" vs
    # "case_t1.nii.gz"); trying name + "." and name + "_" lets "*_t1.*" match both.
    low = name.lower()
    return (low, low + ".", low + "_")


def match_channels(
    names: Sequence[str],
    channels: Sequence[Tuple[str, Sequence[str]]],
) -> Tuple[List[int], List[str]]:
    """Assign input names to a model's channels by the model card's filename patterns.

    Args:
        names: file names (``case_t1ce.nii.gz``) or Slicer node names (``case_t1ce``).
        channels: ``(channel_name, patterns)`` in the model's input order.

    Returns:
        ``(order, notes)``: ``order[c]`` is the index in ``names`` of channel ``c``'s input;
        ``notes`` say when the given order was kept or changed.

    Raises:
        ChannelMatchError: wrong number of inputs, or patterns that match ambiguously or
            leave a channel without an input.

    Matching ignores case. A name may match several channels; it keeps the one no other
    name claims. When no name matches any pattern, the given order is used (and said).
    """
    channel_names = [c[0] for c in channels]
    if len(names) != len(channels):
        raise ChannelMatchError(
            f"the model expects {len(channels)} channel(s) ({', '.join(channel_names)}), got {len(names)} input(s)"
        )
    order = list(range(len(names)))
    if len(channels) == 1:
        return order, []
    matches: Dict[int, List[int]] = {}
    for ni, name in enumerate(names):
        variants = _name_variants(name)
        matches[ni] = [
            ci
            for ci, (_, patterns) in enumerate(channels)
            if any(fnmatch.fnmatchcase(v, p.lower()) for p in patterns for v in variants)
        ]
    if not any(matches.values()):
        return order, [f"no input name matches the channel patterns; order taken as given: {', '.join(channel_names)}"]
    assigned: Dict[int, int] = {}
    pending = dict(matches)
    changed = True
    while pending and changed:
        changed = False
        for ni, candidates in list(pending.items()):
            free = [c for c in candidates if c not in assigned.values()]
            if len(free) == 1:
                assigned[ni] = free[0]
                del pending[ni]
                changed = True
    if pending or len(set(assigned.values())) != len(channels):
        detail = "; ".join(
            f"{name} -> {', '.join(channel_names[c] for c in matches[i]) or 'no channel'}" for i, name in enumerate(names)
        )
        raise ChannelMatchError(f"cannot match inputs to the model's channels ({', '.join(channel_names)}): {detail}")
    order = [0] * len(channels)
    for ni, ci in assigned.items():
        order[ci] = ni
    notes = []
    if order != list(range(len(names))):
        notes.append("channels reordered by name: " + ", ".join(f"{c}={names[i]}" for c, i in zip(channel_names, order)))
    return order, notes


def _card_preprocessing(card: Any) -> dict:
    block = card.get("preprocessing") if isinstance(card, dict) else getattr(card, "preprocessing", None)
    return block if isinstance(block, dict) else {}


def card_is_ct(card: Any) -> bool:
    """True for a CT model: HU windows in its preprocessing (``ct-windows``, or ``ct-window``
    of cards before windows were configurable), else a ``modality`` of CT. ``card``: the
    card's JSON object or a card object."""
    normalisation = _card_preprocessing(card).get("normalisation")
    modality = card.get("modality") if isinstance(card, dict) else getattr(card, "modality", "")
    return normalisation in ("ct-windows", "ct-window") or str(modality or "").upper() == "CT"


def card_bias_correction(card: Any) -> str:
    """The bias-field correction a card's preprocessing asks for: ``"n4"`` or ``"none"`` (the
    key absent). Read here for the Slicer panel's starting state and by the core's
    :class:`~SymmetryAwareCore.preprocessing.Preprocessing` (which also validates it)."""
    return str(_card_preprocessing(card).get("bias_correction", "none"))


def card_findings(card: Any) -> Tuple[str, ...]:
    """The scan-level findings a model card's outputs stand for, in output order (a classifier,
    run by ``symmetryaware classify``); empty for a segmentation model.

    ``card`` is the card's JSON object or a card object with ``postprocessing`` / ``extra``;
    the names are read from ``postprocessing.findings``, else ``extra.findings`` (cards
    written by the training package).
    """
    for key in ("postprocessing", "extra"):
        block = card.get(key) if isinstance(card, dict) else getattr(card, key, None)
        names = block.get("findings") if isinstance(block, dict) else None
        if isinstance(names, (list, tuple)) and names:
            return tuple(str(n) for n in names)
    return ()


def card_has_lesion_map(card: Any) -> bool:
    """True for a classifier whose card builds it with ``pooling: lesion``: it scores a map
    whose maximum is its logit, and ``symmetryaware classify --maps`` writes that map.
    ``card``: the card's JSON object or a card object with ``kwargs``."""
    if not card_findings(card):
        return False
    kwargs = card.get("kwargs") if isinstance(card, dict) else getattr(card, "kwargs", None)
    return isinstance(kwargs, dict) and kwargs.get("pooling") == "lesion"


SYMMETRY_HEAD_ARCHITECTURE = "SASwinPretrainer"
"""Architecture of a symmetry head's card (:mod:`SymmetryAwareCore.inference.zero_shot`)."""


BUNDLED_MODELS_DIR = Path(__file__).resolve().parent / "data" / "models"
"""Where the models shipped with the core live (their cards and weights)."""


def default_model(cards: Sequence[Tuple[Any, Any]]) -> Any:
    """Which bundled model ``segment`` runs without ``--model``: the one rule, for the command
    line and for the Slicer panel's preselected model.

    ``cards``: ``(key, card JSON)`` of the bundled models (:data:`BUNDLED_MODELS_DIR`), in
    file-name order; returns the key of the card marked ``"default": true``; without one, of
    the first segmentation model (a scan-level classifier cannot segment), else of the first
    card; None when there is none. Interactive (promptable) models, which take clicks, and
    component cards (a symmetry head) are never the default.
    """
    usable = [(key, data) for key, data in cards if isinstance(data, dict) and not is_component_card(data)
              and "guidance_channels" not in (data.get("kwargs") or {})]
    marked = [key for key, data in usable if data.get("default") is True]
    segmenters = [key for key, data in usable if not card_findings(data)]
    return (marked or segmenters or [key for key, _ in usable] or [None])[0]


def is_component_card(card: Any) -> bool:
    """True for the card of a network that is a PART of a model, not a model: a symmetry head
    lies beside the segmentation model whose card names it (``extra.symmetry_head``), and
    is never listed, offered as a model or picked as the default, here or in Slicer.
    ``card``: the card's JSON object or a card object with ``architecture``."""
    architecture = card.get("architecture") if isinstance(card, dict) else getattr(card, "architecture", None)
    return architecture == SYMMETRY_HEAD_ARCHITECTURE


# ---------------------------------------------------------------------------------------
# Run options
# ---------------------------------------------------------------------------------------
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
"""Devices a user picks from; ``cuda:N`` is accepted too (one GPU of several)."""

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class OptionError(ValueError):
    """A run option out of its range or choices; the message names the option."""


def option_field(default: Any, flag: str, help: str, *, minimum=None, maximum=None, choices=None, short: str = "", kind: str = ""):
    """A :class:`RunOptions` field: its default and how it appears on the command line.

    ``kind`` is ``"triple"`` for three comma-separated numbers (RAS mm), ``"number"`` for a
    float whose default is None (unset), ``"switch"`` for a yes/no whose default is None
    (unset: the model card decides; ``--flag`` / ``--no-flag``); otherwise the type follows
    the default (``bool`` fields are switches).
    """
    meta = {"flag": flag, "help": help, "minimum": minimum, "maximum": maximum, "choices": choices, "short": short, "kind": kind}
    return field(default=default, metadata=meta)


def _parse_triple(text: Union[str, Sequence[float]]) -> Tuple[float, float, float]:
    if isinstance(text, str):
        try:
            values = tuple(float(v) for v in text.replace(" ", "").split(","))
        except ValueError:
            raise OptionError(f"expected three numbers like 10,-5,20, got {text!r}") from None
    else:
        values = tuple(float(v) for v in text)
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise OptionError(f"expected three numbers like 10,-5,20 (finite), got {text!r}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class RunOptions:
    """Options of one segmentation run: the one definition of defaults, ranges and flags.

    Instances are validated on creation (:class:`OptionError`). ``roi_center`` (RAS mm)
    and ``roi_size`` (mm) go together. ``device`` is one of :data:`DEVICE_CHOICES` or
    ``cuda:N``.
    """

    model: str = option_field("default", "--model", "model name (see `symmetryaware models list`) or card path", short="-m")
    device: str = option_field("auto", "--device", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps", choices=DEVICE_CHOICES)
    overlap: float = option_field(0.25, "--overlap", "sliding-window overlap", minimum=0.0, maximum=0.9)
    sw_batch: int = option_field(2, "--sw-batch", "windows per forward pass (halved on GPU out-of-memory)", minimum=1, maximum=64)
    tta: bool = option_field(False, "--tta", "left-right flip test-time augmentation")
    amp: str = option_field("auto", "--amp", "mixed precision", choices=("auto", "off", "float16", "bfloat16"))
    msp_fallback: str = option_field(
        "error", "--msp-fallback",
        "when no mid-sagittal plane can be found: refuse the case (error) or use the image axes (axes)",
        choices=("error", "axes"),
    )
    require_head: bool = option_field(False, "--require-head", "refuse a scan that does not look like a head (default: a warning in the report)")
    roi_center: Optional[Tuple[float, float, float]] = option_field(None, "--roi-center", "run on a box around this RAS point (mm), R,A,S", kind="triple")
    roi_size: Optional[Tuple[float, float, float]] = option_field(None, "--roi-size", "size of that box in mm, X,Y,Z", kind="triple", minimum=0.0, maximum=500.0)
    attention_from: Optional[Tuple[float, float, float]] = option_field(
        None, "--attention-from",
        "also write attention_from.nii.gz: where this RAS point (mm) attends in the other hemisphere (models with SACA)",
        kind="triple")
    threshold: Optional[float] = option_field(
        None, "--threshold",
        "label each region where its probability reaches this value, instead of at the model's own threshold "
        "(region models): lower finds fainter lesions and marks more healthy tissue (docs/models.md, operating points)",
        minimum=0.01, maximum=0.99, kind="number")
    bias_correction: Optional[bool] = option_field(
        None, "--bias-correction",
        "remove each MRI channel's intensity bias field (N4) before anything else, or not (--no-bias-correction); "
        "a field that makes one hemisphere brighter reads as a one-sided lesion to a symmetry-aware model "
        "(docs/models.md). Default: as the model card's preprocessing says (the default model: N4). Refused for CT",
        kind="switch")
    dicom_seg: bool = option_field(False, "--dicom-seg", "also write segmentation.dcm, a DICOM SEG referencing the source series (DICOM inputs)")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(f, getattr(self, f.name)))
        if (self.roi_center is None) != (self.roi_size is None):
            raise OptionError("--roi-center and --roi-size go together")

    # -- command line -------------------------------------------------------------------
    def as_arg_list(self) -> List[str]:
        """This run's options as ``symmetryaware segment`` arguments (every option explicit)."""
        args: List[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            flag = f.metadata["flag"]
            if isinstance(f.default, bool) or (f.metadata["kind"] == "switch" and value is True):
                if value:
                    args.append(flag)
            elif f.metadata["kind"] == "switch" and value is False:
                args.append("--no-" + flag[2:])
            elif value is None:
                continue
            elif f.metadata["kind"] == "triple":
                # "--flag=value": a value like "-30,12,20" (a left-hemisphere point) would
                # otherwise be read by argparse as an option of its own.
                args.append(f"{flag}=" + ",".join(f"{v:g}" for v in value))
            elif isinstance(value, float):
                args += [flag, f"{value:g}"]
            else:
                args += [flag, str(value)]
        return args

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> "RunOptions":
        """The options an :func:`add_run_option_arguments` parser has parsed."""
        return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)})

    def replace(self, **changes) -> "RunOptions":
        return dataclasses.replace(self, **changes)

    # -- introspection (drivers build their widgets from these) ----------------------------
    @classmethod
    def default(cls, name: str) -> Any:
        return _field(name).default

    @classmethod
    def range(cls, name: str) -> Tuple[Any, Any]:
        meta = _field(name).metadata
        return meta["minimum"], meta["maximum"]

    @classmethod
    def choices(cls, name: str) -> Tuple[str, ...]:
        return tuple(_field(name).metadata["choices"] or ())


def _field(name: str) -> dataclasses.Field:
    for f in dataclasses.fields(RunOptions):
        if f.name == name:
            return f
    raise KeyError(name)


def _checked(f: dataclasses.Field, value: Any) -> Any:
    """``value`` converted to the field's type and checked against its range/choices."""
    meta = f.metadata
    flag = meta["flag"]
    if value is None:
        if f.default is None:
            return None
        raise OptionError(f"{flag} needs a value")
    if meta["kind"] == "triple":
        try:
            values = _parse_triple(value)
        except OptionError as error:
            raise OptionError(f"{flag}: {error}") from None
        if meta["minimum"] is not None and any(v <= meta["minimum"] for v in values):
            raise OptionError(f"{flag}: sizes must be positive, got {','.join(f'{v:g}' for v in values)}")
        if meta["maximum"] is not None and any(v > meta["maximum"] for v in values):
            raise OptionError(f"{flag}: at most {meta['maximum']:g} mm each (a head is about 200 mm across), "
                              f"got {','.join(f'{v:g}' for v in values)}")
        return values
    if isinstance(f.default, bool) or meta["kind"] == "switch":
        if not isinstance(value, bool):
            raise OptionError(f"{flag} is a switch (true/false), got {value!r}")
        return value
    if isinstance(f.default, int):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise OptionError(f"{flag} must be a whole number, got {value!r}") from None
        if isinstance(value, float) and number != value:
            raise OptionError(f"{flag} must be a whole number, got {value!r}")
        value = number
    elif isinstance(f.default, float) or meta["kind"] == "number":
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise OptionError(f"{flag} must be a number, got {value!r}") from None
        if value != value:
            raise OptionError(f"{flag} must be a number, got NaN")
    else:
        value = str(value).strip()
    low, high = meta["minimum"], meta["maximum"]
    if (low is not None and value < low) or (high is not None and value > high):
        raise OptionError(f"{flag} must be in [{low:g}, {high:g}], got {value:g}")
    if f.name == "device":
        if not _DEVICE.match(value):
            raise OptionError(f"{flag} must be one of {', '.join(DEVICE_CHOICES)} or cuda:N, got {value!r}")
    elif meta["choices"] and value not in meta["choices"]:
        raise OptionError(f"{flag} must be one of {', '.join(meta['choices'])}, got {value!r}")
    if f.name == "model" and not value:
        raise OptionError(f"{flag} must not be empty")
    return value


_NEGATIVE_NUMBERS = re.compile(r"^-\d*\.?\d+([eE][-+]?\d+)?(,\s*[-+]?\d*\.?\d+([eE][-+]?\d+)?)*$")


def add_run_option_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every :class:`RunOptions` field to ``parser``; values are checked as they parse.

    ``--roi-center -30,12,20`` (a point in the left hemisphere) must parse: argparse reads
    a value starting with "-" as an option unless it looks like a negative number, so the
    parser's notion of a negative number is widened to comma-separated numbers.
    """
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = _NEGATIVE_NUMBERS
    for f in dataclasses.fields(RunOptions):
        meta = f.metadata
        names = [n for n in (meta["short"], meta["flag"]) if n]
        help_text = meta["help"]
        if isinstance(f.default, bool):
            parser.add_argument(*names, dest=f.name, action="store_true", help=help_text)
            continue
        if meta["kind"] == "switch":
            # --flag / --no-flag; neither leaves None, which means "as the model card says".
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue

        def convert(text: str, _field: dataclasses.Field = f) -> Any:
            try:
                return _checked(_field, text)
            except OptionError as error:
                raise argparse.ArgumentTypeError(str(error)) from None

        if f.default is not None:
            help_text += f" (default {f.default})"
        metavar = "R,A,S" if f.name == "roi_center" else "X,Y,Z" if f.name == "roi_size" else None
        parser.add_argument(*names, dest=f.name, type=convert, default=f.default, metavar=metavar, help=help_text)


def classify_command(
    python: str,
    inputs: Sequence[Union[str, Path]],
    model: str,
    output_file: Union[str, Path],
    maps_dir: Optional[Union[str, Path]] = None,
    device: str = "auto",
    core_module: str = "SymmetryAwareCore",
    overwrite: bool = False,
    progress: str = "machine",
) -> List[str]:
    """Argument vector of ``python -m SymmetryAwareCore classify`` for one case.

    The probabilities go to ``output_file`` (JSON keyed by case id); with ``maps_dir`` the
    classifier's lesion maps go there, named by :func:`finding_map_file`. ``progress``:
    ``machine`` prints :data:`PROGRESS_PROTOCOL` lines on stdout for a caller's progress bar.
    """
    if not inputs:
        raise ValueError("at least one input image is needed")
    command = [str(python), "-m", core_module, "classify", *[str(p) for p in inputs],
               "--model", str(model), "--device", str(device), "--output", str(output_file),
               "--progress", progress]
    if maps_dir is not None:
        command += ["--maps", str(maps_dir)]
    if overwrite:
        command.append("--overwrite")
    return command


def segment_command(
    python: str,
    inputs: Sequence[Union[str, Path]],
    output_dir: Union[str, Path],
    options: RunOptions,
    case_id: Optional[str] = None,
    core_module: str = "SymmetryAwareCore",
    progress: str = "machine",
    subcommand: str = "segment",
) -> List[str]:
    """Argument vector of ``python -m SymmetryAwareCore segment`` for one case.

    ``case_id`` defaults to :func:`case_id_from_files` of the inputs, and is always passed,
    so the caller knows the result folder ``output_dir/case_id`` before the run ends.
    ``subcommand`` is one of :data:`RUN_SUBCOMMANDS`: ``attention`` takes the same
    arguments and writes only the maps, the plane and the report.
    """
    if not inputs:
        raise ValueError("at least one input image is needed")
    if subcommand not in RUN_SUBCOMMANDS:
        raise ValueError(f"subcommand must be one of {', '.join(RUN_SUBCOMMANDS)}, got {subcommand!r}")
    case_id = case_id or case_id_from_files(inputs)
    return [
        str(python), "-m", core_module, subcommand, *[str(p) for p in inputs],
        "--output-dir", str(output_dir), "--case-id", case_id,
        *options.as_arg_list(), "--progress", progress,
    ]
