"""One preprocessing path, owned by the model card: used by inference and training alike.

- :mod:`.spec`: :class:`Preprocessing`, the card's ``preprocessing`` block, validated.
- :mod:`.intensity`: anti-aliasing before downsampling, normalisation (MRI z-score over
  the head, CT HU windows).
- :mod:`.prepare`: :func:`prepare_case` / :func:`prepare_image`: channels -> RAS -> plane
  -> symmetric frame -> normalisation -> brain box.
- :mod:`.cache`: prepared cases on disk for training (content-addressed).
"""

from .prepare import PreparedCase, brain_box, prepare_case, prepare_image, whole_scan_input
from .spec import AIR_HU, DEFAULT_CT_WINDOWS, Preprocessing

__all__ = ["Preprocessing", "PreparedCase", "prepare_case", "prepare_image", "brain_box", "whole_scan_input",
           "AIR_HU", "DEFAULT_CT_WINDOWS"]
