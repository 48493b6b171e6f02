"""Score a glioma model on held-out phantoms and on the bundled sample, through ``segment_case``.

The deployed path end to end (files in, labelmap on the input's grid out), Dice and HD95 of
the BraTS regions WT, TC, ET against the phantoms' true labels at their own resolution.
Whatever ``SymmetryAwareCore`` is importable is measured, so the same script scores an
older checkout for a before / after table:

    python Benchmarks/heldout_glioma.py --datalist datasets/glioma_mixed/datalist.json --fold 0 --output after.json
    PYTHONPATH=/path/to/old/checkout:/path/to/old/checkout/Training python Benchmarks/heldout_glioma.py ... --output before.json

Prints one line per case and, last, the mean per region over each source folder and the
sample's Dice; the JSON also holds each case's WT false-positive volume (mL marked outside
the true whole tumour) and its mean per folder. Two such files (two models, same cases) are
compared, paired and with intervals, by `Benchmarks/compare_heldout.py`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np

REGIONS = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}


def _scores(pred_path: Path, truth_path: Path) -> dict:
    from SymmetryAwareTraining.metrics import false_positive_ml, labels_to_regions, segmentation_metrics

    pred_img, truth_img = nib.load(str(pred_path)), nib.load(str(truth_path))
    if pred_img.shape != truth_img.shape or not np.allclose(pred_img.affine, truth_img.affine, atol=1e-4):
        raise SystemExit(f"{pred_path}: not on the grid of {truth_path}")
    pred, truth = np.asarray(pred_img.dataobj).astype(np.int64), np.asarray(truth_img.dataobj).astype(np.int64)
    spacing = np.linalg.norm(truth_img.affine[:3, :3], axis=0)
    pred_regions, true_regions = labels_to_regions(pred), labels_to_regions(truth)
    metrics = segmentation_metrics(pred_regions, true_regions, spacing)
    metrics["WT"]["false_positive_ml"] = false_positive_ml(pred_regions[1], true_regions[1], spacing)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", type=Path, required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--model", default=None, help="model name or card path (default: the bundled default)")
    parser.add_argument("--output", type=Path, required=True, help="JSON with per-case metrics and the summary")
    args = parser.parse_args()

    from SymmetryAwareCore.inference.model_source import resolve_model
    from SymmetryAwareCore.inference.pipeline import SegmentOptions, segment_case
    from SymmetryAwareCore.phantoms.sample import sample_case_paths

    model = resolve_model(args.model)
    data = json.loads(args.datalist.read_text())
    root = args.datalist.parent
    held_out = [e for e in data["training"] if e.get("fold") == args.fold]
    work = Path(tempfile.mkdtemp(prefix="heldout_"))
    per_case, groups = {}, defaultdict(list)
    options = SegmentOptions(device="cpu", overview=False)
    for entry in held_out:
        case = entry.get("name") or entry.get("case")
        start = time.perf_counter()
        result = segment_case([root / p for p in entry["image"]], work, model, options, case_id=case)
        metrics = _scores(result.files["labelmap"], root / entry["label"])
        per_case[case] = metrics
        groups[Path(root / entry["label"]).parent.name].append(metrics)
        print(f"{case}: " + "  ".join(f"{r} {metrics[r]['dice']:.3f}" for r in REGIONS)
              + f"  WT false positive {metrics['WT']['false_positive_ml']:.1f} mL"
              + f" ({time.perf_counter() - start:.1f} s)", flush=True)

    sample = sample_case_paths()
    result = segment_case([sample[c] for c in ("t1", "t1ce", "t2", "flair")], work, model, options, case_id="sample_glioma")
    sample_metrics = _scores(result.files["labelmap"], sample["label"])

    summary = {}
    for group, rows in sorted(groups.items()):
        summary[group] = {r: {"dice_mean": float(np.mean([m[r]["dice"] for m in rows])),
                              "hd95_mean": float(np.nanmean([m[r]["hd95"] for m in rows])), "n": len(rows)}
                          for r in REGIONS}
        summary[group]["WT"]["false_positive_ml_mean"] = float(np.mean([m["WT"]["false_positive_ml"] for m in rows]))
    summary["sample"] = {r: {"dice": sample_metrics[r]["dice"], "hd95": sample_metrics[r]["hd95"]} for r in REGIONS}
    args.output.write_text(json.dumps({"model": model.describe(), "cases": per_case, "summary": summary}, indent=2, default=float))
    for group, values in summary.items():
        print(f"{group}: " + "  ".join(f"{r} Dice {v.get('dice_mean', v.get('dice')):.3f} HD95 {v.get('hd95_mean', v.get('hd95')):.2f}"
                                       for r, v in values.items()))


if __name__ == "__main__":
    main()
