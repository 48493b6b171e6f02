"""Point mode: "where does this point look?", run in the background and shown over the scan.

The user places one point (a markups fiducial); the core's ``attention`` command runs with
the contract's ``--attention-from R,A,S`` (``RunOptions.attention_from``) in a child process,
as segmentation runs do, and writes ``attention_from.nii.gz`` (SACA attention of that
point's token over the counterpart, per mL, on the first input's grid) with ``report.json``
(``attention.point``: the point, its mirror, the map's peak). Here the map becomes a volume
node shown over the input (Inferno over 0..peak, with a colour legend) and the mirror
position a second, locked fiducial labelled "mirror of <label>".

``attention`` rather than ``segment``: the same arguments and the same network pass, but no
label map, ``.seg.nrrd`` or overview to write. What a point run reuses: the input files
already exported for the same volumes (:class:`ExportedInputs`) and the plane loaded by a
previous run (only when the report lacks the mirror). The network pass itself is redone:
the core keeps no attention weights between runs.

Nothing here imports Qt; the panel (``widget``) only places the point and polls the child.
Left-right: RAS axis 0, R positive, as everywhere in the module.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import vtk

from SymmetryAwareCore.contract import RunOptions, case_id_from_files, segment_command

from .command import CaseResult
from .nodes import ijk_to_ras, place_beside

__all__ = [
    "POINT_LIST_NAME",
    "MIRROR_LIST_NAME",
    "mirror_label",
    "ExportedInputs",
    "PointAttention",
    "PointAttentionMixin",
    "input_signature",
    "point_options",
    "point_summary",
]

POINT_LIST_NAME = "Attention point"
"""Name of the fiducial list the user places the query point in (one point)."""

MIRROR_LIST_NAME = "Attention point mirror"
"""Name of the fiducial list holding the query point's mirror (locked, one point)."""


def mirror_label(label: str) -> str:
    """Label of the mirror fiducial of a point labelled ``label``."""
    return f"mirror of {label or 'P'}"


def point_options(options: Optional[RunOptions], point_ras: Sequence[float]) -> RunOptions:
    """The run options of a point run: ``options`` with ``attention_from`` set to the point.

    The ROI is dropped (the point's attention is over the whole counterpart, so the whole
    head is needed) and so is ``dicom_seg`` (``attention`` writes no segmentation). The
    point is validated by the contract (three finite numbers: ``OptionError``).
    """
    return (options or RunOptions()).replace(
        attention_from=tuple(float(v) for v in point_ras), roi_center=None, roi_size=None, dicom_seg=False
    )


def input_signature(volume_nodes: Sequence) -> Tuple:
    """What the exported files of ``volume_nodes`` depend on: ids, voxels' modification time, geometry."""
    signature = []
    for node in volume_nodes:
        image = node.GetImageData()
        signature.append((
            node.GetID(),
            node.GetName(),
            image.GetMTime() if image is not None else -1,
            tuple(np.round(ijk_to_ras(node), 6).ravel().tolist()),
        ))
    return tuple(signature)


class ExportedInputs:
    """Input files written for a list of volume nodes, kept so that later runs reuse them.

    :meth:`files` exports again only when the nodes, their voxels or their geometry changed
    (:func:`input_signature`) or a file went missing. The files live in a temporary folder
    owned here; :meth:`cleanup` removes it.
    """

    def __init__(self):
        self._folder: Optional[tempfile.TemporaryDirectory] = None
        self._signature: Optional[Tuple] = None
        self._paths: List[Path] = []
        self.exports = 0  # how many times files were written (tests, logging)

    def files(self, logic, volume_nodes: Sequence) -> List[Path]:
        nodes = [n for n in volume_nodes if n is not None]
        if not nodes:
            raise ValueError("select an input volume first")
        signature = input_signature(nodes)
        if signature == self._signature and self._paths and all(p.is_file() for p in self._paths):
            return list(self._paths)
        self.cleanup()
        self._folder = tempfile.TemporaryDirectory(prefix="SymmetryAwareSeg_inputs_")
        self._paths = logic.export_inputs(nodes, Path(self._folder.name))
        self._signature = signature
        self.exports += 1
        return list(self._paths)

    def cleanup(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()
        self._folder, self._signature, self._paths = None, None, []


@dataclass
class PointAttention:
    """Nodes and numbers of one finished point run (:meth:`PointAttentionMixin.load_point_attention`).

    ``map``: the point-attention volume node; ``mirror``: the fiducial list holding the mirror
    point; ``legend``: the map's colour legend node (None without legend support);
    ``query_ras``, ``mirror_ras``, ``peak_ras``: RAS mm (the report's, on the aligned grid);
    ``summary``: the report's ``attention`` block.
    """

    map: object
    mirror: object
    legend: object
    query_ras: Optional[List[float]]
    mirror_ras: List[float]
    peak_ras: Optional[List[float]]
    summary: Dict = field(default_factory=dict)


def point_summary(summary: Dict) -> str:
    """One paragraph for the panel: where the point looks, and what the map can mean."""
    point = (summary or {}).get("point") or {}
    lines = []

    def fmt(ras):
        return "(" + ", ".join(f"{v:.1f}" for v in ras) + ")" if ras else "?"

    if point:
        lines.append(f"Point attention from {fmt(point.get('query_ras'))} RAS mm; mirror {fmt(point.get('mirror_ras'))}; "
                     f"peak {fmt(point.get('peak_ras'))}, {point.get('peak_to_mirror_mm', float('nan')):.1f} mm from the mirror.")
        if point.get("share_in_head") is not None:
            lines.append(f"Share of the attention inside the head: {100.0 * float(point['share_in_head']):.0f} %.")
    stage = summary.get("saca_stage") if summary else None
    if stage is not None:
        lines.append(f"SACA stage {stage}: tokens of {summary.get('token_voxels')} voxels "
                     f"({'x'.join(f'{v:g}' for v in summary.get('token_mm') or [])} mm); nothing finer is resolved.")
    if summary and summary.get("note"):
        lines.append(f"Note: {summary['note']}")
    return "\n".join(lines)


class PointAttentionMixin:
    """Point runs (part of :class:`~SymmetryAwareSegLib.logic.SymmetryAwareSegLogic`; needs
    ``self.scene``, ``self.python``, ``self.core_module``, ``self.process_factory``,
    ``self.env`` and the results mixin's ``load_map``/``show_overlay``/``legend_of``)."""

    def point_attention_command(self, inputs: Sequence[Union[str, Path]], output_dir, point_ras: Sequence[float],
                                options: Optional[RunOptions] = None, case_id: Optional[str] = None) -> List[str]:
        """``python -m SymmetryAwareCore attention ... --attention-from=R,A,S`` (the contract's argv)."""
        return segment_command(self.python, inputs, output_dir, point_options(options, point_ras),
                               case_id=case_id or case_id_from_files(inputs), core_module=self.core_module,
                               subcommand="attention")

    def start_point_attention(self, inputs, output_dir, point_ras: Sequence[float], options: Optional[RunOptions] = None,
                              on_event=None, case_id: Optional[str] = None):
        """Start a point run in the background; return ``(child, CaseResult)`` (see ``start_case``)."""
        case_id = case_id or case_id_from_files(inputs)
        command = self.point_attention_command(inputs, output_dir, point_ras, options, case_id)
        child = self.process_factory(command, env=self.env, on_event=on_event)
        child.start()
        return child, CaseResult(Path(output_dir) / case_id)

    def mirror_from_plane(self, point_ras: Sequence[float], plane_file=None, plane_node=None) -> np.ndarray:
        """The mirror of ``point_ras`` across the mid-sagittal plane (a ``.mrk.json`` or a plane node).

        The reflection is the core's ``mirror_points_ras`` and the file is read by the
        core's ``read_plane_markups``: one definition of the plane and of the mirror.
        """
        try:
            from SymmetryAwareCore.geometry.mirror import mirror_points_ras
        except ImportError as error:
            raise RuntimeError(f"the core library cannot be imported ({error})") from None
        if plane_file is not None and Path(plane_file).is_file():
            from SymmetryAwareCore.geometry.markups import read_plane_markups

            plane = read_plane_markups(plane_file)
            normal, origin = np.asarray(plane.normal), np.asarray(plane.point)
        elif plane_node is not None:
            origin, normal = [0.0] * 3, [0.0] * 3
            plane_node.GetOriginWorld(origin)
            plane_node.GetNormalWorld(normal)
        else:
            raise ValueError("no mid-sagittal plane to mirror the point across")
        return mirror_points_ras(np.asarray([point_ras], np.float64), np.asarray(normal), np.asarray(origin))[0]

    def load_point_attention(self, result: Union[CaseResult, str, Path], reference_volume, point_node, point_index: int = 0,
                             mirror_node=None, previous_map=None, plane_node=None, opacity: float = 0.6,
                             show: bool = True) -> PointAttention:
        """Load a finished point run: the map over ``reference_volume``, the mirror fiducial.

        The mirror is the report's ``attention.point.mirror_ras`` (the position the map was
        computed for); a report without it falls back to the case's ``msp.mrk.json``, then to
        ``plane_node``. ``mirror_node`` (a fiducial list) is reused, else one named
        :data:`MIRROR_LIST_NAME` is created; ``previous_map`` (the last point run's map) is
        removed once the new one is in place. All or nothing: on any error the scene is left
        as it was (new nodes removed, mirror list untouched).
        """
        if not isinstance(result, CaseResult):
            result = CaseResult(Path(result))
        path = result.path("attention_from")
        if not path.is_file():
            raise ValueError(f"{path.name}: the core finished without writing it (a model without SACA?)")
        summary = (result.report.get("attention") or {}) if result.report else {}
        point = summary.get("point") or {}
        query = [0.0, 0.0, 0.0]
        point_node.GetNthControlPointPositionWorld(point_index, query)
        if point.get("mirror_ras"):
            mirrored = np.asarray(point["mirror_ras"], np.float64)
        else:
            mirrored = self.mirror_from_plane(query, result.path("plane"), plane_node)
        created = []
        try:
            map_node = self.load_map(path, f"{result.case_id} point attention", style="attention_from")
            created.append(map_node)
            if mirror_node is None:
                mirror_node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", MIRROR_LIST_NAME)
                if mirror_node is None:
                    raise RuntimeError("this scene cannot hold a markups fiducial")
                created.append(mirror_node)
                mirror_node.CreateDefaultDisplayNodes()
            mirror_node.RemoveAllControlPoints()
            index = mirror_node.AddControlPointWorld(vtk.vtkVector3d(*[float(v) for v in mirrored]))
            mirror_node.SetNthControlPointLabel(index, mirror_label(point_node.GetNthControlPointLabel(point_index)))
            # Dragging the mirror would not re-run anything: keep it where the report puts it.
            mirror_node.SetLocked(True)
        except Exception:
            for node in created:
                if node.GetScene() is not None:
                    self.scene.RemoveNode(node)
            raise
        if previous_map is not None and previous_map is not map_node and previous_map.GetScene() is not None:
            self.scene.RemoveNode(previous_map)
        place_beside(reference_volume, [map_node, mirror_node])
        if show:
            self.show_overlay(reference_volume, map_node, opacity)
        return PointAttention(map_node, mirror_node, self.legend_of(map_node), point.get("query_ras"),
                              [float(v) for v in mirrored], point.get("peak_ras"), summary)
