"""Images in and out with exact geometry: one :class:`Image` type, readers, writers."""

from .case import GRID_TOLERANCE_MM, grid_distance_mm, load_case, resample_to
from .image import Image
from .labels import LabelInfo, brats_labels, brats_regions, ct_haemorrhage_labels, label_table
from .readers import read_image, read_labelmap
from .validate import check_output_path
from .writers import write_image, write_labelmap_nifti, write_map, write_nifti, write_seg_nrrd

__all__ = [
    "Image",
    "read_image",
    "read_labelmap",
    "load_case",
    "resample_to",
    "grid_distance_mm",
    "GRID_TOLERANCE_MM",
    "LabelInfo",
    "brats_labels",
    "brats_regions",
    "ct_haemorrhage_labels",
    "label_table",
    "check_output_path",
    "write_nifti",
    "write_image",
    "write_labelmap_nifti",
    "write_seg_nrrd",
    "write_map",
]
