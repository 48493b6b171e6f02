"""Is this image a head? A size check on the imaged body, for MRI of any contrast and CT.

The mid-sagittal plane search finds a plane of symmetry in anything roughly symmetric: a
chest CT gets a plane with a good score. This check says when the body in view is too
large to be a head, so the user is warned (or the image refused) before a head model runs.

Rule (all in world millimetres, so voxel size and storage order do not matter): the body
is cut into 10 mm axial slabs (along RAS S); in the top ``TOP_MM`` of the body (a head scan
that also shows the neck or shoulders is judged by its head) the widest slab must be at
most ``MAX_WIDTH_MM`` from left to right and ``MAX_DEPTH_MM`` from front to back. Adult
heads measure about 140-165 mm by 175-205 mm with the scalp; a chest or an abdomen is
250-450 mm wide. A slab or a partial view of a head only ever measures smaller. Objects
smaller than a head (a child, a phantom, a cropped brain) are not flagged: size cannot tell
them apart, and the check exists to catch the body part being wrong, not the anatomy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..io.image import Image

__all__ = ["HeadCheck", "check_head", "MAX_WIDTH_MM", "MAX_DEPTH_MM", "TOP_MM"]

MAX_WIDTH_MM = 230.0
"""Widest left-right extent of a head (scalp included) with a margin for large heads and
head holders in view."""

MAX_DEPTH_MM = 280.0
"""Longest front-back extent of a head (nose to occiput is about 210 mm)."""

TOP_MM = 120.0
"""The head is judged on the top this many mm of the body in view."""

_SLAB_MM = 10.0


@dataclass(frozen=True)
class HeadCheck:
    """Result of :func:`check_head`.

    Attributes:
        is_head: ``False`` when the body in view is too large to be a head.
        reason: one line saying why it is not a head (empty when it is).
        width_mm, depth_mm: widest left-right and front-back extents of a 10 mm axial slab
            in the top ``TOP_MM`` of the body (NaN without a body).
        height_mm: superior-inferior extent of the body in view.
        rule: the rule applied, in words.
    """

    is_head: bool
    reason: str
    width_mm: float
    depth_mm: float
    height_mm: float
    rule: str = (
        f"not a head if, in the top {TOP_MM:.0f} mm of the body, an axial 10 mm slab is wider than "
        f"{MAX_WIDTH_MM:.0f} mm (left-right) or deeper than {MAX_DEPTH_MM:.0f} mm (front-back)"
    )

    def to_dict(self) -> dict:
        return asdict(self)


def check_head(image: Image, mask: np.ndarray = None) -> HeadCheck:
    """Say whether ``image`` (scalar or ``(C, X, Y, Z)``, first channel) shows a head.

    ``mask``: the body mask on the image's grid if already known (else
    :func:`~SymmetryAwareCore.geometry.msp.head_mask`, which handles CT padding).
    Coarse images are fine (3 mm is plenty); a 1 mm image costs about a second.
    """
    if mask is None:
        from .msp import head_mask

        mask = head_mask(image)
    mask = np.asarray(mask, bool)
    if not mask.any():
        nan = float("nan")
        return HeadCheck(True, "", nan, nan, nan)
    xyz = image.voxel_to_world(np.argwhere(mask))
    top = xyz[:, 2].max()
    height = float(top - xyz[:, 2].min())
    near_top = xyz[xyz[:, 2] > top - TOP_MM]
    slab = np.floor((top - near_top[:, 2]) / _SLAB_MM).astype(int)
    width = depth = 0.0
    for k in np.unique(slab):
        part = near_top[slab == k]
        width = max(width, float(np.ptp(part[:, 0])))
        depth = max(depth, float(np.ptp(part[:, 1])))
    spacing = float(np.mean(image.spacing))
    width, depth = width + spacing, depth + spacing  # voxel centres to voxel edges
    reasons = []
    if width > MAX_WIDTH_MM:
        reasons.append(f"{width:.0f} mm wide")
    if depth > MAX_DEPTH_MM:
        reasons.append(f"{depth:.0f} mm deep")
    reason = ""
    if reasons:
        reason = (
            f"not a head: the body in view is {' and '.join(reasons)} near its top "
            f"(a head is at most about {MAX_WIDTH_MM:.0f} x {MAX_DEPTH_MM:.0f} mm)"
        )
    return HeadCheck(not reasons, reason, width, depth, height)
