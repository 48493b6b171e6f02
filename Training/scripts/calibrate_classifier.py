"""Calibrate a bundled classifier's probabilities (Platt scaling) on cases of its own, and
report the calibration on the held-out cases its card was scored on.

A classifier's sigmoid ranks scans but need not be a frequency: the CT haemorrhage model
gave a median of 0.643 to its held-out patients and 0.639 to its healthy subjects. This
script:

1. scores the calibration cases (a datalist apart from training and from the card's
   held-out cases: e.g. fresh phantoms of the same recipe with another seed) with the card's
   network, uncalibrated (:func:`SymmetryAwareCore.inference.classify.classify_case` with
   ``calibrated=False``: the path of ``symmetryaware classify``). Calibration cases that
   share a name with the card's held-out cases or with the cases of its training run's
   datalist (when that file is found) are refused;
2. fits ``p' = sigmoid(a * logit(p) + b)`` per finding by maximum likelihood (Newton's
   method on the two parameters, a small ridge on ``a - 1`` and ``b`` so that a separable
   set cannot run off to infinity); refuses ``a <= 0`` (the model ranks the calibration
   cases backwards: no monotone calibration can help);
3. writes it into the card (``postprocessing.calibration``; the weights and their hash are
   unchanged), and adds ``metrics.calibration``: Brier score, expected calibration error
   (10 equal-width bins) and the median probability of positives and negatives, before and
   after, on the card's own held-out ``metrics.cases`` (their stored uncalibrated
   probabilities, so the held-out cases are not run again and play no part in the fit).

Run:
    symmetryaware phantom --output-dir datasets/ct_haem_calib --cases 100 ... --seed 1400 --prefix ctc
    python Training/scripts/calibrate_classifier.py \\
        --card SymmetryAwareCore/data/models/ct_haemorrhage_phantom_saswin_f12.json \\
        --datalist datasets/ct_haem_calib/datalist.json --recipe "<the phantom command>"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np


def fit_platt(probabilities: Sequence[float], targets: Sequence[int], ridge: float = 1e-3,
              iterations: int = 100) -> Dict[str, float]:
    """``{"scale": a, "offset": b}`` maximising the likelihood of ``targets`` under
    ``sigmoid(a * logit(p) + b)``, with ``ridge * ((a - 1)^2 + b^2)`` (identity by default)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(targets, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1 or not ((y == 0) | (y == 1)).all():
        raise ValueError("probabilities and targets must be equal-length vectors, targets 0 or 1")
    if y.min() == y.max():
        raise ValueError("the calibration cases must hold both positives and negatives")
    x = np.stack([np.log(p / (1 - p)), np.ones_like(p)], axis=1)
    prior = np.array([1.0, 0.0])
    w = prior.copy()
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-(x @ w)))
        gradient = x.T @ (q - y) + 2 * ridge * (w - prior)
        hessian = (x * (q * (1 - q))[:, None]).T @ x + 2 * ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    return {"scale": float(w[0]), "offset": float(w[1])}


def calibration_metrics(probabilities: Sequence[float], targets: Sequence[int], bins: int = 10) -> Dict[str, float]:
    """Brier score, expected calibration error (equal-width bins, weighted by count) and the
    median probability of the positives and of the negatives."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    ece = sum(abs(p[which == k].mean() - y[which == k].mean()) * (which == k).sum()
              for k in range(bins) if (which == k).any()) / len(p)
    return {"brier": round(float(np.mean((p - y) ** 2)), 4), "ece": round(float(ece), 4),
            "median_positive": round(float(np.median(p[y == 1])), 4),
            "median_negative": round(float(np.median(p[y == 0])), 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", required=True, type=Path, help="the bundled classifier's card (.json), rewritten")
    parser.add_argument("--datalist", required=True, type=Path, help="the calibration cases (every entry is used)")
    parser.add_argument("--recipe", default="", help="the command that made the calibration cases (for the card)")
    args = parser.parse_args(argv)

    from SymmetryAwareCore.inference.classify import calibrate, classify_case, finding_names
    from SymmetryAwareCore.inference.model_source import LoadedModel
    from SymmetryAwareCore.models.model_card import load_model
    from SymmetryAwareTraining.datalist import finding_value, load_datalist

    card_json = json.loads(args.card.read_text(encoding="utf-8"))
    held_out = card_json.get("metrics", {}).get("cases")
    if not held_out:
        raise SystemExit(f"{args.card}: the card has no metrics.cases (bundle it with bundle_classifier.py first)")
    card_json.get("postprocessing", {}).pop("calibration", None)  # a refit replaces the old one
    network, card = load_model(args.card)
    model = LoadedModel(network, card, str(args.card))
    names = finding_names(model)
    if len(names) != 1:
        raise SystemExit("this script calibrates a one-finding classifier (its held-out cases hold one probability)")
    entries = load_datalist(args.datalist).all_entries()
    overlap = {e["name"] for e in entries} & {c["case"] for c in held_out}
    if overlap:
        raise SystemExit(f"{len(overlap)} calibration case(s) are held-out cases of the card, e.g. {sorted(overlap)[0]}")
    trained_on = Path(((card_json.get("extra") or {}).get("training_run") or {}).get("data", {}).get("datalist") or "")
    if trained_on.name and trained_on.is_file():
        overlap = {e["name"] for e in entries} & {e["name"] for e in load_datalist(trained_on).all_entries()}
        if overlap:
            raise SystemExit(f"{len(overlap)} calibration case(s) share a name with the training run's datalist "
                             f"{trained_on}, e.g. {sorted(overlap)[0]}")
    root = args.datalist.parent
    raw: List[float] = []
    truth: List[int] = []
    for entry in entries:
        start = time.perf_counter()
        result = classify_case([root / p for p in entry["image"]], model, device="cpu", calibrated=False)
        raw.append(result["probabilities"][names[0]])
        truth.append(int(finding_value(entry, names[0])))
        print(f"{entry['name']}: target {truth[-1]} probability {raw[-1]:.4f} ({time.perf_counter() - start:.1f} s)",
              flush=True)
    fit = fit_platt(raw, truth)
    if fit["scale"] <= 0:
        raise SystemExit(f"the fitted scale is {fit['scale']:.3f} <= 0: the classifier ranks the calibration cases "
                         "backwards; not calibrated")
    n_pos = sum(truth)
    calibration = {"method": "platt", "scale": [round(fit["scale"], 6)], "offset": [round(fit["offset"], 6)],
                   # fitted_on is shown to the user (classify's result, the Slicer panel): short.
                   "fitted_on": (f"{len(truth)} cases of {args.datalist.parent.name} ({n_pos} with {names[0]}, "
                                 f"{len(truth) - n_pos} without)")}
    if args.recipe:
        calibration["recipe"] = args.recipe
    p_held = [c["probability"] for c in held_out]
    t_held = [c["target"] for c in held_out]
    card_json.setdefault("postprocessing", {})["calibration"] = calibration
    card_json["metrics"]["calibration"] = {
        "evaluated_on": f"the {len(held_out)} held-out cases above (metrics.cases, uncalibrated probabilities)",
        "uncalibrated": calibration_metrics(p_held, t_held),
        "calibrated": calibration_metrics(calibrate(np.asarray(p_held)[None], calibration)[0], t_held),
        "calibration_cases": {"uncalibrated": calibration_metrics(raw, truth),
                              "calibrated": calibration_metrics(calibrate(np.asarray(raw)[None], calibration)[0], truth)},
    }
    args.card.write_text(json.dumps(card_json, indent=2) + "\n", encoding="utf-8")
    load_model(args.card)  # the rewritten card must still load
    print(json.dumps({"calibration": calibration, "metrics": card_json["metrics"]["calibration"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
