"""The ``symmetryaware`` command: one entry point, one sub-command per job.

Each sub-command lives in its own module of this package and exposes
``add_parser(subparsers)`` and ``run(args) -> int``. A user's mistake raises
:class:`~SymmetryAwareCore.errors.InputError`, printed here as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    "interactive",
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
    and exit code 2; so do errors of the machine rather than of the code: an OSError (disk
    full, read-only file system, no permission; it names the file) and running out of
    memory. Ctrl-C exits with 130. ``--max-voxels`` (where a command has it) sets the
    voxel budget for the whole process, as ``$SYMMETRYAWARE_MAX_VOXELS`` would. Shared by
    ``symmetryaware`` and ``symmetryaware-train``.
    """
    args = parser.parse_args(argv)
    prefix = f"{parser.prog} {args.command}: error:"
    try:
        budget = getattr(args, "max_voxels", None)
        if budget is not None:
            from ..io.validate import VOXEL_BUDGET_ENV, parse_voxel_count

            os.environ[VOXEL_BUDGET_ENV] = str(parse_voxel_count(str(budget)))
        return int(args.func(args) or 0)
    except InputError as error:
        print(f"{prefix} {error}", file=sys.stderr)
        return 2
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"{prefix} {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prefix} out of memory: this run does not fit this machine (images are refused above the "
              "voxel budget, --max-voxels; a lower budget refuses such images before reading them)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
