"""Paired comparison of two bundled classifiers on the same held-out cases.

Reads the ``metrics.cases`` that :mod:`bundle_classifier` wrote into each card (every
case's probability and truth), pairs the cases by name, and prints both AUCs and the AUC
difference A - B with a paired bootstrap 95 % interval
(:func:`bundle_classifier.paired_auc_difference`), then the reading of the decision rule
in docs/models.md: "A better" if the interval is above 0, "A worse" if below, otherwise
"no measurable difference". Beside it, without a rule, the pointing hits of both cards on the
same patients (:func:`compare_pointing`).

Run:
    python Training/scripts/compare_classifiers.py runs/bundles/ct_sa.json runs/bundles/ct_swin.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundle_classifier import auc, paired_auc_difference  # noqa: E402


def card_cases(path: Path) -> Dict[str, Dict]:
    cases = json.loads(Path(path).read_text(encoding="utf-8")).get("metrics", {}).get("cases")
    if not cases:
        raise SystemExit(f"{path}: the card has no metrics.cases (bundle it with bundle_classifier.py first)")
    by_name = {c["case"]: c for c in cases}
    if len(by_name) != len(cases):
        raise SystemExit(f"{path}: metrics.cases names a case twice")
    return by_name


def compare(a: Dict[str, Dict], b: Dict[str, Dict], repeats: int = 2000, seed: int = 0) -> Dict[str, object]:
    """Both AUCs and the paired difference over the cases the two cards share (same truths)."""
    if set(a) != set(b):
        raise SystemExit(f"the cards were scored on different cases ({len(set(a) ^ set(b))} not in both)")
    names: List[str] = sorted(a)
    bad = [n for n in names if a[n]["target"] != b[n]["target"]]
    if bad:
        raise SystemExit(f"case {bad[0]} has different truths in the two cards")
    t = [a[n]["target"] for n in names]
    pa, pb = [a[n]["probability"] for n in names], [b[n]["probability"] for n in names]
    result = paired_auc_difference(pa, pb, t, repeats, seed)
    lo, hi = result["ci95"]
    result.update(auc_a=auc(pa, t), auc_b=auc(pb, t), cases=len(names),
                  reading="A better" if lo > 0 else "A worse" if hi < 0 else "no measurable difference")
    return result


def compare_pointing(a: Dict[str, Dict], b: Dict[str, Dict]) -> Optional[Dict[str, object]]:
    """Pointing hits of the two cards on the patients both scored (``pointing_hit`` in
    ``metrics.cases``): each card's hits, the discordant pairs (A hit and B missed, and the
    reverse) and the exact two-sided McNemar p-value (a binomial test of the discordant pairs
    at 1/2). Reported beside the AUC, without a decision rule; None when a card has no hits."""
    names = [n for n in sorted(a) if n in b and a[n].get("pointing_hit") is not None
             and b[n].get("pointing_hit") is not None]
    if not names:
        return None
    ha = [bool(a[n]["pointing_hit"]) for n in names]
    hb = [bool(b[n]["pointing_hit"]) for n in names]
    only_a = sum(x and not y for x, y in zip(ha, hb))
    only_b = sum(y and not x for x, y in zip(ha, hb))
    k, n = min(only_a, only_b), only_a + only_b
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"patients": len(names), "hits_a": sum(ha), "hits_b": sum(hb), "only_a": only_a, "only_b": only_b,
            "mcnemar_p": p}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card_a", type=Path)
    parser.add_argument("card_b", type=Path)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    r = compare(card_cases(args.card_a), card_cases(args.card_b), args.repeats, args.seed)
    print(f"cases {r['cases']} ({r['positives']} positive, {r['negatives']} negative)")
    print(f"AUC A {r['auc_a']:.3f}  B {r['auc_b']:.3f}")
    print(f"AUC A - B {r['difference']:+.3f} [95 % CI {r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]: {r['reading']}")
    hits = compare_pointing(card_cases(args.card_a), card_cases(args.card_b))
    if hits is not None:
        print(f"pointing A {hits['hits_a']}/{hits['patients']}  B {hits['hits_b']}/{hits['patients']}; "
              f"A only {hits['only_a']}, B only {hits['only_b']}, exact McNemar p {hits['mcnemar_p']:.2g} (no rule)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
