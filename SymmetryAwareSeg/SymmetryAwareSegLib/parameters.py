"""The module's parameters: one typed wrapper over the scene's parameter node.

Inside Slicer the class is decorated with ``parameterNodeWrapper``, and
``parameterNode.connectGui(ui)`` binds each field to the widget of the .ui whose dynamic
property ``SlicerParameterName`` names it. Outside Slicer (headless ``slicer-core``,
PythonSlicer without the application) ``parameterNodeWrapper`` is missing: the class is
then a plain annotated class, so the logic and the tests still import it and read the
field list from :data:`PARAMETER_NAMES`.
"""


from typing import Annotated, Optional, get_type_hints

import slicer

# The one definition of run options (defaults, ranges, choices), shared with the command
# line the panel starts: shipped beside the module, torch-free.
from SymmetryAwareCore.contract import RunOptions

try:
    from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper
except ImportError:  # headless slicer-core or an old Slicer: keep the annotations only
    parameterNodeWrapper = None

    def WithinRange(minimum, maximum):  # noqa: N802 - mirrors Slicer's name
        return ("WithinRange", minimum, maximum)

    def Choice(choices):  # noqa: N802
        return ("Choice", tuple(choices))

    def Default(value):  # noqa: N802
        return ("Default", value)


__all__ = ["SymmetryAwareSegParameters", "PARAMETER_NAMES", "PARAMETER_TYPES", "DEVICES", "MAX_INPUTS", "run_options"]

DEVICES = RunOptions.choices("device")
"""Values of ``--device`` of the core command (the contract's choices)."""

MAX_INPUTS = 4
"""The panel takes 1 to 4 input volumes (BraTS-style MRI has four channels)."""

ScalarVolume = slicer.vtkMRMLScalarVolumeNode
SegmentationNode = slicer.vtkMRMLSegmentationNode
RoiNode = slicer.vtkMRMLMarkupsROINode


class SymmetryAwareSegParameters:
    """State of the SymmetryAwareSeg panel.

    Fields:
        inputVolume1..4: input MRI or CT volumes (channel order follows the model card).
        model: model name from the list, or a path to a model card / weights file.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        overlap: sliding-window overlap (range and default: the contract's ``RunOptions``).
        tta: average with the left-right flipped prediction (test-time augmentation).
        useRoi: segment only inside ``roiNode`` and keep the rest of the segmentation.
        roiNode: the region of interest (markups ROI, RAS).
        outputSegmentation: the segmentation node written by Apply.
        showAttention: show the hemispheric attention map over the first input.
        opacity: opacity of the segmentation and attention overlays, 0 to 1.
        dicomSeg: also write a DICOM SEG referencing the first input's DICOM series.
        useThreshold: decide the labels at ``threshold`` instead of at the model's own
            (region models; the contract's ``--threshold``).
        threshold: that probability; lower finds fainter lesions and marks more healthy
            tissue (docs/models.md, operating points).
        biasCorrection: remove each input's MRI bias field (N4) first, or not (the
            contract's ``--bias-correction`` / ``--no-bias-correction``); the panel sets it
            from the selected model's card (checked for a card that asks for N4).
    """

    inputVolume1: Optional[ScalarVolume]
    inputVolume2: Optional[ScalarVolume]
    inputVolume3: Optional[ScalarVolume]
    inputVolume4: Optional[ScalarVolume]
    model: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = RunOptions.default("device")
    overlap: Annotated[float, WithinRange(*RunOptions.range("overlap"))] = RunOptions.default("overlap")
    tta: bool = RunOptions.default("tta")
    useRoi: bool = False
    roiNode: Optional[RoiNode]
    outputSegmentation: Optional[SegmentationNode]
    showAttention: bool = True
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    dicomSeg: bool = RunOptions.default("dicom_seg")
    useThreshold: bool = RunOptions.default("threshold") is not None  # unset: the model's own
    threshold: Annotated[float, WithinRange(*RunOptions.range("threshold"))] = 0.5  # the bundled cards' own
    biasCorrection: bool = False  # the contract's default is None (the card's): the panel sets it per card


PARAMETER_TYPES = get_type_hints(SymmetryAwareSegParameters, include_extras=True)
"""Each field's annotated type, read before wrapping (the wrapper replaces the class)."""

PARAMETER_NAMES = tuple(SymmetryAwareSegParameters.__annotations__)
"""Every field of the wrapper, in declaration order."""

if parameterNodeWrapper is not None:
    SymmetryAwareSegParameters = parameterNodeWrapper(SymmetryAwareSegParameters)


def run_options(parameters, roi_center=None, roi_size=None) -> RunOptions:
    """The panel's state as the contract's run options (validated: ``OptionError``)."""
    return RunOptions(
        model=str(parameters.model).strip() or RunOptions.default("model"),
        device=str(parameters.device),
        overlap=float(parameters.overlap),
        tta=bool(parameters.tta),
        roi_center=None if roi_center is None else tuple(float(v) for v in roi_center),
        roi_size=None if roi_size is None else tuple(float(v) for v in roi_size),
        dicom_seg=bool(parameters.dicomSeg),
        threshold=float(parameters.threshold) if bool(parameters.useThreshold) else None,
        bias_correction=bool(parameters.biasCorrection),
    )
