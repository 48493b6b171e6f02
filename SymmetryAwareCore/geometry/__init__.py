"""Symmetry geometry: orientation to RAS, the mirror relation, the mid-sagittal plane."""

from .mirror import LR_AXIS, counterpart_box, extract_counterpart, flip_lr, mirror_points_ras
from .rigid import move_image, reorient_to, rigid_matrix, rotation_angle_deg, rotation_matrix
from .orientation import RASReorientation, from_ras, orientation_codes, to_ras

__all__ = [
    "LR_AXIS",
    "counterpart_box",
    "extract_counterpart",
    "flip_lr",
    "mirror_points_ras",
    "RASReorientation",
    "from_ras",
    "orientation_codes",
    "to_ras",
    "move_image",
    "reorient_to",
    "rigid_matrix",
    "rotation_angle_deg",
    "rotation_matrix",
]
