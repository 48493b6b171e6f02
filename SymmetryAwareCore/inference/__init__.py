"""Inference on volumes aligned to their mid-sagittal plane.

Modules (imported on demand, so that listing cases stays free of torch):

* :mod:`.engine`: :class:`~.engine.InferenceSettings` and :func:`~.engine.run_paired_inference`,
  the one call the pipeline makes.
* :mod:`.sliding_window`: mirror-paired sliding-window inference (each window with its
  own counterpart, each crop encoded once, Gaussian blending, left-right TTA).
* :mod:`.window_grid`: mirror-closed window grids and symmetric padding.
* :mod:`.hemispheric`: hemispheric attention focus and the signed asymmetry map.
* :mod:`.device`: device choice, mixed precision, out-of-memory fallback.
* :mod:`.report`: lesion volumes per label and hemisphere (JSON-able).
* :mod:`.overview`: the axial / coronal / sagittal overview PNG.
* :mod:`.cases`: finding cases and their channel files.
"""
