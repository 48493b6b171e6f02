"""A copy of a phantom datalist's dataset with every channel bias-corrected by N4 (exploratory).

For the measurement in docs/models.md ("What drives the default model's false tumour in
healthy brains"): does removing the MRI bias field before ``segment`` remove the one-sided
false tumour? Each image of each case is corrected with SimpleITK's
``N4BiasFieldCorrectionImageFilter`` through the core's ``preprocessing.bias.n4_correct``
(head mask: the non-zero voxels; the field fitted at 1/``--shrink`` of the resolution, 3
levels of 50 iterations, then applied at full resolution, outside the head kept 0), the
step ``segment --bias-correction`` runs, and written, with the same grid, under ``OUTPUT``
with the same relative path; labels and case JSON files are copied; the datalist is
written beside them, so ``Benchmarks/heldout_glioma.py --datalist OUTPUT/<name>.json``
scores the corrected cases. Finished cases are skipped (resumable). Inputs are never
written.

Run: ``python Benchmarks/bias_correct_dataset.py datasets/healthy_check2/datalist.json datasets/n4_h2``
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from SymmetryAwareCore.io import read_image, write_nifti
from SymmetryAwareCore.preprocessing.bias import n4_correct


def n4(source: Path, target: Path, shrink: int = 4) -> None:
    """``source`` bias-corrected into ``target`` (same grid, float32): the core's
    :func:`~SymmetryAwareCore.preprocessing.bias.n4_correct`, what ``segment --bias-correction`` does."""
    write_nifti(n4_correct(read_image(source), shrink), target)


def inside(name: str) -> str:
    """A datalist path as a path inside the copy: ``..`` parts (lists that point at a sibling
    dataset) become ``_up``, so every file of the copy lies under its folder."""
    return str(Path(*[part if part != ".." else "_up" for part in Path(name).parts]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datalist", type=Path)
    parser.add_argument("output", type=Path, help="folder of the corrected copy (not the dataset's own)")
    parser.add_argument("--shrink", type=int, default=4)
    args = parser.parse_args()
    root = args.datalist.parent.resolve()
    output = args.output.resolve()
    if output == root or root in output.parents or output in root.parents:
        parser.error("the output folder must lie outside the dataset (and not hold it): inputs are never overwritten")
    data = json.loads(args.datalist.read_text())
    for entry in data["training"]:
        started = time.perf_counter()
        for key in ("image", "label", "case_json"):
            if not entry.get(key):
                continue
            names = entry[key] if key == "image" else [entry[key]]
            for name in names:
                target = output / inside(name)
                if target.exists():
                    continue  # done by an earlier (interrupted) run
                target.parent.mkdir(parents=True, exist_ok=True)
                if key == "image":
                    n4(root / name, target, args.shrink)
                else:
                    shutil.copy(root / name, target)
            entry[key] = [inside(n) for n in names] if key == "image" else inside(entry[key])
        print(f"{entry['name']} {time.perf_counter() - started:.1f} s", flush=True)
    (output / args.datalist.name).write_text(json.dumps(data))


if __name__ == "__main__":
    main()
