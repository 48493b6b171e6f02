"""Two models on the same held-out cases, paired: what changed, with 95 % intervals.

Reads two per-case JSONs written by ``Benchmarks/heldout_glioma.py`` (same cases, the
reference first) and prints, per region, both means and the mean per-case difference
(second minus first) with its paired bootstrap interval (cases resampled; the one
definition, ``SymmetryAwareTraining.metrics.paired_bootstrap``); then the WT false-positive
volume (mL per scan) the same way, and how many cases each model nearly misses (WT Dice < 0.1).
``--before-threshold`` / ``--after-threshold`` read a file's ``--thresholds`` sweep instead
(one model at two operating points: the same file twice).
``--datalist`` and ``--group-by`` split the cases by a datalist field as well:

    python Benchmarks/compare_heldout.py v040_A.json candidate_A.json \\
        --datalist datasets/study15/primary_datalist.json --group-by lesion_contrast --output compare_A.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REGIONS = ("WT", "TC", "ET")
MISSED_BELOW = 0.1


def _load(path: Path, threshold: Optional[float] = None) -> Dict[str, dict]:
    """The per-case results of one file: at the card's threshold, or at ``threshold`` from
    a ``heldout_glioma.py --thresholds`` sweep."""
    try:
        result = json.loads(path.read_text())
        if threshold is None:
            return result["cases"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"error: {path}: not a heldout_glioma.py result ({error})") from None
    swept = result.get("thresholds") or {}
    if f"{threshold:g}" not in swept:
        raise SystemExit(f"error: {path} holds no sweep at threshold {threshold:g} "
                         f"(it has: {', '.join(swept) or 'none'}; heldout_glioma.py --thresholds)")
    return swept[f"{threshold:g}"]["cases"]


def compare(before: Dict[str, dict], after: Dict[str, dict], names: Sequence[str], resamples: int = 10000) -> dict:
    """Per region: both means and the paired difference ``after - before`` with its interval."""
    from SymmetryAwareTraining.metrics import paired_bootstrap

    out: dict = {"cases": len(names)}
    for region in REGIONS:
        a = np.array([before[n][region]["dice"] for n in names])
        b = np.array([after[n][region]["dice"] for n in names])
        mean, low, high = paired_bootstrap(b - a, resamples)
        out[region] = {"before": float(a.mean()), "after": float(b.mean()), "difference": [mean, low, high]}
    a = np.array([before[n]["WT"]["false_positive_ml"] for n in names])
    b = np.array([after[n]["WT"]["false_positive_ml"] for n in names])
    mean, low, high = paired_bootstrap(b - a, resamples)
    out["WT_false_positive_ml"] = {"before": float(a.mean()), "after": float(b.mean()), "difference": [mean, low, high],
                                   "largest_before": float(a.max()), "largest_after": float(b.max())}
    out["WT_missed"] = {"before": int(sum(before[n]["WT"]["dice"] < MISSED_BELOW for n in names)),
                        "after": int(sum(after[n]["WT"]["dice"] < MISSED_BELOW for n in names))}
    return out


def _lines(title: str, result: dict) -> List[str]:
    lines = [f"{title} ({result['cases']} cases)"]
    for key in REGIONS + ("WT_false_positive_ml",):
        r = result[key]
        mean, low, high = r["difference"]
        lines.append(f"  {key}: {r['before']:.3f} -> {r['after']:.3f}  difference {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
    lines.append(f"  WT Dice < {MISSED_BELOW}: {result['WT_missed']['before']} -> {result['WT_missed']['after']} cases")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="the reference model's heldout_glioma.py JSON")
    parser.add_argument("after", type=Path, help="the other model's, on the same cases")
    parser.add_argument("--datalist", type=Path, help="the datalist the cases came from (for --group-by)")
    parser.add_argument("--group-by", help="a field of the datalist's entries to split the cases by")
    parser.add_argument("--before-threshold", type=float, help="read the first file's sweep at this threshold")
    parser.add_argument("--after-threshold", type=float, help="read the second file's sweep at this threshold")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--output", type=Path, help="also write the comparison as JSON")
    args = parser.parse_args(argv)
    if bool(args.datalist) != bool(args.group_by):
        raise SystemExit("error: --datalist and --group-by go together")

    before, after = _load(args.before, args.before_threshold), _load(args.after, args.after_threshold)
    if set(before) != set(after):
        raise SystemExit(f"error: the two results hold different cases ({len(set(before) ^ set(after))} not in both)")
    names = sorted(before)
    results = {"all": compare(before, after, names, args.resamples)}
    if args.group_by:
        try:
            entries = json.loads(args.datalist.read_text())["training"]
        except (OSError, ValueError, KeyError) as error:
            raise SystemExit(f"error: {args.datalist}: cannot read its 'training' list ({error})") from None
        group = {e.get("name") or e.get("case"): e.get(args.group_by) for e in entries}
        if any(n not in group for n in names):
            raise SystemExit(f"error: {args.datalist} lacks some of the cases")
        for value in sorted({group[n] for n in names}, key=str):
            results[f"{args.group_by} {value}"] = compare(before, after, [n for n in names if group[n] == value],
                                                          args.resamples)
    for title, result in results.items():
        print("\n".join(_lines(title, result)))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
