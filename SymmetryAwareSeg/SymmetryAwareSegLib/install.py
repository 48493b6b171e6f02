"""Dependencies of the core inside Slicer: check, then install only after the user agrees.

Policy:
- torch comes from the PyTorch extension (``PyTorchUtils``) when it is installed: it picks
  the CUDA build matching the driver. Otherwise it is pip-installed at the pinned version.
- Everything else is pinned here to what the core is tested with.
- Slicer's own numpy, SimpleITK and requests are never installed over (a different
  numpy ABI breaks Slicer's compiled modules); they are checked, not requested.
- Slicer >= 5.12: ``slicer.packaging.pip_ensure`` (asks, skips in testing mode);
  older Slicer: ``slicer.util.pip_install`` after our own confirmation dialog.
Nothing is installed at import time; :func:`missing_requirements` is cheap and pure.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["REQUIREMENTS", "PROTECTED", "TORCH_REQUIREMENT", "missing_requirements", "ensure_dependencies", "describe_environment"]

TORCH_REQUIREMENT = "torch==2.13.0"
"""Pinned like the core (pyproject.toml): a loose requirement pulls a multi-GB CUDA build."""

REQUIREMENTS: Tuple[Tuple[str, str], ...] = (
    # (import name, pip requirement)
    ("monai", "monai==1.6.1"),
    ("nibabel", "nibabel>=5.0"),
    ("scipy", "scipy>=1.10"),
    ("safetensors", "safetensors>=0.4"),
    ("einops", "einops>=0.7"),
    ("yaml", "pyyaml>=6.0"),
    ("matplotlib", "matplotlib>=3.7"),
    ("nilearn", "nilearn>=0.10"),
)
"""What the core needs beside torch and Slicer's own packages."""

PROTECTED = ("numpy", "SimpleITK", "requests")
"""Shipped with Slicer; never (re)installed by this module."""


def _distribution_of(import_name: str) -> str:
    return {"yaml": "pyyaml"}.get(import_name, import_name)


def _satisfies(installed: str, requirement: str) -> bool:
    """Minimal check of ``==`` and ``>=`` pins (no packaging dependency needed)."""
    match = re.match(r"^[A-Za-z0-9_.\-]+\s*(==|>=)\s*([0-9][0-9A-Za-z.\-+]*)$", requirement.strip())
    if not match:
        return True
    operator, wanted = match.groups()

    def key(version: str) -> List[int]:
        return [int(p) for p in re.findall(r"\d+", version.split("+")[0])[:4]]

    if operator == "==":
        return key(installed) == key(wanted)
    return key(installed) >= key(wanted)


def missing_requirements(
    requirements: Sequence[Tuple[str, str]] = REQUIREMENTS,
    torch_requirement: str = TORCH_REQUIREMENT,
    version_of: Callable[[str], Optional[str]] = None,
) -> List[str]:
    """Pip requirements not yet satisfied (torch included), in install order.

    ``version_of(distribution)`` returns the installed version or ``None`` (injected by
    tests; by default read from the installed package metadata, without importing).
    """
    version_of = version_of or _installed_version
    missing = []
    torch_version = version_of("torch")
    # Any torch >= the pin's major.minor is accepted: the PyTorch extension may have
    # installed a newer CUDA build, and replacing it would break its driver match.
    if torch_version is None or not _satisfies(torch_version, torch_requirement.replace("==", ">=")):
        missing.append(torch_requirement)
    for import_name, requirement in requirements:
        if import_name in PROTECTED:
            continue
        version = version_of(_distribution_of(import_name))
        if version is None or not _satisfies(version, requirement):
            missing.append(requirement)
    return missing


def _installed_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_dependencies(ask: bool = True, requester: str = "SymmetryAwareSeg") -> bool:
    """Install what is missing, after consent. Returns True when everything is present.

    Inside Slicer only. ``ask=False`` is for a batch run whose user already agreed on the
    command line. Raises ``RuntimeError`` when an installation fails.
    """
    import slicer

    missing = missing_requirements()
    if not missing:
        return True
    if ask and not _confirm(missing):
        return False
    with slicer.util.WaitCursor() if hasattr(slicer.util, "WaitCursor") else _nothing():
        if any(r.startswith("torch") for r in missing):
            _install_torch()
            missing = [r for r in missing if not r.startswith("torch")]
        if missing:
            _pip(missing, requester)
    still = missing_requirements()
    if still:
        raise RuntimeError("could not install: " + ", ".join(still))
    return True


def _confirm(missing: Sequence[str]) -> bool:
    import slicer

    text = (
        "SymmetryAwareSeg needs these Python packages, which are not installed yet:\n\n"
        + "\n".join(f"  {r}" for r in missing)
        + "\n\nInstall them now? This downloads several hundred MB and can take minutes. "
        "Slicer's own numpy, SimpleITK and requests are left untouched."
    )
    return bool(slicer.util.confirmOkCancelDisplay(text, "SymmetryAwareSeg: install dependencies"))


def _install_torch() -> None:
    try:
        import PyTorchUtils  # the PyTorch extension's module
    except ImportError:
        _pip([TORCH_REQUIREMENT], "SymmetryAwareSeg")
        return
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if not logic.torchInstalled():
        torch = logic.installTorch(askConfirmation=False, torchVersionRequirement=">=2.0")
        if torch is None:
            raise RuntimeError("PyTorch installation failed (PyTorch extension)")


def _pip(requirements: Sequence[str], requester: str) -> None:
    import slicer

    packaging = getattr(slicer, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        # Slicer >= 5.12: one call checks, asks (already done: no second prompt) and installs.
        packaging.pip_ensure(list(requirements), requester=requester, prompt_install=False, skip_in_testing=True)
    else:
        # --upgrade-strategy only-if-needed keeps Slicer's numpy when a package depends on it.
        slicer.util.pip_install(list(requirements) + ["--upgrade-strategy", "only-if-needed"])


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def describe_environment() -> Dict[str, Optional[str]]:
    """Installed versions of the packages that matter, for the status line and bug reports."""
    names = ["torch"] + [_distribution_of(i) for i, _ in REQUIREMENTS] + list(PROTECTED)
    return {name: _installed_version(name) for name in names}
