"""Smooth deformations that make each phantom subject different, and lesion mass effect.

Every map here is *backward* and analytic: it takes ``(N, 3)`` points in one space and
returns where they come from in the previous one, so the whole chain output grid ->
head space -> template space is evaluated once per voxel with no repeated resampling.

Spaces: *template* is MNI152 symmetric mm; *head* is the subject's anatomy before the
head pose (healthy variation and lesions applied); the pose then places the head in the
scanner world.

The healthy variation is mirror-symmetric about x = 0 (its x component is odd in x, the
others even), so the template's mid-sagittal plane x = 0 is mapped onto itself: in head
space the true plane is still x = 0. The optional natural asymmetry (one hemisphere a
little larger, one lateral ventricle a little wider) also leaves x = 0 in place: the
hemisphere scaling is continuous and fixes x = 0, and the ventricle inflation is small.
A lesion's mass effect may push tissue across x = 0 (a midline shift, as in patients):
that is pathology, not a change of the head's plane of symmetry, which stays x = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

__all__ = ["SmoothField", "RadialPush", "HealthyVariation", "head_to_template"]


@dataclass(frozen=True)
class SmoothField:
    """A smooth random vector field, a sum of random plane waves, mirror-symmetric in x.

    ``f(p) = sum_k a_k sin(w_k . p + phi_k)``, then symmetrised:
    ``u(p) = (f(p) + M f(M p)) / 2`` with ``M = diag(-1, 1, 1)``.

    Attributes:
        amplitudes: ``(K, 3)`` mm; frequencies ``(K, 3)`` rad/mm; phases ``(K,)``.
    """

    amplitudes: np.ndarray
    frequencies: np.ndarray
    phases: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, amplitude_mm: float, wavelength_mm: float, waves: int = 8) -> "SmoothField":
        """About ``amplitude_mm`` of displacement, features about ``wavelength_mm`` wide."""
        directions = rng.normal(size=(waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        lengths = wavelength_mm * rng.uniform(0.7, 1.4, size=(waves, 1))
        freqs = 2 * np.pi * directions / lengths
        amps = rng.normal(size=(waves, 3)) * amplitude_mm / np.sqrt(waves / 2)
        return cls(amps, freqs, rng.uniform(0, 2 * np.pi, size=waves))

    def raw(self, p: np.ndarray) -> np.ndarray:
        """The field before symmetrisation, ``(N, 3)`` at ``(N, 3)`` points (lesion outlines use it)."""
        out = np.zeros_like(p)
        for a, w, phi in zip(self.amplitudes, self.frequencies, self.phases):
            out += np.sin(p @ w + phi)[:, None] * a[None, :]
        return out

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` displacement in mm at ``(N, 3)`` points."""
        mirror = np.array([-1.0, 1.0, 1.0])
        return 0.5 * (self.raw(points) + self.raw(points * mirror) * mirror)


@dataclass(frozen=True)
class RadialPush:
    """Tissue pushed outward by a mass of volume ``4/3 pi radius_mm**3`` grown at ``centre``.

    A point at distance ``r0`` from the centre moves to ``r = (r0**3 + radius**3)**(1/3)``
    (volume is conserved outside the mass); the push fades beyond ``fade_mm`` so that far
    tissue and the skull stay put. The backward map sends ``r`` to ``r0``.
    """

    centre: np.ndarray
    radius_mm: float
    fade_mm: float = 50.0

    def displacement_at(self, points: np.ndarray) -> np.ndarray:
        """Backward displacement ``(N, 3)``: source point minus ``points``."""
        d = points - np.asarray(self.centre)[None, :]
        r = np.linalg.norm(d, axis=1)
        r0 = np.cbrt(np.maximum(r**3 - self.radius_mm**3, 0.0))
        shrink = (r - r0) * np.exp(-((r / self.fade_mm) ** 2))
        unit = d / np.maximum(r, 1e-6)[:, None]
        return -shrink[:, None] * unit

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return points + self.displacement_at(points)


@dataclass(frozen=True)
class HealthyVariation:
    """One subject's healthy anatomy: global size, symmetric warp, optional asymmetry.

    Attributes:
        scale: ``(3,)`` head size relative to the template along x, y, z.
        warp: the mirror-symmetric smooth field (mm), or None.
        hemisphere_scale: extra size of one hemisphere along x (0.03 = 3 % wider); its sign
            picks the side (> 0 right, < 0 left).
        ventricle_push: inflation of one lateral ventricle, or None.
    """

    scale: np.ndarray = field(default_factory=lambda: np.ones(3))
    warp: Optional[SmoothField] = None
    hemisphere_scale: float = 0.0
    ventricle_push: Optional[RadialPush] = None

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Template mm of ``(N, 3)`` healthy-head points (backward map)."""
        p = points
        if self.ventricle_push is not None:
            p = self.ventricle_push(p)
        if self.hemisphere_scale:
            side = np.sign(self.hemisphere_scale)
            grow = np.where(np.sign(p[:, 0]) == side, 1.0 / (1.0 + abs(self.hemisphere_scale)), 1.0)
            p = p * np.stack([grow, np.ones_like(grow), np.ones_like(grow)], axis=1)
        if self.warp is not None:
            p = p + self.warp(p)
        return p / np.asarray(self.scale)[None, :]


def head_to_template(points: np.ndarray, healthy: HealthyVariation, pushes: Sequence[RadialPush] = ()) -> np.ndarray:
    """Template mm that head-space ``(N, 3)`` points show: lesion pushes first, then anatomy.

    Lesions grow in the subject's own anatomy, so their mass effect is undone before the
    healthy variation maps the points back to the template.
    """
    p = np.asarray(points, dtype=np.float64)
    for push in pushes:
        p = push(p)
    return healthy(p)

