"""Model cards as the module sees them: names, input channels, offline import.

A model card is the JSON file beside a model's ``.safetensors`` weights (written by the
core's training code). The module reads what it needs to build a command line and to tell
the user what the model is: ``channels: [{"name": "t1", "patterns": ["*t1.*", "*t1_*"]}, ...]``
(the inputs the network expects, in order, with filename patterns) and, when present,
``title``, ``modality``, ``licence``, ``training_data``, ``version`` and ``sha256`` (of the
weights file). Channel assignment is the core's rule (``SymmetryAwareCore.contract``).
Nothing here imports torch or Qt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple, Union

__all__ = ["ModelCard", "read_model_card", "find_models", "channel_assignment_text", "import_model", "sha256_of"]


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

    @property
    def licence(self) -> str:
        return str(self.raw.get("licence") or self.raw.get("license") or "")

    @property
    def training_data(self) -> str:
        return str(self.raw.get("training_data", ""))

    @property
    def version(self) -> str:
        return str(self.raw.get("version", ""))

    @property
    def findings(self) -> Tuple[str, ...]:
        """Scan-level findings of a classifier card (``postprocessing.findings``); empty for a
        segmentation model. Apply runs a classifier with the core's ``classify``."""
        from SymmetryAwareCore.contract import card_findings

        return card_findings(self.raw)

    @property
    def bias_correction(self) -> bool:
        """True when the card's preprocessing removes each MRI channel's bias field (N4)
        first: then the panel's *Remove MRI bias field first* starts checked for it."""
        from SymmetryAwareCore.contract import card_bias_correction

        return card_bias_correction(self.raw) == "n4"

    @property
    def default_bias_correction(self) -> bool:
        """Where the panel's *Remove MRI bias field first* starts for this card: its own
        preprocessing, and never for a CT model (where N4 is refused)."""
        return self.bias_correction and not self.is_ct

    @property
    def is_ct(self) -> bool:
        """A CT model (HU windows): bias-field correction does not apply to it."""
        from SymmetryAwareCore.contract import card_is_ct

        return card_is_ct({**self.raw, "modality": self.modality})

    @property
    def measured_times(self) -> Dict:
        """``{"cpu_s": ..., "gpu_s": ...}`` when the card records measured run times."""
        times = self.raw.get("measured_times") or self.raw.get("timing") or {}
        return dict(times) if isinstance(times, dict) else {}

    def describe(self) -> str:
        """A few lines for the panel: modality, channels, licence, training data, times."""
        lines = [f"{self.title or self.name} {self.version}".strip()]
        lines.append(f"Modality: {self.modality or 'not stated'}; channels: {', '.join(self.channel_names)}")
        if self.findings:
            from SymmetryAwareCore.contract import card_has_lesion_map

            where = (" and a map of where it sees it" if card_has_lesion_map(self.raw) else "")
            lines.append(f"Scan-level classifier ({', '.join(self.findings)}): Apply gives one probability per "
                         f"finding{where}, no segmentation")
        if self.bias_correction:
            lines.append("Preprocessing: each input's MRI bias field is removed first (N4)")
        lines.append(f"Licence: {self.licence or 'not stated'}")
        if self.training_data:
            data = self.training_data if len(self.training_data) <= 240 else self.training_data[:237] + "..."
            lines.append(f"Training data: {data}")
        if self.measured_times:
            lines.append("Measured: " + ", ".join(f"{k} {v}" for k, v in self.measured_times.items()))
        return "\n".join(lines)


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
    """Model cards (``*.json`` with a ``channels`` list) in ``folders``, first folder wins a name;
    scan-level classifiers after the segmentation models."""
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
            from SymmetryAwareCore.contract import is_component_card

            if is_component_card(card.raw):
                continue  # a symmetry head beside its model is part of it, not a model
            cards.setdefault(card.name, card)
    # The first card is the panel's preselected model: the bundled default of `segment` (the
    # core's one rule), then the other segmentation models (the panel segments), then
    # scan-level classifiers; stable otherwise.
    default = None
    try:
        from SymmetryAwareCore.contract import BUNDLED_MODELS_DIR, default_model

        bundled = BUNDLED_MODELS_DIR.resolve()
        default = default_model([(card.path, card.raw) for card in cards.values()
                                 if bundled in card.path.resolve().parents])
    except ImportError:  # the core is not installed yet: no default to put first
        pass
    return sorted(cards.values(), key=lambda card: (card.path != default, bool(card.findings)))


def channel_assignment_text(card: ModelCard, names: Sequence[str]) -> str:
    """How ``names`` (node names) would feed the model's channels, or why they cannot.

    The rule is the core's :func:`SymmetryAwareCore.contract.match_channels`, so the panel
    shows exactly what the command line will do.
    """
    from SymmetryAwareCore.contract import ChannelMatchError, match_channels

    try:
        order, notes = match_channels(list(names), card.channels)
    except ChannelMatchError as error:
        return f"Channels: {error}"
    text = "Channels: " + ", ".join(f"{channel} \u2190 {names[i]}" for channel, i in zip(card.channel_names, order))
    return text + ("" if not notes or "reordered" in notes[0] else f" ({notes[0]})")


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
