"""Rebuild the bundled sample case: ``python -m SymmetryAwareCore.phantoms.make_sample``."""

from __future__ import annotations

import sys

from .dataset import write_case
from .generator import make_subject
from .sample import SAMPLE_ARGS, SAMPLE_DIR, SAMPLE_NAME


def main() -> int:
    phantom = make_subject(**SAMPLE_ARGS)
    paths = write_case(phantom, SAMPLE_DIR, SAMPLE_NAME)
    total = sum(p.stat().st_size for p in paths.values())
    print(f"wrote {len(paths)} files to {SAMPLE_DIR} ({total / 1e6:.2f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
