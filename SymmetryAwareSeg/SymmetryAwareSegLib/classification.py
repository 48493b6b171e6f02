"""Scan-level classifiers in the module: the core's ``classify`` run on volume nodes, its
probabilities as a table and, for a classifier with a lesion map, the map over the scan.

The command line, the map file names and whether a card has a lesion map are the core's
(:func:`SymmetryAwareCore.contract.classify_command`, :func:`~SymmetryAwareCore.contract.finding_map_file`,
:func:`~SymmetryAwareCore.contract.card_has_lesion_map`); this file adds the nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import vtk

from SymmetryAwareCore.contract import card_has_lesion_map, classify_command, finding_map_file

from .nodes import place_beside
from .process import ProgressEvent, Runner

__all__ = ["ClassificationResult", "LoadedClassification", "ClassificationMixin", "classification_summary"]

RESULT_FILE = "findings.json"
MAPS_FOLDER = "maps"


@dataclass
class ClassificationResult:
    """Where one classification run writes: ``<folder>/findings.json`` and ``<folder>/maps/``."""

    folder: Path
    with_maps: bool = False

    @property
    def output_file(self) -> Path:
        return self.folder / RESULT_FILE

    @property
    def maps_dir(self) -> Path:
        return self.folder / MAPS_FOLDER

    def case(self) -> Tuple[str, Dict]:
        """``(case id, result)`` of the one case the run classified; ValueError if the run wrote none."""
        if not self.output_file.is_file():
            raise ValueError(f"{self.output_file}: missing (the classifier wrote no result)")
        data = json.loads(self.output_file.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or len(data) != 1:
            raise ValueError(f"{self.output_file}: expected one case, found {len(data) if isinstance(data, dict) else 0}")
        (case_id, result), = data.items()
        return case_id, result

    def map_file(self, case_id: str, finding: str) -> Path:
        return self.maps_dir / finding_map_file(case_id, finding)


@dataclass
class LoadedClassification:
    """Nodes made by :meth:`ClassificationMixin.load_classification`."""

    case_id: str = ""
    probabilities: Dict[str, float] = field(default_factory=dict)
    table: object = None
    maps: Dict[str, object] = field(default_factory=dict)
    result: Dict = field(default_factory=dict)


def classification_summary(loaded: LoadedClassification) -> str:
    """Lines for the panel: each finding's probability, and what the maps are."""
    lines = [f"{name}: probability {p:.3f}" for name, p in loaded.probabilities.items()]
    calibration = loaded.result.get("calibration")
    # Say what the number is: a frequency only where the card's calibration was fitted.
    lines.append(f"Calibrated on {calibration}" if calibration else
                 "Not calibrated: a score for ranking scans, not the chance of the finding")
    if loaded.maps:
        lines.append("Map: where the classifier sees each finding (0-1), shown over the scan")
    device = loaded.result.get("device")
    seconds = (loaded.result.get("runtime_s") or {}).get("total")
    if device and seconds is not None:
        lines.append(f"Classified on {device} in {seconds:.1f} s")
    return "\n".join(lines)


class ClassificationMixin:
    """Classifier runs (part of :class:`SymmetryAwareSegLogic`; needs ``self.scene``,
    ``self.python``, ``self.core_module``, ``self.process_factory``, ``self.env``, ``load_map``,
    ``legend_of`` and ``show_overlay``)."""

    def start_classification(
        self,
        inputs: Sequence[Union[str, Path]],
        folder: Union[str, Path],
        card,
        device: str = "auto",
        on_event: Optional[Callable[[ProgressEvent], None]] = None,
    ) -> Tuple[Runner, ClassificationResult]:
        """Start ``classify`` on input files with the classifier of ``card`` (a module
        :class:`~SymmetryAwareSegLib.models.ModelCard`); maps are asked for when the card has one."""
        if not card.findings:
            raise ValueError(f"model {card.name} is not a scan-level classifier")
        result = ClassificationResult(Path(folder), with_maps=card_has_lesion_map(card.raw))
        result.folder.mkdir(parents=True, exist_ok=True)
        command = classify_command(self.python, inputs, str(card.path), result.output_file,
                                   maps_dir=result.maps_dir if result.with_maps else None, device=device,
                                   core_module=self.core_module)
        child = self.process_factory(command, env=self.env, on_event=on_event)
        child.start()
        return child, result

    def load_classification(self, result: ClassificationResult, reference_volume, opacity: float = 0.5,
                            show_map: bool = True) -> LoadedClassification:
        """The run's probabilities as a table node and its maps as volume nodes beside the scan."""
        case_id, data = result.case()
        probabilities = {str(k): float(v) for k, v in (data.get("probabilities") or {}).items()}
        loaded = LoadedClassification(case_id=case_id, probabilities=probabilities, result=data)
        table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{case_id} findings")
        table = table_node.GetTable()
        names, values = vtk.vtkStringArray(), vtk.vtkDoubleArray()
        names.SetName("Finding")
        values.SetName("Probability")
        table.AddColumn(names)
        table.AddColumn(values)
        table.SetNumberOfRows(len(probabilities))
        for row, (name, p) in enumerate(probabilities.items()):
            table.SetValue(row, 0, vtk.vtkVariant(name))
            table.SetValue(row, 1, vtk.vtkVariant(round(p, 4)))
        table_node.Modified()
        loaded.table = table_node
        if result.with_maps:
            for name in probabilities:
                path = result.map_file(case_id, name)
                if not path.is_file():
                    raise ValueError(f"{path}: missing (the classifier has a lesion map but wrote none)")
                loaded.maps[name] = self.load_map(path, f"{case_id} {name} map", style="finding")
        place_beside(reference_volume, [loaded.table, *loaded.maps.values()])
        if show_map and loaded.maps:
            self.show_overlay(reference_volume, next(iter(loaded.maps.values())), opacity)
        return loaded
