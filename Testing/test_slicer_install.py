"""Install decisions per Slicer version, with fakes for Slicer, its installers and PyTorchUtils.

Situations (checked against Slicer's source at v5.8.0, v5.10.0, v5.12.0): 5.8 has Python 3.9
and only ``slicer.util.pip_install``; 5.12 adds the ``slicer.packaging`` submodule with
``pip_ensure(requirements, constraints=...)``; later releases move it to ``slicer.pydeps``.
The PyTorch extension may be there or not, may have installed a torch, maybe an old one.
"""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SymmetryAwareSeg"))
from SymmetryAwareSegLib import install  # noqa: E402
from SymmetryAwareSegLib.install import DependencyError, Environment, constraints_text, plan_install  # noqa: E402

SLICER_OWN = {"numpy": "1.26.4", "SimpleITK": "2.4.0", "requests": "2.32.3", "pydicom": "2.4.4"}
CORE_PRESENT = {"monai": "1.5.2", "nibabel": "5.3.2", "scipy": "1.13.1", "safetensors": "0.4.5", "einops": "0.8.0",
                "pyyaml": "6.0.2", "matplotlib": "3.9.2", "slicerio": "1.1.2"}


def env(python=(3, 9), torch=None, extension=True, pip_ensure="", **versions):
    merged = {**SLICER_OWN, **versions}
    if torch:
        merged["torch"] = torch
    return Environment(python=python, versions=merged, pytorch_extension=extension, pip_ensure=pip_ensure)


# -- the decision, per situation ---------------------------------------------------------
def test_slicer_58_fresh_installs_torch_through_the_extension_and_floors_with_pip_install():
    plan = plan_install(env(python=(3, 9)))
    assert plan.torch == "extension" and plan.installer == "pip_install" and not plan.problems
    assert "monai>=1.4" in plan.packages and "slicerio>=1.1" in plan.packages
    # Floors that exist for Python 3.9 (torch 2.8 and monai 1.5.2 are the newest there).
    assert all(">=" in p and "==" not in p for p in plan.packages)
    assert install.meets("2.8.0", install.TORCH_FLOOR) and install.meets("1.5.2", "1.4")
    # Never Slicer's own packages, never phantom-only ones.
    assert not any(p.split(">=")[0].lower() in {"numpy", "simpleitk", "requests", "pydicom", "nilearn"} for p in plan.packages)


def test_torch_from_the_pytorch_extension_is_accepted_when_it_meets_the_floor():
    plan = plan_install(env(torch="2.8.0+cu126", **CORE_PRESENT))
    assert plan.torch == "ok" and plan.nothing_to_do
    assert "torch==2.8.0+cu126" in constraints_text(env(torch="2.8.0+cu126"))


def test_too_old_torch_blocks_with_what_to_do():
    plan = plan_install(env(torch="1.13.1+cu117", **CORE_PRESENT))
    assert plan.torch == "too-old" and not plan.nothing_to_do
    (problem,) = plan.problems
    assert "1.13.1" in problem and f">={install.TORCH_FLOOR}" in problem and "PyTorch Utils" in problem
    assert "restart Slicer" in problem


def test_without_the_extension_torch_comes_from_pip():
    plan = plan_install(env(extension=False, **CORE_PRESENT))
    assert plan.torch == "pip" and plan.packages == ()
    assert plan.summary() == [f"torch>={install.TORCH_FLOOR} (from PyPI; the PyTorch extension would pick a GPU build)"]


def test_slicer_510_and_512_choose_their_installer():
    assert plan_install(env(python=(3, 12), torch="2.9.0")).installer == "pip_install"  # 5.10: no slicer.packaging
    assert plan_install(env(python=(3, 12), torch="2.9.0", pip_ensure="slicer.packaging")).installer == "pip_ensure"
    assert plan_install(env(python=(3, 12), torch="2.9.0", pip_ensure="slicer.pydeps")).installer == "pip_ensure"


def test_python_38_slicer_is_refused():
    plan = plan_install(env(python=(3, 8), torch="2.2.0", **CORE_PRESENT))
    assert plan.problems and "Slicer 5.8 or newer" in plan.problems[0]


def test_too_old_core_package_is_requested_and_optional_dicom_only_when_asked():
    plan = plan_install(env(torch="2.8.0", **{**CORE_PRESENT, "monai": "1.3.2"}))
    assert plan.packages == ("monai>=1.4",)
    assert "highdicom>=0.22" in plan_install(env(torch="2.8.0", **CORE_PRESENT), features=["dicom"]).packages
    with pytest.raises(ValueError):
        plan_install(env(), features=["nope"])


def test_constraints_pin_every_installed_slicer_package():
    text = constraints_text(env(torch=None))
    for name, version in SLICER_OWN.items():
        assert f"{name}=={version}" in text
    assert "torch" not in text


# -- the actions, with a fake Slicer ------------------------------------------------------
class FakeSlicer:
    """Installs a fake ``slicer`` (and optionally ``slicer.packaging``/``PyTorchUtils``) and records calls."""

    def __init__(self, monkeypatch, versions, packaging=False, extension=False, pip_error=None):
        self.versions = dict(versions)
        self.calls = []
        slicer = types.ModuleType("slicer")  # not a package: `import slicer.packaging` fails, as on 5.8
        slicer.util = types.SimpleNamespace(pip_install=self._pip_install, confirmOkCancelDisplay=lambda *a, **k: True)
        monkeypatch.setitem(sys.modules, "slicer", slicer)
        for name in ("slicer.packaging", "slicer.pydeps", "PyTorchUtils"):
            monkeypatch.delitem(sys.modules, name, raising=False)
        if packaging:
            module = types.ModuleType("slicer.packaging")
            module.pip_ensure = self._pip_ensure
            monkeypatch.setitem(sys.modules, "slicer.packaging", module)
        if extension:
            torch_utils = types.ModuleType("PyTorchUtils")
            torch_utils.__spec__ = importlib.machinery.ModuleSpec("PyTorchUtils", None)
            torch_utils.PyTorchUtilsLogic = lambda: types.SimpleNamespace(installTorch=self._install_torch)
            monkeypatch.setitem(sys.modules, "PyTorchUtils", torch_utils)
        self.pip_error = pip_error
        monkeypatch.setattr(install, "_installed_version", self.versions.get)

    def _installed(self, requirements):
        for requirement in requirements:
            name, floor = str(requirement).split(">=")
            self.versions[name] = floor

    def _pip_install(self, args):
        self.calls.append(("pip_install", list(args), Path(args[1]).read_text()))
        if self.pip_error:
            raise self.pip_error
        self._installed(args[2:])

    def _pip_ensure(self, requirements, constraints=None, prompt_install=True, requester=None, skip_in_testing=True):
        self.calls.append(("pip_ensure", [str(r) for r in requirements], Path(constraints).read_text()))
        assert not prompt_install, "consent is asked once, by the module"
        assert all(type(r).__name__ == "Requirement" for r in requirements), "pip_ensure takes Requirement objects"
        self._installed(requirements)

    def _install_torch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
        self.calls.append(("installTorch", torchVersionRequirement, ""))
        self.versions["torch"] = "2.8.0+cu126"
        return types.SimpleNamespace(__version__="2.8.0+cu126")


def test_ensure_on_slicer_58_uses_pip_install_with_constraints(monkeypatch):
    fake = FakeSlicer(monkeypatch, SLICER_OWN, extension=True)
    assert install.ensure_dependencies(ask=True)
    (torch_call, pip_call) = fake.calls
    assert torch_call[:2] == ("installTorch", f">={install.TORCH_FLOOR}")
    kind, args, constraints = pip_call
    assert kind == "pip_install" and args[0] == "-c" and "monai>=1.4" in args
    assert "numpy==1.26.4" in constraints and "SimpleITK==2.4.0" in constraints
    assert "torch==2.8.0+cu126" in constraints  # the extension's torch is pinned before the rest installs


def test_ensure_on_slicer_512_imports_slicer_packaging_and_passes_constraints(monkeypatch):
    pytest.importorskip("packaging")
    fake = FakeSlicer(monkeypatch, {**SLICER_OWN, "torch": "2.9.1"}, packaging=True)
    assert install.ensure_dependencies(ask=False)
    ((kind, requirements, constraints),) = fake.calls
    assert kind == "pip_ensure" and "monai>=1.4" in requirements and "pydicom==2.4.4" in constraints


def test_pip_failure_becomes_a_dependency_error_with_the_output(monkeypatch):
    error = subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "pip"], output="ERROR: No matching distribution for monai>=1.4")
    FakeSlicer(monkeypatch, {**SLICER_OWN, "torch": "2.8.0"}, pip_error=error)
    with pytest.raises(DependencyError) as info:
        install.ensure_dependencies(ask=False)
    assert "exit code 1" in str(info.value)
    assert "No matching distribution" in info.value.detail


def test_declined_consent_installs_nothing(monkeypatch):
    fake = FakeSlicer(monkeypatch, SLICER_OWN, extension=True)
    assert install.ensure_dependencies(ask=True, confirm=lambda lines: False) is False
    assert fake.calls == []


def test_too_old_torch_is_reported_before_asking(monkeypatch):
    fake = FakeSlicer(monkeypatch, {**SLICER_OWN, "torch": "1.12.0"}, extension=True)
    asked = []
    with pytest.raises(DependencyError, match="needs torch"):
        install.ensure_dependencies(ask=True, confirm=lambda lines: asked.append(lines) or True)
    assert asked == [] and fake.calls == []
