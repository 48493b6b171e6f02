"""Library of the SymmetryAwareSeg Slicer module: one concept per file.

- ``parameters``: the typed parameter node wrapper bound to the .ui (defaults and ranges
  from the core's contract, ``SymmetryAwareCore.contract``).
- ``models``: model cards (channels, licence, training data) and offline import.
- ``process``: the child process running the core command line (progress, cancel).
- ``logic``: the logic, made of ``command`` (volumes out, the contract's command line,
  the child), ``results`` (files into the scene: segments with terminology and laterality,
  maps with colour legends, plane, 3D), ``attention`` (point mode: where a placed point
  attends, its mirror marked), ``tables`` (volumes per hemisphere), ``batch`` (folders, in the
  background) and ``classification`` (scan-level classifiers: probabilities, lesion maps); ``nodes`` holds the small MRML/VTK helpers they share. Imports without Qt.
- ``interactive``: the interactive worker's protocol, its process and the grid mapping (pure
  Python); ``interactive_edit``: its replies pasted into the selected segment (locks, undo).
- ``install``: dependency decisions per Slicer version, installation after consent.
- ``widget``, ``interactive_panel``: the panel and its Interactive section (Qt; imported only
  inside Slicer).

Rules shared with the command line (run options, case ids, output file names, channel
assignment) are never written here: they are imported from ``SymmetryAwareCore.contract``.
"""
