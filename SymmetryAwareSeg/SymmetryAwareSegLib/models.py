"""Model cards as the module sees them: names, input channels, offline import.

A model card is the JSON file beside a model's ``.safetensors`` weights (written by the
core's training code). The module reads only what it needs to build a command line:
``channels: [{"name": "t1", "patterns": ["*t1.*", "*t1_*"]}, ...]`` (the inputs the
network expects, in order, with filename patterns) and, when present, ``title``,
``modality`` and ``sha256`` (of the weights file). Nothing here imports torch or Qt.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = ["ModelCard", "read_model_card", "find_models", "assign_channels", "import_model", "sha256_of"]


@dataclass(frozen=True)
class ModelCard:
    """What the module needs to know about one model.

    ``path`` is the card's JSON file; ``weights`` the ``.safetensors`` beside it (may not
    exist for a card listed before its weights are imported).
    """

    name: str
    path: Path
    channels: Tuple[Tuple[str, Tuple[str, ...]], ...]
    title: str = ""
    modality: str = ""
    sha256: str = ""
    raw: Dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def weights(self) -> Path:
        return self.path.with_suffix(".safetensors")

    @property
    def channel_names(self) -> Tuple[str, ...]:
        return tuple(name for name, _ in self.channels)


def read_model_card(path: Union[str, Path]) -> ModelCard:
    """Read a model card; raise ``ValueError`` naming the file if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable model card ({error})") from None
    channels = data.get("channels") if isinstance(data, dict) else None
    if not isinstance(channels, list) or not channels:
        raise ValueError(f"{path}: model card has no 'channels' list")
    parsed = []
    for entry in channels:
        if not isinstance(entry, dict) or "name" not in entry:
            raise ValueError(f"{path}: each channel needs a 'name'")
        patterns = entry.get("patterns") or [f"*{entry['name']}*"]
        parsed.append((str(entry["name"]), tuple(str(p) for p in patterns)))
    return ModelCard(
        name=str(data.get("name") or path.stem),
        path=path,
        channels=tuple(parsed),
        title=str(data.get("title", "")),
        modality=str(data.get("modality", "")),
        sha256=str(data.get("sha256", "")).lower(),
        raw=data,
    )


def find_models(folders: Iterable[Union[str, Path]]) -> List[ModelCard]:
    """Model cards (``*.json`` with a ``channels`` list) in ``folders``, first folder wins a name."""
    cards: Dict[str, ModelCard] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.json")):
            if any(part.startswith(".") for part in path.relative_to(folder).parts):
                continue  # hidden: an import staging (or killed) there, not a model
            try:
                card = read_model_card(path)
            except (ValueError, RecursionError):
                continue  # other JSON files (reports, manifests) live beside models
            cards.setdefault(card.name, card)
    return list(cards.values())


def _normalise(name: str) -> str:
    # Node names often lack the extension the patterns were written for ("BraTS_t1" vs
    # "BraTS_t1.nii.gz"); matching both the name and name + "." lets "*t1.*" match.
    return name.lower()


def assign_channels(card_channels: Sequence[Tuple[str, Sequence[str]]], names: Sequence[str]) -> List[Optional[int]]:
    """Assign input names (Slicer node names or file names) to a model's channels.

    Args:
        card_channels: ``(channel_name, patterns)`` in the model's input order.
        names: the candidate names.

    Returns:
        For each channel, the index in ``names`` of the assigned input, or ``None``.
        Each name is used at most once; a channel whose patterns match several names
        takes the first unused one. Matching ignores case, and a name without an
        extension also matches a pattern that expects one (``"*t1.*"`` matches ``"case_t1"``).
    """
    used = set()
    result: List[Optional[int]] = []
    for _channel, patterns in card_channels:
        chosen = None
        for index, name in enumerate(names):
            if index in used:
                continue
            low = _normalise(name)
            candidates = (low, low + ".", low + "_")
            if any(fnmatch.fnmatchcase(c, p.lower()) for p in patterns for c in candidates):
                chosen = index
                break
        if chosen is not None:
            used.add(chosen)
        result.append(chosen)
    return result


def sha256_of(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def import_model(card_path: Union[str, Path], destination: Union[str, Path]) -> ModelCard:
    """Copy a model (card + weights) into ``destination`` for offline use.

    The weights' SHA-256 is checked against the card's ``sha256`` when the card has one,
    before anything is copied, so a truncated download never becomes a listed model.
    Files are copied to temporary names and renamed, so nothing half-written is left.
    """
    card = read_model_card(card_path)
    if not card.weights.is_file():
        raise ValueError(f"{card.weights}: weights file missing beside the model card")
    if card.sha256 and sha256_of(card.weights) != card.sha256:
        raise ValueError(f"{card.weights}: SHA-256 does not match the model card")
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for source in (card.weights, card.path):
        target = destination / source.name
        temporary = target.with_name("." + target.name + ".part")
        shutil.copyfile(source, temporary)
        temporary.replace(target)
    return read_model_card(destination / card.path.name)
