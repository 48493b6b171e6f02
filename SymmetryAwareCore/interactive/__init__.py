"""Interactive (click / box) segmentation with a promptable SA-Swin.

- :mod:`.guidance`: clicks and boxes rasterised into the network's guidance channels;
- :mod:`.clicker`: the simulated annotator (training, tests, benchmark);
- :mod:`.session`: :class:`InteractiveSession`, the Python API behind ``symmetryaware interactive``;
- :mod:`.worker`: the JSON-lines worker (docs/interactive.md).

Nothing here imports slicer or Qt.
"""

from .clicker import Click, next_click
from .guidance import Guidance, guidance_volume

__all__ = ["Click", "next_click", "Guidance", "guidance_volume"]
