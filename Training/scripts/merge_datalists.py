"""Merge phantom datalists into one, paths rebased onto the merged file's folder.

Each input is ``PATH`` (entries keep their ``fold``) or ``PATH:train`` (every entry, from
``training`` and ``validation`` alike, goes to the training folds 1..F-1 in turn, so that none
of them can land in the held-out fold 0). Channels and modality must agree.

    python Training/scripts/merge_datalists.py --output datasets/glioma_mixed/datalist.json \
        datasets/glioma3mm/datalist.json datasets/glioma2mm/datalist.json
    python Training/scripts/merge_datalists.py --output datasets/glioma_faint/datalist.json \
        datasets/glioma_mixed/datalist.json datasets/faint/f5a/datalist.json:train ...

A merged list's own paths are relative, so merging a merged list works too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Sequence

SECTIONS = ("training", "validation")


def _rebase(value, source: Path, target: Path):
    """A path of ``source``'s datalist, relative to ``target``'s folder."""
    if isinstance(value, list):
        return [_rebase(v, source, target) for v in value]
    return os.path.relpath((source / value).resolve(), target.resolve())


def merge(inputs: Sequence[str], output: Path, folds: int = 5) -> dict:
    merged: dict = {"description": "merged phantom datalists (Training/scripts/merge_datalists.py)",
                    "sources": {}, "num_folds": folds, "training": [], "validation": []}
    channels = modality = None
    names = set()
    for spec in inputs:
        path, _, role = spec.partition(":")
        if role not in ("", "train"):
            raise SystemExit(f"error: {spec}: the only suffix is ':train'")
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"error: {path}: cannot read the datalist ({error})") from None
        base = path.parent / data.get("base_dir", ".")
        if channels is None:
            channels, modality = data.get("channels"), data.get("modality")
        elif (data.get("channels"), data.get("modality")) != (channels, modality):
            raise SystemExit(f"error: {path}: channels or modality differ from the first datalist's")
        # A dict, not a list: the loader reads every list of objects as a section of cases.
        merged["sources"][os.path.relpath(path.resolve(), output.parent.resolve())] = {
            "role": role or "folds kept",
            **{k: data[k] for k in ("seed", "spacing_mm", "lesion_contrast", "variation") if k in data}}
        entries: List[dict] = [e for s in SECTIONS for e in data.get(s, [])]
        for i, entry in enumerate(entries):
            entry = dict(entry)
            if entry["name"] in names:
                raise SystemExit(f"error: case name {entry['name']} appears twice")
            names.add(entry["name"])
            for key in ("image", "label", "case_json"):
                if key in entry:
                    entry[key] = _rebase(entry[key], base, output.parent)
            if role == "train":
                entry["fold"] = 1 + i % (folds - 1)
            merged["training"].append(entry)
    merged["channels"], merged["modality"] = channels, modality
    return merged


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="datalists, each PATH or PATH:train")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    if any(Path(spec.partition(":")[0]).resolve() == args.output.resolve() for spec in args.inputs):
        raise SystemExit(f"error: --output {args.output} is one of the inputs; write the merged list elsewhere")
    merged = merge(args.inputs, args.output, args.folds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    merged = {k: v for k, v in merged.items() if v != []}
    args.output.write_text(json.dumps(merged, indent=1))
    counts = {}
    for entry in merged["training"]:
        counts[entry.get("fold")] = counts.get(entry.get("fold"), 0) + 1
    print(f"{args.output}: {len(merged['training'])} cases, per fold {dict(sorted(counts.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
