"""One phantom subject with known truth: :func:`make_subject`.

Chain for every output voxel (all maps analytic, tissue maps sampled once, linearly):
scanner world --(inverse pose)--> head space --(lesion mass effect, healthy variation)-->
template space, where the MNI152 tissue fractions are read. Lesion compartments are
evaluated in head space; intensities come from the fractions; labels are the majority
lesion compartment of each voxel (so they follow the same transform as the image; the
label is never interpolated). MRI then gets a smooth multiplicative bias field and
Rician noise and is skull-stripped (as BraTS); CT keeps skull and scalp and gets
Gaussian noise.

Truth recorded in :class:`Phantom.info`: seed, scenario, pose (4x4, head -> output
world), the true mid-sagittal plane in the output world (normal, point), lesion
centres in the output world, label meanings. The "true plane" is the head's plane of
symmetry: the template's x = 0 carried through the symmetric healthy variation (which
keeps it) and the pose. A lesion's mass effect can shift the brain's midline locally
(midline shift); the plane is not moved by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..geometry.rigid import reorient_to
from ..io.image import Image
from .anatomy import Anatomy, load_anatomy
from .contrasts import channels_for, intensities, subject_values
from .deformation import HealthyVariation, RadialPush, SmoothField, head_to_template
from .lesions import Lesion, bleed_ranges, place_lesions
from .pose import Pose, random_pose, scanner_grid

__all__ = ["Phantom", "make_subject", "KINDS", "SCENARIOS", "MODALITIES", "label_names"]

KINDS = ("glioma", "haemorrhage", "wml", "healthy")
MODALITIES = ("mri", "ct")
SCENARIOS = ("unilateral", "bilateral", "midline", "healthy", "asymmetric")
_KIND_MODALITY = {"glioma": ("mri",), "wml": ("mri",), "haemorrhage": ("ct",), "healthy": ("mri", "ct")}
# Lesion compartments, in the order their labels are assigned.
_COMPARTMENTS = ("necrosis", "oedema", "enhancing", "haemorrhage", "wml")


def label_names(kind: str, et_label: int = 4) -> Dict[int, str]:
    """Label value -> meaning for a kind (glioma follows BraTS: 1, 2, and 4 or 3 for ET)."""
    if kind == "glioma":
        return {1: "necrotic core", 2: "oedema", int(et_label): "enhancing tumour"}
    if kind == "haemorrhage":
        return {1: "haemorrhage"}
    if kind == "wml":
        return {1: "white-matter lesion"}
    return {}


@dataclass
class Phantom:
    """A generated subject.

    Attributes:
        image: ``(C, X, Y, Z)`` float32 on the scanner grid, channels named ("t1", "t1ce",
            "t2", "flair") or ("ct",); axis 0 is left -> right when ``orientation`` is RAS.
        label: ``(X, Y, Z)`` uint8 lesion labels on the same grid (0 background).
        brain_mask: ``(X, Y, Z)`` bool, intracranial space (the MRI skull-strip mask).
        info: JSON-ready truth (see module docstring).
        lesions: the lesion objects, head space.
        pose: the head pose.
    """

    image: Image
    label: Image
    brain_mask: Image
    info: dict
    lesions: List[Lesion]
    pose: Pose


def _bias_field(rng: np.random.Generator, head_points: np.ndarray, strength: float = 0.12) -> np.ndarray:
    # A second-order polynomial in the head's own coordinates: smooth, a few tens of % peak.
    u = head_points / 100.0
    terms = [u[:, 0], u[:, 1], u[:, 2], u[:, 0] * u[:, 1], u[:, 0] * u[:, 2], u[:, 1] * u[:, 2], u[:, 0] ** 2, u[:, 1] ** 2, u[:, 2] ** 2]
    log_field = sum(rng.normal(0.0, strength) * t for t in terms)
    return np.exp(log_field)


# Ranges of the difficulty controls: a contrast of 0 would leave a label with no lesion in
# the image; a variation beyond 3 warps more than the template's support margin holds.
LESION_CONTRAST_RANGE = (0.05, 1.0)
VARIATION_RANGE = (0.0, 3.0)


def _validate(seed, kind, modality, spacing, scenario, et_label, max_rotation_deg, max_shift_mm, orientation,
              lesion_contrast=1.0, variation=1.0):
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if kind not in KINDS:
        raise InputError(f"unknown phantom kind {kind!r}; expected one of {', '.join(KINDS)}")
    if modality not in MODALITIES:
        raise InputError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    if modality not in _KIND_MODALITY[kind]:
        raise InputError(f"kind {kind!r} is made for modality {' or '.join(_KIND_MODALITY[kind])}, not {modality!r}")
    if not (0.5 <= float(spacing) <= 6.0):
        raise InputError(f"spacing must be between 0.5 and 6 mm, got {spacing}")
    if scenario is not None and scenario not in SCENARIOS:
        raise InputError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    if kind == "healthy" and scenario not in (None, "healthy", "asymmetric"):
        raise InputError(f"a healthy subject cannot have scenario {scenario!r}")
    if et_label not in (3, 4):
        raise InputError(f"enhancing-tumour label must be 4 (BraTS 2021) or 3 (BraTS 2023), got {et_label}")
    if not (0 <= max_rotation_deg <= 45) or not (0 <= max_shift_mm <= 50):
        raise InputError("max rotation must be within 0-45 degrees and max shift within 0-50 mm")
    if len(orientation) != 3 or set(orientation.upper()) - set("RLAPSI"):
        raise InputError(f"orientation must be a 3-letter code like RAS or LPS, got {orientation!r}")
    lo, hi = LESION_CONTRAST_RANGE
    if not (lo <= float(lesion_contrast) <= hi):
        raise InputError(f"lesion contrast must be within {lo}-{hi} (1 = full contrast), got {lesion_contrast}")
    lo, hi = VARIATION_RANGE
    if not (lo <= float(variation) <= hi):
        raise InputError(f"anatomical variation must be within {lo}-{hi} (1 = default), got {variation}")


def make_subject(
    seed: int,
    kind: str = "glioma",
    modality: str = "mri",
    spacing: float = 2.0,
    scenario: Optional[str] = None,
    *,
    et_label: int = 4,
    mass_effect: bool = True,
    max_rotation_deg: float = 15.0,
    max_shift_mm: float = 15.0,
    bias: bool = True,
    noise: bool = True,
    orientation: str = "RAS",
    bleed_radius_mm: Optional[Tuple[float, float]] = None,
    bleed_hu: Optional[Tuple[float, float]] = None,
    lesion_contrast: float = 1.0,
    variation: float = 1.0,
    patient_asymmetry: float = 0.0,
) -> Phantom:
    """Generate one subject, deterministic given all arguments (``seed`` drives every draw).

    Args:
        seed: non-negative integer; the same arguments give identical arrays.
        kind: ``glioma`` (MRI), ``haemorrhage`` (CT), ``wml`` (MRI) or ``healthy``.
        modality: ``mri`` (channels t1, t1ce, t2, flair) or ``ct`` (one channel, HU).
        spacing: isotropic voxel size of the output in mm.
        scenario: ``unilateral``, ``bilateral`` (mirror positions), ``midline`` for
            patients; ``healthy`` or ``asymmetric`` (healthy with natural asymmetry) for
            ``kind="healthy"``. None draws one (patients: 70/15/15 %; healthy: 50/50).
        et_label: label of the enhancing tumour, 4 (BraTS 2021) or 3 (BraTS 2023).
        mass_effect: push tissue away from gliomas and haemorrhages.
        max_rotation_deg, max_shift_mm: pose ranges (uniform, each axis).
        bias, noise: MRI bias field and Rician noise (CT: Gaussian noise only).
        orientation: stored voxel order of the outputs (``RAS``, ``LPS``...); world
            positions do not depend on it.
        bleed_radius_mm, bleed_hu: ``(low, high)`` of each haemorrhage's radius and density,
            drawn uniformly (default 6-15 mm, 58-72 HU: obvious bleeds; grey matter is about
            38 HU, so 40-50 HU bleeds are subtle). The same seed with other ranges moves only
            the bleeds' size and density.
        lesion_contrast: share of the lesion-minus-tissue contrast kept, in [0.05, 1]:
            each voxel's value is ``healthy + c * (lesioned - healthy)``, where
            ``healthy`` is the same subject without its lesion compartments (mass effect
            kept), so a lesion at 0.15 differs from the tissue it replaced by 15 % of
            what it does at 1. Labels do not change.
        variation: strength of the healthy anatomical and intensity variation, in [0, 3]
            (1 = default): scales the head-size range (+-5 %), the symmetric warp's
            amplitude (2 mm), the bias field's strength and the per-subject tissue-value
            jitter (MRI gain 0.8-1.2 and +-5 % per tissue; CT +-2 HU). The draws are the
            same at every value, so 1 reproduces the default subjects exactly.
        patient_asymmetry: probability, in [0, 1], that a patient also has the natural
            asymmetry of the ``asymmetric`` healthy scenario (one hemisphere 2-4 % larger,
            one ventricle inflated). With the default 0 only healthy subjects have it, so in
            a dataset asymmetry signals health (a confound for scan-level classifiers, see
            docs/models.md); 0.5 matches the healthy subjects' share. Drawn from a stream of
            its own: the subject, its lesions and its pose do not change with this value.
    Returns:
        a :class:`Phantom`.
    """
    _validate(seed, kind, modality, spacing, scenario, et_label, max_rotation_deg, max_shift_mm, orientation,
              lesion_contrast, variation)
    if not 0.0 <= float(patient_asymmetry) <= 1.0:
        raise InputError(f"patient asymmetry must be a probability in [0, 1], got {patient_asymmetry}")
    spacing, lesion_contrast, variation = float(spacing), float(lesion_contrast), float(variation)
    bleed_radius_mm, bleed_hu = bleed_ranges(bleed_radius_mm, bleed_hu)
    rng = np.random.default_rng(int(seed))
    # Drawn even when given, so that naming the drawn scenario rebuilds the same subject.
    if kind == "healthy":
        drawn = str(rng.choice(["healthy", "asymmetric"]))
    else:
        drawn = str(rng.choice(["unilateral", "bilateral", "midline"], p=[0.7, 0.15, 0.15]))
    scenario = drawn if scenario is None else scenario
    anatomy = load_anatomy(spacing)

    scale = 1.0 + rng.uniform(-0.05 * variation, 0.05 * variation, size=3)
    warp = SmoothField.random(rng, amplitude_mm=2.0 * variation, wavelength_mm=70.0)
    hemisphere_scale, ventricle_push = 0.0, None
    if scenario == "asymmetric":
        hemisphere_scale = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.04))
        side = int(rng.integers(2))
        ventricle_push = RadialPush(anatomy.ventricle_centres[side] * scale, rng.uniform(6.0, 9.0), fade_mm=30.0)
    elif kind != "healthy" and patient_asymmetry > 0.0:
        # A separate stream, so the main one (lesions, tissue values, pose) is the same at every value.
        extra = np.random.default_rng([int(seed), 0xA5])
        if extra.random() < patient_asymmetry:
            hemisphere_scale = float(extra.choice([-1.0, 1.0]) * extra.uniform(0.02, 0.04))
            side = int(extra.integers(2))
            ventricle_push = RadialPush(anatomy.ventricle_centres[side] * scale, extra.uniform(6.0, 9.0), fade_mm=30.0)
    healthy = HealthyVariation(scale, warp, hemisphere_scale, ventricle_push)

    lesions: List[Lesion] = []
    if kind != "healthy":
        lesions = place_lesions(rng, anatomy, kind, scenario, scale, mass_effect=mass_effect,
                                bleed_radius_mm=bleed_radius_mm, bleed_hu=bleed_hu)
    values = subject_values(rng, modality, variation)
    pose = random_pose(rng, max_rotation_deg, max_shift_mm)

    # 6 mm of room for the warp (about 2 mm) and a hemisphere up to 4 % wider (about 3 mm);
    # a stronger warp gets room in proportion.
    room = 6.0 + 2.0 * max(variation - 1.0, 0.0)
    extent = anatomy.head_extent_mm(with_scalp=modality == "ct") * scale + np.array([[-room], [room]])
    affine, shape = scanner_grid(extent, pose, spacing)
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    inv_pose = np.linalg.inv(pose.matrix)
    head = world @ inv_pose[:3, :3].T + inv_pose[:3, 3]
    del world, grid

    # Work only where the subject can be: the template's (dilated) head or brain, reached
    # through the inverse pose and the head scaling, which is most of the deformation.
    support = anatomy.head_support if modality == "ct" else anatomy.brain_support
    inv_t = np.linalg.inv(anatomy.affine)
    approx = (head / scale) @ inv_t[:3, :3].T + inv_t[:3, 3]
    inside = np.nonzero(ndimage.map_coordinates(support.astype(np.uint8), approx.T, order=0, cval=0))[0]
    del approx
    head = head[inside]
    n_total = int(np.prod(shape))

    fractions, label, unlesioned = _tissues(anatomy, head, healthy, lesions, spacing, et_label,
                                            keep_healthy=lesion_contrast != 1.0)
    mask = fractions.pop("intracranial") >= 0.5
    if unlesioned is not None:
        unlesioned.pop("intracranial")

    def blend(lesioned: np.ndarray, healthy_values: np.ndarray) -> np.ndarray:
        # Fractions enter linearly, so this scales every lesion compartment's contrast
        # against the very tissue mix it displaced, voxel by voxel.
        return (healthy_values + lesion_contrast * (lesioned - healthy_values)).astype(np.float32)

    channels = channels_for(modality)
    out = []
    for ch in channels:
        v = values[ch]
        if modality == "mri":
            img = intensities(fractions, v)
            if unlesioned is not None:
                img = blend(img, intensities(unlesioned, v))
            if bias:
                img *= _bias_field(rng, head, 0.12 * variation)
            if noise:
                sigma = rng.uniform(0.01, 0.025) * v["wm"]
                img = np.sqrt((img + rng.normal(0, sigma, img.shape)) ** 2 + rng.normal(0, sigma, img.shape) ** 2)
            img = np.where(mask, img, 0.0)
        else:
            v = dict(v, **{f"haemorrhage_{i}": l.value_hu for i, l in enumerate(lesions) if l.finding == "haemorrhage"})
            img = intensities(fractions, v, air_value=v["air"])
            if unlesioned is not None:
                img = blend(img, intensities(unlesioned, v, air_value=v["air"]))
            if noise:
                img = img + rng.normal(0.0, rng.uniform(3.0, 5.0), img.shape)
        full = np.full(n_total, 0.0 if modality == "mri" else v["air"], dtype=np.float32)
        full[inside] = img
        if modality == "ct" and noise:
            # Air outside the support is noisy too, as in a scan.
            outside = np.ones(n_total, dtype=bool)
            outside[inside] = False
            full[outside] += rng.normal(0.0, 4.0, int(outside.sum())).astype(np.float32)
        out.append(full.reshape(shape))

    def scatter(values: np.ndarray) -> np.ndarray:
        full = np.zeros(n_total, dtype=values.dtype)
        full[inside] = values
        return full.reshape(shape)

    image = Image(np.stack(out), affine, channels)
    label_img = Image(scatter(label), affine)
    mask_img = Image(scatter(mask), affine)
    if orientation.upper() != "RAS":
        image, label_img, mask_img = (reorient_to(x, orientation.upper()) for x in (image, label_img, mask_img))

    normal, point = pose.plane()
    findings = sorted({l.finding for l in lesions})
    info = {
        "seed": int(seed),
        "kind": kind,
        "modality": modality,
        "scenario": scenario,
        "status": "healthy" if not lesions else "patient",
        "findings": findings,
        "channels": list(channels),
        "labels": {str(k): v for k, v in label_names(kind, et_label).items()},
        "spacing_mm": spacing,
        "shape": list(image.spatial_shape),
        "orientation": orientation.upper(),
        "pose": {
            "angles_deg": [round(float(a), 4) for a in pose.angles_deg],
            "shift_mm": [round(float(a), 4) for a in pose.shift_mm],
            "world_from_head": pose.matrix.tolist(),
        },
        "true_plane": {"normal_ras": normal.tolist(), "point_ras": point.tolist(),
                       "definition": "head's plane of symmetry (template x = 0) through the pose"},
        "natural_asymmetry": {"hemisphere_scale": hemisphere_scale,
                              "ventricle_inflation_mm": None if ventricle_push is None else float(ventricle_push.radius_mm)},
        "lesions": [l.describe(pose.matrix) for l in lesions],
        "mass_effect": bool(mass_effect),
        "lesion_contrast": lesion_contrast,
        "variation": variation,
    }
    return Phantom(image, label_img, mask_img, info, lesions, pose)


def _tissues(anatomy: Anatomy, head: np.ndarray, healthy: HealthyVariation, lesions: List[Lesion],
             spacing: float, et_label: int, keep_healthy: bool = False):
    """Compartment fractions ``{name: (N,)}``, labels ``(N,)`` at head-space points, and (with
    ``keep_healthy``) the fractions before the lesion compartments replaced tissue, mass
    effect included (else None)."""
    n = len(head)
    template = head_to_template(head, healthy, [l.push for l in lesions if l.push is not None])
    inv = np.linalg.inv(anatomy.affine)
    coords = (template @ inv[:3, :3].T + inv[:3, 3]).T
    del template

    def sample(volume: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(volume, coords, order=1, cval=0.0)

    ic = sample(anatomy.intracranial)
    gm, wm = sample(anatomy.gm), sample(anatomy.wm)
    skull, scalp = sample(anatomy.skull), sample(anatomy.scalp)
    del coords
    csf = np.clip(ic - gm - wm, 0.0, 1.0)
    unlesioned = ({"gm": gm, "wm": wm, "csf": csf, "skull": skull, "scalp": scalp, "intracranial": ic}
                  if keep_healthy else None)

    lesion_fr: Dict[str, np.ndarray] = {}
    per_lesion: Dict[str, np.ndarray] = {}
    for index, lesion in enumerate(lesions):
        # Only points within reach of the lesion are evaluated, for speed.
        near = np.nonzero(np.all(np.abs(head - lesion.centre[None, :]) <= lesion.reach_mm, axis=1))[0]
        for name, frac in lesion.compartments(head[near], spacing).items():
            full = lesion_fr.setdefault(name, np.zeros(n))
            full[near] = np.maximum(full[near], frac)
            if name == "haemorrhage":
                per = np.zeros(n)
                per[near] = frac
                per_lesion[f"haemorrhage_{index}"] = per

    # Solid parts (tumour core, blood) displace everything inside the skull; oedema and
    # WM lesions change parenchyma only.
    solid = np.zeros(n)
    for name in ("necrosis", "enhancing", "haemorrhage"):
        if name in lesion_fr:
            lesion_fr[name] = np.minimum(lesion_fr[name], ic)
            solid += lesion_fr[name]
    solid = np.minimum(solid, ic)
    keep = 1.0 - solid / np.maximum(ic, 1e-6)
    gm, wm, csf = gm * keep, wm * keep, csf * keep
    for name in ("oedema", "wml"):
        if name in lesion_fr:
            region = np.clip(lesion_fr[name], 0.0, 1.0)
            lesion_fr[name] = (gm + wm) * region
            gm, wm = gm * (1 - region), wm * (1 - region)

    fractions = {"gm": gm, "wm": wm, "csf": csf, "skull": skull, "scalp": scalp, "intracranial": ic}
    for name, frac in lesion_fr.items():
        if name != "haemorrhage":
            fractions[name] = frac
    for key, frac in per_lesion.items():
        # Each bleed keeps its own density, so each keeps its own fraction.
        fractions[key] = np.minimum(frac, ic)

    label = np.zeros(n, dtype=np.uint8)
    if lesion_fr:
        names = [c for c in _COMPARTMENTS if c in lesion_fr]
        stack = np.stack([lesion_fr[c] for c in names])
        lesion_total = stack.sum(0)
        winner = stack.argmax(0)
        values = {"necrosis": 1, "oedema": 2, "enhancing": et_label, "haemorrhage": 1, "wml": 1}
        lut = np.array([values[c] for c in names], dtype=np.uint8)
        label = np.where(lesion_total >= 0.5, lut[winner], 0).astype(np.uint8)
    return fractions, label, unlesioned
