"""Zero-shot asymmetry on phantoms: can a score tell lesion scans from healthy ones, and where?

The set (made in memory by :func:`SymmetryAwareCore.phantoms.make_subject`, nothing written):

- healthy subjects, alternately ``healthy`` and ``asymmetric`` (natural asymmetry: one
  hemisphere 2-4 % larger, one lateral ventricle inflated), so exactly half are asymmetric;
- lesion subjects of ``--kind`` (default glioma, MRI): ``unilateral`` (the main comparison),
  and the hard cases ``bilateral`` (mirror positions) and ``midline``, reported apart;
- every lesion subject at every level of the contrast sweep (``--contrasts``, the share of
  the lesion-minus-tissue contrast kept; the same seeds at every level, so the levels are
  paired), all with ``--variation`` (stronger warps, head size, bias field and per-subject
  tissue values than the default 1).

Every scan goes through the product's one preparation path (:func:`prepare_image`: estimated
mid-sagittal plane, symmetric frame at ``--spacing``, z-score over the head for MRI, CT
windows for CT), and every score is computed on that aligned frame:

- ``intensity``: the lesion channel (FLAIR for MRI; the brain window for CT), Gaussian
  smoothed (sigma 1 voxel); scan score = its 99th percentile inside the head. Uses no symmetry.
- ``mirror``: ``mean_c |v_c(x) - v_c(mirror x)|`` over channels, smoothed alike, inside the
  head and its mirror; scan score = 99th percentile. Non-learned symmetry. Its map is the
  same at x and at mirror x by construction: it says where, not which side.
- ``sah``: the learned symmetry head of ``--pretrainer`` (a SASwinPretrainer card), through
  :func:`SymmetryAwareCore.inference.zero_shot.zero_shot_asymmetry` exactly as
  ``report.json`` computes it (brain box resized to the head's roi_size).

Metrics: per scan, AUC lesion vs healthy (all healthy; and vs the asymmetric healthy only)
with a 95 % bootstrap CI (cases resampled within each class); per region, the voxel AUC of
each map (lesion voxels against the other head voxels of the same scan), mean over lesion
scans with a bootstrap CI over scans.

Per-case results go to ``--cache`` (JSON lines) as they are computed, so a larger run
reuses a smaller one's cases; baseline rows are keyed by the data and preparation, SAH rows
also by the head's SHA-256. With ``--prepared DIR`` the prepared brain box, head mask and
labels of every case are kept, so each further head (a trained one, a random-init sanity
head) costs one network pass per scan instead of a new preparation. Run (nice, one thread)::

    OMP_NUM_THREADS=1 nice -n 10 python Benchmarks/asymmetry_benchmark.py \\
        --healthy 25 --lesion 25 --hard 10 --cache runs/asym/cases.jsonl --json runs/asym/results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from SymmetryAwareCore.phantoms import make_subject  # noqa: E402
from SymmetryAwareCore.phantoms.dataset import case_seed  # noqa: E402
from SymmetryAwareCore.preprocessing import DEFAULT_CT_WINDOWS, Preprocessing, prepare_image  # noqa: E402
from SymmetryAwareTraining.metrics import rank_auc  # noqa: E402

METHODS = ("intensity", "mirror", "sah")
_MODALITY = {"glioma": "mri", "wml": "mri", "haemorrhage": "ct"}


auc = rank_auc  # Mann-Whitney AUC, defined once (SymmetryAwareTraining.metrics)


def bootstrap_auc(positive, negative, reps: int, rng: np.random.Generator):
    """AUC and its 95 % percentile interval, cases resampled within each class."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    values = [auc(rng.choice(positive, len(positive)), rng.choice(negative, len(negative))) for _ in range(reps)]
    return auc(positive, negative), float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def bootstrap_mean(values, reps: int, rng: np.random.Generator):
    values = np.asarray(values, float)
    means = [rng.choice(values, len(values)).mean() for _ in range(reps)]
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def spec_for(kind: str, spacing: float, pretrainer_card, bias_correction: Optional[str] = None) -> Preprocessing:
    """The head's own preprocessing when a pretrainer is given (it must see what it learned on).

    ``bias_correction`` (``"n4"`` or ``"none"``) overrides the head's (or the default's
    ``"none"``): the default segmentation model's card asks for N4, so ``segment`` hands the
    head N4-corrected scans, which is what ``--bias-correction n4`` measures."""
    if pretrainer_card is not None:
        spec = Preprocessing.from_card(pretrainer_card.preprocessing, source="--pretrainer")
    else:
        block = {"spacing": [spacing] * 3, "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}
        if _MODALITY[kind] == "ct":  # the project's default windows (channel 0: the brain window)
            block.update(normalisation="ct-windows", ct_windows=[list(w) for w in DEFAULT_CT_WINDOWS])
        spec = Preprocessing.from_card(block)
    if bias_correction is not None and bias_correction != spec.bias_correction:
        spec = dataclasses.replace(spec, bias_correction=bias_correction)  # validated: refused for CT
    return spec


def maps_of(prepared, kind: str) -> Dict[str, np.ndarray]:
    """``(W, H, D)`` maps of the non-learned baselines on the frame (axis 0 left -> right)."""
    v = prepared.volume
    head = prepared.head & prepared.head[::-1]
    lesion_channel = 0 if _MODALITY[kind] == "ct" else 3
    intensity = ndimage.gaussian_filter(v[lesion_channel], 1.0)
    mirror = ndimage.gaussian_filter(np.abs(v - v[:, ::-1]).mean(axis=0), 1.0)
    return {"intensity": np.where(prepared.head, intensity, -np.inf), "mirror": np.where(head, mirror, -np.inf)}


def _prepared_file(folder: Optional[Path], tag: dict, group: str, seed: int, contrast: float) -> Optional[Path]:
    if folder is None:
        return None
    import hashlib

    key = hashlib.sha256(json.dumps([tag, group, seed, contrast], sort_keys=True).encode()).hexdigest()[:20]
    return folder / f"{group}_{seed}_{contrast:g}_{key}.npz"


class _Stored:
    """What the SAH score reads of a :class:`PreparedCase`, reloaded from ``--prepared``."""

    def __init__(self, path: Path):
        with np.load(path) as z:
            self.cropped = z["cropped"]
            self.head = z["head"]
            self.label = z["label"]
            self.box = tuple(slice(int(a), int(b)) for a, b in z["box"])


def _save_prepared(path: Path, prepared) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, cropped=prepared.cropped, head=prepared.head, label=prepared.label,
                        box=np.array([[b.start, b.stop] for b in prepared.box]))
    tmp.replace(path)


def case_result(kind: str, group: str, seed: int, contrast: float, variation: float, spec: Preprocessing,
                keep: Optional[Path] = None) -> dict:
    """Scores and localisation of the non-learned baselines on one subject (``group``: a
    scenario; healthy ones by name). ``keep``: also save what the SAH score reads there."""
    started = time.perf_counter()
    healthy = group in ("healthy", "asymmetric")
    phantom = make_subject(seed, "healthy" if healthy else kind, _MODALITY[kind], spec.spacing[0], group,
                           lesion_contrast=1.0 if healthy else contrast, variation=variation)
    prepared = prepare_image(phantom.image, spec, label=phantom.label.array, msp_on_failure="axes")
    if keep is not None:
        _save_prepared(keep, prepared)
    maps = maps_of(prepared, kind)
    inside = prepared.head
    lesion = (prepared.label > 0) & inside
    out = {"group": group, "seed": int(seed), "contrast": None if healthy else float(contrast),
           "variation": float(variation), "lesion_voxels": int(lesion.sum()), "scores": {}, "local_auc": {}}
    for name, m in maps.items():
        out["scores"][name] = float(np.percentile(m[inside & np.isfinite(m)], 99))
        if lesion.any() and (inside & ~lesion).any():
            ok = inside & np.isfinite(m)
            out["local_auc"][name] = auc(m[ok & lesion], m[ok & ~lesion])
    out["plane_confident"] = bool(prepared.plane.confident)
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out


def sah_result(prepared, head) -> dict:
    """The learned head's scan score and voxel AUC on one prepared case (or its stored arrays),
    through the function ``report.json`` uses."""
    from SymmetryAwareCore.inference.zero_shot import zero_shot_for_model

    zs = zero_shot_for_model(prepared, head)
    inside = prepared.head
    lesion = (prepared.label > 0) & inside
    out = {"score": float(zs.score)}
    if lesion.any() and (inside & ~lesion).any():
        out["local_auc"] = auc(zs.frame_map[inside & lesion], zs.frame_map[inside & ~lesion])
    return out


def load_head(path: Optional[str]):
    if path is None:
        return None, None
    from SymmetryAwareCore.inference.zero_shot import HEAD_ARCHITECTURE, SymmetryHead
    from SymmetryAwareCore.models.model_card import load_model

    network, card = load_model(path)
    if card.architecture != HEAD_ARCHITECTURE:
        sys.exit(f"error: --pretrainer must be a {HEAD_ARCHITECTURE} card, got {card.architecture}")
    spec = Preprocessing.from_card(card.preprocessing, source=path)
    return SymmetryHead(network, tuple(spec.roi_size), {"name": card.name}), card


def plan(args) -> List[tuple]:
    """``(group, seed, contrast)`` of every case, healthy first."""
    jobs = []
    for i in range(args.healthy if "healthy" in args.groups else 0):
        jobs.append(("healthy" if i % 2 == 0 else "asymmetric", case_seed(args.seed, i), 1.0))
    for group, count, offset in (("unilateral", args.lesion, 10_000), ("bilateral", args.hard, 20_000),
                                 ("midline", args.hard, 30_000)):
        for i in range(count if group in args.groups else 0):
            for c in args.contrasts:
                jobs.append((group, case_seed(args.seed, offset + i), float(c)))
    return jobs


def summarise(rows: List[dict], args, methods: List[str]) -> dict:
    rng = np.random.default_rng(0)
    healthy = [r for r in rows if r["contrast"] is None]
    asym = [r for r in healthy if r["group"] == "asymmetric"]
    table = []
    for group in ("unilateral", "bilateral", "midline"):
        for c in args.contrasts:
            cases = [r for r in rows if r["group"] == group and r["contrast"] == float(c)]
            if not cases or not healthy:
                continue
            for m in methods:
                pos = [r["scores"][m] for r in cases]
                a, lo, hi = bootstrap_auc(pos, [r["scores"][m] for r in healthy], args.bootstrap, rng)
                a2, lo2, hi2 = bootstrap_auc(pos, [r["scores"][m] for r in asym], args.bootstrap, rng) if asym else (None,) * 3
                loc = [r["local_auc"][m] for r in cases if m in r["local_auc"]]
                la, llo, lhi = bootstrap_mean(loc, args.bootstrap, rng) if loc else (None,) * 3
                table.append({"group": group, "contrast": float(c), "method": m, "n_lesion": len(cases),
                              "n_healthy": len(healthy), "n_asymmetric": len(asym),
                              "auc": a, "auc_ci": [lo, hi], "auc_vs_asymmetric": a2, "auc_vs_asymmetric_ci": [lo2, hi2],
                              "local_auc": la, "local_auc_ci": [llo, lhi]})
    return {"table": table}


def fmt(v, ci=None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if ci is None or ci[0] is None else f"{v:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def print_tables(summary: dict) -> None:
    rows = summary["table"]
    for group in ("unilateral", "bilateral", "midline"):
        sel = [r for r in rows if r["group"] == group]
        if not sel:
            continue
        print(f"\n{group} lesions (n per level {sel[0]['n_lesion']}) vs healthy (n {sel[0]['n_healthy']}, "
              f"{sel[0]['n_asymmetric']} naturally asymmetric)")
        print("| contrast | method | scan AUC vs all healthy [95% CI] | scan AUC vs asymmetric healthy | voxel AUC (localisation) |")
        print("|---|---|---|---|---|")
        for r in sel:
            print(f"| {r['contrast']:g} | {r['method']} | {fmt(r['auc'], r['auc_ci'])} | "
                  f"{fmt(r['auc_vs_asymmetric'], r['auc_vs_asymmetric_ci'])} | {fmt(r['local_auc'], r['local_auc_ci'])} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=tuple(_MODALITY), default="glioma")
    parser.add_argument("--spacing", type=float, default=3.0, help="frame spacing in mm (default 3; ignored with --pretrainer)")
    parser.add_argument("--healthy", type=int, default=25, help="healthy subjects (half naturally asymmetric)")
    parser.add_argument("--lesion", type=int, default=25, help="unilateral lesion subjects per contrast level")
    parser.add_argument("--hard", type=int, default=10, help="bilateral and midline subjects each, per level")
    parser.add_argument("--contrasts", type=float, nargs="+", default=[1.0, 0.5, 0.3, 0.15])
    parser.add_argument("--variation", type=float, default=2.0, help="healthy variation strength (generator default 1)")
    parser.add_argument("--seed", type=int, default=9100)
    parser.add_argument("--pretrainer", help="a SASwinPretrainer card: adds the learned SAH score")
    parser.add_argument("--bias-correction", choices=("none", "n4"),
                        help="prepare every scan with this bias-field correction (default: the head's card, "
                        "else none); n4 is what the default segmentation model's card asks, so "
                        "report.json's score on it comes from N4-corrected scans")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--cache", help="JSON-lines file of per-case results, reused and extended")
    parser.add_argument("--json", help="write the summary and every case here")
    parser.add_argument("--prepared", help="folder keeping each prepared case's brain box, head mask and labels "
                        "(compressed), so another --pretrainer is scored without preparing the scans again")
    parser.add_argument("--groups", nargs="+", default=["healthy", "unilateral", "bilateral", "midline"],
                        choices=("healthy", "unilateral", "bilateral", "midline"),
                        help="compute only these groups (to split a run over processes; 'healthy' means both "
                        "healthy kinds); tables need healthy cases, from this run or the cache")
    args = parser.parse_args(argv)
    if min(args.healthy, args.lesion) < 2 or args.hard < 0:
        parser.error("--healthy and --lesion must be at least 2, --hard at least 0")
    head, card = load_head(args.pretrainer)
    try:
        spec = spec_for(args.kind, args.spacing, card, args.bias_correction)
    except ValueError as error:  # InputError: N4 asked for a CT benchmark
        parser.error(str(error))
    methods = [m for m in METHODS if m != "sah" or head is not None]
    # Baseline rows depend on the data and preparation only; SAH rows also on the head.
    tag = {"kind": args.kind, "spacing": list(spec.spacing), "variation": args.variation,
           "preprocessing": spec.to_card()}
    sah_tag = None if card is None else dict(tag, pretrainer=card.sha256)
    done: Dict[tuple, dict] = {}
    sah_done: Dict[tuple, dict] = {}
    cache = Path(args.cache) if args.cache else None
    kept = Path(args.prepared) if args.prepared else None
    if cache is not None and cache.is_file():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            key = (r["group"], r["seed"], r["contrast"] if r["contrast"] is not None else 1.0)
            if r.get("tag") == tag:
                done[key] = r
            elif sah_tag is not None and r.get("sah_tag") == sah_tag:
                sah_done[key] = r
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)

    def append(record: dict) -> None:
        if cache is not None:
            with cache.open("a") as f:
                f.write(json.dumps(record) + "\n")

    jobs = plan(args)
    rows = []
    started = time.perf_counter()
    for n, (group, seed, c) in enumerate(jobs):
        healthy = group in ("healthy", "asymmetric")
        key = (group, seed, 1.0 if healthy else c)
        stored = _prepared_file(kept, tag, group, seed, key[2])
        r = done.get(key)
        if r is None or (stored is not None and head is not None and not stored.is_file()):
            r = dict(case_result(args.kind, group, seed, c, args.variation, spec, keep=stored), tag=tag)
            append(r)
        r = json.loads(json.dumps(r))  # a copy: SAH results are added below
        if head is not None:
            s_row = sah_done.get(key)
            if s_row is None:
                if stored is None:  # no stored arrays: prepare the case again
                    phantom = make_subject(seed, "healthy" if healthy else args.kind, _MODALITY[args.kind],
                                           spec.spacing[0], group, lesion_contrast=1.0 if healthy else c,
                                           variation=args.variation)
                    prepared = prepare_image(phantom.image, spec, label=phantom.label.array, msp_on_failure="axes")
                else:
                    prepared = _Stored(stored)
                s_row = dict(sah_result(prepared, head), group=group, seed=int(seed),
                             contrast=None if healthy else float(c), sah_tag=sah_tag)
                append(s_row)
            r["scores"]["sah"] = s_row["score"]
            if "local_auc" in s_row:
                r["local_auc"]["sah"] = s_row["local_auc"]
        rows.append(r)
        print(f"[{n + 1}/{len(jobs)}] {group} c={c:g} seed={seed}: "
              + " ".join(f"{m}={r['scores'][m]:.3f}" for m in methods)
              + f" ({r['seconds']} s, {time.perf_counter() - started:.0f} s total)", file=sys.stderr, flush=True)
    summary = summarise(rows, args, methods)
    print(f"kind {args.kind}, frame spacing {spec.spacing[0]:g} mm, variation {args.variation:g}, "
          f"seed {args.seed}, bias correction {spec.bias_correction}, bootstrap {args.bootstrap}; {len(rows)} scans; "
          f"mid-sagittal plane confident on {sum(r['plane_confident'] for r in rows)}/{len(rows)}")
    print_tables(summary)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(dict(summary, args=vars(args), preprocessing=spec.to_card(),
                                                   pretrainer_sha256=None if card is None else card.sha256, cases=rows),
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
