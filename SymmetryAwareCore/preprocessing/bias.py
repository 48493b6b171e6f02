"""MRI intensity bias-field correction (N4), the optional first step of preparation.

Why it matters here: a smooth receive-coil field that makes one hemisphere brighter than the
other is, to a network that compares each region with its mirror, a one-sided hyperintensity.
On the glioma phantoms the default model's false tumour in healthy heads sits in the brighter
FLAIR hemisphere (docs/models.md, "What drives the default model's false tumour").

:func:`n4_correct` runs SimpleITK's ``N4BiasFieldCorrectionImageFilter`` on each channel:
the field is fitted at 1/``shrink`` of the resolution (3 levels of 50 iterations) inside the
channel's non-zero voxels and divided out at full resolution; voxels outside stay 0. The
image geometry handed to ITK is the scan's own (LPS direction and origin from the RAS
affine), so the result is that of N4 run on the file as ITK reads it.
"""

from __future__ import annotations

import numpy as np

from ..io.image import Image

__all__ = ["n4_correct", "check_bias_correction", "bias_correction_applies", "N4_SHRINK", "N4_ITERATIONS"]

N4_SHRINK = 4
"""The field is fitted on the image shrunk by this factor along each axis (it is smooth)."""

N4_ITERATIONS = (50, 50, 50)
"""Iterations at each of N4's fitting levels."""

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def check_bias_correction(is_ct: bool) -> None:
    """Refuse bias correction for a CT model (one line): Hounsfield units are calibrated, and
    N4's multiplicative field is meaningless for them. Called before any work."""
    if is_ct:
        from ..errors import InputError

        raise InputError("--bias-correction is for MRI; this model takes CT (Hounsfield units are calibrated)")


def bias_correction_applies(card_asks: bool, is_ct: bool, requested: "bool | None" = None) -> bool:
    """Whether N4 runs on a case: the run's choice when it makes one (``--bias-correction``
    True, ``--no-bias-correction`` False), else what the model card's preprocessing asks
    (``card_asks``). Asking for it on a CT model is refused (:func:`check_bias_correction`).
    The one rule of the CLI, the Slicer module, the interactive session and training."""
    if requested is None:
        return bool(card_asks)
    if requested:
        check_bias_correction(is_ct)
    return bool(requested)


def _to_itk(volume: np.ndarray, affine: np.ndarray):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.transpose(2, 1, 0), dtype=np.float32))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = _RAS_TO_LPS @ (affine[:3, :3] / spacing)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in direction.ravel()])
    image.SetOrigin([float(v) for v in _RAS_TO_LPS @ affine[:3, 3]])
    return image


def _n4_channel(volume: np.ndarray, affine: np.ndarray, shrink: int) -> np.ndarray:
    import SimpleITK as sitk

    image = _to_itk(volume, affine)
    mask = sitk.BinaryThreshold(image, 1e-6, 1e30, 1, 0)
    if not np.any(volume > 1e-6):
        return volume.astype(np.float32)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(N4_ITERATIONS))
    corrector.Execute(sitk.Shrink(image, [shrink] * 3), sitk.Shrink(mask, [shrink] * 3))
    log_field = corrector.GetLogBiasFieldAsImage(image)
    corrected = sitk.Mask(image / sitk.Exp(log_field), mask)
    return sitk.GetArrayFromImage(corrected).transpose(2, 1, 0).astype(np.float32)


def n4_correct(image: Image, shrink: int = N4_SHRINK) -> Image:
    """``image`` (``(X, Y, Z)`` or ``(C, X, Y, Z)``, MRI) with each channel's bias field removed.

    Same grid, same channel names; a channel with no positive voxel is returned unchanged.
    """
    array = np.asarray(image.array, dtype=np.float32)
    if array.ndim == 3:
        corrected = _n4_channel(array, image.affine, shrink)
    else:
        corrected = np.stack([_n4_channel(channel, image.affine, shrink) for channel in array])
    return Image(corrected, image.affine, image.channel_names, image.source)
