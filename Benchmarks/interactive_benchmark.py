"""Interactive segmentation on held-out phantoms with the simulated clicker, through InteractiveSession.

For each case of the held-out fold (never used in training) and each condition, the simulated
annotator (:func:`SymmetryAwareCore.interactive.clicker.next_click`, the one the training and
the tests use) clicks on the session's mask, on the input's own grid, against the true whole
tumour (BraTS labels 1, 2, 4 -> 1), up to ``--max-clicks`` clicks (10): the first click at the
tumour's deepest point, each next one at the centre of the largest error component. Reported:

- Dice after 1, 3 and 5 clicks (after the last click when the clicker stopped earlier because
  the mask was perfect, which does not happen on these cases); clicking stops after 5 clicks
  once Dice 0.90 has been reached (nothing reported depends on later clicks);
- NoC@85 / NoC@90: clicks needed to reach Dice 0.85 / 0.90, counted as ``max_clicks`` when never
  reached (the standard cap);
- the automatic first pass (``auto``: no clicks) for reference;
- click latency (``InteractiveSession.click``, wall clock), median and worst over every click
  after each case's first (the first one may encode a counterpart window).

Conditions: ``empty+clicks`` (the method from an empty mask: the counterpart is the mirror
window of the aligned scan); ``auto+clicks`` (``--start auto`` or ``--also-auto-start``: the
automatic pass first, then clicks on its errors; NoC is 0 when the automatic pass alone reaches
the threshold); ``--ablation self`` or ``zeros`` (the counterpart replaced by the window itself or
by zeros; the SAME trained weights, so this measures what the trained network draws from the
counterpart at test time); ``--compare-model`` (another model, e.g. a refiner TRAINED without the
mirrored counterpart: the honest ablation of what the mirror buys).

A datalist with folds gives its fold ``--fold``; one without (a set made only for evaluation,
e.g. low-contrast phantoms) gives every case with a label.

    python Benchmarks/interactive_benchmark.py --datalist datasets/glioma_mixed/datalist.json \
        --fold 0 --cases 6 --also-auto-start --ablation none --output interactive_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def run_case(session, entry, max_clicks: int, root: Path, model=None, start: str = "empty",
             bias_correction=None) -> dict:
    from SymmetryAwareCore.interactive.clicker import dice, next_click

    images = [str(root / p) for p in entry["image"]]
    label = nib.load(str(root / entry["label"]))
    truth = np.asarray(label.dataobj) > 0  # whole tumour: every tumour label
    spacing = np.linalg.norm(label.affine[:3, :3], axis=0)
    started = time.perf_counter()
    session.load(images, model, bias_correction)
    load_s = time.perf_counter() - started
    if session.mask.shape != truth.shape:
        raise SystemExit(f"{entry['name']}: the session's grid {session.mask.shape} is not the label's {truth.shape}")
    auto = None
    if session.auto_available:
        session.auto()
        auto = dice(session.mask, truth)
        if start == "empty":
            session.reset()
    elif start == "auto":
        raise SystemExit(f"model {session.model.card.name} offers no automatic first pass: use --start empty")
    dices, latencies = [], []
    for _ in range(max_clicks):
        click = next_click(session.mask, truth, spacing)
        if click is None:
            break
        ras = (label.affine @ np.append(click.voxel, 1.0))[:3]
        t = time.perf_counter()
        session.click(ras, click.positive)
        latencies.append(time.perf_counter() - t)
        dices.append(dice(session.mask, truth))
        if len(dices) >= 5 and max(dices) >= 0.90:
            break  # NoC@85, NoC@90 and Dice after 1, 3, 5 clicks are all known

    def noc(threshold: float) -> int:
        if start == "auto" and auto >= threshold:
            return 0  # the automatic pass alone is enough
        return next((i + 1 for i, d in enumerate(dices) if d >= threshold), max_clicks)

    def after(n: int) -> float:
        return dices[min(n, len(dices)) - 1]

    if not dices:  # the mask was already perfect: nothing to click
        dices = [dice(session.mask, truth)]
    return {"case": entry["name"], "start": start, "bias_correction": session.prepared.bias_correction, "load_s": round(load_s, 2), "auto_dice": auto, "dice": dices,
            "dice_1": after(1), "dice_3": after(3), "dice_5": after(5), "noc85": noc(0.85), "noc90": noc(0.90),
            "latency_s": latencies}


def summarise(rows: list) -> dict:
    after_first = [t for r in rows for t in r["latency_s"][1:]]
    mean = lambda key: float(np.mean([r[key] for r in rows if r[key] is not None])) if rows else None  # noqa: E731
    return {"cases": len(rows), "auto_dice": mean("auto_dice"), "dice_1": mean("dice_1"), "dice_3": mean("dice_3"),
            "dice_5": mean("dice_5"), "noc85": mean("noc85"), "noc90": mean("noc90"),
            "latency_median_s": statistics.median(after_first) if after_first else None,
            "latency_worst_s": max(after_first) if after_first else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", required=True, type=Path)
    parser.add_argument("--fold", type=int, default=0, help="the held-out fold (not used in training)")
    parser.add_argument("--cases", type=int, default=0, help="first N cases of the fold, alternating between source "
                        "folders (0: all)")
    parser.add_argument("--model", default=None, help="model name or card (default: the bundled interactive model)")
    parser.add_argument("--max-clicks", type=int, default=10)
    parser.add_argument("--ablation", choices=["self", "zeros", "none"], default="self",
                        help="also run with the counterpart replaced at test time (same weights)")
    parser.add_argument("--start", choices=["empty", "auto"], default="empty",
                        help="empty: clicks from an empty mask; auto: the automatic pass first, then clicks on its "
                             "errors (NoC 0 when the automatic pass already reaches the threshold)")
    parser.add_argument("--also-auto-start", action="store_true", help="also run the auto start with the same model")
    parser.add_argument("--compare-model", help="another model (card) run the same way, e.g. a refiner trained "
                        "without the mirrored counterpart")
    parser.add_argument("--also-bias-correction", action="store_true",
                        help="load the first condition WITHOUT bias correction and also run it with N4 first (load's "
                        "bias_correction false / true), paired; the other conditions load as the model card says")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    from SymmetryAwareCore.interactive.session import InteractiveSession

    data = json.loads(args.datalist.read_text())
    root = args.datalist.parent
    entries = [e for key, v in data.items() if isinstance(v, list) for e in v if isinstance(e, dict)]
    if any("fold" in e for e in entries):
        held = [e for e in entries if e.get("fold") == args.fold]
        held_out = f"fold {args.fold} of {args.datalist.parent.name}/{args.datalist.name} (held out of training)"
    else:  # a set made only for evaluation: every case
        held = entries
        held_out = f"every case of {args.datalist.parent.name}/{args.datalist.name} (a set not used in training)"
    held = [e for e in held if e.get("label")]
    if args.cases:
        # Alternate between the source folders (3 mm and 2 mm phantoms) so a short run sees both.
        groups = {}
        for e in held:
            groups.setdefault(str(Path(e["label"]).parent), []).append(e)
        mixed = [e for pair in zip(*groups.values()) for e in pair] if len(groups) > 1 else held
        held = mixed[: args.cases]
    # (name, counterpart ablation, model, start, bias correction: None = as the card says)
    # With --also-bias-correction the first condition loads without N4 whatever the card asks
    # (since 0.3.0 the interactive card asks for it), so the pair is none against N4.
    conditions = [(f"{args.start}+clicks", None, args.model, args.start, False if args.also_bias_correction else None)]
    if args.also_auto_start:
        conditions.append(("auto+clicks", None, args.model, "auto", None))
    if args.ablation != "none":
        conditions.append((f"counterpart={args.ablation}", args.ablation, args.model, args.start, None))
    if args.compare_model:
        conditions.append((f"model={Path(args.compare_model).stem}", None, args.compare_model, args.start, None))
    if args.also_bias_correction:
        conditions.append((f"n4 {args.start}+clicks", None, args.model, args.start, True))
    results = {"datalist": str(args.datalist), "held_out": held_out, "fold": args.fold, "max_clicks": args.max_clicks,
               "threads": args.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None,
               "load_average_at_start": os.getloadavg(), "conditions": {}}
    for name, ablation, model, start, bias_correction in conditions:
        session = InteractiveSession(threads=args.threads, ablation=ablation)
        rows = []
        for entry in held:
            row = run_case(session, entry, args.max_clicks, root, model, start, bias_correction)
            rows.append(row)
            print(f"{name} {row['case']}: auto {row['auto_dice']}, dice@1/3/5 {row['dice_1']:.3f}/{row['dice_3']:.3f}/"
                  f"{row['dice_5']:.3f}, NoC85 {row['noc85']}, NoC90 {row['noc90']}, latency median "
                  f"{statistics.median(row['latency_s'][1:] or row['latency_s']):.2f} s", flush=True)
            # Written after every case, so a run stopped on time still leaves its figures.
            results["conditions"][name] = {"summary": summarise(rows), "cases": rows}
            args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(name, json.dumps(results["conditions"][name]["summary"]), flush=True)
    results["paired"] = paired_differences(results["conditions"])
    for name, row in results["paired"].items():
        print(name, json.dumps(row), flush=True)
    results["load_average_at_end"] = os.getloadavg()
    args.output.write_text(json.dumps(results, indent=2) + "\n")


def paired_differences(conditions: dict, resamples: int = 10000) -> dict:
    """Each other condition minus the first, case by case (same cases): mean difference of Dice
    after 1, 3 and 5 clicks and of NoC@90 (and of the automatic pass's Dice where both have
    one), with a 95 % paired bootstrap interval (seed 0)."""
    names = list(conditions)
    if len(names) < 2:
        return {}
    rng = np.random.default_rng(0)
    base = {r["case"]: r for r in conditions[names[0]]["cases"]}
    out = {}
    for name in names[1:]:
        rows = [(base[r["case"]], r) for r in conditions[name]["cases"] if r["case"] in base]
        if not rows:
            continue
        picks = rng.integers(0, len(rows), (resamples, len(rows)))
        entry = {"cases": len(rows)}
        keys = ("dice_1", "dice_3", "dice_5", "noc90")
        if all(b["auto_dice"] is not None and r["auto_dice"] is not None for b, r in rows):
            keys = ("auto_dice",) + keys
        for key in keys:
            diff = np.array([r[key] - b[key] for b, r in rows], np.float64)
            means = diff[picks].mean(1)
            entry[key] = {"mean": float(diff.mean()), "ci95": [float(np.percentile(means, 2.5)),
                                                               float(np.percentile(means, 97.5))]}
        out[f"{name} - {names[0]}"] = entry
    return out


if __name__ == "__main__":
    main()
