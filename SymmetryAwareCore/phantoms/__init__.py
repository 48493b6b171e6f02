"""Brain phantoms with known truth, built on the real MNI152 2009a symmetric anatomy.

- :func:`make_subject` (``generator``): one subject, deterministic by seed: MRI (t1, t1ce,
  t2, flair) or CT (HU), lesion labels, random head pose, true mid-sagittal plane.
- :func:`write_dataset` (``dataset``): many subjects plus a MONAI-style datalist.
- :func:`sample_case_paths` (``sample``): the small glioma case bundled with the package.

Modules: ``anatomy`` (template and tissue maps), ``deformation`` (subject variation, mass
effect), ``lesions``, ``contrasts``, ``pose``.
"""

from .dataset import write_dataset
from .generator import Phantom, make_subject
from .sample import sample_case_paths

__all__ = ["Phantom", "make_subject", "write_dataset", "sample_case_paths"]
