"""``symmetryaware models list | import | verify``: offline model management.

``import`` takes a folder or a ``.zip`` holding one model card and its weights, checks the
weights' SHA-256 and keys against the card, and copies the model into the user's model
folder. Zip members whose paths would land outside the target folder (absolute paths,
``..``, links) are refused before anything is extracted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import stat
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import InputError

EXAMPLE = """examples:
  symmetryaware models list
  symmetryaware models verify path/to/model.json
  symmetryaware models import my_model.zip"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list, import and verify models (offline)",
        description="List the models this installation can use, import a model folder or zip "
        "(offline), or verify a model's weights against its card.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p_list = sub.add_parser("list", help="list bundled and imported models")
    p_list.add_argument("--json", action="store_true", help="print JSON")
    p_imp = sub.add_parser("import", help="import a model folder or .zip into the user's model folder")
    p_imp.add_argument("source", type=Path)
    p_imp.add_argument("--overwrite", action="store_true", help="replace an imported model of the same name")
    p_ver = sub.add_parser("verify", help="check a model's hash and keys against its card")
    p_ver.add_argument("model", help="model name or card path")
    parser.set_defaults(func=run)


def safe_extract(archive: Path, target: Path) -> None:
    """Extract ``archive`` into ``target``, refusing members that would escape it."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                name = PurePosixPath(info.filename)
                mode = info.external_attr >> 16
                if name.is_absolute() or ".." in name.parts or info.filename.startswith(("/", "\\")) or ":" in name.parts[0]:
                    raise InputError(f"zip member {info.filename!r} would be written outside the model folder", archive)
                if stat.S_ISLNK(mode):
                    raise InputError(f"zip member {info.filename!r} is a link; refused", archive)
            root = target.resolve()
            for info in members:
                dest = (target / info.filename).resolve()
                if root != dest and root not in dest.parents:
                    raise InputError(f"zip member {info.filename!r} would be written outside the model folder", archive)
            zf.extractall(target)
    except zipfile.BadZipFile:
        raise InputError("not a readable zip file", archive) from None


def import_model(source: Path, overwrite: bool = False) -> Path:
    """Verify and copy a model (folder or zip) into :func:`user_model_dir`; returns its card path."""
    from ..inference.model_source import _cards_in, user_model_dir
    from ..models.model_card import load_model

    if not source.exists():
        raise InputError("no such file or folder", source)
    dest_root = user_model_dir()
    dest_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".import.", dir=dest_root))
    try:
        staged = work / "model"
        if source.is_dir():
            shutil.copytree(source, staged, symlinks=False)
        elif source.suffix.lower() == ".zip":
            staged.mkdir()
            safe_extract(source, staged)
        else:
            raise InputError("give a model folder or a .zip file", source)
        cards = _cards_in(staged)
        if len(cards) != 1:
            raise InputError(f"expected exactly one model card in the model, found {len(cards)}", source)
        load_model(cards[0])  # hash and keys checked before anything is installed
        name = json.loads(cards[0].read_text(encoding="utf-8")).get("name") or cards[0].stem
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise InputError(f"model name {name!r} cannot be a folder name", cards[0])
        final = dest_root / name
        if final.exists():
            if not overwrite:
                raise InputError(f"a model named {name!r} is already imported; use --overwrite to replace it", final)
            shutil.rmtree(final)
        # Move the card's own folder (the zip may wrap it in a sub-folder).
        cards[0].parent.rename(final)
        return final / cards[0].name
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    from ..inference.model_source import find_model_card, list_models

    if args.action == "list":
        rows = list_models()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'name':<28} {'version':<9} {'origin':<9} {'modality':<9} inputs")
        for r in rows:
            print(f"{r['name']:<28} {r['version']:<9} {r['origin']:<9} {r['modality']:<9} {', '.join(map(str, r['inputs']))}")
        return 0
    if args.action == "import":
        card = import_model(args.source, args.overwrite)
        print(f"imported: {card}")
        return 0
    if args.action == "verify":
        from ..models.model_card import load_model

        card_path = find_model_card(args.model)
        if card_path is None:
            print("untrained-standin: built in, no weights file to verify", file=sys.stderr)
            return 0
        _, card = load_model(card_path)
        print(f"ok: {card.name or card_path.stem} {card.version} sha256 {card.sha256} ({card_path})")
        return 0
    raise AssertionError(args.action)
