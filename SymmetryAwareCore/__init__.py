"""SymmetryAwareCore: the core library of SymmetryAwareSeg.

Symmetry-aware brain image analysis after Ma et al., MICCAI 2024 (SA-Swin). This package
never imports Slicer or Qt, so it runs in Slicer, in PythonSlicer and from a plain shell.

Where things live:
- ``io``: the :class:`~SymmetryAwareCore.io.image.Image` type, readers and writers.
- ``geometry``: orientation to RAS and back, the mirror helper, the mid-sagittal plane.
- ``phantoms``: brain phantoms with known lesions and poses, built on the MNI152 template.
- ``models``: SACA, SA-Swin networks, the symmetry-aware head, model cards.
- ``inference``: the mirror-paired sliding-window pipeline.
- ``cli``: the ``symmetryaware`` command.
"""

__version__ = "0.1.0"
