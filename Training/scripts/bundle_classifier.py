"""Turn a finished classifier run (``finetune-cls``) into a bundled model, with its held-out AUC.

1. Loads the run's model (``<run>/model.json``, checked by hash and keys).
2. Writes it as float16 safetensors with a full model card: the CT channel and its file-name
   patterns, the run's preprocessing block (ct-windows), the findings, training data, limits.
3. Classifies every case of the held-out fold with the SHIPPED file through the product's
   own path (:func:`SymmetryAwareCore.inference.classify.classify_case`: alignment, the
   card's preparation, the whole brain box with its flip) and scores ROC AUC per finding
   (``monai.metrics.compute_roc_auc``) with a bootstrap 95 % interval; for phantoms also
   per bleed-size, bleed-density and placement bin (each bin's patients against all healthy
   cases). Every case's probability, truth and bleed goes into the card's ``metrics.cases``,
   so the AUC can be recomputed from the card alone.
4. For a classifier with a lesion map (``pooling="lesion"``): the pointing rate, the share of
   held-out patients whose map peaks within ``--pointing-mm`` of a bleed voxel (the map from
   ``classify_case`` on the input's grid against the case's label file, or, with
   ``--cache-dir``, the box map against the prepared label), per bin too.

Run:
    python Training/scripts/bundle_classifier.py --run runs/ct_haemorrhage_f12 \
        --datalist datasets/ct_haemorrhage/datalist.json --fold 0 \
        --output SymmetryAwareCore/data/models/ct_haemorrhage_phantom_saswin_f12.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

# Bins of the phantom truth (radius of the largest bleed, its density). Grey matter is about
# 38 HU and white matter 28 HU in the phantoms, so below 55 HU a bleed is within ~17 HU of
# grey matter: subtle in the blood window, near-invisible in the brain window's texture.
SIZE_BINS = (("radius 3-6 mm (0.1-0.9 mL)", 0.0, 6.0), ("radius 6-10 mm", 6.0, 10.0), ("radius 10-15 mm", 10.0, 99.0))
DENSITY_BINS = (("44-55 HU (subtle)", 0.0, 55.0), ("55-65 HU", 55.0, 65.0), ("65-75 HU (obvious)", 65.0, 999.0))


def auc(scores: Sequence[float], targets: Sequence[float]) -> float:
    """ROC AUC (monai); NaN when only one class is present."""
    import torch
    from monai.metrics import compute_roc_auc

    t = np.asarray(targets, np.float64)
    if len(np.unique(t)) < 2:
        return float("nan")
    return float(compute_roc_auc(torch.as_tensor(np.asarray(scores, np.float64)), torch.as_tensor(t)))


def bootstrap_ci(scores: Sequence[float], targets: Sequence[float], repeats: int = 2000, seed: int = 0) -> List[float]:
    """95 % percentile interval of the AUC, resampling positives and negatives separately
    (so every resample has both classes, as the held-out set's composition is fixed)."""
    rng = np.random.default_rng(seed)
    s, t = np.asarray(scores, np.float64), np.asarray(targets, np.float64)
    pos, neg = s[t == 1], s[t == 0]
    if len(pos) < 2 or len(neg) < 2:
        return [float("nan"), float("nan")]
    values = []
    for _ in range(repeats):
        p, n = rng.choice(pos, len(pos)), rng.choice(neg, len(neg))
        values.append(auc(np.concatenate([p, n]), np.concatenate([np.ones(len(p)), np.zeros(len(n))])))
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def paired_auc_difference(scores_a: Sequence[float], scores_b: Sequence[float], targets: Sequence[float],
                          repeats: int = 2000, seed: int = 0) -> Dict[str, object]:
    """AUC(a) - AUC(b) of two classifiers scored on the same cases, with a paired bootstrap
    95 % percentile interval: each resample draws positives and negatives separately (as
    :func:`bootstrap_ci`) and scores BOTH classifiers on the same drawn cases."""
    rng = np.random.default_rng(seed)
    a, b, t = (np.asarray(v, np.float64) for v in (scores_a, scores_b, targets))
    if not (len(a) == len(b) == len(t)):
        raise ValueError(f"scores and targets differ in length: {len(a)}, {len(b)}, {len(t)}")
    pos, neg = np.flatnonzero(t == 1), np.flatnonzero(t == 0)
    if len(pos) < 2 or len(neg) < 2:
        raise ValueError("the paired bootstrap needs at least 2 positive and 2 negative cases")
    values = []
    for _ in range(repeats):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        values.append(auc(a[idx], t[idx]) - auc(b[idx], t[idx]))
    return {"difference": auc(a, t) - auc(b, t),
            "ci95": [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))],
            "positives": int(len(pos)), "negatives": int(len(neg))}


def scored(cases: List[Dict], keep=lambda c: True) -> Dict:
    """AUC, interval and counts of ``keep``'s patients against every healthy case."""
    chosen = [c for c in cases if c["target"] == 0 or keep(c)]
    s = [c["probability"] for c in chosen]
    t = [c["target"] for c in chosen]
    value = auc(s, t)
    return {"auc": None if np.isnan(value) else round(value, 4),
            "ci95": [None if np.isnan(v) else round(v, 4) for v in bootstrap_ci(s, t)],
            "positives": int(sum(t)), "negatives": int(len(t) - sum(t))}


def pointing_hit(probability_map: np.ndarray, label: np.ndarray, spacing: Sequence[float], within_mm: float) -> bool:
    """Whether the map's maximum lies within ``within_mm`` of a label voxel (``label > 0``);
    both ``(X, Y, Z)`` on one grid of voxel size ``spacing`` mm."""
    from scipy.ndimage import distance_transform_edt

    mask = np.asarray(label) > 0
    if not mask.any():
        raise ValueError("pointing needs a lesion in the label map")
    peak = np.unravel_index(int(np.argmax(probability_map)), probability_map.shape)
    distance = distance_transform_edt(~mask, sampling=[float(v) for v in spacing])
    return bool(distance[peak] <= within_mm)


def pointing_of(cases: List[Dict], keep=lambda c: True) -> Dict:
    """Share of ``keep``'s patients whose lesion map peaks at a bleed, with a Wilson 95 % interval."""
    hits = [c["pointing_hit"] for c in cases if c["target"] == 1 and c.get("pointing_hit") is not None and keep(c)]
    n, k = len(hits), int(sum(hits))
    if n == 0:
        return {"rate": None, "ci95": [None, None], "patients": 0}
    z = 1.959964
    centre = (k + z * z / 2) / (n + z * z)
    half = z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return {"rate": round(k / n, 4), "ci95": [round(centre - half, 4), round(centre + half, 4)], "patients": n}


def pointing_bins(cases: List[Dict]) -> Dict[str, Dict]:
    out = {"all patients": pointing_of(cases)}
    for label, lo, hi in SIZE_BINS:
        out[f"size: {label}"] = pointing_of(cases, lambda c, lo=lo, hi=hi: lo <= c["bleed_radius_mm"] < hi)
    for label, lo, hi in DENSITY_BINS:
        out[f"density: {label}"] = pointing_of(cases, lambda c, lo=lo, hi=hi: lo <= c["bleed_hu"] < hi)
    return out


def describe_network(kwargs: Dict) -> str:
    """One phrase for the card: where SACA sits, how the scan is read, how training paired scans."""
    saca = (f"SACA after Swin stage(s) {', '.join(str(s) for s in kwargs.get('saca_stages', [4]))}"
            if kwargs.get("use_saca", True) else "no SACA (plain Swin)")
    pooling = {"mean": "the mean of the bottleneck tokens",
               "multiscale": "the mean and max of the tokens of stages 1-4",
               "lesion": "the maximum of a lesion map that scores every Swin stage-1 token"}[kwargs.get("pooling", "mean")]
    pairing = ("each scan and its mirror image classified in one pass, averaged"
               if kwargs.get("pairing") == "mirror-pair" else "the scan classified with its mirror as context")
    return f"{saca}; the scan logit is {pooling}; {pairing}; feature size {kwargs.get('feature_size')}"


def bins_of(cases: List[Dict]) -> Dict[str, Dict]:
    """Per-bin AUC over the phantom truth recorded with each case."""
    out: Dict[str, Dict] = {}
    for label, lo, hi in SIZE_BINS:
        out[f"size: {label}"] = scored(cases, lambda c, lo=lo, hi=hi: lo <= c["bleed_radius_mm"] < hi)
    for label, lo, hi in DENSITY_BINS:
        out[f"density: {label}"] = scored(cases, lambda c, lo=lo, hi=hi: lo <= c["bleed_hu"] < hi)
    for scenario in ("unilateral", "bilateral", "midline"):
        out[f"placement: {scenario}"] = scored(cases, lambda c, s=scenario: c["scenario"] == s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--datalist", required=True, type=Path)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--name", default="ct-haemorrhage-phantom-saswin-f12")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--recipe", default="", help="the phantom command that made the data (for the card)")
    parser.add_argument("--note", default="", help="appended to the card's training_data (e.g. where the run stopped)")
    parser.add_argument("--cache-dir", type=Path, help="take the held-out cases' prepared brain boxes from this "
                        "training cache (prepare_case with the card's block, get-or-prepare) instead of preparing "
                        "each again; the first --check cases are also run through classify_case and must agree")
    parser.add_argument("--check", type=int, default=3, help="cases checked against classify_case with --cache-dir")
    parser.add_argument("--config-file", default="Training/configs/ct_haemorrhage_lesion.yaml",
                        help="the run's config file, named in the card")
    parser.add_argument("--pointing-mm", type=float, default=6.0,
                        help="a lesion map 'points' at a bleed when its peak is this close to a bleed voxel")
    args = parser.parse_args()

    from SymmetryAwareCore.inference.classify import classify_case, classify_prepared, has_lesion_map
    from SymmetryAwareCore.io.readers import read_image
    from SymmetryAwareCore.preprocessing.cache import PreparedStore
    from SymmetryAwareCore.inference.model_source import LoadedModel
    from SymmetryAwareCore.models.model_card import InputChannel, ModelCard, load_model, save_model
    from SymmetryAwareCore.preprocessing import Preprocessing
    from SymmetryAwareTraining.datalist import finding_value, load_datalist
    from SymmetryAwareTraining.modelcard import to_shipping_precision

    network, run_card = load_model(args.run / "model.json")
    summary = json.loads((args.run / "summary.json").read_text()) if (args.run / "summary.json").is_file() else {}
    where = (f"{summary.get('world_size', 1)} x {summary.get('device', '?')}, {summary.get('seconds', 0) / 60:.0f} min"
             if summary else "device not recorded")
    training = run_card.extra.get("training", {})
    config = training.get("config", {})
    findings = list(run_card.extra.get("findings") or [])
    spec = Preprocessing.from_card(run_card.preprocessing, source=str(args.run))
    datalist_json = json.loads(args.datalist.read_text())
    d, o, t = config.get("data", {}), config.get("optim", {}), config.get("train", {})
    recipe = args.recipe or (
        f"symmetryaware phantom --kind haemorrhage --modality ct --spacing {datalist_json.get('spacing_mm')} "
        f"--folds {datalist_json.get('num_folds')} --seed {datalist_json.get('seed')} "
        f"--bleed-radius-mm {','.join(f'{v:g}' for v in datalist_json.get('bleed_radius_mm', []))} "
        f"--bleed-hu {','.join(f'{v:g}' for v in datalist_json.get('bleed_hu', []))}")
    train_entries, held_out = load_datalist(args.datalist).split(args.fold)
    n_train_pos = sum(int(finding_value(e, findings[0]) or 0) for e in train_entries)
    card = ModelCard(
        name=args.name,
        description=(
            f"SA-Swin classifier ({describe_network(network.init_kwargs)}): "
            f"probability of {', '.join(findings)} on a head CT, from the whole brain box (skull included) "
            "resized to one 64^3 window and paired with its left-right mirror"
            + (" (`symmetryaware classify --maps` writes where it sees the finding)"
               if network.init_kwargs.get("pooling") == "lesion" else "")
            + ". Trained on synthetic CT phantoms "
            "only (MNI152 anatomy with skull, simulated bleeds, random poses, noise). NOT FOR CLINICAL USE: it "
            "has never seen a real scan, and its figures below are on phantoms."
        ),
        channels=[InputChannel("ct", ("*_ct.*", "*ct*"))],
        modality="CT",
        preprocessing=spec.to_card(),
        postprocessing={"activation": "sigmoid", "findings": findings},
        version=args.version,
        licence="Apache-2.0",
        training_data=(
            f"{args.datalist.parent.name}/{args.datalist.name}: {len(train_entries)} synthetic CT phantoms "
            f"({n_train_pos} with haemorrhage, {len(train_entries) - n_train_pos} healthy), folds other than "
            f"{args.fold} of `{recipe}`; every case aligned to its mid-sagittal plane, 3 mm frame, HU windows; "
            f"{t.get('steps')} steps of batch {d.get('batch_size')} (whole brain box resized to 64^3, flips), "
            f"AdamW lr {o.get('lr')} warm-up + cosine, {t.get('precision')}, {where} ({args.config_file})"
            + (f"; {args.note}" if args.note else "")
        ),
        extra={
            "findings": findings,
            "input": "whole brain box resized to roi_size; counterpart = its left-right flip",
            "training_run": config,
            "limits": ("synthetic phantoms only: one adult anatomy (MNI152) with mild warps, round bleeds of "
                       "3-15 mm radius inside the brain at 44-75 HU, no subdural/epidural/subarachnoid "
                       "patterns, no calcifications, beam hardening or motion; 3 mm frame. NOT FOR CLINICAL USE."),
        },
    )
    card_path = save_model(to_shipping_precision(network), args.output, card)
    shipped_network, shipped_card = load_model(args.output)  # evaluate what users will load
    shipped = LoadedModel(shipped_network, shipped_card, str(args.output))

    root = args.datalist.parent
    store = PreparedStore(args.cache_dir) if args.cache_dir else None
    lesion_map = has_lesion_map(shipped)
    cases: List[Dict] = []
    checked = []
    for index, entry in enumerate(held_out):
        start = time.perf_counter()
        paths = [root / p for p in entry["image"]]
        label_path = root / entry["label"] if entry.get("label") else None
        target = int(finding_value(entry, findings[0]))
        hit = None
        if store is None or index < args.check:
            result = classify_case(paths, shipped, device="cpu", maps=lesion_map and store is None)
            probability = result["probabilities"][findings[0]]
            if lesion_map and store is None and target == 1:
                native = result["native"]
                spacing = np.linalg.norm(native.affine[:3, :3], axis=0)
                hit = pointing_hit(result["maps"][findings[0]], read_image(label_path).array, spacing, args.pointing_mm)
        if store is not None:
            volume, label, _ = store.get(paths, [c.name for c in shipped_card.channels], spec,
                                         label_path if lesion_map else None)
            if lesion_map:
                probabilities, box_maps = classify_prepared(np.asarray(volume), shipped, "cpu", return_maps=True)
                cached = float(probabilities[0])
                if target == 1:
                    hit = pointing_hit(box_maps[0], label, spec.spacing, args.pointing_mm)
            else:
                cached = float(classify_prepared(np.asarray(volume), shipped, "cpu")[0])
            if index < args.check:
                checked.append(abs(cached - probability))
                if checked[-1] > 1e-4:
                    raise SystemExit(f"{entry['name']}: cached preparation gives {cached}, classify_case {probability}")
            probability = cached
        truth = json.loads((root / entry["case_json"]).read_text())
        bleeds = [l for l in truth.get("lesions", []) if l.get("finding") == "haemorrhage"]
        largest = max(bleeds, key=lambda l: l["radius_mm"]) if bleeds else None
        row = {
            "case": entry["name"],
            "target": target,
            "probability": round(float(probability), 6),
            "pointing_hit": hit,
            "scenario": truth.get("scenario"),
            "bleed_radius_mm": None if largest is None else largest["radius_mm"],
            "bleed_hu": None if largest is None else largest["value_hu"],
        }
        cases.append(row)
        print(f"{row} ({time.perf_counter() - start:.1f} s)", flush=True)
    overall = scored(cases)
    data = json.loads(card_path.read_text())
    data["metrics"] = {
        "evaluated_on": (f"fold {args.fold} of {args.datalist.name}: {len(cases)} held-out synthetic CT phantoms "
                         f"({overall['positives']} with haemorrhage, {overall['negatives']} healthy), with the shipped "
                         "float16 weights, "
                         + ("through classify_case" if store is None else
                            f"on prepared brain boxes from the training cache (prepare_case with this card's block; "
                            f"the first {len(checked)} cases also through classify_case, largest difference "
                            f"{max(checked, default=0.0):.1e})")),
        "auc": {findings[0]: overall["auc"]},
        "auc_ci95": {findings[0]: overall["ci95"]},
        "bootstrap": "2000 resamples of positives and negatives separately, seed 0, percentile interval",
        "bins": bins_of(cases) if all(c["target"] == 0 or c["bleed_radius_mm"] is not None for c in cases) else {},
        "cases": cases,
    }
    if lesion_map:
        data["metrics"]["pointing"] = {
            "definition": (f"share of held-out patients whose lesion map peaks within {args.pointing_mm:g} mm of a "
                           "bleed voxel (" + ("box map against the prepared label, 3 mm frame" if store is not None
                                              else "map on the input's grid against the label file") +
                           "); Wilson 95 % interval"),
            **pointing_bins(cases),
        }
    # Rewritten in place: the metrics are not part of the hashed weights.
    card_path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps({k: data["metrics"][k] for k in ("auc", "auc_ci95", "bins", "pointing") if k in data["metrics"]},
                     indent=2))


if __name__ == "__main__":
    main()
