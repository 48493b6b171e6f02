"""Symmetry geometry: orientation to RAS, the mirror relation, the mid-sagittal plane."""

from .mirror import LR_AXIS, counterpart_box, extract_counterpart, flip_lr, mirror_points_ras
from .rigid import move_image, reorient_to, rigid_matrix, rotation_angle_deg, rotation_matrix
from .orientation import RASReorientation, from_ras, orientation_codes, to_ras
from .msp import MidSagittalPlane, axes_plane, estimate_msp, head_mask, plane_angle_deg, plane_offset_mm
from .head_check import HeadCheck, check_head
from .symmetric_frame import SymmetricFrame, align_to_msp, resample_to_grid
from .markups import read_plane_markups, write_plane_markups

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
    "MidSagittalPlane",
    "axes_plane",
    "estimate_msp",
    "head_mask",
    "HeadCheck",
    "check_head",
    "plane_angle_deg",
    "plane_offset_mm",
    "SymmetricFrame",
    "align_to_msp",
    "resample_to_grid",
    "read_plane_markups",
    "write_plane_markups",
]
