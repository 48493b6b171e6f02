"""The image type every part of the project passes around.

An :class:`Image` is a voxel array and the 4x4 matrix that maps voxel indices to world
coordinates in RAS millimetres (+x towards the patient's Right, +y Anterior, +z Superior),
exactly as a NIfTI ``affine``. Arrays are indexed ``[i, j, k]`` like nibabel, never in
SimpleITK's ``[k, j, i]`` order; readers convert at the boundary so that nothing else has to.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

__all__ = ["Image", "LPS_TO_RAS"]

# DICOM, ITK and NRRD files think in LPS; RAS = diag(-1, -1, 1) * LPS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Image:
    """A 3D image, scalar or multi-channel, with its voxel-to-RAS transform.

    Attributes:
        array: ``(X, Y, Z)`` for a scalar image or ``(C, X, Y, Z)`` with channels first.
            Axis order follows the voxel indices ``(i, j, k)`` of ``affine``.
        affine: ``(4, 4)`` float64; ``affine @ [i, j, k, 1]`` is the voxel centre in RAS mm.
        channel_names: one name per channel (``("t1", "t1ce", "t2", "flair")``), or empty.
        source: where the image came from (a path), for messages.
    """

    array: np.ndarray
    affine: np.ndarray
    channel_names: Sequence[str] = field(default_factory=tuple)
    source: Optional[str] = None

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.array.ndim not in (3, 4):
            raise ValueError(f"array must be (X, Y, Z) or (C, X, Y, Z), got shape {self.array.shape}")
        self.channel_names = tuple(self.channel_names)

    @property
    def spatial_shape(self) -> tuple:
        """``(X, Y, Z)``, whatever the channel count."""
        return tuple(self.array.shape[-3:])

    @property
    def num_channels(self) -> int:
        """1 for a scalar image, C for a ``(C, X, Y, Z)`` one."""
        return 1 if self.array.ndim == 3 else int(self.array.shape[0])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k (norms of the affine's columns)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """``(3, 3)`` unit column vectors: the RAS direction of the i, j, k axes."""
        return self.affine[:3, :3] / self.spacing

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Map ``(N, 3)`` voxel coordinates to ``(N, 3)`` RAS mm."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Map ``(N, 3)`` RAS mm to ``(N, 3)`` continuous voxel coordinates."""
        inv = np.linalg.inv(self.affine)
        xyz = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
        return xyz @ inv[:3, :3].T + inv[:3, 3]

    def with_array(self, array: np.ndarray, channel_names: Sequence[str] = ()) -> "Image":
        """The same geometry with another array of the same spatial shape."""
        if tuple(array.shape[-3:]) != self.spatial_shape:
            raise ValueError(f"spatial shape {array.shape[-3:]} differs from {self.spatial_shape}")
        return replace(self, array=array, channel_names=tuple(channel_names))

    def same_grid(self, other: "Image", atol: float = 1e-3) -> bool:
        """True when both images have the same spatial shape and affine (to ``atol`` mm)."""
        return self.spatial_shape == other.spatial_shape and bool(
            np.allclose(self.affine, other.affine, atol=atol)
        )

    def channel(self, index: int) -> "Image":
        """One channel as a scalar image."""
        if self.array.ndim == 3:
            if index != 0:
                raise IndexError(index)
            return self
        name = (self.channel_names[index],) if self.channel_names else ()
        return Image(self.array[index], self.affine.copy(), (), self.source if not name else f"{self.source}[{name[0]}]")
