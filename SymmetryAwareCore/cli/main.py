"""The ``symmetryaware`` command: one entry point, one sub-command per job.

Each sub-command lives in its own module of this package and exposes
``add_parser(subparsers)`` and ``run(args) -> int``. A user's mistake raises
:class:`~SymmetryAwareCore.errors.InputError`, printed here as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from .. import __version__
from ..errors import InputError

# Modules of this package that define a sub-command, in the order --help lists them.
COMMANDS = (
    "segment",
    "classify",
    "attention",
    "msp",
    "phantom",
    "models",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symmetryaware",
        description="Symmetry-aware brain image analysis (SA-Swin): alignment to the mid-sagittal "
        "plane, mirror-paired segmentation, hemispheric attention.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"{__package__}.{name}")
        module.add_parser(sub)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` and run the chosen sub-command's ``func``.

    A user's mistake (:class:`InputError`) becomes one line ``<prog> <command>: error: ...``
    and exit code 2; Ctrl-C exits with 130. Shared by ``symmetryaware`` and
    ``symmetryaware-train``.
    """
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
