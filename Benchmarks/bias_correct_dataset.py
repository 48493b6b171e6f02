"""A copy of a phantom datalist's dataset with every channel bias-corrected by N4 (exploratory).

For the measurement in docs/models.md ("What drives the default model's false tumour in
healthy brains"): does removing the MRI bias field before ``segment`` remove the one-sided
false tumour? Each image of each case is corrected with SimpleITK's
``N4BiasFieldCorrectionImageFilter`` (head mask: the non-zero voxels; the field fitted at
1/``--shrink`` of the resolution, 3 levels of 50 iterations, then applied at full
resolution, outside the head kept 0) and written, with the same grid, under ``OUTPUT``
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

import SimpleITK as sitk

from SymmetryAwareCore.io.atomic import atomic_path


def n4(source: Path, target: Path, shrink: int = 4) -> None:
    """``source`` bias-corrected into ``target`` (same grid, float32)."""
    image = sitk.ReadImage(str(source), sitk.sitkFloat32)
    mask = sitk.BinaryThreshold(image, 1e-6, 1e30, 1, 0)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([50, 50, 50])
    corrector.Execute(sitk.Shrink(image, [shrink] * 3), sitk.Shrink(mask, [shrink] * 3))
    log_field = corrector.GetLogBiasFieldAsImage(image)
    corrected = sitk.Mask(image / sitk.Exp(log_field), mask)
    corrected.CopyInformation(image)
    with atomic_path(target) as tmp:
        sitk.WriteImage(corrected, str(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datalist", type=Path)
    parser.add_argument("output", type=Path, help="folder of the corrected copy (not the dataset's own)")
    parser.add_argument("--shrink", type=int, default=4)
    args = parser.parse_args()
    root = args.datalist.parent.resolve()
    if args.output.resolve() == root:
        parser.error("the output folder is the dataset's own: inputs are never overwritten")
    data = json.loads(args.datalist.read_text())
    for entry in data["training"]:
        started = time.perf_counter()
        for name in entry["image"]:
            target = args.output / name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                n4(root / name, target, args.shrink)
        for key in ("label", "case_json"):
            if entry.get(key) and not (args.output / entry[key]).exists():
                (args.output / entry[key]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(root / entry[key], args.output / entry[key])
        print(f"{entry['name']} {time.perf_counter() - started:.1f} s", flush=True)
    (args.output / args.datalist.name).write_text(json.dumps(data))


if __name__ == "__main__":
    main()
