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

``--thresholds 0.4 0.3 ...`` (region models) also scores each case's labels at other
thresholds from the same prediction (the pipeline's functions without the writing; at the
card's own threshold exactly ``segment_case``'s labelmap), for an operating-point sweep:
the JSON's ``thresholds`` holds per-case results and summaries per threshold. A case the
pipeline refuses (a one-line InputError: no mid-sagittal plane found, ...) is listed under
``refused`` with the reason and left out of the scores.
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


def _label_scores(pred: np.ndarray, truth: np.ndarray, affine: np.ndarray) -> dict:
    """Dice and HD95 per region and the WT false-positive volume (mL) of two label arrays
    on one grid (voxel size from ``affine``'s columns)."""
    from SymmetryAwareTraining.metrics import false_positive_ml, labels_to_regions, segmentation_metrics

    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    pred_regions = labels_to_regions(np.asarray(pred).astype(np.int64))
    true_regions = labels_to_regions(np.asarray(truth).astype(np.int64))
    metrics = segmentation_metrics(pred_regions, true_regions, spacing)
    metrics["WT"]["false_positive_ml"] = false_positive_ml(pred_regions[1], true_regions[1], spacing)
    return metrics


def _truth(truth_path: Path, shape, affine, what) -> np.ndarray:
    truth_img = nib.load(str(truth_path))
    if tuple(shape) != truth_img.shape or not np.allclose(affine, truth_img.affine, atol=1e-4):
        raise SystemExit(f"{what}: not on the grid of {truth_path}")
    return np.asarray(truth_img.dataobj)


def _scores(pred_path: Path, truth_path: Path) -> dict:
    pred_img = nib.load(str(pred_path))
    truth = _truth(truth_path, pred_img.shape, pred_img.affine, pred_path)
    return _label_scores(np.asarray(pred_img.dataobj), truth, pred_img.affine)


def sweep_labels(paths, model, options, thresholds) -> tuple:
    """One prediction, the labels at the card's threshold and at each of ``thresholds``.

    Returns ``(native image, {None: labels, t: labels, ...})``: the functions
    ``segment_case`` runs, without writing, so the card's entry is its labelmap exactly
    (``Testing/test_heldout_glioma.py``).
    """
    from SymmetryAwareCore.inference.pipeline import native_labels, predict_case, prepare_for_model, probabilities_to_native

    prepared = prepare_for_model(paths, model, options)
    probabilities = probabilities_to_native(predict_case(prepared, model, options).probabilities, prepared, model.card)
    labels = {t: native_labels(probabilities, prepared, model, options, t) for t in [None, *thresholds]}
    return prepared.native, labels


def _summary(groups: dict) -> dict:
    summary = {}
    for group, rows in sorted(groups.items()):
        summary[group] = {r: {"dice_mean": float(np.mean([m[r]["dice"] for m in rows])),
                              "hd95_mean": float(np.nanmean([m[r]["hd95"] for m in rows])), "n": len(rows)}
                          for r in REGIONS}
        summary[group]["WT"]["false_positive_ml_mean"] = float(np.mean([m["WT"]["false_positive_ml"] for m in rows]))
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", type=Path, required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--model", default=None, help="model name or card path (default: the bundled default)")
    parser.add_argument("--output", type=Path, required=True, help="JSON with per-case metrics and the summary")
    parser.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=None,
                        help="segment with --bias-correction / --no-bias-correction (N4 on each channel first, or "
                             "not); default: as the model card says")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[], metavar="T",
                        help="also score the labels at these thresholds (region models), from the same prediction")
    args = parser.parse_args(argv)

    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareCore.inference.model_source import resolve_model
    from SymmetryAwareCore.inference.pipeline import SegmentOptions, segment_case
    from SymmetryAwareCore.phantoms.sample import sample_case_paths

    if any(not 0.0 < t < 1.0 for t in args.thresholds):
        raise SystemExit("error: --thresholds must lie in (0, 1)")
    model = resolve_model(args.model)
    from SymmetryAwareCore.inference.pipeline import model_preprocessing
    from SymmetryAwareCore.preprocessing.bias import bias_correction_applies

    spec = model_preprocessing(model)
    # What every case gets (the run's rule, before any case is read): recorded in the result
    # so that figures measured with and without N4 are never mixed up.
    corrected = bias_correction_applies(spec.bias_correction == "n4", spec.is_ct, args.bias_correction)
    if args.thresholds and (model.card.postprocessing or {}).get("activation") != "sigmoid":
        raise SystemExit("error: --thresholds needs a region (sigmoid) model; this card's labels are an argmax")
    data = json.loads(args.datalist.read_text())
    root = args.datalist.parent
    held_out = [e for e in data["training"] if e.get("fold") == args.fold]
    work = Path(tempfile.mkdtemp(prefix="heldout_"))
    per_case, groups, refused = {}, defaultdict(list), {}
    swept = {t: ({}, defaultdict(list)) for t in args.thresholds}
    options = SegmentOptions(device="cpu", overview=False, bias_correction=args.bias_correction)
    for entry in held_out:
        case = entry.get("name") or entry.get("case")
        group = Path(root / entry["label"]).parent.name
        start = time.perf_counter()
        try:
            if args.thresholds:
                native, labels = sweep_labels([root / p for p in entry["image"]], model, options, args.thresholds)
            else:
                result = segment_case([root / p for p in entry["image"]], work, model, options, case_id=case)
        except InputError as error:  # what the deployed path refuses (no plane found, ...) is counted, not scored
            refused[case] = str(error)
            print(f"{case}: refused: {error}", flush=True)
            continue
        if args.thresholds:
            truth = _truth(root / entry["label"], native.spatial_shape, native.affine, case)
            metrics = _label_scores(labels[None], truth, native.affine)
            for t in args.thresholds:
                at = _label_scores(labels[t], truth, native.affine)
                swept[t][0][case] = at
                swept[t][1][group].append(at)
        else:
            metrics = _scores(result.files["labelmap"], root / entry["label"])
        per_case[case] = metrics
        groups[group].append(metrics)
        print(f"{case}: " + "  ".join(f"{r} {metrics[r]['dice']:.3f}" for r in REGIONS)
              + f"  WT false positive {metrics['WT']['false_positive_ml']:.1f} mL"
              + "".join(f"  [t={t:g}: WT {swept[t][0][case]['WT']['dice']:.3f}, "
                        f"{swept[t][0][case]['WT']['false_positive_ml']:.1f} mL]" for t in args.thresholds)
              + f" ({time.perf_counter() - start:.1f} s)", flush=True)

    sample = sample_case_paths()
    result = segment_case([sample[c] for c in ("t1", "t1ce", "t2", "flair")], work, model, options, case_id="sample_glioma")
    sample_metrics = _scores(result.files["labelmap"], sample["label"])

    summary = _summary(groups)
    summary["sample"] = {r: {"dice": sample_metrics[r]["dice"], "hd95": sample_metrics[r]["hd95"]} for r in REGIONS}
    result = {"model": model.describe(), "cases": per_case, "summary": summary, "refused": refused, "bias_correction": "n4" if corrected else None}
    if args.thresholds:
        # the same cases at other operating points; Benchmarks/compare_heldout.py --*-threshold reads them
        result["thresholds"] = {f"{t:g}": {"cases": cases, "summary": _summary(by_group)}
                                for t, (cases, by_group) in swept.items()}
    args.output.write_text(json.dumps(result, indent=2, default=float))
    for t, (cases, _) in swept.items():
        print(f"threshold {t:g}: WT Dice {np.mean([m['WT']['dice'] for m in cases.values()]):.3f}  WT false positive "
              f"{np.mean([m['WT']['false_positive_ml'] for m in cases.values()]):.1f} mL per scan")
    if refused:
        print(f"refused by the pipeline (not scored): {', '.join(sorted(refused))}")
    for group, values in summary.items():
        print(f"{group}: " + "  ".join(f"{r} Dice {v.get('dice_mean', v.get('dice')):.3f} HD95 {v.get('hd95_mean', v.get('hd95')):.2f}"
                                       for r, v in values.items()))


if __name__ == "__main__":
    main()
