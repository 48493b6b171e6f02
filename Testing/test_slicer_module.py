"""The Slicer module's static parts: .ui <-> parameter wrapper, CMake lists, icon, import hygiene.

Slicer itself is not available here: the .ui is checked as Designer XML, the module file
as Python source, and the library's imports in a fresh interpreter.
"""

from __future__ import annotations

import ast
import re
import struct
import subprocess
import sys
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "SymmetryAwareSeg"
sys.path.insert(0, str(MODULE))

slicer = pytest.importorskip("slicer", reason="slicer-core is needed to import the parameter wrapper")
from SymmetryAwareCore import contract  # noqa: E402
from SymmetryAwareSegLib import parameters  # noqa: E402

UI = MODULE / "Resources" / "UI" / "SymmetryAwareSeg.ui"


def ui_widgets():
    """``{widget name: (class, {property: element})}`` for every widget of the .ui."""
    tree = ET.parse(UI)
    out = {}
    for widget in tree.iter("widget"):
        props = {p.get("name"): p for p in widget.findall("property")}
        out[widget.get("name")] = (widget.get("class"), props)
    return out


def bound_widgets():
    """``{parameter name: (widget class, properties)}`` from SlicerParameterName properties."""
    bound = {}
    for name, (cls, props) in ui_widgets().items():
        if "SlicerParameterName" in props:
            parameter = props["SlicerParameterName"].find("string").text
            assert parameter not in bound, f"{parameter} bound twice"
            assert props["SlicerParameterName"].get("stdset") == "0", "must be a dynamic property"
            bound[parameter] = (cls, props)
    return bound


def number(props, name):
    return float(props[name].find("double").text)


def test_every_parameter_has_one_widget_and_every_widget_a_parameter():
    bound = bound_widgets()
    assert set(bound) == set(parameters.PARAMETER_NAMES)


def test_widget_kinds_match_parameter_types():
    hints = parameters.PARAMETER_TYPES
    for name, (cls, props) in bound_widgets().items():
        hint = hints[name]
        base, extras = hint, ()
        if typing.get_origin(hint) is typing.Annotated:
            base, *extras = typing.get_args(hint)
        node_types = [a for a in typing.get_args(base) if a is not type(None)]
        if node_types:  # Optional[vtkMRML...Node]
            assert cls == "qMRMLNodeComboBox", name
            listed = [s.text for s in props["nodeTypes"].iter("string")]
            assert listed == [node_types[0].__name__], name
        elif base is bool:
            assert cls == "QCheckBox", name
        elif base is float:
            assert cls in ("ctkSliderWidget", "QDoubleSpinBox", "ctkDoubleSpinBox"), name
            (_, lo, hi), = [e for e in extras if e[0] == "WithinRange"]
            assert (number(props, "minimum"), number(props, "maximum")) == (lo, hi), name
        elif base is str and extras:
            (_, choices), = [e for e in extras if e[0] == "Choice"]
            assert cls == "QComboBox", name
            element = ET.parse(UI).find(f".//widget[@name='{_name_of(name)}']")
            items = [i.find("property/string").text for i in element.findall("item")]
            assert tuple(items) == tuple(choices) == parameters.DEVICES
        elif base is str:
            assert cls == "QLineEdit", name
        else:
            pytest.fail(f"no widget rule for {name}: {hint}")


def _name_of(parameter):
    for name, (_cls, props) in ui_widgets().items():
        p = props.get("SlicerParameterName")
        if p is not None and p.find("string").text == parameter:
            return name
    raise KeyError(parameter)


def test_ui_declares_its_custom_widgets_and_the_panel_widgets_exist():
    tree = ET.parse(UI)
    declared = {c.find("class").text for c in tree.iter("customwidget")}
    used = {cls for cls, _ in ui_widgets().values()}
    qt_builtin = {c for c in used if c.startswith("Q")}
    assert used - qt_builtin <= declared
    # Names the panel code (widget.py, interactive_panel.py) looks up on the ui.
    source = "".join((MODULE / "SymmetryAwareSegLib" / name).read_text() for name in ("widget.py", "interactive_panel.py"))
    wanted = set(re.findall(r"ui\.([A-Za-z0-9]+)", source)) | {f"inputVolume{i}Selector" for i in range(1, 5)}
    wanted.discard("get")
    missing = wanted - set(ui_widgets())
    assert not missing, f"widget.py uses widgets missing from the .ui: {missing}"


def test_cmake_lists_every_library_file_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text()
    listed = set(re.findall(r"\$\{MODULE_NAME\}(Lib/[\w]+\.py|\.py)", text))
    files = {"Lib/" + p.name for p in (MODULE / "SymmetryAwareSegLib").glob("*.py")} | {".py"}
    assert listed == files
    for resource in re.findall(r"(Resources/\S+|Scripts/\S+)", text):
        assert (MODULE / resource.replace("${MODULE_NAME}", "SymmetryAwareSeg")).is_file(), resource
    assert "WITH_GENERIC_TESTS" in text and "slicerMacroBuildScriptedModule" in text
    top = (ROOT / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS", "find_package(Slicer",
                "include(${Slicer_USE_FILE})", "add_subdirectory(SymmetryAwareSeg)",
                "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})",
                "SymmetryAwareCore/*.py"):
        assert key in top, key
    assert re.search(r'EXTENSION_CATEGORY\s+"Segmentation"', top) and re.search(r'EXTENSION_DEPENDS\s+"PyTorch"', top)


def test_icon_is_a_128_png():
    data = (MODULE / "Resources" / "Icons" / "SymmetryAwareSeg.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (128, 128)


def test_module_file_is_thin_and_has_the_four_classes():
    source = (MODULE / "SymmetryAwareSeg.py").read_text()
    tree = ast.parse(source)
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    assert "ScriptedLoadableModule" in classes["SymmetryAwareSeg"]
    assert "ScriptedLoadableModuleWidget" in classes["SymmetryAwareSegWidget"]
    assert "ScriptedLoadableModuleLogic" in classes["SymmetryAwareSegLogic"]
    assert "ScriptedLoadableModuleTest" in classes["SymmetryAwareSegTest"]
    assert len(source.splitlines()) < 250


def test_library_imports_without_qt_in_a_fresh_interpreter():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import SymmetryAwareSegLib.logic, SymmetryAwareSegLib.process, SymmetryAwareSegLib.models,"
        " SymmetryAwareSegLib.parameters, SymmetryAwareSegLib.install, SymmetryAwareSegLib.batch,"
        " SymmetryAwareSegLib.results, SymmetryAwareSegLib.tables, SymmetryAwareSegLib.command,"
        " SymmetryAwareSegLib.interactive, SymmetryAwareSegLib.interactive_edit;"
        "bad = [m for m in ('qt', 'ctk', 'PythonQt', 'torch', 'monai', 'nibabel', 'scipy', 'nilearn') if m in sys.modules];"
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code, str(MODULE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _library_sources():
    return [MODULE / "SymmetryAwareSeg.py", MODULE / "Scripts" / "batch.py", *sorted((MODULE / "SymmetryAwareSegLib").glob("*.py"))]


def test_slicer_side_defines_no_case_ids_output_names_or_channel_rule_of_its_own():
    """One contract: those rules live in SymmetryAwareCore.contract and are imported, never copied."""
    output_names = set(contract.OUTPUT_FILES.values()) | {contract.DICOM_SEG_FILE}
    for path in _library_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert not node.name.startswith(("case_id_from", "assign_channels", "match_channels")), f"{path.name}: {node.name}"
            if isinstance(node, ast.Assign):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                assert not names & {"OUTPUT_FILES", "IMAGE_SUFFIXES", "DEVICE_CHOICES"}, f"{path.name}: {names}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in output_names, f"{path.name} spells the output file {node.value!r}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
                flags = [a.value for a in node.args if isinstance(a, ast.Constant)]
                own = {"--overlap", "--device", "--model", "--tta", "--sw-batch", "--roi-center", "--roi-size", "--dicom-seg", "--threshold"}
                assert not own & set(flags), f"{path.name} redefines run option {flags}"


def test_parameter_defaults_and_ranges_come_from_the_contract():
    hints = parameters.PARAMETER_TYPES
    (_, low, high), = [e for e in typing.get_args(hints["overlap"])[1:] if e[0] == "WithinRange"]
    assert (low, high) == contract.RunOptions.range("overlap")
    wrapper_defaults = {"overlap": 0.25, "device": "auto", "tta": False, "dicomSeg": False}
    source = (MODULE / "SymmetryAwareSegLib" / "parameters.py").read_text()
    for name in wrapper_defaults:
        assert re.search(rf"{name}:.*= RunOptions.default\(", source), f"{name} default not from the contract"
    (_, choices), = [e for e in typing.get_args(hints["device"])[1:] if e[0] == "Choice"]
    assert tuple(choices) == contract.RunOptions.choices("device")


def test_panel_threshold_is_the_contracts_and_unset_until_asked_for():
    import types

    hints = parameters.PARAMETER_TYPES
    (_, low, high), = [e for e in typing.get_args(hints["threshold"])[1:] if e[0] == "WithinRange"]
    assert (low, high) == contract.RunOptions.range("threshold")
    panel = types.SimpleNamespace(model="", device="cpu", overlap=0.25, tta=False, dicomSeg=False,
                                  useThreshold=False, threshold=0.3, biasCorrection=False)
    assert parameters.run_options(panel).threshold is None  # the model's own threshold
    assert "--bias-correction" not in parameters.run_options(panel).as_arg_list()
    panel.useThreshold = True
    panel.biasCorrection = True
    options = parameters.run_options(panel)
    argv = options.as_arg_list()
    assert options.threshold == 0.3 and argv[argv.index("--threshold") + 1] == "0.3"
    assert options.bias_correction and "--bias-correction" in argv
    assert "biasCorrection" in parameters.PARAMETER_NAMES


def test_module_metadata_is_translatable_links_its_documentation_and_uses_current_api():
    source = (MODULE / "SymmetryAwareSeg.py").read_text()
    assert "from slicer.i18n import tr as _" in source and "self.parent.title = _(" in source
    assert "self.parent.helpText = _(" in source and "DOCUMENTATION_URL" in source and "<a href=" in source
    assert "loadFileTypes=" in source and "loadFileType=" not in source
    widget = (MODULE / "SymmetryAwareSegLib" / "widget.py").read_text()
    assert "errorDisplay(_(" in widget


def test_module_logic_initialises_each_base_once(monkeypatch):
    """ScriptedLoadableModuleLogic.__init__ calls super().__init__(): the library logic must not run twice."""
    import importlib
    import types

    from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic as LibraryLogic

    class ScriptedLoadableModuleLogic:  # as in Slicer's ScriptedLoadableModule.py
        def __init__(self, parent=None):
            super().__init__()
            self.moduleName = type(self).__name__[:-5]

    fake = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleTest", "ScriptedLoadableModuleWidget"):
        setattr(fake, name, type(name, (), {}))
    fake.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", fake)
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", fake, raising=False)
    monkeypatch.setattr(slicer.util, "VTKObservationMixin", type("VTKObservationMixin", (), {}), raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", slicer.vtkMRMLScene(), raising=False)
    calls = []
    original = LibraryLogic.__init__
    monkeypatch.setattr(LibraryLogic, "__init__", lambda self, *a, **k: (calls.append(k), original(self, *a, **k))[1])
    sys.modules.pop("SymmetryAwareSeg", None)
    module = importlib.import_module("SymmetryAwareSeg")
    try:
        logic = module.SymmetryAwareSegLogic()
    finally:
        sys.modules.pop("SymmetryAwareSeg", None)
    assert len(calls) == 1 and calls[0]["scene"] is slicer.mrmlScene
    assert logic.moduleName == "SymmetryAwareSeg" and logic.scene is slicer.mrmlScene


def test_panel_preselects_the_default_model_of_segment(tmp_path):
    """One rule for the default model (``contract.default_model``): the panel's first card
    is the model `segment` runs without --model, whatever the cards' file names (the bundled
    default ``glioma_phantom_saswin_f12_faint.json`` sorts after 0.4.0's card), and an
    imported card, even one marked default, does not displace it."""
    import json

    from SymmetryAwareCore.inference.model_source import find_model_card
    from SymmetryAwareSegLib.models import find_models

    bundled = Path(contract.BUNDLED_MODELS_DIR)
    default = find_model_card(None)
    assert default is not None and json.loads(default.read_text()).get("default") is True
    user = tmp_path / "models"
    user.mkdir()
    imported = json.loads(default.read_text())
    imported["name"] = "aaa-imported"
    (user / "aaa.json").write_text(json.dumps(imported))  # marked default, sorts first
    cards = find_models([user, bundled])
    assert cards[0].path.resolve() == default.resolve()
    assert [c.name for c in cards].index("aaa-imported") > 0
    # The rule itself: marked beats file order; without a mark the first segmenter;
    # interactive models and symmetry heads never.
    seg, marked, interactive = {"channels": []}, {"channels": [], "default": True}, {"kwargs": {"guidance_channels": 3}, "default": True}
    head = {"architecture": contract.SYMMETRY_HEAD_ARCHITECTURE}
    classifier = {"postprocessing": {"findings": ["haemorrhage"]}}
    assert contract.default_model([("a", seg), ("b", marked)]) == "b"
    assert contract.default_model([("c", classifier), ("h", head), ("i", interactive), ("a", seg)]) == "a"
    assert contract.default_model([("c", classifier)]) == "c" and contract.default_model([]) is None


def test_bias_correction_box_follows_the_selected_models_card(monkeypatch):
    """*Remove MRI bias field first* starts as the selected card asks (checked for the default,
    whose card asks for N4; unchecked for 0.4.0); the user's choice stands until another model
    is chosen; a CT model leaves it off and disabled. The run then states it either way
    (--bias-correction / --no-bias-correction)."""
    import types

    from SymmetryAwareSegLib.models import find_models

    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace())
    monkeypatch.delitem(sys.modules, "SymmetryAwareSegLib.widget", raising=False)
    from SymmetryAwareSegLib.widget import SymmetryAwareSegPanel

    cards = {card.name: card for card in find_models([Path(contract.BUNDLED_MODELS_DIR)])}
    default = cards[contract.default_model([(c.name, c.raw) for c in cards.values()])]
    older, ct = cards["glioma-phantom-saswin-f12"], cards["ct-haemorrhage-phantom-saswin-f12"]
    assert default.bias_correction and not older.bias_correction and ct.is_ct
    panel = SymmetryAwareSegPanel.__new__(SymmetryAwareSegPanel)  # no Qt: the state logic only
    panel.models, panel._defaults_from = list(cards.values()), None
    panel.ui = types.SimpleNamespace(modelLineEdit=types.SimpleNamespace(text=default.name),
                                     biasCorrectionCheckBox=types.SimpleNamespace(checked=False, enabled=True))
    panel.update_state = lambda: None
    panel.parameters = lambda: None  # no parameter node yet
    box = panel.ui.biasCorrectionCheckBox
    panel.on_model_text_changed()
    assert box.checked and box.enabled
    box.checked = False  # the user's choice
    panel.on_model_text_changed()  # the same model again (e.g. the text re-set): kept
    assert not box.checked
    panel.ui.modelLineEdit.text = older.name
    panel.on_model_text_changed()
    assert not box.checked and box.enabled
    panel.ui.modelLineEdit.text = "glioma-phantom"  # typing: no card yet, nothing changes
    box.checked = True
    panel.on_model_text_changed()
    assert box.checked
    panel.ui.modelLineEdit.text = ct.name
    panel.on_model_text_changed()
    assert not box.checked and not box.enabled
    state = types.SimpleNamespace(model=default.name, device="cpu", overlap=0.25, tta=False, dicomSeg=False,
                                  useThreshold=False, threshold=0.5, biasCorrection=False)
    assert "--no-bias-correction" in parameters.run_options(state).as_arg_list()


def test_the_default_models_n4_survives_the_parameter_node_connecting(monkeypatch):
    """Slicer's start: the panel shows the first model (its card's defaults applied to the
    box), then the module connects a fresh parameter node, whose connectGui writes the node's
    values into the widgets (biasCorrection False), and then names the first model in the node.
    The node is what a run reads, so it must end with the card's N4; before the fix the box
    and the node ended unchecked and the default model ran with --no-bias-correction. A node
    from a saved scene keeps its own choice."""
    import types

    from SymmetryAwareSegLib.models import find_models

    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace())
    monkeypatch.delitem(sys.modules, "SymmetryAwareSegLib.widget", raising=False)
    from SymmetryAwareSegLib.widget import SymmetryAwareSegPanel

    cards = {card.name: card for card in find_models([Path(contract.BUNDLED_MODELS_DIR)])}
    default = cards[contract.default_model([(c.name, c.raw) for c in cards.values()])]
    assert default.default_bias_correction

    class Node:  # the wrapped parameter node: two of its fields, and the GUI it is connected to
        def __init__(self, model="", biasCorrection=False):
            self.__dict__.update(model=model, biasCorrection=biasCorrection, gui=None)

        def __setattr__(self, name, value):
            self.__dict__[name] = value
            if name != "gui" and self.gui is not None:
                self.gui()  # Modified -> the wrapper writes every value into the widgets

    def start(node):
        panel = SymmetryAwareSegPanel.__new__(SymmetryAwareSegPanel)  # no Qt: the state logic only
        panel.models, panel._defaults_from = list(cards.values()), None
        panel.update_state = lambda: None
        panel.ui = types.SimpleNamespace(modelLineEdit=types.SimpleNamespace(text=""),
                                         biasCorrectionCheckBox=types.SimpleNamespace(checked=False, enabled=True))
        connected = {}
        panel.parameters = lambda: connected.get("node")

        def write_gui():  # connectGui / a Modified event: node -> widgets (text changes signal)
            if panel.ui.modelLineEdit.text != node.model:
                panel.ui.modelLineEdit.text = node.model
                panel.on_model_text_changed()
            panel.ui.biasCorrectionCheckBox.checked = node.biasCorrection

        # The panel's setup: the first model shown, its defaults applied (no node yet).
        panel.ui.modelLineEdit.text = str(default.path)
        panel.on_model_text_changed()
        # The module's setParameterNode: on_parameter_node, then connectGui writes the node.
        panel.on_parameter_node(node)
        connected["node"] = node
        node.gui = write_gui
        write_gui()
        # initializeParameterNode: a fresh node is given the first model.
        if not node.model:
            node.model = str(default.path)
        return panel

    fresh = Node()
    panel = start(fresh)
    assert fresh.biasCorrection is True and panel.ui.biasCorrectionCheckBox.checked
    saved = Node(model=str(default.path), biasCorrection=False)  # the user's choice, saved with the scene
    panel = start(saved)
    assert saved.biasCorrection is False and not panel.ui.biasCorrectionCheckBox.checked
