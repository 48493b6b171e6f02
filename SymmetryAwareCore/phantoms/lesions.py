"""Lesions with known extent: glioma (necrosis, enhancing rim, oedema), haemorrhage, WML.

A lesion is defined analytically in head space (mm, before the head pose): an irregular
ball around ``centre`` whose surface is wobbled by smooth noise. Evaluated at ``(N, 3)``
points it gives soft compartment fractions (one voxel of partial volume at each edge);
the generator turns those into intensities and, by majority, into labels, so labels and
image always agree.

Placement follows the hard cases of a symmetry method: one side, both sides (mirror
positions across x = 0, the head's true plane), or on the midline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from .anatomy import Anatomy
from .deformation import RadialPush, SmoothField

__all__ = ["Lesion", "FINDINGS", "PLACEMENTS", "BLEED_RADIUS_MM", "BLEED_HU", "bleed_ranges", "place_lesions"]

FINDINGS = ("glioma", "haemorrhage", "wml")
PLACEMENTS = ("unilateral", "bilateral", "midline")
# Default haemorrhage draws (uniform): large, fresh, obvious bleeds, 20-45 HU above brain
# tissue (grey matter ~38, white ~28 HU). Smaller or fainter bleeds are asked for with
# ``bleed_radius_mm`` / ``bleed_hu``: acute blood is 50-90 HU, but an ageing, anaemic or
# partial-volumed bleed comes down to within a few HU of grey matter.
BLEED_RADIUS_MM = (6.0, 15.0)
BLEED_HU = (58.0, 72.0)
# Accepted ranges: a bleed below 1 mm is below any scanner's resolution; above 30 mm it no
# longer fits the brain; HU outside 0-150 is not blood.
_BLEED_RADIUS_LIMITS = (1.0, 30.0)
_BLEED_HU_LIMITS = (0.0, 150.0)


def bleed_ranges(radius_mm=None, hu=None) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    """Checked ``(radius_mm, hu)`` ranges of haemorrhages, each ``(low, high)``; None: the default.

    Raises :class:`~SymmetryAwareCore.errors.InputError` naming the range that is wrong.
    """
    from ..errors import InputError

    out = []
    for value, default, (lo_limit, hi_limit), name in ((radius_mm, BLEED_RADIUS_MM, _BLEED_RADIUS_LIMITS, "bleed radius (mm)"),
                                                       (hu, BLEED_HU, _BLEED_HU_LIMITS, "bleed density (HU)")):
        if value is None:
            out.append(tuple(default))
            continue
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be two numbers LOW,HIGH, got {value!r}") from None
        if not (lo_limit <= lo <= hi <= hi_limit):
            raise InputError(f"{name} must satisfy {lo_limit:g} <= LOW <= HIGH <= {hi_limit:g}, got {lo:g},{hi:g}")
        out.append((lo, hi))
    return out[0], out[1]


@dataclass(frozen=True)
class Lesion:
    """One lesion in head space.

    Attributes:
        finding: ``"glioma"``, ``"haemorrhage"`` or ``"wml"``.
        centre: ``(3,)`` head-space mm.
        radius_mm: radius of the solid part (tumour core, bleed, WM lesion).
        rim_mm: enhancing rim thickness (glioma; the necrotic core is inside it).
        oedema_mm: how far oedema reaches beyond the core (glioma).
        value_hu: density of a haemorrhage in Hounsfield units.
        shape: smooth noise that makes the outline irregular; irregularity scales it.
        push: mass effect, or None.
    """

    finding: str
    centre: np.ndarray
    radius_mm: float
    shape: SmoothField
    irregularity: float = 0.12
    rim_mm: float = 0.0
    oedema_mm: float = 0.0
    value_hu: float = 0.0
    push: Optional[RadialPush] = None

    @property
    def reach_mm(self) -> float:
        """Radius beyond which the lesion has no effect on intensities."""
        return (self.radius_mm + self.oedema_mm) * (1 + 2 * self.irregularity) + 2.0

    def compartments(self, points: np.ndarray, spacing: float) -> Dict[str, np.ndarray]:
        """Soft fractions in [0, 1] at ``(N, 3)`` head-space points.

        Glioma: ``necrosis``, ``enhancing``, ``oedema`` (oedema is a region here; the
        generator lets it occupy only brain parenchyma). Haemorrhage: ``haemorrhage``.
        WML: ``wml``.
        """
        d = points - self.centre[None, :]
        r = np.linalg.norm(d, axis=1)
        noise = self.shape.raw(points)
        wobble_core = 1.0 + self.irregularity * np.tanh(noise[:, 0])
        level = r * wobble_core

        def inside(radius: float, lvl: np.ndarray = level) -> np.ndarray:
            return np.clip((radius - lvl) / spacing + 0.5, 0.0, 1.0)

        if self.finding == "glioma":
            core = inside(self.radius_mm)
            necrosis = inside(max(self.radius_mm - self.rim_mm, 0.0))
            # Oedema has its own, rougher outline (finger-like spread along white matter).
            wobble_oedema = 1.0 + 2 * self.irregularity * np.tanh(noise[:, 1])
            oedema = np.clip(inside(self.radius_mm + self.oedema_mm, r * wobble_oedema) - core, 0.0, 1.0)
            return {"necrosis": necrosis, "enhancing": core - necrosis, "oedema": oedema}
        return {self.finding: inside(self.radius_mm)}

    def describe(self, pose: np.ndarray) -> dict:
        """JSON-ready summary; ``centre_ras`` is the centre in the output image's world."""
        centre_ras = pose[:3, :3] @ self.centre + pose[:3, 3]
        out = {
            "finding": self.finding,
            "side": "midline" if abs(self.centre[0]) < 5 else ("right" if self.centre[0] > 0 else "left"),
            "centre_head_mm": [round(float(v), 4) for v in self.centre],
            "centre_ras": [round(float(v), 4) for v in centre_ras],
            "radius_mm": round(float(self.radius_mm), 3),
        }
        if self.finding == "glioma":
            out.update(rim_mm=round(self.rim_mm, 3), oedema_mm=round(self.oedema_mm, 3))
        if self.finding == "haemorrhage":
            out["value_hu"] = round(self.value_hu, 2)
        if self.push is not None:
            out["mass_effect_radius_mm"] = round(float(self.push.radius_mm), 3)
        return out


def _candidates(anatomy: Anatomy, finding: str, placement: str, depth_mm: float) -> np.ndarray:
    """Template-mm voxel centres where a lesion of this kind may sit (``(N, 3)``)."""
    tissue = {"glioma": anatomy.wm, "wml": anatomy.wm, "haemorrhage": anatomy.wm + anatomy.gm}[finding]
    level = {"glioma": 0.6, "wml": 0.9, "haemorrhage": 0.7}[finding]
    idx = np.argwhere((tissue >= level) & (anatomy.depth_mm >= depth_mm))
    pts = anatomy.points_mm(idx)
    if placement == "midline":
        pts = pts[np.abs(pts[:, 0]) <= max(3.0, anatomy.spacing)]
    else:
        pts = pts[np.abs(pts[:, 0]) >= (12.0 if finding == "wml" else 18.0)]
    if len(pts) == 0:
        # Big lesions may find no place deep enough: accept shallower ones.
        return _candidates(anatomy, finding, placement, depth_mm * 0.6) if depth_mm > 4 else pts
    return pts


def _one(rng: np.random.Generator, finding: str, centre: np.ndarray, mass_effect: bool,
         bleed_radius_mm=BLEED_RADIUS_MM, bleed_hu=BLEED_HU) -> Lesion:
    shape = SmoothField.random(rng, amplitude_mm=1.0, wavelength_mm=25.0, waves=6)
    if finding == "glioma":
        radius = rng.uniform(10.0, 18.0)
        rim = rng.uniform(2.5, 5.0)
        oedema = rng.uniform(6.0, 16.0)
        # Drawn even without mass effect, so that switching it off changes nothing else.
        push_radius = rng.uniform(0.7, 1.0) * radius
        push = RadialPush(centre, push_radius, fade_mm=3 * radius + 20) if mass_effect else None
        return Lesion(finding, centre, radius, shape, rim_mm=rim, oedema_mm=oedema, push=push)
    if finding == "haemorrhage":
        # One uniform draw each whatever the range, so other draws of the subject do not move.
        radius = rng.uniform(*bleed_radius_mm)
        push = RadialPush(centre, 0.6 * radius, fade_mm=3 * radius + 20) if mass_effect else None
        return Lesion(finding, centre, radius, shape, value_hu=rng.uniform(*bleed_hu), push=push)
    return Lesion(finding, centre, rng.uniform(2.5, 5.0), shape, irregularity=0.08)


def place_lesions(
    rng: np.random.Generator,
    anatomy: Anatomy,
    finding: str,
    placement: str,
    head_scale: np.ndarray,
    mass_effect: bool = True,
    bleed_radius_mm: Tuple[float, float] = BLEED_RADIUS_MM,
    bleed_hu: Tuple[float, float] = BLEED_HU,
) -> List[Lesion]:
    """Draw the lesions of one patient.

    ``unilateral``: one lesion (WML: several, all on one side). ``bilateral``: lesions in
    mirror positions across x = 0 of head space. ``midline``: centred within a few mm of
    x = 0. Candidate centres come from template tissue maps and are scaled to head space.
    Haemorrhages draw their radius (mm) and density (HU) uniformly from ``bleed_radius_mm``
    and ``bleed_hu`` (each ``(low, high)``).
    """
    if finding not in FINDINGS:
        raise ValueError(f"unknown finding {finding!r}; expected one of {FINDINGS}")
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; expected one of {PLACEMENTS}")
    depth = {"glioma": 26.0, "haemorrhage": 18.0, "wml": 10.0}[finding]
    pts = _candidates(anatomy, finding, placement, depth) * np.asarray(head_scale)[None, :]
    mirror = np.array([-1.0, 1.0, 1.0])
    count = int(rng.integers(4, 9)) if finding == "wml" else 1
    lesions: List[Lesion] = []
    side = rng.choice([-1.0, 1.0])
    for _ in range(count if placement != "bilateral" else max(1, count // 2)):
        if placement == "unilateral":
            pool = pts[np.sign(pts[:, 0]) == side]
        else:
            pool = pts
        centre = pool[rng.integers(len(pool))].copy()
        if placement == "midline":
            centre[0] = 0.0
        lesions.append(_one(rng, finding, centre, mass_effect, bleed_radius_mm, bleed_hu))
        if placement == "bilateral":
            lesions.append(_one(rng, finding, centre * mirror, mass_effect, bleed_radius_mm, bleed_hu))
    return lesions
