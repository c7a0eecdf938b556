"""A recipe's training data as compact shards for a GPU machine, and those shards read back as a data pack.

``python -m training pack-shards RECIPE --profile gpu --data DIR --out SHARDS [--max-mib 60]`` writes the
collections the recipe reads (``labels.csv`` and every file its rows name) in the shared pack's layout,
at the recipe's training resolution S (the largest input size of the profile, ``ShardSpec.size_fields``):

- an image whose longer side exceeds S is stored as the S x S uint8 array the recipe's cache holds at S
  (``training.data.stack_resized``: ``core.preprocess.resize_square``, bilinear, quantised to 0-255), a
  mask as its nearest-neighbour S x S label map, both as lossless PNG under the file's own name (the
  MedSeg hold-out orders file names by SHA-256, and the decoders read content, not endings), unless
  that PNG is larger than the file itself;
- any other file is kept byte for byte, so the recipe decodes exactly what it would from the folder.

Either way the recipe's arrays at S are the folder's. Code that reads a resized file at its own
resolution (segmentation Dice at each image's size, MANet's and COVID-CXNet's classifier inputs, made
at each image's size before resizing) sees S x S instead: close to, not equal to, the folder's figures.

Identifiers: the rows are the pack's own (or, for other X-ray layouts, the fields the recipes read:
image, label, source, patient_id, split, lung_mask, orig_width); nothing is added but the stored size.

Each shard is an uncompressed tar (its members are JPEG and PNG files, already compressed) of at most
``--max-mib`` MiB, written deterministically (same input, same bytes); ``shards.json`` lists every shard
with its size and SHA-256. ``--data SHARDS`` on any recipe command (``training.data.resolve_data_root``,
``training.adapters``) verifies the shards, unpacks them once into ``$CHEST_CACHE/unpacked-shards/<id>``
and trains from there: the original pack is not needed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from core.preprocess import resize_square
from core.registry import sha256_of
from training.data import cache_dir, resolve_data_root

INDEX = "shards.json"
FORMAT = "chest-review-shards"
VERSION = 1
DEFAULT_MAX_MIB = 60.0
MIB = 1 << 20
_END = 2 * tarfile.BLOCKSIZE  # the two zero blocks that end a tar; close() then pads to RECORDSIZE


class ShardError(ValueError):
    pass


@dataclass(frozen=True)
class ShardSpec:
    collections: tuple[str, ...]  # pack collections the recipe needs (``<name>/labels.csv``)
    size_fields: tuple[str, ...]  # profile fields whose largest value is S; () keeps the native resolution
    optional: tuple[str, ...] = ()  # collections packed when present
    extra_files: tuple[str, ...] = ()  # pack files copied as they are when present
    why_native: str = ""


SPECS = {
    "manet": ShardSpec(("cxr",), ("seg_size", "cls_size")),
    "hrnet-unet": ShardSpec(("cxr",), ("seg_size", "cls_size")),
    "covid-cxnet": ShardSpec(("cxr",), ("seg_size", "size")),
    "ct-lungs": ShardSpec(("ct_infection",), ("seg_size",), extra_files=("ct_volumes/mediastinum_crop.nii.gz",)),
    "infnet": ShardSpec(("ct_infection",), ("size",)),
    "image-kind": ShardSpec(("cxr", "ct_slices"), ("size",), optional=("ct_infection",)),
    "multisource-ct": ShardSpec(("ct_slices",), (), why_native="its heat-map and infected-region crops are "
                                "taken from each slice at its own resolution"),
}
UNSUPPORTED = {
    "dual-sampling": "its CT volumes are cached by the run itself as one uint8 array (inputs.npy), already compact; "
                     "copy the volumes folder, or generate the synthetic volumes on the GPU machine (no --data)",
}
# labels.csv columns that name files, and how a file of that column is resized
PATH_COLUMNS = {
    "cxr": {"image": "image", "lung_mask": "mask", "infection_mask": "mask"},
    "ct_infection": {"image": "image", "mask": "mask", "lung_mask": "mask"},
    "ct_slices": {"image": "image"},
}
ADAPTER_COLUMNS = ["image", "label", "source", "patient_id", "split", "lung_mask", "orig_width", "width", "height"]


# ---------------------------------------------------------------- what a recipe needs
def spec_for(recipe: str) -> ShardSpec:
    if recipe in SPECS:
        return SPECS[recipe]
    reason = UNSUPPORTED.get(recipe, "no shard layout is defined for it")
    raise ShardError(f"pack-shards does not pack {recipe!r}: {reason}. Recipes it packs: {', '.join(SPECS)}.")


def training_size(recipe: str, profile: str, overrides: dict | None = None) -> int | None:
    """S of ``recipe`` at ``profile`` (with ``--set`` overrides), or None where the recipe needs native files."""
    from training.__main__ import recipe_module

    spec, module = spec_for(recipe), recipe_module(recipe)
    if profile not in module.PROFILES:
        raise ShardError(f"{recipe} has no profile {profile!r}; choose from {', '.join(module.PROFILES)}")
    settings = replace(module.PROFILES[profile], **(overrides or {}))
    return max(int(getattr(settings, name)) for name in spec.size_fields) if spec.size_fields else None


# ---------------------------------------------------------------- the pack as (path in the shards, file) pairs
@dataclass
class Collection:
    name: str
    fieldnames: list[str]
    rows: list[dict]
    files: dict  # path in the shards -> (source file, "image" or "mask")


def _read_pack_collection(root: Path, name: str, prefix: str = "") -> Collection:
    folder = Path(root) / name
    with open(folder / "labels.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        fieldnames, rows = list(reader.fieldnames or []), list(reader)
    files = {}
    for row in rows:
        for column, kind in PATH_COLUMNS[name].items():
            if row.get(column):
                files[prefix + row[column]] = (folder / row[column], kind)
                row[column] = prefix + row[column]
    return Collection(name, fieldnames, rows, files)


def _read_xray_layouts(paths: list[Path]) -> Collection:
    """Any mix of X-ray layouts (``training.adapters``) as one ``cxr`` collection; a lone pack keeps its rows."""
    from training.adapters import READERS, detect_layout

    layouts = [detect_layout(path) for path in paths]
    if layouts == ["pack"]:
        return _read_pack_collection(paths[0], "cxr")
    merged = Collection("cxr", ADAPTER_COLUMNS, [], {})
    for index, (path, layout) in enumerate(zip(paths, layouts)):
        prefix = f"{index}-{layout}/"
        if layout == "pack":
            part = _read_pack_collection(path, "cxr", prefix)
            merged.rows += [{key: row.get(key, "") for key in ADAPTER_COLUMNS} for row in part.rows]
            merged.files.update(part.files)
            continue
        for record in READERS[layout](Path(path)):
            row = {"image": _member_name(prefix, Path(path), record.image), "label": record.label,
                   "source": record.source, "patient_id": record.patient_id, "split": record.split,
                   "lung_mask": _member_name(prefix, Path(path), record.lung_mask) if record.lung_mask else "",
                   "orig_width": record.orig_width, "width": "", "height": ""}
            merged.files[row["image"]] = (record.image, "image")
            if record.lung_mask:
                merged.files[row["lung_mask"]] = (record.lung_mask, "mask")
            merged.rows.append(row)
    return merged


def _member_name(prefix: str, root: Path, file: Path) -> str:
    try:
        return prefix + file.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # e.g. NLM masks merged into the cache
        return f"{prefix}outside/{hashlib.sha256(str(file).encode()).hexdigest()[:12]}-{file.name}"


def read_collections(recipe: str, paths: list[str] | None) -> tuple[list[Collection], dict[str, Path]]:
    """The collections ``recipe`` reads from ``paths`` (as the recipe command resolves ``--data``), and extra files."""
    spec = spec_for(recipe)
    paths = [unpack_shards(p) if is_shard_folder(p) else p for p in paths or []]
    if spec.collections == ("cxr",) and paths:
        return [_read_xray_layouts([Path(p) for p in paths])], {}
    root = resolve_data_root(paths[0] if paths else None, spec.collections)
    names = list(spec.collections) + [n for n in spec.optional if (root / n / "labels.csv").is_file()]
    extras = {name: root / name for name in spec.extra_files if (root / name).is_file()}
    return [_read_pack_collection(root, name) for name in names], extras


# ---------------------------------------------------------------- file contents at S
def stored_array(file: Path, kind: str, size: int) -> np.ndarray:
    """The S x S uint8 array stored for a file larger than S: what ``stack_resized`` caches at S."""
    with Image.open(file) as image:
        grey = np.asarray(image.convert("L"))
    if kind == "mask":  # nearest neighbour on the stored values: binary 0/255 and 0/1/2 label maps alike
        return resize_square(grey.astype(np.float32), size, order=0).round().astype(np.uint8)
    return np.clip(resize_square(grey.astype(np.float32) / 255.0, size) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def stored_bytes(file: Path, kind: str, size: int | None) -> tuple[bytes, tuple[int, int] | None]:
    """(bytes to store, (width, height) when resized, else None).

    The S x S PNG only where it is smaller than the file: a lossless PNG of a JPEG slice can outweigh the
    JPEG it came from, and either way the recipe's arrays at S come out the same.
    """
    original = Path(file).read_bytes()
    if size is not None and kind in ("image", "mask"):
        with Image.open(io.BytesIO(original)) as image:
            width, height = image.size
        if max(width, height) > size:
            buffer = io.BytesIO()
            Image.fromarray(stored_array(file, kind, size)).save(buffer, format="PNG", optimize=True)
            if buffer.tell() < len(original):
                return buffer.getvalue(), (size, size)
    return original, None


def _csv_bytes(collection: Collection) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=collection.fieldnames, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(collection.rows)
    return buffer.getvalue().encode()


# ---------------------------------------------------------------- writing shards
def _tar_info(name: str, length: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = length, 0, 0o644, 0, 0, "", ""
    return info


def _member_bytes(info: tarfile.TarInfo) -> int:
    header = len(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    return header + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _closed_size(written: int) -> int:
    return -(-(written + _END) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


class _ShardWriter:
    def __init__(self, out: Path, cap: int):
        self.out, self.cap, self.shards = out, cap, []
        self.tar = None

    def add(self, name: str, data: bytes) -> None:
        info = _tar_info(name, len(data))
        need = _member_bytes(info)
        if _closed_size(need) > self.cap:
            raise ShardError(f"{name} alone ({len(data) / MIB:.1f} MiB) does not fit a shard of {self.cap / MIB:g} MiB")
        if self.tar is not None and _closed_size(self.tar.fileobj.tell() + need) > self.cap:
            self._close()
        if self.tar is None:
            path = self.out / f"shard-{len(self.shards):05d}.tar"
            # open across add() calls until full; closed by _close()
            self.tar = tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
            self.shards.append({"file": path.name, "members": 0})
        self.tar.addfile(info, io.BytesIO(data))
        self.shards[-1]["members"] += 1

    def _close(self) -> None:
        self.tar.close()
        self.tar = None
        path = self.out / self.shards[-1]["file"]
        self.shards[-1].update(bytes=path.stat().st_size, sha256=sha256_of(path))

    def close(self) -> list[dict]:
        if self.tar is not None:
            self._close()
        return self.shards


def pack_shards(recipe: str, profile: str, paths: list[str] | None, out: Path, max_mib: float = DEFAULT_MAX_MIB,
                overrides: dict | None = None, progress: bool = True) -> dict:
    """Write the shards and ``shards.json`` into ``out`` (new or empty); returns the index."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ShardError(f"{out} is not empty: pack into a new folder")
    size = training_size(recipe, profile, overrides)
    collections, extras = read_collections(recipe, paths)
    out.mkdir(parents=True, exist_ok=True)
    writer, resized, copied = _ShardWriter(out, int(max_mib * MIB)), 0, 0
    members = [(f"{c.name}/{name}", file, kind, c) for c in collections for name, (file, kind) in c.files.items()]
    members += [(name, file, "file", None) for name, file in extras.items()]
    if progress:
        from core.progress import progress_bar

        members = progress_bar(members, desc=f"packing {recipe} at {size or 'native'} px", leave=False)
    new_sizes: dict[str, tuple[int, int]] = {}
    for name, file, kind, _ in members:
        data, new_size = stored_bytes(file, kind, size)
        if new_size:
            new_sizes[name] = new_size
        resized += new_size is not None
        copied += new_size is None
        writer.add(name, data)
    for collection in collections:  # the stored size of resized images, then the table itself
        for row in collection.rows:
            stored = new_sizes.get(f"{collection.name}/{row['image']}")
            if stored and "width" in collection.fieldnames:
                row["width"], row["height"] = stored
        writer.add(f"{collection.name}/labels.csv", _csv_bytes(collection))
    shards = writer.close()
    index = {
        "format": FORMAT, "version": VERSION, "recipe": recipe, "profile": profile, "overrides": overrides or {},
        "size": size, "max_mib": max_mib,
        "collections": {c.name: len(c.rows) for c in collections}, "extra_files": sorted(extras),
        "files": {"resized": resized, "kept": copied}, "bytes": sum(s["bytes"] for s in shards), "shards": shards,
    }
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return index


# ---------------------------------------------------------------- reading shards back
def is_shard_folder(path) -> bool:
    return path is not None and (Path(path) / INDEX).is_file()


def read_index(folder: Path) -> dict:
    index = json.loads((Path(folder) / INDEX).read_text())
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ShardError(f"{folder / INDEX} is not a {FORMAT} v{VERSION} index")
    return index


def verify_shards(folder: Path, index: dict | None = None) -> None:
    """Every shard present with the size and SHA-256 the index gives, or ``ShardError`` naming the first bad one."""
    folder = Path(folder)
    for shard in (index or read_index(folder))["shards"]:
        path = folder / shard["file"]
        if not path.is_file():
            raise ShardError(f"{path} is missing (copy every shard listed in {INDEX})")
        if path.stat().st_size != shard["bytes"] or sha256_of(path) != shard["sha256"]:
            raise ShardError(f"{path} does not match the SHA-256 in {INDEX}: copy it again")


def unpack_shards(folder) -> Path:
    """The pack the shards hold, unpacked once (after checking every SHA-256) into the cache; its root."""
    folder = Path(folder)
    index = read_index(folder)
    key = hashlib.sha256((folder / INDEX).read_bytes()).hexdigest()[:16]
    target = cache_dir() / "unpacked-shards" / key
    if (target / ".complete").is_file():
        return target
    verify_shards(folder, index)
    partial = target.with_name(f"{key}.partial-{os.getpid()}")  # one per process: torchrun ranks unpack side by side
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for shard in index["shards"]:
        with tarfile.open(folder / shard["file"]) as tar:
            tar.extractall(partial, filter="data")  # refuses absolute paths, links out of the folder, devices
    (partial / ".complete").write_text(json.dumps({"recipe": index["recipe"], "profile": index["profile"]}) + "\n")
    try:
        partial.rename(target)  # atomic; the target only ever appears complete
    except OSError:
        if not (target / ".complete").is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)  # another process finished first
    return target


# ---------------------------------------------------------------- command line
def add_parser(sub, recipes) -> None:
    parser = sub.add_parser("pack-shards", help="pack a recipe's training data into shards (<= 60 MiB each) for a GPU machine")
    parser.add_argument("recipe", choices=list(recipes))
    parser.add_argument("--profile", default="gpu", help="the profile whose input sizes set the stored resolution")
    parser.add_argument("--data", nargs="+", help="data folder(s), as for the recipe; default $CHEST_DATA or ../shared/data")
    parser.add_argument("--out", required=True, help="new folder for the shards and shards.json")
    parser.add_argument("--max-mib", type=float, default=DEFAULT_MAX_MIB, help="largest shard in MiB (default 60)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="profile override (as for the recipe)")


def command(args) -> int:
    import sys

    from training.__main__ import parse_overrides

    try:
        index = pack_shards(args.recipe, args.profile, args.data, Path(args.out), args.max_mib, parse_overrides(args.set))
    except ShardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    largest = max(s["bytes"] for s in index["shards"])
    print(f"{args.out}: {len(index['shards'])} shards, {index['bytes'] / MIB:.2f} MiB in all (largest {largest / MIB:.2f} MiB), "
          f"{index['files']['resized']} files resized to {index['size'] or 'native'} px, {index['files']['kept']} kept as they are; "
          + ", ".join(f"{name} {rows} rows" for name, rows in index["collections"].items()))
    return 0
