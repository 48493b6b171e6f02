"""SymmetryAwareSeg: symmetry-aware brain segmentation (SA-Swin, Ma et al., MICCAI 2024) in 3D Slicer.

Thin module file: metadata, the widget shell, the Slicer-facing logic and the self-test.
Everything else lives in ``SymmetryAwareSegLib`` (one concept per file); the network
itself runs in the ``SymmetryAwareCore`` command line, in a child process.
"""

import os
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # a Slicer without the translation helpers: strings stay as written
    def _(text):
        return text

    def translate(context, text):
        return text

from SymmetryAwareCore.contract import OUTPUT_FILES
from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic as _CoreLogic
from SymmetryAwareSegLib.parameters import SymmetryAwareSegParameters

SAMPLE_CATEGORY = "SymmetryAwareSeg"
DOCUMENTATION_URL = "https://github.com/SymmetryAwareSeg/SymmetryAwareSeg/blob/main/docs/slicer.md"


class SymmetryAwareSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SymmetryAwareSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SymmetryAwareSeg developers"]
        self.parent.helpText = _(
            "Brain lesion segmentation and hemispheric asymmetry maps with a symmetry-aware Swin "
            "transformer (SA-Swin). Select 1 to 4 MRI or CT volumes (matched to the model's channels "
            "by name), a model and Apply. The head is aligned to its mid-sagittal plane automatically; "
            "the plane, an attention map and per-hemisphere volumes are shown with the segmentation. "
            "'Where does this point look?' shows, for a point you place, where the model's "
            "symmetry-aware attention looks and marks the point's mirror."
        ) + " " + _('See the <a href="{url}">module documentation</a>.').format(url=DOCUMENTATION_URL)
        self.parent.acknowledgementText = _(
            "Method: Ma et al., 'Symmetry Awareness Encoded Deep Learning Framework for Brain Imaging "
            "Analysis', MICCAI 2024. Research use only; not for clinical decisions."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def sample_folder() -> Path:
    """The bundled sample case (shipped inside the core's package data)."""
    import SymmetryAwareCore

    return Path(SymmetryAwareCore.__file__).parent / "data" / "sample"


def registerSampleData():
    """Register the bundled synthetic glioma case (4 MRI channels) with Sample Data."""
    try:
        import SampleData
    except ImportError:
        return
    try:
        folder = sample_folder()
    except ImportError:
        return
    images = sorted(p for p in folder.glob("*.nii.gz") if not p.name.endswith("_label.nii.gz"))
    if not images:
        return
    icon = os.path.join(os.path.dirname(__file__), "Resources", "Icons", "SymmetryAwareSeg.png")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName="SymmetryAwareSegGlioma",
        uris=[p.as_uri() for p in images],
        fileNames=[p.name for p in images],
        nodeNames=[p.name[: -len(".nii.gz")] for p in images],
        thumbnailFileName=icon,
        loadFileTypes=["VolumeFile"] * len(images),
    )


class SymmetryAwareSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Loads the .ui, binds it to the parameter node, hands the rest to the panel."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.panel = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from SymmetryAwareSegLib.widget import SymmetryAwareSegPanel

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SymmetryAwareSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SymmetryAwareSegLogic()
        self.panel = SymmetryAwareSegPanel(self.ui, self.logic, lambda: self._parameterNode)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        if self.panel is not None:
            self.panel.cleanup()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)
        if self.panel is not None:
            self.panel.on_scene_close()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if self._parameterNode and not self._parameterNode.inputVolume1:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume1 = first
        if self._parameterNode and not self._parameterNode.model and self.panel is not None and self.panel.models:
            self._parameterNode.model = str(self.panel.models[0].path)

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            if self.panel is not None:
                self.panel.on_parameter_node(self._parameterNode)  # before connectGui writes the node's values
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
        if self.panel is not None:
            self.panel.update_state()


class SymmetryAwareSegLogic(_CoreLogic, ScriptedLoadableModuleLogic):
    """The library logic on Slicer's scene, with the module's parameter node.

    The library logic comes first in the bases: ScriptedLoadableModuleLogic.__init__ calls
    ``super().__init__()``, which then reaches ``object``, so each base initialises once.
    """

    def __init__(self):
        _CoreLogic.__init__(self, scene=slicer.mrmlScene)
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return SymmetryAwareSegParameters(super().getParameterNode())


class SymmetryAwareSegTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: result loading on the bundled sample, no network needed."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_fresh_scene_holds_the_plane()
        self.test_load_results_on_sample()

    def test_fresh_scene_holds_the_plane(self):
        """The batch's per-case scenes: in Slicer 5.8 only the application scene knows markups."""
        from SymmetryAwareSegLib.nodes import new_scene

        plane = new_scene().AddNewNodeByClass("vtkMRMLMarkupsPlaneNode", "plane")
        self.assertIsNotNone(plane, "a fresh scene cannot create a markups plane")

    def test_load_results_on_sample(self):
        import json
        import tempfile

        import numpy as np

        self.delayDisplay("Loading the sample case")
        images = sorted(sample_folder().glob("*_t1.nii.gz"))
        labels = sorted(sample_folder().glob("*_label.nii.gz"))
        if not images or not labels:
            self.delayDisplay("Sample case not bundled: test skipped")
            return
        logic = SymmetryAwareSegLogic()
        reference = slicer.util.loadVolume(str(images[0]))
        with tempfile.TemporaryDirectory() as folder:
            case = Path(folder) / "sample"
            case.mkdir()
            # The bundled ground truth stands in for a model output: same grid, same labels.
            (case / OUTPUT_FILES["labelmap"]).write_bytes(labels[0].read_bytes())
            report = {"labels": [
                {"value": 1, "name": "necrotic core", "color": [0.8, 0.2, 0.2]},
                {"value": 2, "name": "oedema", "color": [0.2, 0.8, 0.2]},
                {"value": 4, "name": "enhancing tumour", "color": [1.0, 0.9, 0.1]},
            ]}
            (case / OUTPUT_FILES["report"]).write_text(json.dumps(report))
            loaded = logic.load_results(case, reference)
        segmentation = loaded.segmentation.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 3)
        self.assertEqual(segmentation.GetNthSegment(1).GetName(), "oedema")
        table = loaded.table.GetTable()
        self.assertGreater(sum(table.GetValue(r, 4).ToDouble() for r in range(table.GetNumberOfRows())), 0.0)
        self.assertTrue(np.isfinite(table.GetValue(0, 4).ToDouble()))
        self.delayDisplay("Test passed")
