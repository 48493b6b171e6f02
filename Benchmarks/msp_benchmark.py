"""Mid-sagittal plane accuracy and speed on real brains in known random poses.

Sets (each volume rotated by random angles up to --max-rotation degrees about each RAS axis
and shifted up to --max-shift mm, then resampled onto an axis-aligned grid as a scanner
would give it; the plane truth moves with the same world transform):

- ``mni``: MNI152 2009a symmetric T1, 1 mm; truth x = 0 (symmetric by construction).
- ``mni-lesion-bright`` / ``mni-lesion-dark``: the same with a large ellipsoid painted in
  the right hemisphere (about 50 cm^3), bright or dark.
- ``subject-t1`` (2 mm crop) and ``subject-epi`` (EPI slab): real subjects whose true plane
  is unknown; the truth is the estimate on the untilted scan (equivariance).
- ``phantom-ct`` / ``phantom-glioma``: phantoms from SymmetryAwareCore.phantoms (CT with
  skull and a haemorrhage; 4-channel MRI glioma, all channels as ``segment`` passes them:
  the first, and the next ones only when its fit is not confident) at 2 mm with their
  recorded true plane, when that package is available. Each channel alone:
  ``Benchmarks/msp_channels.py``.

Hard sets (``--sets hard``), from the phantom generator at 2 mm with tilts up to 30 degrees
about each axis (even cases CT with skull and a haemorrhage, odd cases MRI glioma with mass
effect, first channel), each phantom degraded with SymmetryAwareCore.geometry.coverage:

- ``slab``: an axial slab of 35-60 % of the field of view at a random height.
- ``partial-fov``: 20-40 % of the field of view cut off one side (left/right) or the front/back.
- ``thick-slices``: 6 mm slices (three 2 mm slices averaged).
- ``shear-noise``: a 15 degree gantry-tilt shear in the affine and noise of 10 % of the
  intensity range.
- ``tilt30``: the whole head, tilted up to 30 degrees.
- ``not-head``: slicerio's chest CT (no plane truth): the head check must say "not a head".

Errors: normal angle (degrees) and offset (mm, along the true normal at the brain centre).
Baseline: the plane through the head mask's centre of mass with the image axes' orientation.
Time: wall-clock seconds of one ``estimate_msp`` call (median). ``conf``: cases flagged
confident; ``bad*``: confident cases outside the worst-case bounds (1.5 deg or 1.5 mm);
``score``: median symmetry score. Confidence flag errors, both directions: ``c-bad``: confident
although worse than 2 degrees or 2 mm; ``u-good``: not confident although within 0.5 degrees
and 0.5 mm (the issue's targets: both 0).

``--calibration`` also measures the confidence features at planes known to be wrong: the
truth perturbed by 2-5 degrees and up to 4 mm (not minima), and the local minima reached
from starts 6-25 degrees and up to 15 mm away; it prints each feature's range on correct
(< 0.5 deg and < 0.5 mm) and wrong (> 2 deg or > 2 mm) planes and how the rule sorts them.
``--json PATH`` writes every row.

Run: ``python Benchmarks/msp_benchmark.py`` (all sets) or ``--sets mni subject-t1 --poses 5``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")

from SymmetryAwareCore.geometry import (  # noqa: E402
    MidSagittalPlane,
    axes_plane,
    estimate_msp,
    plane_angle_deg,
    plane_offset_mm,
)
from SymmetryAwareCore.geometry.symmetric_frame import tilted_scan  # noqa: E402
from SymmetryAwareCore.io.image import Image  # noqa: E402

MNI_TRUTH = MidSagittalPlane([1.0, 0.0, 0.0], [0.0, -18.0, 18.0], 1.0, True, "truth")
BASIC = ("mni", "mni-lesion-bright", "mni-lesion-dark", "subject-t1", "subject-epi", "phantom-ct", "phantom-glioma")
HARD = ("tilt30", "slab", "partial-fov", "thick-slices", "shear-noise", "not-head")
SETS = BASIC + HARD


def load_nifti(path: Path, volume=None) -> Image:
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if volume is not None:
        data = data[..., volume]
    return Image(np.ascontiguousarray(data), img.affine, source=str(path))


def mni() -> Image:
    import nilearn.datasets

    return load_nifti(Path(nilearn.datasets.__file__).parent / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")


def with_lesion(image: Image, bright: bool) -> Image:
    array = image.array.copy()
    xyz = image.voxel_to_world(np.indices(array.shape).reshape(3, -1).T)
    inside = (((xyz - [35.0, -10.0, 20.0]) / [22.0, 28.0, 20.0]) ** 2).sum(1) < 1.0
    array.reshape(-1)[inside] = 1.3 * array.max() if bright else 0.05 * array.max()
    return image.with_array(array)


_PHANTOMS = {}


def hard_phantom(index: int):
    """Phantom ``index`` (cached): even CT with skull and a haemorrhage, odd MRI glioma with
    mass effect (first channel), tilted up to 30 degrees about each axis; (image, truth)."""
    if index not in _PHANTOMS:
        from SymmetryAwareCore.phantoms import make_subject

        ct = index % 2 == 0
        p = make_subject(2000 + index, kind="haemorrhage" if ct else "glioma", modality="ct" if ct else "mri",
                         spacing=2.0, max_rotation_deg=30.0, max_shift_mm=10.0)
        plane = p.info["true_plane"]
        image = p.image if p.image.array.ndim == 3 else p.image.channel(0)
        _PHANTOMS[index] = (image, MidSagittalPlane(plane["normal_ras"], plane["point_ras"], 1.0, True, "truth"), ct)
    return _PHANTOMS[index]


def hard_cases(name: str, poses: int, rng):
    from SymmetryAwareCore.geometry import coverage

    if name == "not-head":
        import slicerio

        from SymmetryAwareCore.io.readers import read_image

        yield read_image(str(Path(slicerio.__file__).parent / "data" / "CTChest4.nrrd")), None
        return
    for i in range(poses):
        image, truth, ct = hard_phantom(i)
        if name == "tilt30":
            yield image, truth
        elif name == "slab":
            f = rng.uniform(0.35, 0.6)
            s = rng.uniform(0.0, 1.0 - f)
            yield coverage.crop_fraction(image, 2, s, s + f), truth
        elif name == "partial-fov":
            c = rng.uniform(0.2, 0.4)
            axis = int(rng.integers(2))
            yield (coverage.crop_fraction(image, axis, c, 1.0) if rng.random() < 0.5 else coverage.crop_fraction(image, axis, 0.0, 1.0 - c)), truth
        elif name == "thick-slices":
            yield coverage.thick_slices(image, 3), truth
        elif name == "shear-noise":
            sheared = coverage.gantry_shear(image, 15.0, fill=-1000.0 if ct else 0.0)
            yield coverage.add_noise(sheared, 0.10, seed=int(rng.integers(1 << 31))), truth


def cases(name: str, poses: int, rng, max_rotation: float, max_shift: float):
    """Yield (volume, truth) pairs of one set (truth None: not a head)."""
    import nibabel as nib

    if name in HARD:
        yield from hard_cases(name, poses, rng)
        return

    if name.startswith("phantom"):
        from SymmetryAwareCore.phantoms import make_subject

        kind, modality = ("haemorrhage", "ct") if name == "phantom-ct" else ("glioma", "mri")
        for i in range(poses):
            p = make_subject(1000 + i, kind=kind, modality=modality, spacing=2.0, max_rotation_deg=max_rotation, max_shift_mm=max_shift)
            plane = p.info["true_plane"]
            yield p.image, MidSagittalPlane(plane["normal_ras"], plane["point_ras"], 1.0, True, "truth")
        return
    if name == "mni":
        base, truth = mni(), MNI_TRUTH
    elif name.startswith("mni-lesion"):
        base, truth = with_lesion(mni(), bright=name.endswith("bright")), MNI_TRUTH
    else:
        data = Path(nib.__file__).parent / "tests" / "data"
        base = load_nifti(data / "anatomical.nii") if name == "subject-t1" else load_nifti(data / "example4d.nii.gz", volume=0)
        truth = estimate_msp(base)  # unknown truth: equivariance with the untilted estimate
    for _ in range(poses):
        volume, world = tilted_scan(base, rng.uniform(-max_rotation, max_rotation, 3), rng.uniform(-max_shift, max_shift, 3))
        yield volume, truth.moved(world)


def calibration_rows(volume, truth, rng) -> list:
    """Confidence features at wrong planes of one case: perturbed truths and distant minima."""
    from SymmetryAwareCore.geometry import msp

    prep = msp._prepare(volume, None, 0)
    if isinstance(prep, str):
        return []
    search = prep.search

    def params_of(plane):  # the search's (tilt a, tilt b, offset) of a plane
        n = plane.normal if plane.normal @ search.n0 > 0 else -plane.normal
        c = n @ search.n0
        a, b = np.degrees(np.arctan(n @ search.u / c)), np.degrees(np.arctan(n @ search.v / c))
        return np.array([a, b, (plane.point - search.center) @ search.plane((a, b, 0.0))[0]])

    def plane_of(params):
        n, p = search.plane(params)
        return MidSagittalPlane(n, p, 1.0, True, "x")

    true_params, bounds, rows = params_of(truth), msp._bounds(msp.MAX_TILT_DEG), []
    for kind, (lo, hi), shift in (("perturbed", (2.0, 5.0), 4.0), ("minimum", (6.0, 25.0), 15.0)):
        for _ in range(2):
            d = rng.normal(size=2)
            step = np.r_[d / np.linalg.norm(d) * rng.uniform(lo, hi), rng.uniform(-shift, shift)]
            x = true_params + step
            if kind == "minimum":
                x, _ = msp._refine(search, prep.levels[1], x, [1.0, 1.0, 1.0], bounds, xtol=0.03)
                x, _ = msp._refine(search, prep.levels[2], x, [0.3, 0.3, 0.3], bounds, maxfev=120)
            features = msp._features(prep, x)
            rows.append(dict(kind=kind, angle=plane_angle_deg(plane_of(x), truth), offset=plane_offset_mm(plane_of(x), truth),
                             confident=msp._confidence(features, msp.MAX_TILT_DEG)[0], **features))
    return rows


def print_calibration(rows: list) -> None:
    good = [r for r in rows if r["angle"] < 0.5 and r["offset"] < 0.5]
    bad = [r for r in rows if r["angle"] > 2.0 or r["offset"] > 2.0]
    print(f"\ncalibration: {len(good)} correct planes (< 0.5 deg and < 0.5 mm), {len(bad)} wrong (> 2 deg or > 2 mm)")
    print(f"{'feature':<12} | {'correct: min':>12} {'5 %':>7} {'median':>7} | {'wrong: median':>13} {'95 %':>7} {'max':>7}")
    for key in ("sharpness", "agreement", "coverage", "correlation", "rival_gap"):
        g = np.array([r[key] for r in good], float)
        b = np.array([r[key] for r in bad], float)
        g, b = g[np.isfinite(g)], b[np.isfinite(b)]
        if len(g) and len(b):
            print(f"{key:<12} | {g.min():>12.3f} {np.percentile(g, 5):>7.3f} {np.median(g):>7.3f} | "
                  f"{np.median(b):>13.3f} {np.percentile(b, 95):>7.3f} {b.max():>7.3f}")
    print(f"rule: correct planes flagged confident {sum(r['confident'] for r in good)}/{len(good)}; "
          f"wrong planes flagged confident {sum(r['confident'] for r in bad)}/{len(bad)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=SETS + ("basic", "hard"), default=["basic", "hard"],
                        help="sets to run; 'basic' and 'hard' name the two groups (default both)")
    parser.add_argument("--poses", type=int, default=8, help="random poses (phantoms) per set (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rotation", type=float, default=20.0, help="basic sets only (hard sets: 30)")
    parser.add_argument("--max-shift", type=float, default=15.0)
    parser.add_argument("--calibration", action="store_true", help="also measure the confidence features at wrong planes")
    parser.add_argument("--json", help="write every row (errors, flag, features) to this JSON file")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    names = []
    for name in args.sets:
        names += list(BASIC if name == "basic" else HARD if name == "hard" else [name])

    header = (f"{'set':<18}{'n':>3} | {'normal err deg':^17} | {'offset err mm':^17} | {'baseline deg':^15} | {'baseline mm':^15} | "
              f"{'conf':>5} {'c-bad':>5} {'u-good':>6} {'score':>6} {'s/vol':>6} {'voxels':>9}")
    print(header)
    print(f"{'':<18}{'':>3} | {'median':>8}{'worst':>9} | {'median':>8}{'worst':>9} | {'median':>7}{'worst':>8} | {'median':>7}{'worst':>8} |")
    all_rows, calibration = [], []
    for name in names:
        rows = []
        try:
            for volume, truth in cases(name, args.poses, rng, args.max_rotation, args.max_shift):
                t0 = time.perf_counter()
                plane = estimate_msp(volume)
                seconds = time.perf_counter() - t0
                if truth is None:  # not a head: only the head check is scored
                    print(f"{name:<18}{1:>3} | head check: is_head={plane.head['is_head']} confident={plane.confident} "
                          f"warnings={list(plane.warnings)} {seconds:.2f} s", flush=True)
                    all_rows.append(dict(set=name, is_head=plane.head["is_head"], confident=plane.confident, warnings=list(plane.warnings)))
                    continue
                base = axes_plane(volume)
                row = dict(
                    set=name,
                    angle=plane_angle_deg(plane, truth),
                    offset=plane_offset_mm(plane, truth),
                    base_angle=plane_angle_deg(base, truth),
                    base_offset=plane_offset_mm(base, truth),
                    confident=bool(plane.confident),
                    seconds=seconds,
                    voxels=int(np.prod(volume.spatial_shape)),
                    score=plane.symmetry_score,
                    message=plane.message,
                    **plane.features,
                )
                rows.append(row)
                if args.calibration:
                    calibration.append(dict(row, kind="estimate"))
                    calibration += [dict(r, set=name) for r in calibration_rows(volume, truth, rng)]
        except ImportError as error:
            print(f"{name:<18} skipped: {error}")
            continue
        if not rows:
            continue
        all_rows += rows
        r = {k: np.array([row[k] for row in rows], dtype=np.float64) for k in ("angle", "offset", "base_angle", "base_offset", "confident", "seconds", "score")}
        conf = r["confident"] > 0
        # The two flag errors: confident yet wrong, and not confident yet right.
        c_bad = int(np.sum(conf & ((r["angle"] > 2.0) | (r["offset"] > 2.0))))
        u_good = int(np.sum(~conf & (r["angle"] < 0.5) & (r["offset"] < 0.5)))
        print(
            f"{name:<18}{len(rows):>3} | {np.median(r['angle']):>8.3f}{r['angle'].max():>9.3f} | {np.median(r['offset']):>8.3f}{r['offset'].max():>9.3f} | "
            f"{np.median(r['base_angle']):>7.2f}{r['base_angle'].max():>8.2f} | {np.median(r['base_offset']):>7.2f}{r['base_offset'].max():>8.2f} | "
            f"{int(conf.sum()):>2}/{len(rows):<2} {c_bad:>5} {u_good:>6} {np.median(r['score']):>6.3f} {np.median(r['seconds']):>6.2f} {rows[0]['voxels']:>9d}",
            flush=True,
        )
    scored = [row for row in all_rows if "angle" in row]
    if scored:
        angle = np.array([row["angle"] for row in scored])
        offset = np.array([row["offset"] for row in scored])
        conf = np.array([row["confident"] for row in scored])
        c_bad = int(np.sum(conf & ((angle > 2.0) | (offset > 2.0))))
        u_good = int(np.sum(~conf & (angle < 0.5) & (offset < 0.5)))
        print(f"{'ALL':<18}{len(scored):>3} | {np.median(angle):>8.3f}{angle.max():>9.3f} | {np.median(offset):>8.3f}{offset.max():>9.3f} | "
              f"confident {int(conf.sum())}/{len(scored)}, confident but wrong {c_bad}, right but not confident {u_good}")
        for row in scored:
            if (row["confident"] and (row["angle"] > 2.0 or row["offset"] > 2.0)) or (not row["confident"] and row["angle"] < 0.5 and row["offset"] < 0.5) \
                    or row["angle"] > 2.0 or row["offset"] > 2.0:
                print(f"  {row['set']}: {row['angle']:.2f} deg {row['offset']:.2f} mm confident={row['confident']} {row['message']}")
    if args.calibration and calibration:
        print_calibration(calibration)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"rows": all_rows, "calibration": calibration}, indent=1, default=float))


if __name__ == "__main__":
    main()
