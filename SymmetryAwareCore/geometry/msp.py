"""The mid-sagittal plane (MSP) of a head scan, found by registering the scan to its own mirror.

The method is the authors' "midway registration" with the transform restricted to what it
must be: if ``S`` is the reflection across the true MSP, the image ``I`` satisfies
``I(S x) = I(x)``, and the rigid transform that maps the image onto its left-right mirror
is ``S`` composed with that mirror. Rather than fit six rigid parameters and project the
result back onto a reflection (and then take "half" of it), the search runs directly over
reflections: three parameters, two tilt angles of the plane normal and its offset. This is
the same objective with a smaller, better-conditioned search space.

How it stays robust:

- **Coarse to fine**: an exhaustive search over tilts up to :data:`MAX_TILT_DEG` (7 degree
  grid, offsets -24 to 24 mm) on a 6 mm pyramid level, so a 20 degree tilt about two axes
  (about 28 degrees of normal) still converges; Powell refinement of the four best distinct
  grid minima at 6 mm, of the distinct survivors at 3 mm, and of the winner at the finest
  level (1.5 mm, or the scan's own spacing if coarser). Each level samples a fixed number
  of head voxels (seeded), so the cost hardly depends on the scan's resolution. A fit
  whose objective is flat around it gets a second search from every ninth of the tilt
  square, and the better fit is kept.
- **Robust metric**: the Geman-McClure loss of the intensity difference between a voxel
  and its mirror, ``r^2 / (r^2 + c^2)``, which saturates at 1: a lesion present on one
  side only costs a bounded amount whatever its contrast, so it cannot drag the plane.
  ``c`` is 15 % of the 2-98 percentile intensity range inside the head, so MRI of any
  contrast and CT (Hounsfield units) behave alike.
- **Field of view**: the search maximises ``agreement * coverage ** 0.5``: ``agreement`` is
  the share of head voxels matching their mirror among those whose mirror is in the field
  of view, ``coverage`` the share whose mirror is (ramping over the last voxel, so the
  objective stays continuous). Counting every mirror out of view as a full mismatch
  (power 1) pulls a slab's plane towards the orientation that keeps mirrors in the slab
  (26 degrees off on a rolled CT slab); ignoring them (power 0) lets the plane escape to
  where little is compared.
- **Honesty**: the result carries the symmetry score, the correlation of voxel/mirror
  pairs and the features the confidence rule (:data:`CONFIDENCE_RULE`) reads, chiefly how
  sharply the objective rises 2 degrees or 2 mm away: the wrong basins a slab or a
  partial view leaves are flat. The rule's thresholds were set from measured
  distributions (``Benchmarks/msp_benchmark.py --calibration``; docs/msp.md). An image
  that is not a head (:mod:`.head_check`) is flagged, or refused on request. A scan with
  no head, a degenerate mask or a non-3D array is refused (:class:`InputError`) or, on
  request, answered with the image-axes plane, flagged as such.
- **Channels**: a multi-channel scan is fitted on its first channel; only when that fit is
  not confident (or finds no sagittal plane) are the next channels fitted, in order, and the
  first confident fit is used (``channel`` says which). On glioma phantoms each MRI contrast
  fails now and then on its own (noise, bias, a wrong basin), rarely two on one scan.

All geometry is in world RAS millimetres: the plane is ``normal . x = normal . point``
with ``normal`` a unit vector pointing to the patient's right (+x of RAS). Nothing here
depends on how the voxels are stored (LPS, oblique, sheared).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Optional, Tuple

import numpy as np
import scipy.ndimage as ndi
import scipy.optimize

from ..errors import InputError
from ..io.image import Image
from .head_check import check_head

__all__ = [
    "MidSagittalPlane",
    "estimate_msp",
    "axes_plane",
    "head_mask",
    "plane_angle_deg",
    "plane_offset_mm",
    "reflection_matrix",
    "MAX_TILT_DEG",
    "not_sagittal",
    "CONFIDENCE_RULE",
    "MIN_SHARPNESS",
    "MIN_COVERAGE",
    "MIN_AGREEMENT",
    "MIN_CORRELATION",
    "MIN_RIVAL_GAP",
    "COVERAGE_POWER",
]

MAX_TILT_DEG = 35.0
"""Largest tilt of the MSP normal from the image's left-right axis that the search covers."""


def not_sagittal(normal) -> Optional[str]:
    """Why a plane with this RAS ``normal`` cannot be a mid-sagittal plane, or None.

    The one rule (the report, the overview and :func:`estimate_msp` use it): the normal
    must be a direction closer to left-right (RAS x) than to anterior-posterior or
    superior-inferior, that is within 45 degrees of it.
    """
    n = np.asarray(normal, dtype=np.float64).reshape(3)
    length = np.linalg.norm(n)
    if not np.isfinite(length) or length == 0:
        return f"mid-sagittal plane normal {tuple(n)} is not a direction"
    n = n / length
    if abs(n[0]) < np.sqrt(0.5) - 1e-9:
        return (f"plane normal ({n[0]:.3f}, {n[1]:.3f}, {n[2]:.3f}) is more than 45 degrees from left-right: "
                "not a mid-sagittal plane")
    return None

MIN_SHARPNESS = 0.006
"""The objective must rise by at least this much when the plane is tilted 2 degrees or moved
2 mm. Measured (``Benchmarks/msp_benchmark.py --calibration``, docs/msp.md): on 155 correct
planes (< 0.5 degrees and < 0.5 mm) it rose by 0.011 to 0.25 (0.011-0.014 for the real EPI
slab, 0.05 and up for the phantoms, 0.24 for MNI); on 128 wrong planes (> 2 degrees or
> 2 mm: perturbed truths and the local minima slabs and partial views leave) by at most
0.004. A further EPI pose rose by 0.008 at 0.11 degrees: the threshold sits between."""

MIN_COVERAGE = 0.5
"""At least half of the head must have its mirror image in the field of view."""

MIN_AGREEMENT = 0.5
"""At least half of the compared head voxels must match their mirror image (noise: < 0.3)."""

MIN_CORRELATION = 0.3
"""Correlations of head voxels with their mirrors below this are flagged not confident."""

MIN_RIVAL_GAP = 0.01
"""A distinct minimum of the search (more than 3 degrees away) must be worse by this much."""

CONFIDENCE_RULE = (
    f"confident if the symmetry objective rises by >= {MIN_SHARPNESS} when the plane is tilted 2 degrees "
    f"or moved 2 mm, >= {100 * MIN_COVERAGE:.0f} % of the head has its mirror in view, "
    f">= {100 * MIN_AGREEMENT:.0f} % of it matches its mirror, the mirror correlation is >= {MIN_CORRELATION}, "
    f"no distinct plane scores within {MIN_RIVAL_GAP}, the fit is inside the search range, and the image is a head"
)
"""The confidence rule in words (reported with every plane)."""

COVERAGE_POWER = 0.5
"""The search maximises ``agreement * coverage ** COVERAGE_POWER``. With 1 (every voxel whose
mirror leaves the field of view counted as a full mismatch) a slab or a cut-off side pulls
the plane towards the orientation that keeps mirrors in view; with 0 the plane could escape
to where few voxels are compared. 0.5 was chosen on slabs of 35-60 % of the head."""

# Pyramid levels (target spacing in mm) and the number of head voxels sampled on each.
_LEVELS_MM = (6.0, 3.0, 1.5)
_SAMPLES = (4_000, 20_000, 40_000)
# Distinct coarse-grid minima refined at 6 mm (slabs and partial views have several basins).
_STARTS = 4
# Smallest head that is believed: 100 cm^3 (an adult brain is ~1200 cm^3), and a minimum
# extent per axis so a single slice or a thin slab is refused.
_MIN_HEAD_MM3 = 100_000.0
_MIN_EXTENT_MM = 30.0
_MIN_VOXELS_PER_AXIS = 4
# How far (mm) the plane may move from the head's centre of mass along its normal.
_MAX_OFFSET_MM = 40.0


@dataclass(frozen=True)
class MidSagittalPlane:
    """A plane in world RAS millimetres, with how well the image is symmetric about it.

    Attributes:
        normal: ``(3,)`` unit normal, pointing to the patient's right (positive RAS x).
        point: ``(3,)`` RAS mm, a point of the plane: the projection of the head's centre of
            mass onto it (so it sits mid-brain, handy for viewers).
        symmetry_score: the search's objective at the fit, ``agreement * coverage ** 0.5``
            in ``[0, 1]`` (see ``features``): about 0.99 for the symmetric template, 0.7-0.85
            for a real T1 or MRI phantom, 0.9 with a 50 cm^3 lesion, < 0.4 for noise.
        correlation: Pearson correlation of voxel / mirror intensity pairs in view (not
            robust: a large lesion lowers it a lot), in ``[-1, 1]``.
        confident: the verdict of :data:`CONFIDENCE_RULE`; ``False`` also for an image
            that is not a head and for fallbacks. Never silently ``True``.
        method: ``"mirror-registration"`` or ``"axes"`` (image axes through the centre of
            mass: the baseline and the ``on_failure="axes"`` fallback).
        center: ``(3,)`` RAS mm, the head mask's centre of mass used by the search.
        tilt_deg: angle between ``normal`` and the image's own left-right voxel axis.
        message: why the result is not confident (reasons joined by "; "), or empty.
        features: what the rule read (see :func:`_features`): ``agreement``, ``coverage``,
            ``correlation``, ``sharpness``, ``rival_gap``, ``at_edge``.
        head: the head check (:class:`~SymmetryAwareCore.geometry.head_check.HeadCheck` as a
            dict: ``is_head``, ``reason``, sizes in mm, ``rule``); empty for fallbacks.
        warnings: one-line warnings for the user (e.g. "not a head: ..."), for reports.
        channel: index of the channel of a ``(C, X, Y, Z)`` scan the plane was fitted on
            (0 unless the first channel's fit was not confident; see :func:`estimate_msp`).
    """

    normal: np.ndarray
    point: np.ndarray
    symmetry_score: float
    confident: bool
    method: str
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    tilt_deg: float = 0.0
    message: str = ""
    correlation: float = float("nan")
    features: dict = field(default_factory=dict)
    head: dict = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()
    channel: int = 0

    def __post_init__(self) -> None:
        n = np.asarray(self.normal, dtype=np.float64).reshape(3)
        norm = np.linalg.norm(n)
        if not np.isfinite(norm) or norm == 0:
            raise ValueError(f"plane normal must be a non-zero vector, got {self.normal}")
        n = n / norm
        if n[0] < 0:  # one sign convention: the normal points to the patient's right
            n = -n
        object.__setattr__(self, "normal", n)
        object.__setattr__(self, "point", np.asarray(self.point, dtype=np.float64).reshape(3))
        object.__setattr__(self, "center", np.asarray(self.center, dtype=np.float64).reshape(3))
        object.__setattr__(self, "warnings", tuple(self.warnings))

    @property
    def offset(self) -> float:
        """``d`` in the plane equation ``normal . x = d`` (mm)."""
        return float(self.normal @ self.point)

    def signed_distance(self, points_ras: np.ndarray) -> np.ndarray:
        """Signed distance in mm of ``(N, 3)`` RAS points; positive on the patient's right."""
        return np.atleast_2d(np.asarray(points_ras, dtype=np.float64)) @ self.normal - self.offset

    def reflection(self) -> np.ndarray:
        """``(4, 4)`` world matrix of the reflection across this plane."""
        return reflection_matrix(self.normal, self.point)

    def moved(self, world: np.ndarray) -> "MidSagittalPlane":
        """This plane carried by a rigid ``(4, 4)`` world transform (for ground truths)."""
        world = np.asarray(world, dtype=np.float64)
        return MidSagittalPlane(
            normal=world[:3, :3] @ self.normal,
            point=world[:3, :3] @ self.point + world[:3, 3],
            symmetry_score=self.symmetry_score,
            confident=self.confident,
            method=self.method,
            center=world[:3, :3] @ self.center + world[:3, 3],
            tilt_deg=self.tilt_deg,
            message=self.message,
            correlation=self.correlation,
            features=dict(self.features),
            head=dict(self.head),
            warnings=tuple(self.warnings),
            channel=self.channel,
        )

    def to_dict(self) -> dict:
        """JSON-ready description (lists, floats), with the coordinate system named.

        Besides the fields: ``offset_mm``, ``coordinate_system`` (RAS), ``units`` (mm) and
        ``confidence``: ``{"confident", "score", "rule", "reason"}`` (``reason`` empty when
        confident), so a report says what the flag was decided on.
        """
        out = {k: _jsonable(v) for k, v in asdict(self).items()}
        out["offset_mm"] = self.offset
        out["coordinate_system"] = "RAS"
        out["units"] = "mm"
        out["confidence"] = {
            "confident": bool(self.confident),
            "score": _jsonable(self.symmetry_score),
            "rule": CONFIDENCE_RULE if self.method == "mirror-registration" else "fallback planes are never confident",
            "reason": self.message,
        }
        return out


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def reflection_matrix(normal: np.ndarray, point: np.ndarray) -> np.ndarray:
    """``(4, 4)`` world matrix reflecting across the plane through ``point`` with ``normal``."""
    n = np.asarray(normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    m = np.eye(4)
    m[:3, :3] -= 2.0 * np.outer(n, n)
    m[:3, 3] = 2.0 * (n @ np.asarray(point, dtype=np.float64)) * n
    return m


def plane_angle_deg(a: MidSagittalPlane, b: MidSagittalPlane) -> float:
    """Angle in degrees between the normals of two planes (sign-free)."""
    return float(np.degrees(np.arccos(np.clip(abs(a.normal @ b.normal), 0.0, 1.0))))


def plane_offset_mm(estimate: MidSagittalPlane, truth: MidSagittalPlane, at: Optional[np.ndarray] = None) -> float:
    """Distance in mm, along ``truth``'s normal, between the two planes at point ``at``.

    ``at`` defaults to ``truth.point`` (the brain centre): the line through it along the true
    normal meets the estimated plane at some point; the distance from ``at`` is the offset
    error. For parallel planes it is the distance between them.
    """
    at = truth.point if at is None else np.asarray(at, dtype=np.float64)
    at_on_truth = at - truth.signed_distance(at)[0] * truth.normal
    denom = estimate.normal @ truth.normal
    if abs(denom) < 1e-9:
        return float("inf")
    step = -estimate.signed_distance(at_on_truth)[0] / denom
    return float(abs(step))


# --------------------------------------------------------------------------- the image


def _channel_count(image: Image) -> int:
    return 1 if np.ndim(image.array) == 3 else int(image.array.shape[0])


def _scalar_volume(image: Image, channel: int = 0) -> np.ndarray:
    if not isinstance(image, Image):
        raise InputError(f"expected an Image, got {type(image).__name__}")
    array = image.array if image.array.ndim == 3 else image.array[channel]
    shape = array.shape
    if min(shape) < _MIN_VOXELS_PER_AXIS:
        raise InputError(
            f"the image is not a 3D volume (shape {shape}): the mid-sagittal plane needs at least "
            f"{_MIN_VOXELS_PER_AXIS} voxels along every axis",
            image.source,
        )
    array = np.asarray(array, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    return array


def _lr_axis(affine: np.ndarray) -> Tuple[int, np.ndarray]:
    """The voxel axis closest to RAS x, and its unit direction signed to point right."""
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    axis = int(np.argmax(np.abs(directions[0])))
    d = directions[:, axis]
    return axis, d if d[0] >= 0 else -d


def _otsu_threshold(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def _looks_like_ct(array: np.ndarray) -> bool:
    """Hounsfield units: much of the volume is air (about -1000) or padding (-1024, -3024)."""
    sample = array.ravel()[:: max(1, array.size // 500_000)]
    return float(np.mean(sample <= -900)) > 0.05 and float(np.percentile(sample, 99)) > 0


def head_mask(image: Image) -> np.ndarray:
    """A boolean ``(X, Y, Z)`` mask of the head on ``image``'s grid (largest blob, holes filled).

    Works on any contrast and on CT, skull or not. CT (Hounsfield units) is cut at -500 HU,
    so that air (-1000) and the padding outside the reconstruction circle (-1024 or -3024)
    are both outside; Otsu's threshold there would split the padding from everything else
    and keep the whole circle. Anything else: Otsu separates air/background from tissue.
    An image without background (a crop inside the brain) gives a mask of nearly the whole
    field of view, which is what the search should use then.
    """
    array = _scalar_volume(image)
    if _looks_like_ct(array):
        mask = array > -500.0
    else:
        lo, hi = np.percentile(array, [0.5, 99.5])
        if not hi > lo:
            return np.zeros(array.shape, bool)
        clipped = np.clip(array, lo, hi)
        threshold = _otsu_threshold(clipped.ravel()[:: max(1, clipped.size // 2_000_000)])
        mask = clipped > threshold
    if mask.mean() > 0.97:  # nothing but tissue in view
        return np.ones(array.shape, bool)
    labels, count = ndi.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == int(np.argmax(sizes))
    return ndi.binary_fill_holes(mask)


# --------------------------------------------------------------------------- pyramid


def _downsample(array: np.ndarray, affine: np.ndarray, target_mm: float) -> Tuple[np.ndarray, np.ndarray]:
    """Smooth and subsample towards ``target_mm`` voxels; returns ``(array, affine)``.

    Axes already coarser than the target are kept; a light smoothing (half a voxel) is
    still applied so that trilinear interpolation gives a smoother objective.
    """
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    factor = np.minimum(1.0, spacing / target_mm)
    # Anti-aliasing: sigma of half the new voxel, in old voxels.
    smooth = ndi.gaussian_filter(array, np.where(factor < 1.0, 0.5 / factor, 0.5), mode="nearest")
    shape = np.maximum(2, np.round(np.array(array.shape) * factor)).astype(int)
    if np.array_equal(shape, array.shape):
        return smooth.astype(np.float32), affine
    # zoom with grid_mode=False maps corner voxel centres onto corner voxel centres.
    scale = (np.array(array.shape) - 1) / (shape - 1)
    small = ndi.zoom(smooth, shape / np.array(array.shape), order=1, mode="nearest", grid_mode=False)
    return small[: shape[0], : shape[1], : shape[2]].astype(np.float32), affine @ np.diag([*scale, 1.0])


def _mask_on(mask: np.ndarray, mask_affine: np.ndarray, affine: np.ndarray, shape) -> np.ndarray:
    """A mask carried onto another grid (trilinear, > 0.5)."""
    m = np.linalg.inv(mask_affine) @ affine
    moved = ndi.affine_transform(mask.astype(np.float32), m[:3, :3], m[:3, 3], output_shape=tuple(shape), order=1, mode="constant")
    return moved > 0.5


@dataclass
class _Level:
    array: np.ndarray  # smoothed intensities, (X, Y, Z) float32
    inv_affine: np.ndarray  # world -> voxel of this level
    points: np.ndarray  # (N, 3) world positions of sampled head voxels
    values: np.ndarray  # (N,) intensities there


def _level(array: np.ndarray, affine: np.ndarray, mask: np.ndarray, samples: int, rng) -> _Level:
    ijk = np.argwhere(mask)
    if len(ijk) > samples:
        ijk = ijk[rng.choice(len(ijk), samples, replace=False)]
    points = ijk @ affine[:3, :3].T + affine[:3, 3]
    values = array[tuple(ijk.T)].astype(np.float64)
    return _Level(array, np.linalg.inv(affine), points, values)


# --------------------------------------------------------------------------- objective


class _Search:
    """The reflection search around a base normal ``n0`` and centre ``c``.

    Parameters ``(a, b, t)``: tilt of the normal (degrees) towards two axes ``u``, ``v``
    perpendicular to ``n0``, and the plane's offset in mm along the normal from ``c``.
    """

    def __init__(self, n0: np.ndarray, center: np.ndarray, scale: float):
        self.n0 = n0
        helper = np.array([0.0, 0.0, 1.0]) if abs(n0[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
        self.u = np.cross(helper, n0)
        self.u /= np.linalg.norm(self.u)
        self.v = np.cross(n0, self.u)
        self.center = center
        self.scale = scale

    def plane(self, params) -> Tuple[np.ndarray, np.ndarray]:
        a, b, t = params
        n = self.n0 + np.tan(np.radians(a)) * self.u + np.tan(np.radians(b)) * self.v
        n = n / np.linalg.norm(n)
        return n, self.center + t * n

    def mirrored(self, level: _Level, params) -> Tuple[np.ndarray, np.ndarray]:
        """Intensities at the mirror images of the sampled points, and how far inside the
        field of view each mirror point lies (1 inside, ramping to 0 one voxel beyond)."""
        n, p = self.plane(params)
        d = (level.points - p) @ n
        mirror = level.points - 2.0 * d[:, None] * n[None, :]
        ijk = (mirror @ level.inv_affine[:3, :3].T + level.inv_affine[:3, 3]).T
        values = ndi.map_coordinates(level.array, ijk, order=1, mode="nearest")
        last = np.array(level.array.shape, np.float64)[:, None] - 1.0
        inside = np.clip(np.minimum(ijk + 1.0, last + 1.0 - ijk), 0.0, 1.0).prod(axis=0)
        return values, inside

    def terms(self, level: _Level, params) -> Tuple[float, float]:
        """``(agreement, coverage)``: the share of head voxels matching their mirror image,
        among those whose mirror lies in the field of view; and the share that does."""
        values, inside = self.mirrored(level, params)
        r2 = ((level.values - values) / self.scale) ** 2
        rho = r2 / (1.0 + r2)
        coverage = float(inside.mean())
        if coverage <= 1e-6:
            return 0.0, 0.0
        return 1.0 - float((inside * rho).sum() / inside.sum()), coverage

    def loss(self, level: _Level, params) -> float:
        agreement, coverage = self.terms(level, params)
        return 1.0 - agreement * coverage**COVERAGE_POWER

    def correlation(self, level: _Level, params) -> float:
        values, inside = self.mirrored(level, params)
        keep = inside > 0.99
        if keep.sum() < 10:
            return 0.0
        a, b = level.values[keep], values[keep]
        if a.std() == 0 or b.std() == 0:
            return 0.0
        return float(np.corrcoef(a, b)[0, 1])



def axes_plane(image: Image, mask: Optional[np.ndarray] = None, message: str = "") -> MidSagittalPlane:
    """The baseline plane: normal along the image's own left-right voxel axis, through the
    head mask's centre of mass (the image centre if the mask is empty). Never confident."""
    array = _scalar_volume(image)
    _, n0 = _lr_axis(image.affine)
    if mask is None:
        mask = head_mask(image)
    if mask.any():
        com = np.array(ndi.center_of_mass(mask.astype(np.float32)))
    else:
        com = (np.array(array.shape) - 1) / 2.0
    center = image.voxel_to_world(com)[0]
    return MidSagittalPlane(n0, center, float("nan"), False, "axes", center, 0.0, message or "image axes used")


def _check_mask(mask, image: Image, array: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask.array if isinstance(mask, Image) else mask)
    if mask.shape != array.shape:
        raise InputError(f"the mask has shape {mask.shape} but the image has {array.shape}", image.source)
    return mask > 0


def _mask_problem(mask: np.ndarray, affine: np.ndarray) -> str:
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if not mask.any():
        return "no head found: the head mask is empty"
    ijk = np.argwhere(mask)
    extent = (ijk.max(0) - ijk.min(0) + 1) * spacing
    if extent.min() < _MIN_EXTENT_MM:
        return f"degenerate head mask: its extent {np.round(extent, 1).tolist()} mm is under {_MIN_EXTENT_MM:.0f} mm along an axis"
    volume = float(mask.sum()) * float(np.prod(spacing))
    if volume < _MIN_HEAD_MM3:
        return f"no head found: the head mask holds {volume / 1000:.1f} cm^3 (at least {_MIN_HEAD_MM3 / 1000:.0f} cm^3 needed)"
    return ""


@dataclass
class _Prepared:
    """The scan made ready for the search: pyramid levels, head mask, search frame."""

    search: "_Search"
    levels: list  # of _Level, coarsest first
    mask: np.ndarray  # head mask on the 3 mm level
    mask_affine: np.ndarray


def _prepare(image: Image, user_mask: Optional[np.ndarray], seed: int, channel: int = 0):
    """The pyramid, the head mask and the search frame; or a string saying why there is no head."""
    array = _scalar_volume(image, channel)
    # Pyramid, each level from the previous one: smoothing the full-resolution volume once.
    grids = []
    current = (array, image.affine)
    for mm in reversed(_LEVELS_MM):
        current = _downsample(*current, mm)
        grids.append(current)
    grids.reverse()  # coarsest first
    # The head mask is found on the 3 mm level (cheap, and fine enough for a centre of mass).
    mid_array, mid_affine = grids[1]
    if user_mask is None:
        mid_mask = head_mask(Image(mid_array, mid_affine, source=image.source))
    else:
        mid_mask = _mask_on(user_mask, image.affine, mid_affine, mid_array.shape)
    problem = _mask_problem(mid_mask, mid_affine)
    if problem:
        return problem

    _, n0 = _lr_axis(image.affine)
    mid_image = Image(mid_array, mid_affine)
    center = mid_image.voxel_to_world(np.array(ndi.center_of_mass(mid_mask.astype(np.float32))))[0]
    rng = np.random.default_rng(seed)
    levels = []
    for (level_array, level_affine), n in zip(grids, _SAMPLES):
        level_mask = mid_mask if level_affine is mid_affine else _mask_on(mid_mask, mid_affine, level_affine, level_array.shape)
        levels.append(_level(level_array, level_affine, level_mask, n, rng))
    lo, hi = np.percentile(levels[-1].values, [2, 98])
    scale = 0.15 * float(hi - lo) if hi > lo else 1.0
    return _Prepared(_Search(n0, center, scale), levels, mid_mask, mid_affine)


def _bounds(max_tilt_deg: float) -> np.ndarray:
    # Bounded, so that a flat objective (a slab, noise) cannot send the normal to 90 degrees;
    # a fit at the bound is flagged.
    return np.array([[-max_tilt_deg - 5.0, max_tilt_deg + 5.0]] * 2 + [[-_MAX_OFFSET_MM, _MAX_OFFSET_MM]])


def _refine(search: "_Search", level: _Level, x0, span, bounds, maxfev=300, xtol=1e-2, ftol=1e-6):
    """Powell from ``x0``, local: without scipy's ``bounds``, whose line searches scan the whole
    feasible segment and can jump to a worse, distant basin. Outside the bounds the loss is
    that of the nearest feasible plane plus a slope back towards them."""

    def loss(p):
        clipped = np.clip(p, bounds[:, 0], bounds[:, 1])
        return search.loss(level, clipped) + 0.01 * float(np.abs(p - clipped).sum())

    res = scipy.optimize.minimize(
        loss,
        np.clip(x0, bounds[:, 0], bounds[:, 1]),
        method="Powell",
        options={"xtol": xtol, "ftol": ftol, "direc": np.diag(span), "maxfev": maxfev},
    )
    x = np.clip(res.x, bounds[:, 0], bounds[:, 1])
    return x, search.loss(level, x)


def _search(prep: _Prepared, max_tilt_deg: float, wide: bool = False):
    """Coarse to fine; returns the best parameters and the distinct 3 mm minima (rivals).

    ``wide``: start from the best grid node of each ninth of the tilt square (3 x 3 cells)
    instead of the best distinct nodes: slower, for a retry when the first fit is flat.
    """
    search, levels = prep.search, prep.levels
    # Coarse: exhaustive over tilts and offsets, on the 6 mm level.
    # A 7 degree grid: the best node is within 3.5 degrees of the optimum on each angle,
    # well inside the basin Powell converges from at 6 mm.
    step = 7.0
    angles = np.linspace(-max_tilt_deg, max_tilt_deg, 2 * int(np.ceil(max_tilt_deg / step)) + 1)
    # Offsets from -24 to 24 mm around the centre of mass: in a slab or a partial view the
    # centre of mass can lie far from the plane (a tilted head cut near one end). Half the
    # 6 mm samples are enough to rank the grid.
    offsets = np.arange(-24.0, 24.1, 6.0)
    grid = [(a, b, t) for a in angles for b in angles for t in offsets]
    rank_level = _Level(levels[0].array, levels[0].inv_affine, levels[0].points[::2], levels[0].values[::2])
    losses = np.array([search.loss(rank_level, g) for g in grid])
    starts = []
    if wide:
        cells = np.array([np.digitize(g[:2], np.linspace(-max_tilt_deg, max_tilt_deg, 4)[1:-1]) for g in grid])
        for cell in {tuple(c) for c in cells}:
            members = np.flatnonzero((cells == cell).all(axis=1))
            starts.append(np.array(grid[members[np.argmin(losses[members])]]))
    else:
        for index in np.argsort(losses):  # the best starts that are not neighbours of each other
            g = np.array(grid[index])
            if all(np.abs(g[:2] - s[:2]).max() > step * 1.5 for s in starts):
                starts.append(g)
            if len(starts) == _STARTS:
                break
    bounds = _bounds(max_tilt_deg)
    # 6 mm only has to find the basin (0.1 degree / mm tolerance); 3 mm and the finest level
    # polish.
    candidates = sorted((_refine(search, levels[0], s, [step / 2, step / 2, 3.0], bounds, xtol=0.1, ftol=1e-4) for s in starts), key=lambda c: c[1])
    # The distinct 6 mm solutions compete again at 3 mm, where a slab or a partial view
    # has enough detail to tell the true basin from a coarse-level impostor.
    finalists = []
    for x, _ in candidates:
        if all(np.abs(x[:2] - f[:2]).max() > 2.0 for f in finalists):
            finalists.append(x)
    at_mid = sorted((_refine(search, levels[1], f, [1.0, 1.0, 1.0], bounds, xtol=0.03) for f in finalists), key=lambda c: c[1])
    best, _ = _refine(search, levels[2], at_mid[0][0], [0.3, 0.3, 0.3], bounds, maxfev=120)
    return best, [x for x, _ in at_mid[1:]]


def _features(prep: _Prepared, params, rivals=(), max_tilt_deg: float = MAX_TILT_DEG) -> dict:
    """What the confidence rule reads, measured on the finest level at ``params``.

    - ``agreement``: share of head voxels matching their mirror, among those whose mirror
      is in the field of view (1 - mean robust loss there).
    - ``coverage``: share of head voxels whose mirror is in the field of view.
    - ``correlation``: Pearson correlation of those voxel / mirror pairs.
    - ``sharpness``: the least rise of the objective (``1 - agreement * coverage ** 0.5``)
      when the plane is tilted by 2 degrees or moved by 2 mm: how well the data pin the
      plane down. A flat objective (a wrong basin in a slab, noise) gives about 0.
    - ``rival_gap``: how much worse the best distinct rival minimum is (NaN without one).
    - ``at_edge``: the fit reached the bound of the search.
    """
    search, fine = prep.search, prep.levels[-1]
    params = np.asarray(params, dtype=np.float64)
    agreement, coverage = search.terms(fine, params)
    loss = search.loss(fine, params)
    moves = np.vstack([np.eye(3) * 2.0, -np.eye(3) * 2.0])
    sharpness = min(search.loss(fine, params + m) for m in moves) - loss
    rival = [x for x in rivals if max(abs(x[0] - params[0]), abs(x[1] - params[1])) > 3.0]
    rival_gap = min((search.loss(fine, x) for x in rival), default=float("nan")) - loss
    return dict(
        agreement=float(agreement),
        coverage=float(coverage),
        correlation=float(search.correlation(fine, params)),
        sharpness=float(sharpness),
        rival_gap=float(rival_gap),
        at_edge=bool(max(abs(params[0]), abs(params[1])) > max_tilt_deg - 0.5 or abs(params[2]) > _MAX_OFFSET_MM - 0.5),
    )


def estimate_msp(
    image: Image,
    *,
    mask=None,
    on_failure: str = "error",
    max_tilt_deg: float = MAX_TILT_DEG,
    seed: int = 0,
    on_not_head: str = "warn",
) -> MidSagittalPlane:
    """Estimate the mid-sagittal plane of a head scan (MRI of any contrast, or CT).

    Args:
        image: scalar ``(X, Y, Z)`` image, or ``(C, X, Y, Z)``: fitted on the first channel;
            when that fit is not confident or finds no sagittal plane, on the next channels
            in order, and the first confident fit is returned (``channel``, and a line in
            ``warnings`` naming both channels); if none is, the first channel's result.
            Any storage orientation, oblique or not. Left-right is found from the affine.
        mask: optional head/brain mask on the image's grid (array or Image, non-zero = head);
            by default :func:`head_mask` (Otsu, largest component).
        on_failure: what to do when no plane can be estimated (no head, degenerate mask):
            ``"error"`` raises :class:`InputError`; ``"axes"`` returns :func:`axes_plane`
            with ``confident=False`` and the reason in ``message``. A structurally wrong
            input (not a 3D volume, a mask of another shape) always raises.
        max_tilt_deg: half-width of the coarse search over the normal's two tilt angles.
        seed: seed of the voxel sampling (results are deterministic for a given seed).
        on_not_head: what to do when the image does not show a head
            (:func:`~SymmetryAwareCore.geometry.head_check.check_head`: a chest, an abdomen):
            ``"warn"`` estimates the plane anyway, flagged not confident, with the reason in
            ``warnings``; ``"error"`` raises :class:`InputError` (one line) before the search.

    Returns:
        the plane in RAS mm, with its symmetry score, a confidence flag and its reasons
        (``message``), the head check (``head``) and one-line ``warnings``.
    """
    if on_failure not in ("error", "axes"):
        raise ValueError(f"on_failure must be 'error' or 'axes', got {on_failure!r}")
    if on_not_head not in ("warn", "error"):
        raise ValueError(f"on_not_head must be 'warn' or 'error', got {on_not_head!r}")
    array = _scalar_volume(image)
    user_mask = None if mask is None else _check_mask(mask, image, array)
    first = None
    for channel in range(_channel_count(image)):
        fit = _fit_channel(image, channel, user_mask, max_tilt_deg, seed, on_not_head)
        if isinstance(fit, MidSagittalPlane) and fit.confident:
            if channel == 0:
                return fit
            why = first.message if isinstance(first, MidSagittalPlane) else first
            note = (f"mid-sagittal plane fitted on channel {_channel_label(image, channel)}: the fit on "
                    f"channel {_channel_label(image, 0)} was not confident ({why})")
            return replace(fit, channel=channel, warnings=fit.warnings + (note,))
        if first is None:
            first = fit
            # Not a head is a fact about the scan, not about one contrast: no other channel
            # would be confident either.
            if isinstance(fit, MidSagittalPlane) and fit.head and not fit.head.get("is_head", True):
                break
    # No channel is confident: the first channel's result, as for a single-channel scan.
    if isinstance(first, MidSagittalPlane):
        return first
    if on_failure == "error":
        raise InputError(first, image.source)
    return axes_plane(image, user_mask, message=first)


def _channel_label(image: Image, channel: int) -> str:
    names = list(getattr(image, "channel_names", None) or ())
    return f"{channel + 1} ({names[channel]})" if channel < len(names) and names[channel] else str(channel + 1)


def _fit_channel(image: Image, channel: int, user_mask, max_tilt_deg: float, seed: int, on_not_head: str):
    """The plane fitted on one channel, or a string saying why none was found there.

    Raises :class:`InputError` for a scan that is not a head when ``on_not_head="error"``.
    """
    prep = _prepare(image, user_mask, seed, channel)
    if isinstance(prep, str):
        return prep
    level = prep.levels[1]  # the 3 mm level, where the head mask was found
    head = check_head(Image(level.array, np.linalg.inv(level.inv_affine)), prep.mask)
    if not head.is_head and on_not_head == "error":
        raise InputError(head.reason, image.source)
    search = prep.search
    best, rivals = _search(prep, max_tilt_deg)
    features = _features(prep, best, rivals, max_tilt_deg)
    if features["sharpness"] < MIN_SHARPNESS:
        # A flat fit is a wrong basin (a slab, a partial view) or a scan with little to go
        # on: search again from every region of the tilt square, and keep the better fit.
        retry, retry_rivals = _search(prep, max_tilt_deg, wide=True)
        if search.loss(prep.levels[-1], retry) < search.loss(prep.levels[-1], best) - 1e-6:
            best, rivals = retry, retry_rivals + [best]
            features = _features(prep, best, rivals, max_tilt_deg)
    normal, point = search.plane(best)
    problem = not_sagittal(normal)
    if problem is not None:
        # The search can end in a wrong basin tilted past 45 degrees (seen on a 1.5 mm
        # phantom's T1, tilted 18 degrees): no mid-sagittal plane was found, so it is a
        # failure, refused or replaced by the caller, before anything is computed in its frame.
        return f"no mid-sagittal plane found: the best fit's {problem.split(': not a')[0]}"
    # Report the plane at the brain centre: the projection of the centre of mass.
    point = search.center - ((search.center - point) @ normal) * normal
    tilt = float(np.degrees(np.arccos(np.clip(abs(normal @ search.n0), 0, 1))))
    confident, reasons = _confidence(features, max_tilt_deg)
    if not head.is_head:
        reasons.insert(0, head.reason)
        confident = False
    return MidSagittalPlane(
        normal=normal,
        point=point,
        symmetry_score=features["agreement"] * features["coverage"] ** COVERAGE_POWER,
        correlation=features["correlation"],
        confident=confident,
        method="mirror-registration",
        center=search.center,
        tilt_deg=tilt,
        message="; ".join(reasons),
        features=features,
        head=head.to_dict(),
        warnings=() if head.is_head else (head.reason,),
        channel=channel,
    )


def _confidence(features: dict, max_tilt_deg: float) -> Tuple[bool, list]:
    """The confidence rule (:data:`CONFIDENCE_RULE`): ``(confident, reasons)``."""
    reasons = []
    if not features["sharpness"] >= MIN_SHARPNESS:
        reasons.append(
            f"the plane is not pinned down: moving it 2 degrees or 2 mm changes the symmetry "
            f"by {features['sharpness']:.3f} (< {MIN_SHARPNESS})"
        )
    if not features["coverage"] >= MIN_COVERAGE:
        reasons.append(f"only {100 * features['coverage']:.0f} % of the head has its mirror image in the field of view (< {100 * MIN_COVERAGE:.0f} %)")
    if not features["agreement"] >= MIN_AGREEMENT:
        reasons.append(f"low symmetry: {100 * features['agreement']:.0f} % of the head matches its mirror image (< {100 * MIN_AGREEMENT:.0f} %)")
    if not features["correlation"] >= MIN_CORRELATION:
        reasons.append(f"low mirror correlation {features['correlation']:.2f} (< {MIN_CORRELATION})")
    if features["rival_gap"] < MIN_RIVAL_GAP:  # NaN (no rival) passes
        reasons.append(f"another plane fits almost as well (symmetry within {features['rival_gap']:.3f})")
    if features["at_edge"]:
        reasons.append(f"the fit reached the edge of the search ({max_tilt_deg:.0f} degrees, {_MAX_OFFSET_MM:.0f} mm)")
    return not reasons, reasons
