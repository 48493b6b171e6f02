"""The paper's claim in miniature: few-shot segmentation on phantoms, three arms, one CPU budget.

Arms (all feature size 12, 64^3 mirror-paired crops, batch 1, the same data and schedule):
  sa_swin_pretrained  SA-Swin initialised from symmetry-aware pretraining (SAH, four proxy
                      tasks) on a separate set of unlabelled phantoms, half of them healthy;
  sa_swin             SA-Swin from scratch;
  swin_unetr          SA-Swin with SACA off, which is MONAI's SwinUNETR key for key.

Budget: every fine-tuning run gets the same CPU time. SA-Swin encodes each crop and its
counterpart, so a step costs more than a Swin UNETR step; the ratio is measured in this
process (forward + backward of both networks on a 64^3 crop) and the Swin UNETR arm gets
that many times more steps. Pretraining is a one-off cost on unlabelled data shared by
every size; its time is reported beside the table.

Labelled sets: ``data.label_fraction`` of the training folds with the same seed, so the
smaller sets are subsets of the larger. Every model is scored on the held-out fold through
``symmetryaware-train evaluate --model`` (the case aligned as in training, mirror-paired
sliding window, Dice per region with monai.metrics).

Runs are resumable: a finished run (model.json) or evaluation (metrics.json) is reused, a
run with a checkpoint is resumed. The table goes to stdout and ``<output>/results.md``.

    python Training/scripts/few_shot.py --datalist datasets/glioma3mm/datalist.json \
        --pretrain-datalist datasets/pretrain3mm/datalist.json --output runs/few_shot
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
ARMS = ("sa_swin_pretrained", "sa_swin", "swin_unetr")
REGIONS = ("WT", "TC", "ET")


def step_cost_ratio(repeats: int = 3) -> Dict[str, float]:
    """Seconds per training step (forward + backward, 64^3, feature 12) of both networks."""
    import torch

    from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR

    torch.manual_seed(0)
    x, c = torch.randn(1, 4, 64, 64, 64), torch.randn(1, 4, 64, 64, 64)
    seconds = {}
    for name, saca in (("sa_swin", True), ("swin_unetr", False)):
        net = SASwinUNETR(in_channels=4, out_channels=3, feature_size=12, use_saca=saca)
        times = []
        for _ in range(repeats + 1):  # the first call warms the allocator and oneDNN up
            start = time.perf_counter()
            net(x, c if saca else None).mean().backward()
            times.append(time.perf_counter() - start)
        seconds[name] = min(times[1:])
    seconds["ratio"] = seconds["sa_swin"] / seconds["swin_unetr"]
    return seconds


def train(command: str, config: Path, run: Path, overrides: List[str], log: Path) -> float:
    """Run (or resume, or reuse) one training run; its training seconds from summary.json."""
    summary = run / "summary.json"
    if not (run / "model.json").is_file():
        args = [sys.executable, "-m", "SymmetryAwareTraining.cli", command, "--config", str(config),
                "--output-dir", str(run)]
        if (run / "checkpoints" / "last.pt").is_file():
            args.append("--resume")
        for item in overrides:
            args += ["--set", item]
        print("$ " + " ".join(args[2:]), flush=True)
        with open(log, "a") as stream:
            subprocess.run(args, check=True, stdout=stream, stderr=subprocess.STDOUT)
    return float(json.loads(summary.read_text())["seconds"])


def evaluate(run: Path, datalist: str, fold: int, overlap: float, log: Path) -> Dict[str, float]:
    metrics = run / "eval" / "metrics.json"
    if not metrics.is_file():
        args = [sys.executable, "-m", "SymmetryAwareTraining.cli", "evaluate", "--datalist", datalist,
                "--fold", str(fold), "--model", str(run), "--output", str(run / "eval"), "--overlap", str(overlap)]
        print("$ " + " ".join(args[2:]), flush=True)
        with open(log, "a") as stream:
            subprocess.run(args, check=True, stdout=stream, stderr=subprocess.STDOUT)
    summary = json.loads(metrics.read_text())["summary"]
    return {region: summary[region]["dice_mean"] for region in REGIONS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", required=True, help="labelled phantoms with folds (symmetryaware phantom)")
    parser.add_argument("--pretrain-datalist", required=True, help="unlabelled phantoms, healthy and patient")
    parser.add_argument("--fold", type=int, default=0, help="held-out evaluation fold")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                        help="shares of the training folds (40 cases in 5 folds: 8, 16, 32 cases)")
    parser.add_argument("--steps", type=int, default=120, help="SA-Swin fine-tuning steps (sets the CPU budget)")
    parser.add_argument("--pretrain-steps", type=int, default=60)
    parser.add_argument("--overlap", type=float, default=0.25, help="evaluation sliding-window overlap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/few_shot"))
    args = parser.parse_args()

    args.output.mkdir(parents=True, exist_ok=True)
    log = args.output / "runs.log"
    results_path = args.output / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if "step_cost" not in results:
        results["step_cost"] = step_cost_ratio()
    ratio = results["step_cost"]["ratio"]
    steps = {"sa_swin_pretrained": args.steps, "sa_swin": args.steps, "swin_unetr": round(args.steps * ratio)}
    results["steps"] = steps

    pretrain_run = args.output / "pretrain"
    results["pretrain_seconds"] = train(
        "pretrain", CONFIGS / "few_shot_pretrain.yaml", pretrain_run,
        [f"data.datalist={args.pretrain_datalist}", f"data.exclude_datalist={args.datalist}",
         f"data.exclude_fold={args.fold}", f"train.steps={args.pretrain_steps}", f"train.seed={args.seed}"], log)

    total = len(json.loads(Path(args.datalist).read_text())["training"])
    runs = results.setdefault("runs", {})
    for fraction in args.fractions:
        for arm in ARMS:
            name = f"{arm}_f{fraction:g}"
            run = args.output / name
            overrides = [f"data.datalist={args.datalist}", f"data.fold={args.fold}", f"data.label_fraction={fraction}",
                         f"train.steps={steps[arm]}", f"train.seed={args.seed}"]
            if arm == "swin_unetr":
                overrides.append("model.kwargs.use_saca=false")
            if arm == "sa_swin_pretrained":
                overrides += [f"model.init_checkpoint={pretrain_run / 'checkpoints' / 'last.pt'}",
                              f"data.pretrain_datalist={args.pretrain_datalist}"]
            seconds = train("finetune-seg", CONFIGS / "few_shot_seg.yaml", run, overrides, log)
            dice = evaluate(run, args.datalist, args.fold, args.overlap, log)
            runs[name] = {"arm": arm, "fraction": fraction, "steps": steps[arm], "train_seconds": seconds, "dice": dice}
            results_path.write_text(json.dumps(results, indent=2))
            print(f"{name}: {seconds:.0f} s, Dice " + ", ".join(f"{r} {dice[r]:.3f}" for r in REGIONS), flush=True)

    held_out = sum(1 for e in json.loads(Path(args.datalist).read_text())["training"] if e.get("fold") == args.fold)
    lines = [f"| labelled cases | arm | steps | train time | Dice WT | Dice TC | Dice ET |",
             "|---|---|---|---|---|---|---|"]
    for fraction in args.fractions:
        for arm in ARMS:
            r = runs[f"{arm}_f{fraction:g}"]
            count = max(1, round(fraction * (total - held_out)))
            lines.append(f"| {count} | {arm} | {r['steps']} | {r['train_seconds'] / 60:.1f} min | "
                         + " | ".join(f"{r['dice'][k]:.3f}" for k in REGIONS) + " |")
    cost = results["step_cost"]
    lines += ["", f"Held-out fold {args.fold}: {held_out} cases. Step cost measured in-process: SA-Swin "
              f"{cost['sa_swin']:.2f} s, Swin UNETR {cost['swin_unetr']:.2f} s (x{ratio:.2f}). "
              f"Pretraining: {args.pretrain_steps} steps, {results['pretrain_seconds'] / 60:.1f} min."]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
