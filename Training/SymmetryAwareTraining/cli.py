"""The ``symmetryaware-train`` command: datalist, pretrain, finetune-seg, finetune-cls, evaluate.

Training commands take ``--config run.yaml``, any number of ``--set section.key=value``
overrides (YAML values: ``--set data.roi_size=[64,64,64]``) and a few shortcut flags. Start
them with ``python -m torch.distributed.run --nproc_per_node N -m SymmetryAwareTraining.cli
...`` (or ``torchrun``) for several processes, or with plain ``python``/the console script
for one. ``--resume`` continues the run in ``train.output_dir`` from its last checkpoint,
with the configuration saved in that folder unless ``--config`` is given.

Exit codes: 0 done; 2 a user's mistake (missing file, leakage, bad key), printed as one
line; 3 a run stopped early by ``train.stop_after_steps`` (resume it with ``--resume``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from SymmetryAwareCore.errors import InputError

__all__ = ["build_parser", "main", "resolve_config", "evaluate_segmentation", "evaluate_classification"]

TRAIN_COMMANDS = {
    "pretrain": "symmetry-aware pretraining (rotation, contrastive, inpainting, symmetry loss)",
    "finetune-seg": "fine-tune SA-Swin UNETR for BraTS regions TC, WT, ET",
    "finetune-cls": "fine-tune the SA-Swin classifier for scan-level findings",
    "finetune-interactive": "train the promptable SA-Swin with simulated clicks (interactive segmentation)",
}

# Shortcut flags and the config keys they set.
_FLAGS = {
    "output_dir": "train.output_dir",
    "datalist": "data.datalist",
    "fold": "data.fold",
    "steps": "train.steps",
    "seed": "train.seed",
    "precision": "train.precision",
    "device": "train.device",
    "init_checkpoint": "model.init_checkpoint",
    "allow_partial": "model.init_allow_partial",
    "validate_every": "validation.every",
}


def _train_parser(sub, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--config", help="YAML run configuration (Training/configs/*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=2e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/last.pt")
    p.add_argument("--output-dir", help="train.output_dir")
    p.add_argument("--datalist", help="data.datalist")
    p.add_argument("--fold", type=int, help="data.fold (the evaluation fold, held out)")
    p.add_argument("--steps", type=int, help="train.steps")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="train.precision")
    p.add_argument("--device", help="train.device: auto, cpu or cuda")
    p.add_argument("--init-checkpoint", help="model.init_checkpoint (.pt, .pth or .safetensors)")
    p.add_argument("--allow-partial", action="store_true", default=None,
                   help="model.init_allow_partial: load an init checkpoint that lacks encoder or SACA tensors "
                        "(prints what loaded)")
    p.add_argument("--validate-every", type=int, help="validation.every: steps between validations (0: none)")
    p.set_defaults(func=run_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symmetryaware-train", description="Train and evaluate SA-Swin models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    d = sub.add_parser("datalist", help="check a BraTS 2021/2023, MSD Task01 or case-folder dataset and write a "
                       "datalist with folds", description="Check every case of SOURCE (channels present, one grid, "
                       "label values) and write a MONAI datalist with seeded, stratified folds (or the folds of "
                       "--fold-file). Skipped cases are listed with their reasons in the list's 'import' block.")
    d.add_argument("source", help="dataset folder (BraTS case folders, MSD Task01_BrainTumour, or case sub-folders)")
    d.add_argument("--output", required=True, help="the datalist JSON to write (converted files go beside it)")
    d.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    d.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    d.add_argument("--fold-file", help="JSON list of lists of case names (or mapping name -> list): list k is fold k")
    d.add_argument("--layout", default="auto", choices=["auto", "brats2021", "brats2023", "msd", "folders"])
    d.add_argument("--overwrite", action="store_true", help="replace an existing datalist file")
    d.set_defaults(func=run_datalist)
    for name, text in TRAIN_COMMANDS.items():
        _train_parser(sub, name, text)
    e = sub.add_parser("evaluate", help="Dice/HD95 per region or AUC per finding on an evaluation fold",
                       description="Score predictions of the evaluation fold: per case and summary, CSV and JSON.")
    e.add_argument("--datalist", required=True)
    e.add_argument("--fold", type=int, default=0)
    e.add_argument("--output", required=True, help="folder for metrics.csv and metrics.json")
    what = e.add_mutually_exclusive_group(required=True)
    what.add_argument("--predictions", help="folder of label maps named <case>.nii.gz (BraTS labels)")
    what.add_argument("--model", help="a trained segmentation run folder (or its model.json): segment each case "
                      "mirror-paired, write predictions/<case>.nii.gz, then score")
    what.add_argument("--scores", help="CSV with a 'case' column and one score column per finding")
    e.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap with --model")
    e.add_argument("--device", default="auto", help="device for --model: auto, cpu or cuda")
    e.add_argument("--findings", help="comma-separated findings (default: the score CSV's columns)")
    e.add_argument("--enhancing-label", type=int, choices=[3, 4], help="ET label (default: detect)")
    e.set_defaults(func=run_evaluate)
    return parser


def resolve_config(args: argparse.Namespace):
    """Defaults < (saved run config when resuming) < --config < --set < shortcut flags."""
    from .config import RunConfig, load_config

    overrides = list(args.overrides)
    overrides += [f"{key}={getattr(args, flag)}" for flag, key in _FLAGS.items() if getattr(args, flag, None) is not None]
    base: Optional[RunConfig] = None
    if args.resume and not args.config:
        first = load_config(None, overrides)
        saved = Path(first.train.output_dir) / "config.yaml"
        if saved.is_file():
            base = load_config(saved)
            # The saved stop point was a rehearsal of a kill; resuming must not stop there again.
            base.train.stop_after_steps = 0
    return load_config(args.config, overrides, base=base)


def run_datalist(args: argparse.Namespace) -> int:
    from .importers import build_datalist

    result = build_datalist(args.source, args.output, folds=args.folds, seed=args.seed, fold_file=args.fold_file,
                            layout=args.layout, overwrite=args.overwrite)
    print(f"symmetryaware-train datalist: {result.cases} case(s) of layout {result.layout} in {result.folds} folds "
          f"written to {result.output}; {len(result.skipped)} skipped", file=sys.stderr)
    for item in result.skipped:
        print(f"  skipped {item['case']}: {item['reason']}", file=sys.stderr)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from .config import check_config
    from .distributed import init_distributed, shutdown_distributed
    from .engine import train
    from .tasks import task_for

    config = resolve_config(args)
    check_config(config)  # one-line errors before any process group, model or data
    env = init_distributed(config.train.device)
    try:
        task = task_for(args.command, config)
        result = train(config, task, resume=args.resume, env=env)
    finally:
        shutdown_distributed()
    return 0 if result.finished else 3


def _find_prediction(folder: Path, case: str) -> Path:
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        path = folder / f"{case}{suffix}"
        if path.is_file():
            return path
    raise InputError(f"no prediction for case {case} (expected {case}.nii.gz)", folder)


def _predict_fold(evaluation, model_path: str, folder: Path, overlap: float, device: str) -> None:
    """Segment each evaluation case with the trained model; write ``folder/<case>.nii.gz``.

    The deployed path, not a training-side copy of it: the case is prepared from the card
    (:func:`SymmetryAwareCore.inference.pipeline.prepare_for_model`), predicted by the
    mirror-paired sliding window, and its probabilities are brought back to the file's
    own grid and thresholded there, exactly as ``symmetryaware segment`` does.
    """
    from SymmetryAwareCore.inference.model_source import LoadedModel
    from SymmetryAwareCore.inference.pipeline import SegmentOptions, outputs_on_native, predict_case, prepare_for_model
    from SymmetryAwareCore.io.writers import write_labelmap_nifti
    from SymmetryAwareCore.models.model_card import load_model

    from .data import entry_paths
    from .datalist import case_id

    path = Path(model_path)
    path = path / "model.json" if path.is_dir() else path
    if not path.is_file():
        raise InputError("model card not found", path)
    network, card = load_model(path)
    if (card.postprocessing or {}).get("activation") != "sigmoid" or list((card.postprocessing or {}).get("regions", {})) != ["TC", "WT", "ET"]:
        raise InputError("is not a TC/WT/ET segmentation model", model_path)
    model = LoadedModel(network.eval(), card, str(path))
    options = SegmentOptions(device=device, overlap=overlap, overview=False)
    for entry in evaluation:
        paths, _ = entry_paths(entry)
        prepared = prepare_for_model(paths, model, options)
        outputs = outputs_on_native(prepared, predict_case(prepared, model, options), model, options)
        write_labelmap_nifti(outputs.labels, prepared.native, folder / f"{case_id(entry)}.nii.gz")


def evaluate_segmentation(datalist_path: str, fold: int, predictions: Optional[str], output: str,
                          enhancing_label: Optional[int] = None, model: Optional[str] = None,
                          overlap: float = 0.5, device: str = "auto") -> Dict[str, Path]:
    """Dice, HD95 and lesion-wise Dice/HD95 of TC, WT, ET for each case of the evaluation fold
    (BraTS conventions for empty masks, see :mod:`.metrics`); writes CSV + JSON.

    Predictions are read from ``predictions`` (label maps ``<case>.nii.gz``), or first made by
    the trained ``model`` into ``<output>/predictions``.
    """
    from SymmetryAwareCore.geometry.orientation import to_ras
    from SymmetryAwareCore.io.readers import read_labelmap

    from .datalist import case_id, load_datalist
    from .metrics import REGIONS, case_metrics, labels_to_regions, summarise, write_report

    _, evaluation = load_datalist(datalist_path).split(fold)
    if model:
        folder = Path(output) / "predictions"
        _predict_fold(evaluation, model, folder, overlap, device)
    else:
        folder = Path(predictions)
    if not folder.is_dir():
        raise InputError("predictions folder not found", folder)
    per_case, rows = {}, []
    for entry in evaluation:
        case = case_id(entry)
        if not entry.get("label"):
            raise InputError(f"case {case} has no 'label' to evaluate against", datalist_path)
        truth, _ = to_ras(read_labelmap(entry["label"]))
        path = _find_prediction(folder, case)
        pred, _ = to_ras(read_labelmap(path))
        if not pred.same_grid(truth):
            raise InputError(f"not on the grid of the reference label {entry['label']}", path)
        metrics = case_metrics(labels_to_regions(pred.array.astype(np.int64), enhancing_label),
                               labels_to_regions(truth.array.astype(np.int64), enhancing_label),
                               spacing=truth.spacing)
        per_case[case] = metrics
        row: Dict[str, object] = {"case": case}
        for region in REGIONS:
            for metric in ("dice", "hd95", "lesion_dice", "lesion_hd95"):
                row[f"{region}_{metric}"] = metrics[region][metric]
        rows.append(row)
    return write_report(output, rows, summarise(per_case))


def evaluate_classification(datalist_path: str, fold: int, scores: str, output: str,
                            findings: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """AUC per finding over the evaluation fold's cases; writes CSV + JSON."""
    from .datalist import case_id, finding_value, load_datalist
    from .metrics import auc_per_finding, write_report

    _, evaluation = load_datalist(datalist_path).split(fold)
    path = Path(scores)
    if not path.is_file():
        raise InputError("scores file not found", path)
    with open(path, newline="") as handle:
        table = list(csv.DictReader(handle))
    if not table or "case" not in table[0]:
        raise InputError("scores CSV needs a header with a 'case' column", path)
    names = list(findings) if findings else [c for c in table[0] if c != "case"]
    by_case = {row["case"]: row for row in table}
    rows: List[Dict[str, object]] = []
    score_matrix, target_matrix = [], []
    for entry in evaluation:
        case = case_id(entry)
        if case not in by_case:
            raise InputError(f"no scores for case {case}", path)
        missing = [f for f in names if finding_value(entry, f) is None or f not in by_case[case]]
        if missing:
            raise InputError(f"case {case}: no score or reference for {', '.join(missing)}", path)
        s = [float(by_case[case][f]) for f in names]
        t = [finding_value(entry, f) for f in names]
        score_matrix.append(s)
        target_matrix.append(t)
        row: Dict[str, object] = {"case": case}
        for f, sv, tv in zip(names, s, t):
            row[f"{f}_score"], row[f"{f}_target"] = sv, tv
        rows.append(row)
    auc = auc_per_finding(np.array(score_matrix), np.array(target_matrix), names)
    return write_report(output, rows, {"auc": auc, "cases": len(rows)})


def run_evaluate(args: argparse.Namespace) -> int:
    if args.predictions or args.model:
        paths = evaluate_segmentation(args.datalist, args.fold, args.predictions, args.output, args.enhancing_label,
                                      model=args.model, overlap=args.overlap, device=args.device)
    else:
        findings = [f.strip() for f in args.findings.split(",")] if args.findings else None
        paths = evaluate_classification(args.datalist, args.fold, args.scores, args.output, findings)
    print(f"symmetryaware-train evaluate: wrote {paths['csv']} and {paths['json']}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from SymmetryAwareCore.cli.main import run_command

    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
