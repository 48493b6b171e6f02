"""Real anatomy for the phantoms: the MNI152 2009a symmetric template and its tissue maps.

The template ships inside nilearn (no network). It is exactly left-right symmetric about
x = 0 mm, which is what makes it the ground truth of the mid-sagittal plane: in template
space the plane is x = 0, normal (1, 0, 0).

Maps are resampled once per working spacing onto a grid centred on x = 0 (voxel
``(X - 1) / 2`` of axis 0 sits at x = 0, so the grid's own left-right flip is the anatomical
mirror), padded so that a skull and scalp shell fit around the brain. All arrays are
``(X, Y, Z)`` with axis 0 left -> right (RAS).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["Anatomy", "load_anatomy", "template_path", "SHELL_MM", "SUPPORT_MARGIN_MM"]

# Outward distances (mm) from the brain hull: subarachnoid CSF, then bone, then scalp.
SHELL_MM = {"csf": 2.0, "skull": 8.0, "scalp": 13.0}
_PAD_MM = 20.0
SUPPORT_MARGIN_MM = 12.0


def template_path(name: str) -> Path:
    """Path of one nilearn MNI152 2009a symmetric file: ``name`` in ``t1``, ``gm``, ``wm``."""
    try:
        import nilearn.datasets  # only the phantom generator needs it (an optional extra)
    except ImportError:
        raise ImportError("the phantom generator needs nilearn: pip install 'symmetryawareseg[phantoms]'") from None

    return Path(nilearn.datasets.__file__).parent / "data" / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"


@dataclass(frozen=True)
class Anatomy:
    """Template tissue maps on a grid centred on the mid-sagittal plane.

    Attributes:
        affine: ``(4, 4)`` voxel -> template mm (RAS, axis 0 left -> right, x = 0 at the
            centre voxel of axis 0).
        gm, wm: grey / white matter fractions in [0, 1], ``(X, Y, Z)`` float32.
        intracranial: soft fraction of the space inside the dura (brain + CSF).
        skull, scalp: soft fractions of the bone and soft-tissue shells (for CT).
        depth_mm: distance from the brain hull's surface, inside it (0 outside).
        ventricle_centres: ``(2, 3)`` template mm of the left then right lateral ventricle.
        brain_support, head_support: bool masks of the intracranial space / whole head,
            dilated by ``SUPPORT_MARGIN_MM`` so that they still hold a deformed subject.
    """

    affine: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    intracranial: np.ndarray
    skull: np.ndarray
    scalp: np.ndarray
    depth_mm: np.ndarray
    ventricle_centres: np.ndarray
    brain_support: np.ndarray
    head_support: np.ndarray

    @property
    def spacing(self) -> float:
        return float(self.affine[0, 0])

    @property
    def shape(self) -> tuple:
        return tuple(self.gm.shape)

    @property
    def csf(self) -> np.ndarray:
        """CSF fraction: what the intracranial space holds besides grey and white matter."""
        return np.clip(self.intracranial - self.gm - self.wm, 0.0, 1.0)

    def points_mm(self, index: np.ndarray) -> np.ndarray:
        """Template mm of ``(N, 3)`` voxel indices."""
        return np.asarray(index, dtype=np.float64) @ self.affine[:3, :3].T + self.affine[:3, 3]

    def head_extent_mm(self, with_scalp: bool) -> np.ndarray:
        """``(2, 3)`` min / max template mm of the head (scalp included) or the brain."""
        mask = (self.scalp + self.skull + self.intracranial) > 0.05 if with_scalp else self.intracranial > 0.05
        idx = np.argwhere(mask)
        return self.points_mm(np.stack([idx.min(0), idx.max(0)]))


def _load(name: str) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(template_path(name)))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def _soft_inside(distance_mm: np.ndarray, limit_mm: float, spacing: float) -> np.ndarray:
    # A linear ramp one voxel wide gives partial-volume edges instead of staircases.
    return np.clip((limit_mm - distance_mm) / spacing + 0.5, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=3)
def load_anatomy(spacing: float = 2.0) -> Anatomy:
    """Template tissue maps resampled to ``spacing`` mm isotropic (cached per spacing).

    The 1 mm maps are low-pass filtered before resampling so coarse grids keep partial
    volume instead of aliasing.
    """
    spacing = float(spacing)
    t1, src_affine = _load("t1")
    gm, _ = _load("gm")
    wm, _ = _load("wm")
    gm /= 255.0
    wm /= 255.0
    brain = (t1 > 0).astype(np.float32)

    src_min = src_affine[:3, 3]
    src_max = src_min + (np.array(t1.shape) - 1) * np.diag(src_affine)[:3]
    half_x = max(abs(src_min[0]), abs(src_max[0])) + _PAD_MM
    nx = 2 * int(np.ceil(half_x / spacing)) + 1
    lo = np.array([-(nx - 1) / 2 * spacing, src_min[1] - _PAD_MM, src_min[2] - _PAD_MM])
    hi = np.array([(nx - 1) / 2 * spacing, src_max[1] + _PAD_MM, src_max[2] + _PAD_MM])
    shape = tuple(int(n) for n in np.floor((hi - lo) / spacing + 1e-6).astype(int) + 1)
    shape = (nx,) + shape[1:]
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = lo

    # Voxel coordinates of the new grid in the 1 mm source grid (axis-aligned, so separable).
    src_inv = np.linalg.inv(src_affine)
    axes = [lo[a] + spacing * np.arange(shape[a]) for a in range(3)]
    src_axes = [(axes[a] - src_affine[a, 3]) * src_inv[a, a] for a in range(3)]
    coords = np.meshgrid(*src_axes, indexing="ij")
    sigma = 0.4 * spacing if spacing > 1.0 else 0.0

    def resample(volume: np.ndarray) -> np.ndarray:
        if sigma > 0:
            volume = ndimage.gaussian_filter(volume, sigma)
        return ndimage.map_coordinates(volume, coords, order=1, cval=0.0).astype(np.float32)

    gm_r, wm_r, brain_r = resample(gm), resample(wm), resample(brain)

    # Brain hull: the brain mask closed over the sulci, so the shell hugs the cortex surface.
    hull = ndimage.gaussian_filter(brain_r, 4.0 / spacing) > 0.3
    hull = ndimage.binary_fill_holes(hull)
    outside = ndimage.distance_transform_edt(~hull) * spacing
    depth = (ndimage.distance_transform_edt(hull) * spacing).astype(np.float32)
    inner = _soft_inside(outside, SHELL_MM["csf"], spacing)
    # Grey and white matter cannot exceed the intracranial space.
    total = gm_r + wm_r
    scale = np.where(total > inner, inner / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    gm_r *= scale
    wm_r *= scale
    skull = _soft_inside(outside, SHELL_MM["skull"], spacing) - inner
    scalp = _soft_inside(outside, SHELL_MM["scalp"], spacing) - inner - skull

    # Ventricles: CSF-dominated voxels deep in the brain beside the midline, per side.
    csf = np.clip(inner - gm_r - wm_r, 0, 1)
    pts_x, pts_y, pts_z = axes
    gx, gy, gz = np.meshgrid(pts_x, pts_y, pts_z, indexing="ij")
    box = (np.abs(gx) > 3) & (np.abs(gx) < 30) & (gy > -45) & (gy < 25) & (gz > 0) & (gz < 35) & (csf > 0.5)
    centres = []
    for side in (-1, 1):
        sel = box & (np.sign(gx) == side)
        centres.append([gx[sel].mean(), gy[sel].mean(), gz[sel].mean()])

    anatomy = Anatomy(
        affine=affine,
        gm=gm_r,
        wm=wm_r,
        intracranial=inner,
        skull=np.clip(skull, 0, 1).astype(np.float32),
        scalp=np.clip(scalp, 0, 1).astype(np.float32),
        depth_mm=depth,
        ventricle_centres=np.asarray(centres),
        brain_support=outside <= SHELL_MM["csf"] + SUPPORT_MARGIN_MM,
        head_support=outside <= SHELL_MM["scalp"] + SUPPORT_MARGIN_MM,
    )
    # The result is cached and shared by every subject: make it read-only.
    for value in vars(anatomy).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return anatomy
