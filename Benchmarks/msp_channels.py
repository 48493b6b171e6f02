"""Mid-sagittal plane per MRI channel and with the channel fallback, on phantoms with a known plane.

For every case of a phantom datalist (each entry's ``case_json`` holds ``true_plane`` and
``channels``), the plane is fitted on each channel alone and on the whole scan as
``segment`` fits it (:func:`~SymmetryAwareCore.geometry.msp.estimate_msp` on the
``(C, X, Y, Z)`` case: the first channel, then the next ones while the fit is not
confident). Errors are the normal's angle (degrees) and the offset at the brain centre (mm)
against the truth; a fit is "wrong" beyond 2 degrees or 2 mm, "failed" when no plane was
found (refused).

Prints one row per case, then per channel and for the scan: wrong, failed, confident and
wrong, not confident, and the median angle error.

Run: ``python Benchmarks/msp_channels.py --datalist datasets/healthy_check2/datalist.json --fold 0``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry import MidSagittalPlane, estimate_msp, plane_angle_deg, plane_offset_mm
from SymmetryAwareCore.io import load_case
from SymmetryAwareCore.io.image import Image

WRONG_DEG, WRONG_MM = 2.0, 2.0


def fit(image: Image, truth: MidSagittalPlane) -> dict:
    try:
        plane = estimate_msp(image)
    except InputError as error:
        return {"failed": str(error)}
    return {"angle": plane_angle_deg(plane, truth), "offset": plane_offset_mm(plane, truth),
            "confident": bool(plane.confident), "channel": plane.channel}


def describe(row: dict) -> str:
    if "failed" in row:
        return "no plane"
    channel = f" from {row['channel'] + 1}" if row.get("channel") else ""
    return f"{row['angle']:5.1f} deg {row['offset']:4.1f} mm {'conf' if row['confident'] else 'NOT '}{channel}"


def summary(name: str, rows: list) -> str:
    failed = sum("failed" in r for r in rows)
    fitted = [r for r in rows if "failed" not in r]
    wrong = [r for r in fitted if r["angle"] > WRONG_DEG or r["offset"] > WRONG_MM]
    return (f"{name:>6}: wrong {len(wrong)}  failed {failed}  confident and wrong {sum(r['confident'] for r in wrong)}  "
            f"not confident {sum(not r['confident'] for r in fitted)}  of {len(rows)}; "
            f"median angle error {np.median([r['angle'] for r in fitted]) if fitted else float('nan'):.2f} deg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", required=True, type=Path)
    parser.add_argument("--fold", type=int, default=None, help="only this fold (default: every case)")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()
    root = args.datalist.parent
    entries = json.loads(args.datalist.read_text())["training"]
    entries = [e for e in entries if args.fold is None or e.get("fold") == args.fold]
    results, names = {}, None
    for entry in entries:
        info = json.loads((root / entry["case_json"]).read_text())
        truth = MidSagittalPlane(info["true_plane"]["normal_ras"], info["true_plane"]["point_ras"], 1.0, True, "truth")
        names = info["channels"]
        started = time.perf_counter()
        scan = load_case([root / p for p in entry["image"]], names)
        row = {name: fit(Image(scan.array[c], scan.affine, source=str(entry["image"][c])), truth) for c, name in enumerate(names)}
        row["scan"] = fit(scan, truth)
        results[entry["name"]] = row
        print(f"{entry['name']}: " + " | ".join(f"{k} {describe(v)}" for k, v in row.items())
              + f" ({time.perf_counter() - started:.1f} s)", flush=True)
    if not results:
        parser.error(f"no case in {args.datalist}" + ("" if args.fold is None else f" fold {args.fold}"))
    for name in [*names, "scan"]:
        print(summary(name, [row[name] for row in results.values()]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
