"""``symmetryaware interactive``: the click / box segmentation worker (JSON lines on stdin/stdout).

The protocol is in docs/interactive.md; the Python API behind it is
:class:`SymmetryAwareCore.interactive.session.InteractiveSession`.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["add_parser", "run"]

EXAMPLE = """example (one JSON request per line; one reply per line):
  symmetryaware interactive
  {"cmd": "load", "images": ["c_t1.nii.gz", "c_t1ce.nii.gz", "c_t2.nii.gz", "c_flair.nii.gz"]}
  {"cmd": "click", "ras": [-30, 12, 20], "positive": true}
  {"cmd": "save", "path": "lesion.nii.gz"}
  {"cmd": "quit"}"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "interactive",
        help="interactive segmentation worker: clicks and boxes as JSON lines on stdin, replies on stdout",
        description="Keep a promptable SA-Swin, the aligned scan and the counterpart encoding in memory and "
        "answer one JSON request per line (load, click, box, auto, undo, reset, save, status, quit).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..interactive.session import InteractiveSession
    from ..interactive.worker import Worker, serve

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s: %(message)s")
    replies = sys.stdout
    # Whatever a library prints must not corrupt the reply stream.
    sys.stdout = sys.stderr
    try:
        return serve(sys.stdin, replies, Worker(InteractiveSession(device=args.device, threads=args.threads)))
    finally:
        sys.stdout = replies
