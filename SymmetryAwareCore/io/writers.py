"""Writers: every output lands on the grid of the image it belongs to, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import nibabel as nib
import numpy as np

from .atomic import atomic_path
from .image import Image

__all__ = ["write_nifti"]


def write_nifti(image: Image, path: Union[str, Path], dtype: Optional[np.dtype] = None) -> Path:
    """Write a scalar ``image`` as NIfTI (``.nii`` or ``.nii.gz``) with its exact affine.

    Multi-channel images are written as ``(X, Y, Z, C)`` (NIfTI keeps channels last).
    """
    path = Path(path)
    array = image.array if dtype is None else image.array.astype(dtype)
    if array.ndim == 4:
        array = np.moveaxis(array, 0, -1)
    nii = nib.Nifti1Image(np.ascontiguousarray(array), image.affine)
    nii.set_qform(image.affine, code=1)
    nii.set_sform(image.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(nii, str(tmp))
    return path
