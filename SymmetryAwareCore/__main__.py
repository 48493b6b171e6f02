"""``python -m SymmetryAwareCore`` runs the ``symmetryaware`` command (used by PythonSlicer)."""

import sys

from .cli.main import main

sys.exit(main())
