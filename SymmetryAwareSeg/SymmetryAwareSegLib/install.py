"""Dependencies of the core inside Slicer 5.8 to 5.12: decide, ask, install, explain failures.

Policy (every decision is made by the pure :func:`plan_install`, tested per Slicer version):

- **Floors, not pins.** Slicer 5.8 ships Python 3.9, whose newest builds are torch 2.8 and
  monai 1.5.2, so exact pins of the core's CI versions (pyproject.toml) cannot install
  there. The floors below are the oldest versions the core is verified on (docs/slicer.md).
- **torch comes from the PyTorch extension** (``PyTorchUtils``) when it is installed: it
  picks the CUDA build matching the driver. A torch it already installed is accepted when
  it meets :data:`TORCH_FLOOR` and is never replaced; an older one is not silently upgraded
  (the running Slicer has it loaded): the user is told what to do. Without the extension
  torch is pip-installed after consent.
- **Slicer's own packages stay.** A constraints file pins the installed numpy, SimpleITK,
  requests and pydicom (and an installed torch), so no requirement can replace them.
- **Installer by Slicer version**: ``slicer.packaging.pip_ensure`` (Slicer 5.12; a submodule
  that must be imported: ``getattr(slicer, "packaging")`` is None before it is) or
  ``slicer.pydeps.pip_ensure`` (later), both with ``constraints=``; before 5.12
  ``slicer.util.pip_install`` with ``-c constraints.txt``.
- Nothing phantom-only (nilearn and its pandas/scikit-learn) is installed into Slicer.
- Every failure (``subprocess.CalledProcessError`` from pip included) becomes a
  :class:`DependencyError` whose ``detail`` holds the tool's output, for the panel's dialog.
Nothing is installed at import time.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "TORCH_FLOOR",
    "MINIMUM_PYTHON",
    "REQUIREMENTS",
    "OPTIONAL_REQUIREMENTS",
    "PROTECTED",
    "Environment",
    "InstallPlan",
    "DependencyError",
    "detect_environment",
    "plan_install",
    "constraints_text",
    "ensure_dependencies",
    "describe_environment",
]

MINIMUM_PYTHON = (3, 9)
"""Slicer 5.8's Python; older Slicer releases are not supported."""

TORCH_FLOOR = "2.2"
"""Oldest torch the core is verified on (has builds for Python 3.9 to 3.12)."""

REQUIREMENTS: Tuple[Tuple[str, str], ...] = (
    # (distribution, pip requirement): floors that exist for Python 3.9
    ("monai", "monai>=1.4"),
    ("nibabel", "nibabel>=5.0"),
    ("scipy", "scipy>=1.10"),
    ("safetensors", "safetensors>=0.4"),
    ("einops", "einops>=0.7"),
    ("pyyaml", "pyyaml>=6.0"),
    ("matplotlib", "matplotlib>=3.7"),
    ("slicerio", "slicerio>=1.1"),
)
"""What the core's ``segment`` command needs beside torch and Slicer's own packages."""

OPTIONAL_REQUIREMENTS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "dicom": (("highdicom", "highdicom>=0.22"),),
}
"""Installed only when the user asks for the feature (DICOM SEG output)."""

PROTECTED = ("numpy", "SimpleITK", "requests", "pydicom")
"""Shipped with Slicer: pinned at their installed version, never (re)installed."""

PHANTOM_ONLY = ("nilearn",)
"""Used only by the phantom generator; never installed into Slicer."""


class DependencyError(RuntimeError):
    """Dependencies cannot be installed or used; ``detail`` holds the tool output, if any."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


# ---------------------------------------------------------------------------------------
# The situation and the decision (pure; the tests build Environments by hand)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Environment:
    """What the running Slicer offers.

    Attributes:
        python: ``(major, minor)``.
        versions: installed distribution -> version (``None`` or absent: not installed).
        pytorch_extension: the PyTorch extension's ``PyTorchUtils`` module is importable.
        pip_ensure: ``"slicer.packaging"`` (5.12), ``"slicer.pydeps"`` (later) or ``""``
            (Slicer 5.8 / 5.10: only ``slicer.util.pip_install``).
    """

    python: Tuple[int, int]
    versions: Mapping[str, Optional[str]]
    pytorch_extension: bool = False
    pip_ensure: str = ""

    def version(self, distribution: str) -> Optional[str]:
        return self.versions.get(distribution)


@dataclass(frozen=True)
class InstallPlan:
    """What :func:`ensure_dependencies` will do.

    ``torch`` is ``"ok"``, ``"extension"`` (install through PyTorchUtils), ``"pip"`` or
    ``"too-old"`` (blocked: ``problems`` says what to do). ``packages`` are pip
    requirements; ``installer`` is ``"pip_ensure"`` or ``"pip_install"``.
    """

    torch: str
    packages: Tuple[str, ...]
    installer: str
    problems: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()

    @property
    def nothing_to_do(self) -> bool:
        return self.torch == "ok" and not self.packages and not self.problems

    def summary(self) -> List[str]:
        """One line per thing to install, for the consent dialog."""
        lines = []
        if self.torch == "extension":
            lines.append(f"torch>={TORCH_FLOOR} (through the PyTorch extension: the build matching your GPU driver)")
        elif self.torch == "pip":
            lines.append(f"torch>={TORCH_FLOOR} (from PyPI; the PyTorch extension would pick a GPU build)")
        return lines + list(self.packages)


def _version_key(version: str) -> Tuple[int, ...]:
    """``"2.8.0+cu126"`` -> ``(2, 8, 0)``; pre-release tags are ignored (good enough for floors)."""
    numbers = re.findall(r"\d+", version.split("+")[0])[:4]
    return tuple(int(n) for n in numbers)


def meets(version: Optional[str], floor: str) -> bool:
    """``version >= floor`` by release numbers; ``None`` (not installed) never meets."""
    if version is None:
        return False
    have, want = _version_key(version), _version_key(floor)
    width = max(len(have), len(want))
    return have + (0,) * (width - len(have)) >= want + (0,) * (width - len(want))


def _floor_of(requirement: str) -> str:
    match = re.match(r"^[A-Za-z0-9_.\-]+\s*>=\s*([0-9][0-9A-Za-z.\-+]*)$", requirement.strip())
    if not match:
        raise ValueError(f"only 'name>=version' floors are used here, not {requirement!r}")
    return match.group(1)


def plan_install(env: Environment, features: Sequence[str] = ()) -> InstallPlan:
    """Decide what to install in ``env`` (``features``: keys of :data:`OPTIONAL_REQUIREMENTS`)."""
    problems: List[str] = []
    notes: List[str] = []
    if tuple(env.python) < MINIMUM_PYTHON:
        problems.append(
            f"SymmetryAwareSeg needs Slicer 5.8 or newer (Python {MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]}+); "
            f"this Slicer has Python {env.python[0]}.{env.python[1]}."
        )
    torch_version = env.version("torch")
    if torch_version is not None:
        if meets(torch_version, TORCH_FLOOR):
            torch = "ok"
            notes.append(f"using the installed torch {torch_version}")
        else:
            torch = "too-old"
            where = "the PyTorch Utils module" if env.pytorch_extension else "the Python console (pip_uninstall('torch'))"
            problems.append(
                f"PyTorch {torch_version} is installed, but SymmetryAwareSeg needs torch {TORCH_FLOOR} or newer. "
                f"Uninstall it from {where}, restart Slicer, then press Apply again: a matching torch "
                f"(version requirement '>={TORCH_FLOOR}') is installed after you agree. It is not replaced "
                "while Slicer runs, because this Slicer session has it loaded."
            )
    else:
        torch = "extension" if env.pytorch_extension else "pip"
    wanted = list(REQUIREMENTS)
    for feature in features:
        if feature not in OPTIONAL_REQUIREMENTS:
            raise ValueError(f"unknown optional feature {feature!r}")
        wanted += list(OPTIONAL_REQUIREMENTS[feature])
    packages = tuple(
        requirement
        for distribution, requirement in wanted
        if distribution not in PROTECTED and distribution not in PHANTOM_ONLY
        and not meets(env.version(distribution), _floor_of(requirement))
    )
    installer = "pip_ensure" if env.pip_ensure else "pip_install"
    return InstallPlan(torch=torch, packages=packages, installer=installer, problems=tuple(problems), notes=tuple(notes))


def constraints_text(env: Environment) -> str:
    """A pip constraints file pinning Slicer's own packages (and an installed torch)."""
    lines = ["# Written by SymmetryAwareSeg: keep Slicer's own packages as they are."]
    for distribution in PROTECTED + ("torch",):
        version = env.version(distribution)
        if version:
            lines.append(f"{distribution}=={version}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# The running Slicer
# ---------------------------------------------------------------------------------------
def _installed_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pip_ensure_module() -> Tuple[str, Optional[object]]:
    """``(name, module)`` of Slicer's ``pip_ensure`` provider, or ``("", None)`` before 5.12."""
    for name in ("slicer.packaging", "slicer.pydeps"):
        try:
            # A submodule: importing it is the only way to get it (slicer.packaging is
            # otherwise None on 5.12, and missing on 5.8 / 5.10).
            module = importlib.import_module(name)
        except ImportError:
            continue
        if callable(getattr(module, "pip_ensure", None)):
            return name, module
    return "", None


def detect_environment(version_of: Optional[Callable[[str], Optional[str]]] = None) -> Environment:
    """The running interpreter's situation (inside Slicer, or any Python for tests)."""
    version_of = version_of or _installed_version
    names = ["torch"] + [d for d, _ in REQUIREMENTS] + [d for reqs in OPTIONAL_REQUIREMENTS.values() for d, _ in reqs]
    names += list(PROTECTED)
    try:
        extension = importlib.util.find_spec("PyTorchUtils") is not None
    except (ImportError, ValueError):
        extension = False
    return Environment(
        python=tuple(sys.version_info[:2]),
        versions={name: version_of(name) for name in names},
        pytorch_extension=extension,
        pip_ensure=_pip_ensure_module()[0],
    )


def ensure_dependencies(
    ask: bool = True,
    requester: str = "SymmetryAwareSeg",
    features: Sequence[str] = (),
    confirm: Optional[Callable[[Sequence[str]], bool]] = None,
) -> bool:
    """Install what is missing, after consent. Returns True when everything is present.

    Inside Slicer. ``ask=False`` is for a batch run whose user agreed on the command line.
    Returns False when the user declines. Raises :class:`DependencyError` (message for the
    user, ``detail`` with the tool output) for every failure, pip's included.
    """
    env = detect_environment()
    plan = plan_install(env, features)
    if plan.problems:
        raise DependencyError("\n\n".join(plan.problems))
    if plan.nothing_to_do:
        return True
    if ask and not (confirm or _confirm)(plan.summary()):
        return False
    with tempfile.TemporaryDirectory(prefix="SymmetryAwareSeg_pip_") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text(constraints_text(env), encoding="utf-8")
        try:
            if plan.torch == "extension":
                _install_torch_with_extension()
            elif plan.torch == "pip":
                _pip([f"torch>={TORCH_FLOOR}"], constraints, requester)
            if plan.packages:
                # torch is pinned now that it is there, so no package can swap the build.
                constraints.write_text(constraints_text(detect_environment()), encoding="utf-8")
                _pip(list(plan.packages), constraints, requester)
        except subprocess.CalledProcessError as error:
            raise DependencyError(
                f"Installing Python packages failed (exit code {error.returncode}). Check the network "
                "connection and the details below; Slicer's own packages were not changed.",
                _process_output(error),
            ) from None
        except DependencyError:
            raise
        except Exception as error:  # anything a Slicer installer raises: shown, never a bare traceback
            raise DependencyError(f"Installing Python packages failed: {error}", repr(error)) from None
    importlib.invalidate_caches()
    still = plan_install(detect_environment(), features)
    if not still.nothing_to_do:
        raise DependencyError(
            "Some packages are still missing after installation: " + ", ".join(still.summary() or still.problems)
            + ". Restart Slicer and try again.",
        )
    return True


def _process_output(error: subprocess.CalledProcessError) -> str:
    parts = [f"command: {error.cmd}"]
    for stream in (error.output, error.stderr):
        if stream:
            parts.append(stream.decode("utf-8", "replace") if isinstance(stream, bytes) else str(stream))
    return "\n".join(parts)


def _confirm(lines: Sequence[str]) -> bool:
    import slicer

    text = (
        "SymmetryAwareSeg needs these Python packages, which are not installed yet:\n\n"
        + "\n".join(f"  {line}" for line in lines)
        + "\n\nInstall them now? This downloads several hundred MB and can take minutes. "
        "Slicer's own numpy, SimpleITK, requests and pydicom are left untouched."
    )
    return bool(slicer.util.confirmOkCancelDisplay(text, "SymmetryAwareSeg: install dependencies"))


def _install_torch_with_extension() -> None:
    import PyTorchUtils  # the PyTorch extension's module

    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=f">={TORCH_FLOOR}")
    if torch is None:
        raise DependencyError("The PyTorch extension did not install torch; open the PyTorch Utils module to see why.")


def _pip(requirements: Sequence[str], constraints: Path, requester: str) -> None:
    import slicer

    name, module = _pip_ensure_module()
    if module is not None:
        # Slicer >= 5.12: pip_ensure takes packaging Requirement objects; consent was asked already.
        from packaging.requirements import Requirement

        module.pip_ensure(
            [Requirement(r) for r in requirements], constraints=str(constraints),
            prompt_install=False, requester=requester, skip_in_testing=True,
        )
    else:
        # Slicer 5.8 / 5.10: a list is passed to pip as separate arguments (paths with spaces survive).
        slicer.util.pip_install(["-c", str(constraints), *requirements])


def describe_environment() -> Dict[str, Optional[str]]:
    """Installed versions of the packages that matter, for the status line and bug reports."""
    return dict(detect_environment().versions)
