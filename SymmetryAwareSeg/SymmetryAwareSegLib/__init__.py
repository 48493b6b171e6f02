"""Library of the SymmetryAwareSeg Slicer module: one concept per file.

- ``parameters``: the typed parameter node wrapper bound to the .ui.
- ``models``: model cards (input channels, labels) and channel assignment by node name.
- ``process``: the child process running the core command line (progress, cancel).
- ``logic``: MRML nodes in and out; no widgets. Imports without Qt.
- ``install``: dependency check and installation after consent.
- ``widget``: the panel (Qt; imported only inside Slicer).
"""
