"""``symmetryaware models list | import | verify``: offline model management.

``import`` takes a folder or a ``.zip`` holding one model card and its weights, checks the
weights' SHA-256 and keys against the card, and copies the model into the user's model
folder. Zip members whose paths would land outside the target folder (absolute paths,
``..``, links) are refused before anything is extracted, and so are archives beyond the
bounds below (entries, bytes per file and in all, compression ratio) and cards whose
values are outside their ranges (``models/model_card.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Dict

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


# Bounds of an imported model (a zip or a folder), checked from the zip's directory before
# anything is extracted, and again while bytes are written. The largest model this project
# trains (SA-Swin, feature size 48, float32) is about 250 MB; a card is a few kB.
MAX_MEMBERS = 64
MAX_MEMBER_BYTES = 1 << 30  # 1 GiB
MAX_TOTAL_BYTES = 2 << 30  # 2 GiB
# Weights barely compress (float mantissas); a member above 1 MiB that shrank more than
# this is padding or a zip bomb.
MAX_COMPRESSION_RATIO = 50
_CHUNK = 1 << 20
_BAD_CHARS = set('\\:*?"<>|')


def _member_parts(name: str, source: Path) -> tuple:
    """The path parts of a zip member, refusing any name that could leave the target folder."""
    parts = tuple(p for p in name.split("/") if p)
    if (
        not parts
        or name.startswith(("/", "\\"))
        or any(p in (".", "..") or any(ord(c) < 32 or c in _BAD_CHARS for c in p) for p in parts)
    ):
        raise InputError(f"zip member {name!r} would be written outside the model folder", source)
    return parts


def _zip_members(zf: zipfile.ZipFile, source: Path) -> Dict[str, zipfile.ZipInfo]:
    """``{member path: info}`` of a zip's files after every bound and name check."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise InputError(f"the zip holds {len(infos)} entries; a model has at most {MAX_MEMBERS}", source)
    members: Dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        parts = _member_parts(info.filename, source)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise InputError(f"zip member {info.filename!r} is a link; refused", source)
        if info.is_dir():
            continue
        if info.file_size > MAX_MEMBER_BYTES:
            raise InputError(f"zip member {info.filename!r} unpacks to {info.file_size:,} bytes, above the "
                             f"{MAX_MEMBER_BYTES:,} allowed for one file", source)
        if info.file_size > _CHUNK and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise InputError(f"zip member {info.filename!r} is compressed {info.file_size / max(info.compress_size, 1):.0f}:1 "
                             f"(a model's weights do not compress beyond {MAX_COMPRESSION_RATIO}:1); refused", source)
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise InputError(f"the zip unpacks to more than {MAX_TOTAL_BYTES:,} bytes; refused", source)
        key = "/".join(parts)
        if key in members:
            raise InputError(f"zip member {key!r} appears twice", source)
        members[key] = info
    return members


def _folder_members(folder: Path) -> Dict[str, Path]:
    """``{relative path: file}`` of a model folder: regular files only (links and devices are
    refused, so nothing outside the folder is read), hidden entries skipped, within bounds."""
    members: Dict[str, Path] = {}
    total = 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:
            if (Path(root) / d).is_symlink():
                raise InputError("is a link; a model folder may hold only plain files", Path(root) / d)
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                raise InputError("is not a plain file (a link or device); refused", path)
            if info.st_size > MAX_MEMBER_BYTES:
                raise InputError(f"is {info.st_size:,} bytes, above the {MAX_MEMBER_BYTES:,} allowed for one file", path)
            total += info.st_size
            members[path.relative_to(folder).as_posix()] = path
            if len(members) > MAX_MEMBERS or total > MAX_TOTAL_BYTES:
                raise InputError(f"holds more than {MAX_MEMBERS} files or {MAX_TOTAL_BYTES:,} bytes; not a model folder", folder)
    return members


def _copy_bounded(read: BinaryIO, dest: Path, limit: int, what: str, source: Path) -> None:
    written = 0
    with open(dest, "wb") as out:
        for block in iter(lambda: read.read(_CHUNK), b""):
            written += len(block)
            if written > limit:
                raise InputError(f"{what} holds more bytes than it declares; refused", source)
            out.write(block)


def safe_extract(archive: Path, target: Path) -> None:
    """Extract ``archive`` into ``target`` within the bounds above, refusing members that
    would escape it (absolute paths, ``..``, links, drive letters)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for key, info in _zip_members(zf, archive).items():
                dest = target.joinpath(*key.split("/"))
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src:
                    _copy_bounded(src, dest, info.file_size, f"zip member {key!r}", archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error) as error:
        raise InputError(f"not a readable zip file ({error})", archive) from None


def _find_card(raw_cards: Dict[str, bytes], source: Path):
    """The one model card among ``{member: bytes}``: ``(member, ModelCard)``, values checked."""
    from ..models.model_card import CARD_FORMAT, ModelCard, parse_card_json

    found = []
    for member, raw in raw_cards.items():
        try:
            data = parse_card_json(raw)
        except InputError:
            continue
        if isinstance(data, dict) and data.get("format") == CARD_FORMAT:
            found.append((member, data))
    if len(found) != 1:
        raise InputError(f"expected exactly one model card in the model, found {len(found)}", source)
    member, data = found[0]
    return member, ModelCard.from_dict(data, f"{source}: {member}")


def check_model_name(name: str, where) -> str:
    """A model name becomes a folder name: refuse what cannot be one, anywhere."""
    if (
        not name
        or name != name.strip()
        or name.startswith(".")
        or name.endswith(".")
        or len(name.encode("utf-8")) > 128
        or any(ord(c) < 32 or c in _BAD_CHARS or c == "/" for c in name)
    ):
        raise InputError(f"model name {name!r} cannot be a folder name (no path separators, control or reserved "
                         "characters, leading dot or trailing dot or space; at most 128 bytes)", where)
    return name


def _user_error(error: InputError, staged: Path, source: Path, prefix: str) -> InputError:
    """The same error naming the user's file (``model.zip: folder/model.json``), not the staging copy."""
    if error.path is None or not error.path.startswith(str(staged)):
        return error
    text = str(error)
    message = text[len(error.path) + 2 :] if text.startswith(error.path + ": ") else text
    member = prefix + Path(error.path).relative_to(staged).as_posix()
    return InputError(f"{member}: {message}", source)


def import_model(source: Path, overwrite: bool = False) -> Path:
    """Verify and copy a model (folder or zip) into :func:`user_model_dir`; returns its card path.

    Everything that can be checked from the source is checked before a byte is written: the
    bounds above, member names, the card's values (ranges, name). The model is then staged in
    a hidden folder (:func:`~SymmetryAwareCore.io.atomic.staged_folder`), its hash and keys
    checked, and renamed into place; any failure removes the staging folder and names the
    user's file. Staging folders of killed imports are swept first.
    """
    from ..inference.model_source import user_model_dir
    from ..io.atomic import staged_folder, sweep_stale
    from ..io.outputs import check_output_dir, check_path_text
    from ..models.model_card import MAX_CARD_BYTES, load_model

    source = check_path_text(source, "model path")
    if not source.exists():
        raise InputError("no such file or folder", source)
    dest_root = check_output_dir(user_model_dir(), [source])
    if source.is_dir():
        if source.resolve() in dest_root.resolve().parents:
            raise InputError(f"holds the model folder {dest_root}; give the model's own folder", source)
        files = _folder_members(source)
        read_card = lambda key: files[key].read_bytes()  # noqa: E731
        sizes = {key: path.stat().st_size for key, path in files.items()}
    elif source.suffix.lower() == ".zip" and source.is_file():
        try:
            with zipfile.ZipFile(source) as zf:
                infos = _zip_members(zf, source)
                cards = {k: zf.read(infos[k]) for k in infos if k.lower().endswith(".json") and infos[k].file_size <= MAX_CARD_BYTES}
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error) as error:
            raise InputError(f"not a readable zip file ({error})", source) from None
        sizes = {k: info.file_size for k, info in infos.items()}
        read_card = cards.__getitem__
    else:
        raise InputError("give a model folder or a .zip file", source)
    raw_cards = {k: read_card(k) for k in sizes if k.lower().endswith(".json") and sizes[k] <= MAX_CARD_BYTES
                 and not any(part.startswith(".") for part in k.split("/"))}
    member, card = _find_card(raw_cards, source)
    name = check_model_name(card.name or Path(member).stem, f"{source}: {member}")
    prefix = member.rsplit("/", 1)[0] + "/" if "/" in member else ""
    if prefix + card.weights_file not in sizes:
        raise InputError(f"{member}: names the weights file {card.weights_file!r}, which the model does not hold", source)
    final = dest_root / name
    if final.exists() and not overwrite:
        raise InputError(f"a model named {name!r} is already imported; use --overwrite to replace it", final)
    # Folders of imports killed by an older version (no lock); never visible as models.
    for legacy in dest_root.glob(".import.*") if dest_root.is_dir() else ():
        shutil.rmtree(legacy, ignore_errors=True)
    if dest_root.is_dir():
        sweep_stale(dest_root)
    with staged_folder(final, overwrite=overwrite) as staged:
        keys = [k for k in sizes if k.startswith(prefix) and not any(p.startswith(".") for p in k.split("/"))]
        try:
            if source.is_dir():
                for key in keys:
                    dest = staged.joinpath(*key[len(prefix):].split("/"))
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with open(files[key], "rb") as src:
                        _copy_bounded(src, dest, sizes[key], key, source)
            else:
                with zipfile.ZipFile(source) as zf:
                    for key in keys:
                        dest = staged.joinpath(*key[len(prefix):].split("/"))
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(infos[key]) as src:
                            _copy_bounded(src, dest, sizes[key], f"zip member {key!r}", source)
            load_model(staged / member[len(prefix):])  # hash and keys, before it is installed
        except InputError as error:
            raise _user_error(error, staged, source, prefix) from None
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error) as error:
            raise InputError(f"not a readable zip file ({error})", source) from None
    return final / member[len(prefix):]


def run(args: argparse.Namespace) -> int:
    from ..inference.model_source import find_model_card, list_models

    if args.action == "list":
        rows = list_models()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        width = max([28] + [len(str(r["name"])) + 1 for r in rows])
        print(f"{'name':<{width}} {'version':<9} {'origin':<9} {'modality':<9} inputs")
        for r in rows:
            print(f"{r['name']:<{width}} {r['version']:<9} {r['origin']:<9} {r['modality']:<9} "
                  f"{', '.join(map(str, r['inputs']))}")
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
