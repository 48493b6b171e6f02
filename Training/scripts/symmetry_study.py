"""Does symmetry earn its cost? The study of issue 12, decided before it was run (docs/symmetry_study.md).

Three steps, each resumable:

    data    phantoms at 1.5 mm where only the other hemisphere tells a subtle lesion from
            tissue: a training pool (folds 1-4) and a held-out set (fold 0) per lesion contrast
            and hard-case type, in one datalist;
    train   every arm x label size x seed through ``symmetryaware-train finetune-seg`` (the
            project's one training engine), sequentially, skipping finished runs;
    report  every finished run scored on the held-out set the same way, paired bootstrap
            confidence intervals, and the decision rule applied; writes results.json/.md.

(``prepare`` fills the prepared-case store the runs share; ``crops`` describes what each
arm's training crops hold, ninth amendment; ``budgets`` sets each arm's runs trained for more
steps, in another folder, against its own shorter runs, sixteenth amendment.)

    python Training/scripts/symmetry_study.py data --output datasets/study15 --workers 2
    python Training/scripts/symmetry_study.py train --datalist datasets/study15/datalist.json \
        --output runs/study --shard 0/2        # and --shard 1/2 in a second process
    python Training/scripts/symmetry_study.py report --datalist datasets/study15/datalist.json --output runs/study

Scoring: one 64^3 window per held-out case, drawn once from the case's own seed with
``crops.paired_crop(pos_fraction=1)`` (the training sampler: a box around a random lesion
voxel), with its mirrored counterpart; every network sees the same window. Dice per region
inside the window (so a network that marks healthy tissue in the window is penalised); a
whole-scan sliding window per case per run does not fit this machine (docs/symmetry_study.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from SymmetryAwareTraining.metrics import paired_bootstrap

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "configs" / "symmetry_study.yaml"
REGIONS = ("WT", "TC", "ET")

# Arm name -> config overrides. swin_unetr is SA-Swin with SACA off: MONAI's SwinUNETR key for key.
# Every arm sees 2 supervised 64^3 crops per step: swin_unetr and input pairing batch 2, mirror-pair one pair.
ARMS: Dict[str, List[str]] = {
    "swin_unetr": ["model.kwargs.use_saca=false", "data.batch_size=2"],
    "sa_swin_mirror_pair": ["model.kwargs.pairing=mirror-pair", "data.batch_size=1"],
    "sa_swin_input": ["model.kwargs.pairing=input", "data.batch_size=2"],
    # Control (third amendment): the mirror-pair arm's crops and supervision with SACA off, so
    # that mirror-pair vs this arm is SACA alone and this arm vs swin_unetr is the crops alone.
    "swin_unetr_pair_crops": ["model.kwargs.use_saca=false", "model.kwargs.pairing=mirror-pair",
                              "data.batch_size=1"],
    # Healthy-crop control (ninth amendment): Swin UNETR whose crops are lesion-centred as often
    # as the control's two crops are on average (0.9 of one crop in two), the others drawn
    # uniformly instead of mirrored; pair crops vs this arm is the mirror placement alone.
    "swin_unetr_fg45": ["model.kwargs.use_saca=false", "data.batch_size=2", "data.pos_fraction=0.45"],
    # Thirteenth amendment: Swin UNETR's crops and batch, with each crop's mirrored counterpart
    # as extra input channels (the mirror-difference baseline's information, a learned subtraction).
    "swin_unetr_mirror_channels": ["model.kwargs.use_saca=false", "model.kwargs.counterpart_channels=true",
                                   "data.batch_size=2"],
}

@dataclass(frozen=True)
class Design:
    """One version of the study's data and preprocessing (docs/symmetry_study.md).

    ``held_out``: (scenario, lesion contrast, count) groups of fold 0; ``train_contrasts``: the
    training pool's contrasts, in turn; ``primary_groups``: the decision rule's groups
    (:func:`case_group` names); ``overrides``: config settings of every preparation, run and
    scoring of the design; ``seed``: the data's seed.
    """

    held_out: Tuple[Tuple[str, float, int], ...]
    train_contrasts: Tuple[float, ...]
    primary_groups: Tuple[str, ...]
    overrides: Tuple[str, ...]
    seed: int

    @property
    def bias_correction(self) -> str:
        """``data.bias_correction`` as the design's overrides set it (``"none"`` unless set)."""
        values = [item.partition("=")[2] for item in self.overrides if item.partition("=")[0] == "data.bias_correction"]
        return values[-1] if values else "none"


DESIGNS: Dict[str, Design] = {
    # The study as designed (2026-12-03): uncorrected scans, contrasts calibrated on them.
    "biased": Design(held_out=(("unilateral", 1.0, 20), ("unilateral", 0.5, 20), ("unilateral", 0.3, 20),
                               ("bilateral", 0.5, 8), ("midline", 0.5, 8)),
                     train_contrasts=(1.0, 0.5, 0.3), primary_groups=("unilateral c0.5", "unilateral c0.3"),
                     overrides=(), seed=1500),
    # The rerun on N4-corrected scans (eleventh amendment, 2026-12-07): each channel's bias field
    # removed before alignment, contrasts recalibrated where a plain intensity score stops being
    # perfect on corrected scans (scan AUC 0.88 at 0.15, 0.71 at 0.1; docs/asymmetry_benchmark.md).
    "n4": Design(held_out=(("unilateral", 1.0, 20), ("unilateral", 0.15, 20), ("unilateral", 0.1, 20),
                           ("bilateral", 0.15, 8), ("midline", 0.15, 8)),
                 train_contrasts=(1.0, 0.15, 0.1), primary_groups=("unilateral c0.15", "unilateral c0.1"),
                 overrides=("data.bias_correction=n4",), seed=1600),
}
DEFAULT_DESIGN = "biased"
# The first design's groups under their old names (tests and readers of the first study).
HELD_OUT = DESIGNS[DEFAULT_DESIGN].held_out
TRAIN_CONTRASTS = DESIGNS[DEFAULT_DESIGN].train_contrasts
TRAIN_CASES = 32
SPACING = 1.5
DESIGNED_SEEDS = 3
VARIATION = 2.0


def design_of(datalist: Path) -> Design:
    """The design a study datalist was made for (its ``design`` key; lists made before the key
    existed are the first design)."""
    from SymmetryAwareCore.errors import InputError

    try:
        data = json.loads(Path(datalist).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"not a readable datalist ({error})", datalist) from None
    if not isinstance(data, dict):
        raise InputError("not a datalist (a JSON object with a 'training' list)", datalist)
    name = data.get("design", DEFAULT_DESIGN)
    if name not in DESIGNS:
        raise InputError(f"unknown study design {name!r} (known: {', '.join(DESIGNS)})", datalist)
    return DESIGNS[name]


# ----------------------------------------------------------------------------------------- data

def _plan(seed: int, design: Design = DESIGNS[DEFAULT_DESIGN]) -> List[dict]:
    from SymmetryAwareCore.phantoms.dataset import case_seed

    plan, index = [], 0
    for i in range(TRAIN_CASES):
        # Folds 1-4 in turn; the scenario is the generator's own draw (70 % unilateral).
        plan.append({"index": index, "seed": case_seed(seed, index), "scenario": None,
                     "contrast": design.train_contrasts[i % len(design.train_contrasts)], "fold": 1 + i % 4})
        index += 1
    for scenario, contrast, count in design.held_out:
        for _ in range(count):
            plan.append({"index": index, "seed": case_seed(seed, index), "scenario": scenario,
                         "contrast": contrast, "fold": 0})
            index += 1
    return plan


def _make(item_and_dir):
    item, folder = item_and_dir
    from SymmetryAwareCore.phantoms.dataset import write_case
    from SymmetryAwareCore.phantoms.generator import make_subject

    name = f"study_{item['index']:04d}"
    if not (Path(folder) / f"{name}.json").is_file():
        phantom = make_subject(item["seed"], "glioma", "mri", SPACING, scenario=item["scenario"],
                               lesion_contrast=item["contrast"], variation=VARIATION)
        write_case(phantom, folder, name)
    info = json.loads((Path(folder) / f"{name}.json").read_text())
    channels = list(info["channels"])
    return {"name": name, "image": [f"{name}_{c}.nii.gz" for c in channels], "label": f"{name}_label.nii.gz",
            "case_json": f"{name}.json", "fold": item["fold"], "scenario": info["scenario"],
            "lesion_contrast": item["contrast"]}, channels


def make_data(output: Path, seed: Optional[int], workers: int, design: str = DEFAULT_DESIGN) -> Path:
    """Every phantom of ``design`` (seed: the design's own unless given) and its datalist.

    Phantoms already in ``output`` are kept (a stopped run resumes), so a folder whose
    datalist was made for another design or seed is refused: its files would be reused."""
    from multiprocessing import Pool

    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareCore.phantoms.dataset import write_json

    seed = DESIGNS[design].seed if seed is None else seed
    existing = output / "datalist.json"
    if existing.is_file():
        old = json.loads(existing.read_text())
        made_for = (old.get("design", DEFAULT_DESIGN), old.get("seed"))
        if made_for != (design, seed):
            raise InputError(f"holds the study's data for design {made_for[0]!r}, seed {made_for[1]}; "
                             f"give another --output for design {design!r}, seed {seed}", output)
    output.mkdir(parents=True, exist_ok=True)
    plan = _plan(seed, DESIGNS[design])
    jobs = [(item, str(output)) for item in plan]
    start = time.perf_counter()
    with Pool(workers) as pool:
        made = []
        for k, result in enumerate(pool.imap(_make, jobs)):
            made.append(result)
            print(f"phantom {k + 1}/{len(jobs)} ({time.perf_counter() - start:.0f} s)", flush=True)
    entries = [entry for entry, _ in made]
    datalist = {
        "description": "Symmetry study phantoms (Training/scripts/symmetry_study.py); fold 0 is held out",
        "seed": seed, "design": design, "kind": "glioma", "modality": "mri", "spacing_mm": SPACING, "variation": VARIATION,
        "channels": made[0][1], "num_folds": 5, "training": entries, "validation": [],
    }
    return write_json(datalist, output / "datalist.json")


# -------------------------------------------------------------------------------------- prepare

def _config(datalist: Path, cache_dir: str, extra: Sequence[str] = ()):
    from SymmetryAwareTraining.config import load_config

    return load_config(CONFIG, [f"data.datalist={datalist}", f"data.cache_dir={cache_dir}",
                                *design_of(datalist).overrides, *extra])


def _prepare_one(job):
    entry, spec, channels, cache_dir = job
    from SymmetryAwareTraining.data import PreparedCases

    PreparedCases([entry], True, spec, channels, cache=False, cache_dir=cache_dir or None)(0)
    return entry["name"]


def prepare_all(datalist: Path, cache_dir: str, workers: int) -> None:
    """Align and prepare every case once, in parallel, into the store the runs share."""
    from multiprocessing import Pool

    from SymmetryAwareTraining.datalist import load_datalist
    from SymmetryAwareTraining.tasks import _channel_names, run_preprocessing

    config = _config(datalist, cache_dir)
    spec, channels = run_preprocessing(config), _channel_names(config)
    entries = load_datalist(str(datalist)).sections["training"]
    start = time.perf_counter()
    with Pool(workers) as pool:
        for k, name in enumerate(pool.imap(_prepare_one, [(e, spec, channels, cache_dir) for e in entries])):
            print(f"prepared {k + 1}/{len(entries)} {name} ({time.perf_counter() - start:.0f} s)", flush=True)


# ---------------------------------------------------------------------------------------- train

def run_name(arm: str, size: int, seed: int) -> str:
    return f"{arm}_n{size}_s{seed}"


def size_of(name: str) -> int:
    """The label size in a run's name (:func:`run_name`)."""
    return int(name.rsplit("_n", 1)[1].split("_s")[0])


def arm_of(name: str) -> str:
    """The arm in a run's name (:func:`run_name`)."""
    return name.rsplit("_n", 1)[0]


def seed_of(name: str) -> int:
    """The seed in a run's name (:func:`run_name`)."""
    return int(name.rsplit("_s", 1)[1])


def grid(arms: Sequence[str], sizes: Sequence[int], seeds: Sequence[int], input_seeds: Sequence[int]) -> List[tuple]:
    """The runs in order: seed-major, so a stopped study has whole seeds of every arm.

    The input-pairing arm costs 1.7x per step (two encoder passes per supervised crop); on
    this machine it runs only for ``input_seeds``.
    """
    return [(arm, size, seed) for seed in seeds for size in sizes for arm in arms
            if arm != "sa_swin_input" or seed in input_seeds]


def run_overrides(datalist: Path, arm: str, size: int, seed: int, steps: int, cache_dir: str) -> List[str]:
    """The config overrides of one run: the study's data, label size, seed and the arm's settings."""
    pool = sum(1 for e in json.loads(datalist.read_text())["training"] if e["fold"] != 0)
    return [f"data.datalist={datalist}", f"data.label_fraction={size / pool}", f"train.steps={steps}",
            f"train.seed={seed}", f"data.cache_dir={cache_dir}", *design_of(datalist).overrides] + ARMS[arm]


def crop_exposure(datalist: Path, cache_dir: str, arms: Sequence[str], size: int, seed: int = 0,
                  epochs: int = 10) -> Dict[str, dict]:
    """What each arm's training crops hold (ninth amendment, descriptive): :func:`exposure`
    of the dataset the arm's own task trains on, at label size ``size`` and ``seed``."""
    from SymmetryAwareTraining.config import load_config
    from SymmetryAwareTraining.tasks import SegmentationTask

    out = {}
    for arm in arms:
        config = load_config(CONFIG, run_overrides(datalist, arm, size, seed, 0, cache_dir))
        out[arm] = exposure(SegmentationTask(config).train_dataset(), epochs)
    return out


def exposure(dataset, epochs: int) -> dict:
    """Whole-tumour content of every supervised crop that ``dataset`` draws in ``epochs``
    passes (keys ``(epoch, index)``, as training draws them); a sample with
    ``label_counterpart`` (mirror-pair) supervises its counterpart crop too.

    Returns ``crops``; ``with_lesion``, the share holding any WT voxel; ``lesion_fraction``,
    the mean share of WT voxels per crop; and ``counterparts``, the same three of the
    counterpart crops alone (``None`` when none is supervised). Labels are region maps
    ``(3, X, Y, Z)``: TC, WT, ET.
    """
    shares = {"label": [], "label_counterpart": []}
    for epoch in range(epochs):
        for index in range(len(dataset)):
            item = dataset[(epoch, index)]
            for key in shares:
                if key in item:
                    shares[key].append(float(item[key][1].float().mean()))

    def held(values):
        values = np.asarray(values)
        return {"crops": len(values), "with_lesion": float((values > 0).mean()), "lesion_fraction": float(values.mean())}

    out = held(shares["label"] + shares["label_counterpart"])
    out["counterparts"] = held(shares["label_counterpart"]) if shares["label_counterpart"] else None
    return out


def check_run(run: Path, datalist: Path) -> None:
    """Refuse a finished or started run trained on another datalist or preprocessing than
    ``datalist``'s design: both designs name their cases ``study_NNNN``, so a run of one
    scored on the other would give numbers without an error."""
    import yaml

    from SymmetryAwareCore.errors import InputError

    config = run / "config.yaml"
    if not config.is_file():
        return
    data = (yaml.safe_load(config.read_text()) or {}).get("data", {})
    trained_on = Path(str(data.get("datalist", "")))
    wanted = design_of(datalist).bias_correction
    if trained_on.parts[-2:] != Path(datalist).parts[-2:] or str(data.get("bias_correction", "none")) != wanted:
        raise InputError(f"run was trained on {trained_on} with bias correction {data.get('bias_correction', 'none')}, "
                         f"not on {datalist} with {wanted}: use another --output", run)


def train_all(datalist: Path, output: Path, arms, sizes, seeds, input_seeds, steps: int, shard: str,
              cache_dir: str) -> None:
    index, count = (int(v) for v in shard.split("/"))
    for k, (arm, size, seed) in enumerate(grid(arms, sizes, seeds, input_seeds)):
        if k % count != index:
            continue
        run = output / run_name(arm, size, seed)
        check_run(run, datalist)
        if (run / "model.json").is_file():
            continue
        args = [sys.executable, "-m", "SymmetryAwareTraining.cli", "finetune-seg", "--config", str(CONFIG),
                "--output-dir", str(run)]
        if (run / "checkpoints" / "last.pt").is_file():
            args.append("--resume")
        for item in run_overrides(datalist, arm, size, seed, steps, cache_dir):
            args += ["--set", item]
        output.mkdir(parents=True, exist_ok=True)
        print("$ " + " ".join(args[2:]), flush=True)
        with open(output / f"train_{index}.log", "a") as stream:
            subprocess.run(args, check=True, stdout=stream, stderr=subprocess.STDOUT)

# --------------------------------------------------------------------------------------- report

def score_window(entry: dict, volume: np.ndarray, label: np.ndarray, roi: int = 64) -> dict:
    """The case's one scoring window: image, counterpart, label; drawn from the case's name only."""
    import zlib

    from SymmetryAwareTraining.crops import paired_crop

    rng = np.random.default_rng([SCORE_SEED, zlib.crc32(entry["name"].encode("utf-8"))])
    return paired_crop(np.asarray(volume), (roi,) * 3, rng, label=np.asarray(label), pos_fraction=1.0)


SCORE_SEED = 20261203


def window_baselines(windows: Dict[str, dict], channels: Sequence[str], channel: str = "flair") -> Dict[str, dict]:
    """Two non-learned voxel scores inside each scoring window (eleventh amendment, descriptive):
    how well ``channel``'s intensity alone, and its difference from the mirrored counterpart
    (window minus counterpart: a lesion brighter than the mirror tissue), rank whole-tumour
    voxels above the rest of the head in the window (Mann-Whitney AUC; voxels where every
    channel is 0, outside the head, are left out). ``{case: {"intensity": AUC, "mirror": AUC}}``;
    NaN for a window without WT or without healthy voxels."""
    from SymmetryAwareTraining.metrics import labels_to_regions, rank_auc

    k = list(channels).index(channel)
    out = {}
    for name, window in windows.items():
        image, counterpart = np.asarray(window["image"]), np.asarray(window["counterpart"])
        head = np.any(image != 0, axis=0)
        lesion = labels_to_regions(np.asarray(window["label"]).astype(np.int64))[1].astype(bool)
        out[name] = {}
        for method, score in (("intensity", image[k]), ("mirror", image[k] - counterpart[k])):
            out[name][method] = rank_auc(score[head & lesion], score[head & ~lesion])
    return out


def score_run(run: Path, windows: Dict[str, dict]) -> Dict[str, Dict[str, float]]:
    """Per held-out case, Dice of TC/WT/ET inside its window (cached in ``<run>/study_scores.json``)."""
    import torch

    from SymmetryAwareCore.models.model_card import load_model
    from SymmetryAwareTraining.metrics import dice_score, labels_to_regions

    cached = run / "study_scores.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    network, _ = load_model(run / "model.json")
    # SACA and the counterpart-as-channels arm read the counterpart; plain Swin UNETR does not.
    reads_counterpart = getattr(network, "counterpart_use", "none") != "none"
    scores = {}
    with torch.no_grad():
        for name, window in windows.items():
            x = torch.from_numpy(window["image"])[None]
            c = torch.from_numpy(window["counterpart"])[None]
            logits = network(x, c) if reads_counterpart else network(x)
            pred = (torch.sigmoid(logits[0]) > 0.5).numpy()  # (3, X, Y, Z): TC, WT, ET
            truth = labels_to_regions(window["label"].astype(np.int64))
            scores[name] = {region: dice_score(pred[k], truth[k]) for k, region in enumerate(("TC", "WT", "ET"))}
    cached.write_text(json.dumps(scores, indent=1))
    return scores


def score_scan(network, volume: np.ndarray, label: np.ndarray, spacing: Sequence[float]) -> Dict[str, float]:
    """Whole-box scores of one prepared case (fifth amendment): Dice of TC/WT/ET over the box
    and ``WT_false_positive_ml``, the volume marked whole tumour outside the true one.

    The box is segmented as ``symmetryaware segment`` segments a case: the core's engine with
    the CLI's default overlap and window batch, on the CPU in full precision; a mirror-pair
    model runs the mirror-pair sliding window its card names.
    """
    import torch

    from SymmetryAwareCore.contract import RunOptions
    from SymmetryAwareCore.inference.engine import InferenceSettings, run_paired_inference
    from SymmetryAwareTraining.metrics import dice_score, false_positive_ml, labels_to_regions

    defaults = RunOptions()
    settings = InferenceSettings(roi_size=(ROI,) * 3, overlap=defaults.overlap, sw_batch_size=defaults.sw_batch,
                                 device="cpu", amp="off")
    result, _ = run_paired_inference(torch.from_numpy(np.ascontiguousarray(volume)), network, settings)
    pred = (torch.sigmoid(result.logits) > 0.5).numpy()  # (3, X, Y, Z): TC, WT, ET
    truth = labels_to_regions(np.asarray(label).astype(np.int64))
    scores = {region: dice_score(pred[k], truth[k]) for k, region in enumerate(("TC", "WT", "ET"))}
    scores["WT_false_positive_ml"] = false_positive_ml(pred[1], truth[1], spacing)
    return scores


def score_scan_run(run: Path, cases) -> Dict[str, Dict[str, float]]:
    """Per held-out case, :func:`score_scan` (cached in ``<run>/study_scan_scores.json``).

    ``cases``: ``(names, load, spacing)``, ``load(k)`` giving case ``k``'s prepared ``(volume, label)``.
    """
    from SymmetryAwareCore.models.model_card import load_model

    names, load, spacing = cases
    cached = run / "study_scan_scores.json"
    scores = json.loads(cached.read_text()) if cached.is_file() else {}
    if all(name in scores for name in names):
        return scores
    # A scan costs 10-20 s per run on one CPU thread: cases done are kept as they finish, so a
    # stopped report resumes where it stopped; the cache holds every case scored so far
    # (the primary set alone first, sixth amendment, then the rest) and is never half-written.
    partial = run / "study_scan_scores.partial.json"
    if partial.is_file():
        scores.update(json.loads(partial.read_text()))
    network, _ = load_model(run / "model.json")
    for k, name in enumerate(names):
        if name in scores:
            continue
        volume, label = load(k)
        scores[name] = score_scan(network, np.array(volume), np.asarray(label), spacing)
        partial.with_suffix(".tmp").write_text(json.dumps(scores, indent=1))
        partial.with_suffix(".tmp").replace(partial)
    partial.with_suffix(".tmp").write_text(json.dumps(scores, indent=1))
    partial.with_suffix(".tmp").replace(cached)
    partial.unlink()
    return scores


ROI = 64
_WINDOWS: Dict[str, dict] = {}
_CASES: tuple = ()


def _score_in_worker(run: Path):
    import torch

    torch.set_num_threads(1)
    scores = score_scan_run(run, _CASES) if _CASES else score_run(run, _WINDOWS)
    print(f"scored {run.name}", flush=True)
    return scores


def verdict(by_size: Dict[int, dict], helps: str = "symmetry helps", hurts: str = "symmetry hurts") -> str:
    """The decision rule of docs/symmetry_study.md, applied to one comparison on the primary set.

    The primary comparison reads "symmetry helps / hurts"; the third amendment's questions
    apply the same rule to other pairs of arms with their own words for the two outcomes.
    """
    above = [s for s, r in by_size.items() if r["low"] > 0 and all(d > 0 for d in r["per_seed"])]
    below = [s for s, r in by_size.items() if r["high"] < 0 and all(d < 0 for d in r["per_seed"])]
    any_above = any(r["low"] > 0 for r in by_size.values())
    any_below = any(r["high"] < 0 for r in by_size.values())
    if above and not any_below:
        return helps
    if below and not any_above:
        return hurts
    return "no measurable difference"


# The third amendment's questions (docs/symmetry_study.md), fixed before their runs:
# (question, arm, reference, words for above 0, words for below 0), each on the primary set.
QUESTIONS = (
    ("SACA given the crops", "sa_swin_mirror_pair", "swin_unetr_pair_crops",
     "SACA helps once the crops are equal", "SACA itself hurts"),
    ("the crops alone", "swin_unetr_pair_crops", "swin_unetr",
     "the mirror-pair crops help", "the mirror-pair crops hurt"),
    # Ninth amendment: is the crops' effect their mirror placement, or only fewer lesion-centred crops?
    ("mirror placement given the lesion share", "swin_unetr_pair_crops", "swin_unetr_fg45",
     "the mirror placement helps", "the mirror placement hurts"),
    ("the lesion share alone", "swin_unetr_fg45", "swin_unetr",
     "fewer lesion-centred crops help", "fewer lesion-centred crops hurt"),
    # Thirteenth amendment: the counterpart handed over as input channels, crops equal.
    ("the counterpart as input channels", "swin_unetr_mirror_channels", "swin_unetr",
     "the counterpart as channels helps", "the counterpart as channels hurts"),
)
# Secondary comparisons: (arm, reference, which seeds: "all" or "first").
SECONDARY = (("sa_swin_mirror_pair", "swin_unetr", "all"), ("sa_swin_input", "swin_unetr", "first"),
             ("swin_unetr_pair_crops", "swin_unetr", "all"), ("sa_swin_mirror_pair", "swin_unetr_pair_crops", "all"),
             ("sa_swin_input", "sa_swin_mirror_pair", "first"),
             ("swin_unetr_pair_crops", "swin_unetr_fg45", "all"), ("swin_unetr_fg45", "swin_unetr", "all"),
             ("swin_unetr_mirror_channels", "swin_unetr", "all"),
             ("swin_unetr_mirror_channels", "sa_swin_mirror_pair", "all"),
             ("sa_swin_input", "swin_unetr_mirror_channels", "first"))


SCORINGS = ("window", "scan")
CASE_SETS = ("all", "primary")
# The decision rule's primary set: unilateral lesions at the two lowest contrasts (first design).
PRIMARY_GROUPS = DESIGNS[DEFAULT_DESIGN].primary_groups


def case_group(entry: dict) -> str:
    """A held-out case's group in the report: scenario and lesion contrast, e.g. ``unilateral c0.5``."""
    return f"{entry['scenario']} c{entry['lesion_contrast']:g}"


def held_out(datalist: Path) -> List[dict]:
    """The study's held-out cases (fold 0 of the datalist's training section), in its order."""
    from SymmetryAwareTraining.datalist import load_datalist

    return [e for e in load_datalist(str(datalist)).sections["training"] if int(e["fold"]) == 0]


def report(datalist: Path, output: Path, cache_dir: str, sizes, seeds, workers: int = 2,
           scoring: str = "window", cases: str = "all", arms: Optional[Sequence[str]] = None) -> dict:
    """Score every finished run of ``sizes`` and apply the decision rule.

    ``scoring``: ``"window"`` (the design: one lesion-centred 64^3 window per case, written
    to ``results.json`` / ``results.md``) or ``"scan"`` (fifth amendment: the whole prepared
    box through the core's engine, written to ``results_scan.json`` / ``results_scan.md``).
    ``cases``: ``"all"`` held-out cases, or ``"primary"``, the decision rule's 40 cases only
    (sixth amendment: what whole-scan scoring could afford; files get a ``_primary`` suffix).
    ``arms``: score only these arms' runs (None: every arm; fifteenth amendment, whole scans
    of two arms); a comparison whose arm is left out reads "incomplete".
    """
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    if cases not in CASE_SETS:
        raise ValueError(f"cases must be one of {CASE_SETS}, got {cases!r}")
    from SymmetryAwareTraining.tasks import _channel_names, run_preprocessing

    from SymmetryAwareTraining.data import PreparedCases

    config = _config(datalist, cache_dir)
    spec, channels = run_preprocessing(config), _channel_names(config)
    primary_groups = design_of(datalist).primary_groups
    held = held_out(datalist)
    if cases == "primary":
        held = [e for e in held if case_group(e) in primary_groups]
    prepared = PreparedCases(held, True, spec, channels, cache=False, cache_dir=cache_dir or None)
    global _WINDOWS, _CASES
    if scoring == "window":
        windows = {}
        for k, entry in enumerate(held):
            volume, label = prepared(k)
            windows[entry["name"]] = score_window(entry, volume, label)
        _WINDOWS, _CASES = windows, ()  # forked workers inherit the windows instead of receiving copies
    else:
        _CASES = ([e["name"] for e in held], prepared, tuple(spec.spacing))  # each worker reads the store
    group_of = {e["name"]: case_group(e) for e in held}
    # The baselines first: a mistake in them shows before the runs are scored.
    baselines = window_baselines(_WINDOWS, channels) if scoring == "window" else None
    finished = [run for run in sorted(output.glob("*_n*_s*")) if (run / "model.json").is_file()]
    finished = [run for run in finished if size_of(run.name) in sizes and seed_of(run.name) in seeds
                and (arms is None or arm_of(run.name) in arms)]
    for run in finished:
        check_run(run, datalist)
    from multiprocessing import get_context

    with get_context("fork").Pool(max(1, workers)) as pool:
        scored = pool.map(_score_in_worker, finished)
    runs = {}
    for run, scores in zip(finished, scored):
        summary = json.loads((run / "summary.json").read_text())
        runs[run.name] = {"scores": scores, "seconds": float(summary.get("seconds", float("nan"))),
                          "steps": int(summary.get("steps", 0))}
    results = summarise(runs, group_of, sizes, seeds, cases, primary_groups)
    if baselines is not None:
        results["baselines"] = summarise_baselines(baselines, group_of, "all held-out" if cases == "all" else "all scored")
    output.mkdir(parents=True, exist_ok=True)
    curves = {run.name: loss_curve(run) for run in finished}
    results["loss_curves"] = {name: {str(k): v for k, v in c.items()} for name, c in curves.items()}
    results["scoring"] = scoring
    plot_curves(curves, output / "loss_curves.png")
    stem = ("results" if scoring == "window" else "results_scan") + ("" if cases == "all" else "_primary")
    (output / f"{stem}.json").write_text(json.dumps(results, indent=2))
    lines = markdown(results)
    (output / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return results


def summarise(runs: Dict[str, dict], group_of: Dict[str, str], sizes, seeds, cases: str = "all",
              primary_groups: Sequence[str] = PRIMARY_GROUPS) -> dict:
    """The decision rule, the amendments' questions and the secondary table from per-case scores.

    ``runs``: run name -> ``{"scores": {case: {region: Dice, ...}}, "seconds", "steps"}``;
    ``group_of``: every scored case -> its held-out group; ``primary_groups``: the design's
    primary groups. Pure: no file is read or written.
    """
    names = sorted(group_of)
    groups = sorted(set(group_of.values()))
    primary = [n for n in names if group_of[n] in primary_groups]

    def matrix(arm, size, region, subset, run_seeds):
        rows = []
        for seed in run_seeds:
            key = run_name(arm, size, seed)
            if key not in runs:
                return None
            rows.append([runs[key]["scores"][n][region] for n in subset])
        return np.asarray(rows)  # (seeds, cases)

    results = {"held_out": {g: sum(1 for n in names if group_of[n] == g) for g in groups}, "runs": {}, "primary": {},
               "primary_groups": list(primary_groups), "secondary": []}
    for key, r in runs.items():
        results["runs"][key] = {"seconds": r["seconds"], "steps": r["steps"],
                                "mean": {key: float(np.mean([r["scores"][n][key] for n in names]))
                                         for key in r["scores"][names[0]]}}
    for size in sizes:
        a = matrix("sa_swin_mirror_pair", size, "WT", primary, seeds)
        b = matrix("swin_unetr", size, "WT", primary, seeds)
        if a is None or b is None:
            continue
        mean, low, high = paired_bootstrap(a.mean(0) - b.mean(0))
        results["primary"][size] = {"sa_swin_mirror_pair": float(a.mean()), "swin_unetr": float(b.mean()),
                                    "difference": mean, "low": low, "high": high,
                                    "per_seed": [float(d) for d in (a - b).mean(1)], "cases": len(primary),
                                    "seeds": len(seeds)}
    complete = len(results["primary"]) == len(sizes)
    missing = [size for size in sizes if size not in results["primary"]]
    results["verdict"] = (verdict(results["primary"]) if complete else
                          _lacking("sa_swin_mirror_pair", "swin_unetr", missing, seeds))
    if complete and len(seeds) < DESIGNED_SEEDS:
        # The rule asks for the sign in each of three seeds; with fewer it is applied to those run.
        results["verdict"] += f" (provisional: {len(seeds)} of the {DESIGNED_SEEDS} designed seeds)"
    results["questions"] = []
    for question, arm, reference, helps, hurts in QUESTIONS:
        by_size = {}
        for size in sizes:
            a = matrix(arm, size, "WT", primary, seeds)
            b = matrix(reference, size, "WT", primary, seeds)
            if a is None or b is None:
                continue
            mean, low, high = paired_bootstrap(a.mean(0) - b.mean(0))
            by_size[size] = {"arm_dice": float(a.mean()), "reference_dice": float(b.mean()), "difference": mean,
                             "low": low, "high": high, "per_seed": [float(d) for d in (a - b).mean(1)]}
        if len(by_size) < len(sizes):
            answer = _lacking(arm, reference, [size for size in sizes if size not in by_size], seeds)
        else:
            answer = verdict(by_size, helps, hurts)
            if len(seeds) < DESIGNED_SEEDS:
                answer += f" (provisional: {len(seeds)} of the {DESIGNED_SEEDS} designed seeds)"
        results["questions"].append({"question": question, "arm": arm, "reference": reference, "cases": len(primary),
                                     "seeds": len(seeds), "by_size": by_size, "answer": answer})
    for size in sizes:
        for arm, reference, which in SECONDARY:
            arm_seeds = seeds if which == "all" else [seeds[0]]
            for subset_name, subset in [("all held-out" if cases == "all" else "all scored", names)] + [(g, [n for n in names if group_of[n] == g]) for g in groups]:
                for region in REGIONS:
                    a = matrix(arm, size, region, subset, arm_seeds)
                    b = matrix(reference, size, region, subset, arm_seeds)
                    if a is None or b is None:
                        continue
                    mean, low, high = paired_bootstrap(a.mean(0) - b.mean(0))
                    results["secondary"].append({"size": size, "arm": arm, "reference": reference,
                                                 "seeds": len(arm_seeds), "set": subset_name, "cases": len(subset),
                                                 "region": region, "arm_dice": float(a.mean()),
                                                 "reference_dice": float(b.mean()), "difference": mean,
                                                 "low": low, "high": high})
    results["cases"] = cases
    return results


def compare_budgets(longer: Dict[str, dict], shorter: Dict[str, dict], group_of: Dict[str, str], arms,
                    size: int, seeds, primary_groups: Sequence[str]) -> List[dict]:
    """Each arm's longer-trained runs against its own shorter-trained runs at the same seeds
    (sixteenth amendment, descriptive): what more steps bought an arm.

    ``longer`` / ``shorter``: run name -> ``{case: {region: Dice}}`` (the runs' cached scores,
    one folder each); ``group_of``: every scored case -> its held-out group. Rows per arm,
    case set (every case, the primary set, each group) and region: both means, the paired
    bootstrap of the per-case difference (mean over seeds, longer minus shorter) and the
    per-seed means. An arm lacking a run at one of ``seeds`` in either folder is left out.
    Pure: no file is read or written.
    """
    names = sorted(group_of)
    sets = [("all held-out", names), ("primary", [n for n in names if group_of[n] in primary_groups])]
    sets += [(g, [n for n in names if group_of[n] == g]) for g in sorted(set(group_of.values()))]
    rows = []
    for arm in arms:
        keys = [run_name(arm, size, seed) for seed in seeds]
        if not all(k in longer and k in shorter for k in keys):
            continue
        for set_name, subset in sets:
            for region in REGIONS:
                a = np.asarray([[longer[k][n][region] for n in subset] for k in keys])  # (seeds, cases)
                b = np.asarray([[shorter[k][n][region] for n in subset] for k in keys])
                mean, low, high = paired_bootstrap(a.mean(0) - b.mean(0))
                rows.append({"arm": arm, "set": set_name, "cases": len(subset), "region": region,
                             "longer": float(a.mean()), "shorter": float(b.mean()), "difference": mean,
                             "low": low, "high": high, "per_seed": [float(d) for d in (a - b).mean(1)]})
    return rows


def _window_mean(curve: Dict[int, float], end: int, window: int = 50) -> Optional[float]:
    """Mean of the losses logged in steps ``(end - window, end]``; None if none is logged or
    any is not finite (a diverged run is not read as a flat one)."""
    values = [v for k, v in curve.items() if end - window < k <= end]
    if not values or not all(np.isfinite(values)):
        return None
    return float(np.mean(values))


def still_falling(curve: Dict[int, float], window: int = 50) -> Optional[bool]:
    """Whether a run's logged training loss still falls at its end (sixteenth amendment,
    descriptive): the mean of the losses logged in the last ``window`` steps below the mean of
    those in the ``window`` steps before. Each logged value is one step's loss (2 crops), so
    a window's mean, not a point, is compared. None when either window is empty or holds a
    value that is not finite."""
    if not curve:
        return None
    last = max(curve)
    tail, before = _window_mean(curve, last, window), _window_mean(curve, last - window, window)
    if tail is None or before is None:
        return None
    return tail < before


def budgets(datalist: Path, output: Path, reference: Path, size: int, seeds, arms=None) -> List[str]:
    """The ``budgets`` command: :func:`compare_budgets` of ``output``'s runs (the longer budget)
    against ``reference``'s, from the window scores that ``report`` cached in each run (every
    held-out case), and each run's training loss as 50-step means: the shorter run's last 50,
    the longer run's at the same steps and its own last 50. Only runs finished in both
    folders are read; a pair whose ``output`` run is not the longer one is refused. Written to
    ``<output>/budgets.md`` and returned as lines."""
    from SymmetryAwareCore.errors import InputError

    held = held_out(datalist)
    group_of = {e["name"]: case_group(e) for e in held}
    arms = list(arms or ARMS)
    wanted = [run_name(arm, size, seed) for arm in arms for seed in seeds]
    pairs = [name for name in wanted if all((folder / name / "model.json").is_file() for folder in (output, reference))]
    if not pairs:
        lacking = [folder for folder in (output, reference)
                   if not any((folder / name / "model.json").is_file() for name in wanted)]
        raise InputError(f"no finished run at size {size}, seeds {', '.join(map(str, seeds))} of the arms asked for "
                         "in both folders", lacking[0] if lacking else output)
    scores, steps, curves = {output: {}, reference: {}}, {}, {}
    for name in pairs:
        for folder in (output, reference):
            run = folder / name
            check_run(run, datalist)
            cached = run / "study_scores.json"
            if not cached.is_file():
                raise InputError("run has no window scores: run 'report' on its folder first", run)
            scored = json.loads(cached.read_text())
            if not set(group_of) <= set(scored):
                raise InputError(f"window scores cover {len(set(group_of) & set(scored))} of {len(group_of)} held-out "
                                 "cases: run 'report' with --cases all on its folder", run)
            scores[folder][name] = scored
            steps[folder, name] = int(json.loads((run / "summary.json").read_text()).get("steps", 0))
            curves[folder, name] = loss_curve(run)
        if steps[output, name] <= steps[reference, name]:
            raise InputError(f"--output's run has {steps[output, name]} steps and --reference's {steps[reference, name]}: "
                             "--output takes the longer runs", output / name)
    rows = compare_budgets(scores[output], scores[reference], group_of, arms, size, seeds,
                           design_of(datalist).primary_groups)
    compared = {r["arm"] for r in rows}
    left_out = {arm: [name for name in (run_name(arm, size, seed) for seed in seeds) if name not in pairs]
                for arm in arms if arm not in compared and any(arm_of(name) == arm for name in pairs)}
    lines = [f"Each arm's runs in {output} minus its own runs in {reference}: label size {size}, seeds "
             f"{', '.join(map(str, seeds))}, Dice in the window, mean over seeds per case, 95 % paired bootstrap "
             "over cases.", ""]
    for arm, missing in left_out.items():
        lines += [f"Left out (a seed lacks a finished run in a folder): {arm}: {', '.join(missing)}.", ""]
    lines += ["| arm | set | cases | region | longer | shorter | difference [95 % CI] | per seed |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['set']} | {r['cases']} | {r['region']} | {r['longer']:.3f} | "
                     f"{r['shorter']:.3f} | {r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] | "
                     + ", ".join(f"{d:+.3f}" for d in r["per_seed"]) + " |")

    def shown(value):
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else "yes" if value else "no"

    lines += ["", "Training loss, mean of the values logged in 50 steps (each one step's loss):", "",
              "| run | steps (shorter / longer) | shorter run, its last 50 | longer run, the same steps | "
              "longer run, its last 50 | still falling at the end: shorter / longer |", "|---|---|---|---|---|---|"]
    for name in pairs:
        short, long_ = steps[reference, name], steps[output, name]
        a, b = curves[reference, name], curves[output, name]
        lines.append(f"| {name} | {short} / {long_} | {shown(_window_mean(a, short))} | {shown(_window_mean(b, short))} | "
                     f"{shown(_window_mean(b, long_))} | {shown(still_falling(a))} / {shown(still_falling(b))} |")
    (output / "budgets.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def summarise_baselines(per_case: Dict[str, dict], group_of: Dict[str, str], everything: str = "all held-out") -> Dict[str, dict]:
    """Mean voxel AUC of each non-learned score per held-out group and over all cases scored
    (row ``everything``; NaN windows left out), with the number of windows that count."""
    sets = {everything: list(per_case)}
    for group in sorted(set(group_of[n] for n in per_case)):
        sets[group] = [n for n in per_case if group_of[n] == group]
    out = {}
    for label, names in sets.items():
        row = {}
        for method in ("intensity", "mirror"):
            values = [per_case[n][method] for n in names if np.isfinite(per_case[n][method])]
            row[method] = float(np.mean(values)) if values else float("nan")
        row["windows"] = sum(1 for n in names if np.isfinite(per_case[n]["intensity"]))
        out[label] = row
    return out


def _lacking(arm: str, reference: str, sizes, seeds) -> str:
    """Why a comparison has no verdict: the label sizes at which a run of either arm is missing."""
    return (f"incomplete: {arm} or {reference} lacks a run at size {', '.join(map(str, sizes))}, "
            f"seeds {', '.join(map(str, seeds))}")


def loss_curve(run: Path) -> Dict[int, float]:
    """The run's training loss by step (its TensorBoard events, written every ``log_every`` steps)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run / "tensorboard").is_dir():  # a run trained without its events: no curve, not a crash
        return {}
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    if "train/loss" not in events.Tags().get("scalars", []):
        return {}
    return {int(e.step): float(e.value) for e in events.Scalars("train/loss")}


def plot_curves(curves: Dict[str, Dict[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"swin_unetr": "tab:blue", "sa_swin_mirror_pair": "tab:orange", "sa_swin_input": "tab:green",
               "swin_unetr_pair_crops": "tab:purple", "swin_unetr_fg45": "tab:brown",
               "swin_unetr_mirror_channels": "tab:red"}
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, curve in sorted(curves.items()):
        arm = arm_of(name)
        steps = sorted(curve)
        axis.plot(steps, [curve[k] for k in steps], color=colours.get(arm, "grey"), alpha=0.8,
                  label=arm if name.endswith("_s0") else None)
    axis.set_xlabel("step (2 supervised 64^3 crops each)")
    axis.set_ylabel("training loss (Dice + BCE)")
    axis.legend(frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def markdown(results: dict) -> List[str]:
    where = ("over the whole prepared scan (fifth amendment)" if results.get("scoring") == "scan"
             else "inside the case's lesion-centred 64^3 window")
    which = ("the primary set only (sixth amendment)" if results.get("cases") == "primary"
             else "every held-out case")
    lines = [f"Scoring: Dice {where}. Cases scored: {which}.", "",
             f"Primary: WT Dice, {' and '.join(results.get('primary_groups', PRIMARY_GROUPS))}, mean over seeds; "
             "difference SA-Swin (mirror-pair) - Swin UNETR, 95 % paired bootstrap CI over cases.", ""]
    # A report of other arms only (an amendment's runs) has no primary row: say so, not an empty table.
    if results["primary"]:
        lines += ["| labelled | cases | seeds | Swin UNETR | SA-Swin mirror-pair | difference [95 % CI] | per seed |",
                  "|---|---|---|---|---|---|---|"]
        for size, r in results["primary"].items():
            lines.append(f"| {size} | {r['cases']} | {r['seeds']} | {r['swin_unetr']:.3f} | "
                         f"{r['sa_swin_mirror_pair']:.3f} | {r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] | "
                         + ", ".join(f"{d:+.3f}" for d in r["per_seed"]) + " |")
        lines.append("")
    lines += [f"Verdict (decision rule): **{results['verdict']}**", ""]
    if results.get("questions"):
        lines += ["The amendments' questions (same primary set and rule): arm - reference.", "",
                  "| question | labelled | cases | seeds | arm | reference | difference [95 % CI] | per seed | answer |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for q in results["questions"]:
            if not q["by_size"]:
                lines.append(f"| {q['question']} | - | {q['cases']} | {q['seeds']} | {q['arm']} | {q['reference']} "
                             f"| - | - | {q['answer']} |")
            for size, r in q["by_size"].items():
                lines.append(f"| {q['question']} | {size} | {q['cases']} | {q['seeds']} | {q['arm']} {r['arm_dice']:.3f} | "
                             f"{q['reference']} {r['reference_dice']:.3f} | "
                             f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] | "
                             + ", ".join(f"{d:+.3f}" for d in r["per_seed"]) + f" | {q['answer']} |")
        lines.append("")
    lines += ["Secondary (no verdict): mean Dice, arm against a reference arm at the same seeds.", "",
              "| labelled | arm | reference | seeds | set | cases | region | arm | reference | difference [95 % CI] |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["secondary"]:
        lines.append(f"| {r['size']} | {r['arm']} | {r['reference']} | {r['seeds']} | {r['set']} | {r['cases']} | "
                     f"{r['region']} | {r['arm_dice']:.3f} | {r['reference_dice']:.3f} | "
                     f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] |")
    if results.get("baselines"):
        lines += ["", "Non-learned voxel scores inside the same windows (FLAIR; mean voxel AUC, whole tumour "
                  "against the rest of the head in the window): intensity alone, and window minus mirrored counterpart.", "",
                  "| set | windows | intensity | mirror difference |", "|---|---|---|---|"]
        for label, row in results["baselines"].items():
            lines.append(f"| {label} | {row['windows']} | {row['intensity']:.3f} | {row['mirror']:.3f} |")
    lines += ["", "| run | steps | train time | loss at 50 / 100 / last 3 logged | mean Dice WT / TC / ET (cases scored) "
              "| WT false positive, mean mL |", "|---|---|---|---|---|---|"]
    for key, r in sorted(results["runs"].items()):
        m = r["mean"]
        curve = {int(k): v for k, v in results.get("loss_curves", {}).get(key, {}).items()}
        steps = sorted(curve)
        tail = ", ".join(f"{curve[k]:.3f}" for k in steps[-3:])
        at = " / ".join(f"{curve[k]:.3f}" if k in curve else "-" for k in (50, 100))
        lines.append(f"| {key} | {r['steps']} | {r['seconds'] / 60:.1f} min | {at} / {tail} | "
                     f"{m['WT']:.3f} / {m['TC']:.3f} / {m['ET']:.3f} | "
                     + (f"{m['WT_false_positive_ml']:.2f} |" if "WT_false_positive_ml" in m else "- |"))
    return lines



def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("data")
    d.add_argument("--output", type=Path, required=True)
    d.add_argument("--design", choices=list(DESIGNS), default=DEFAULT_DESIGN,
                   help="biased: the study as designed; n4: the rerun on N4-corrected scans (eleventh amendment)")
    d.add_argument("--seed", type=int, default=None, help="the data's seed (default: the design's)")
    d.add_argument("--workers", type=int, default=2)
    p = sub.add_parser("prepare")
    p.add_argument("--datalist", type=Path, required=True)
    p.add_argument("--cache-dir", default="")
    p.add_argument("--workers", type=int, default=2)
    t = sub.add_parser("train")
    t.add_argument("--datalist", type=Path, required=True)
    t.add_argument("--output", type=Path, required=True)
    t.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    t.add_argument("--sizes", type=int, nargs="+", default=[8, 32])
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--input-seeds", type=int, nargs="+", default=[0], help="seeds of the input-pairing arm")
    t.add_argument("--steps", type=int, default=150)
    t.add_argument("--shard", default="0/1", help="i/n: run every n-th run of the grid, starting at i")
    t.add_argument("--cache-dir", default="", help="prepared-case store shared by the runs")
    c = sub.add_parser("crops", help="what each arm's training crops hold (descriptive, ninth amendment)")
    c.add_argument("--datalist", type=Path, required=True)
    c.add_argument("--cache-dir", default="")
    c.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    c.add_argument("--size", type=int, default=32)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--epochs", type=int, default=10)
    r = sub.add_parser("report")
    r.add_argument("--datalist", type=Path, required=True)
    r.add_argument("--output", type=Path, required=True)
    r.add_argument("--cache-dir", default="")
    r.add_argument("--sizes", type=int, nargs="+", default=[8, 32])
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--workers", type=int, default=2, help="runs scored in parallel")
    r.add_argument("--arms", nargs="+", default=None, choices=list(ARMS), help="score only these arms' runs")
    r.add_argument("--scoring", choices=SCORINGS, default="window",
                   help="window: one lesion-centred window per case (the design); scan: the whole case (fifth amendment)")
    r.add_argument("--cases", choices=CASE_SETS, default="all",
                   help="all held-out cases, or the decision rule's primary set only (sixth amendment)")
    b = sub.add_parser("budgets", help="each arm's longer runs against its shorter runs (sixteenth amendment)")
    b.add_argument("--datalist", type=Path, required=True)
    b.add_argument("--output", type=Path, required=True, help="the folder of the longer runs")
    b.add_argument("--reference", type=Path, required=True, help="the folder of the shorter runs")
    b.add_argument("--size", type=int, default=8)
    b.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    b.add_argument("--arms", nargs="+", default=None, choices=list(ARMS))
    a = parser.parse_args(argv)
    from SymmetryAwareCore.errors import InputError

    # A user's mistake is one line and exit 2, before any case is made, prepared or trained.
    try:
        if a.command != "data" and not a.datalist.is_file():
            raise InputError("datalist not found (make it with the 'data' command)", a.datalist)
        if a.command != "data":
            design_of(a.datalist)  # an unknown design stops here, before any case is prepared
        _run(a)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _run(a: argparse.Namespace) -> None:
    if a.command == "data":
        print(make_data(a.output, a.seed, a.workers, a.design))
    elif a.command == "prepare":
        prepare_all(a.datalist, a.cache_dir, a.workers)
    elif a.command == "crops":
        held = crop_exposure(a.datalist, a.cache_dir, a.arms, a.size, a.seed, a.epochs)
        print("| arm | crops | supervised crops | with any WT voxel | mean WT voxel share |")
        print("|---|---|---|---|---|")
        for arm, e in held.items():
            for which, h in (("all", e), ("counterparts", e["counterparts"])):
                if h:
                    print(f"| {arm} | {which} | {h['crops']} | {h['with_lesion']:.2f} | {h['lesion_fraction']:.4f} |")
    elif a.command == "budgets":
        print("\n".join(budgets(a.datalist, a.output, a.reference, a.size, a.seeds, a.arms)))
    elif a.command == "train":
        train_all(a.datalist, a.output, a.arms, a.sizes, a.seeds, a.input_seeds, a.steps, a.shard, a.cache_dir)
    else:
        report(a.datalist, a.output, a.cache_dir, a.sizes, a.seeds, a.workers, a.scoring, a.cases, a.arms)


if __name__ == "__main__":
    sys.exit(main())
