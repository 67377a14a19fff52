"""``manifest.json``: the one type that reads, checks and writes a dataset's manifest.

A dataset directory is valid when its manifest is: ``fastload pack`` writes it last and
atomically (:meth:`Manifest.write`: temp file, fsync, ``os.replace``), so a pack that dies
leaves no manifest, and :meth:`Manifest.load` refuses a directory without one.

The JSON keys, in the order they are written::

    format            "fastload"
    format_version    FORMAT_VERSION; readers refuse a newer one
    record_version    fastload.record.RECORD_VERSION of the records
    fastload_version  the fastload that packed it
    created           UTC time of the pack, ISO 8601
    source_format     coco, labelme, via, yolo or masks
    source            absolute path of the source dataset
    key_format        (documentation) how a record's LMDB key is made
    checksum          (documentation) what a shard's blake2b is the hash of
    num_records       total records (sum of the shard counts)
    shards            [{file, count, bytes, blake2b, file_bytes, file_sha256, digests}, ...]
                      in index order
    classes           class names; a record's label indexes this list
    keypoint_names    names of the K keypoints, or null
    flip_pairs        [[left, right], ...] keypoint indices swapped by a horizontal flip
                      ([] when there are keypoints but no pairs, null without keypoints)
    skeleton          [[a, b], ...] keypoint index pairs (0-based), or null
    summary           counts of the pack (images, instances, polygons, skipped ...)

A shard's ``file`` is a plain file name inside the dataset directory: a name with a path
separator, ``.`` or ``..`` is refused, so a manifest can never point a reader outside its
folder. ``file_bytes`` is the size of the LMDB file (a shorter file is an incomplete copy
and is never opened: LMDB would crash the process on the missing pages); ``file_sha256`` is
the SHA-256 of the whole file (``sha256sum`` prints it), so a copy can be checked before LMDB
ever maps it (:mod:`fastload.store.remote` checks every shard it downloads). ``digests``
names the shard's digests file (a plain name too; the per-record digests ``fastload verify``
checks, see :mod:`fastload.store.shards`). Manifests written before these fields existed
omit them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

MANIFEST_NAME = "manifest.json"
#: Version of the directory layout / manifest. Readers refuse newer versions.
FORMAT_VERSION = 1
KEY_FORMAT = "uint64 big-endian local index within the shard"
CHECKSUM = "blake2b-256 of the blake2b-128 digests of the record values in key order"


class StoreError(ValueError):
    """A packed dataset directory is missing, incomplete or corrupt."""


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, os.replace:
    a reader sees the old file or the whole new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path, obj) -> None:
    """Write JSON (indented, newline-terminated) to ``path`` with :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def _plain_name(name) -> bool:
    """A file name that stays inside the dataset folder: no separator, not . or .."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\x00" not in name)


@dataclass(frozen=True)
class ShardEntry:
    """One shard of the manifest: its LMDB file (a plain name inside the dataset folder),
    record count, total bytes of the record values, blake2b checksum of the records (see
    :mod:`fastload.store.shards`), file size, SHA-256 of the file's bytes and digests file
    (all three ``None`` in old manifests)."""

    file: str
    count: int
    bytes: int
    blake2b: str
    file_bytes: Optional[int] = None
    file_sha256: Optional[str] = None
    digests: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        d = {"file": self.file, "count": self.count, "bytes": self.bytes, "blake2b": self.blake2b}
        if self.file_bytes is not None:
            d["file_bytes"] = self.file_bytes
        if self.file_sha256 is not None:
            d["file_sha256"] = self.file_sha256
        if self.digests is not None:
            d["digests"] = self.digests
        return d


@dataclass(frozen=True)
class ShardProblem:
    """A shard file that must not be opened: ``kind`` is ``"missing"`` or ``"truncated"``;
    ``message`` says so in words."""

    file: str
    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


def _pairs(v, key: str, where) -> Optional[List[Tuple[int, int]]]:
    if v is None:
        return None
    try:
        out = [(int(a), int(b)) for a, b in v]
    except (TypeError, ValueError):
        raise StoreError(f"{where}: malformed manifest: {key} must be a list of index "
                         f"pairs") from None
    return out


@dataclass
class Manifest:
    """The manifest of a packed dataset (see the module docstring for every field).

    ``Manifest.load(dir)`` reads and checks ``dir/manifest.json``; ``m.write(dir)`` writes
    it atomically. ``m["key"]`` / ``m.get("key")`` read the JSON form (``m["shards"]`` is
    the list of shard dicts), for code that knows the file rather than the type.
    """

    source_format: str
    shards: List[ShardEntry]
    classes: List[str] = field(default_factory=list)
    keypoint_names: Optional[List[str]] = None
    flip_pairs: Optional[List[Tuple[int, int]]] = None
    skeleton: Optional[List[Tuple[int, int]]] = None
    summary: Dict[str, Any] = field(default_factory=dict)
    source: str = ""
    created: str = ""
    fastload_version: str = ""
    record_version: int = 1
    format_version: int = FORMAT_VERSION

    @property
    def num_records(self) -> int:
        return sum(s.count for s in self.shards)

    # ---- JSON
    def to_json(self) -> Dict[str, Any]:
        return {
            "format": "fastload",
            "format_version": self.format_version,
            "record_version": self.record_version,
            "fastload_version": self.fastload_version,
            "created": self.created,
            "source_format": self.source_format,
            "source": self.source,
            "key_format": KEY_FORMAT,
            "checksum": CHECKSUM,
            "num_records": self.num_records,
            "shards": [s.to_json() for s in self.shards],
            "classes": list(self.classes),
            "keypoint_names": list(self.keypoint_names) if self.keypoint_names is not None
            else None,
            "flip_pairs": [list(p) for p in self.flip_pairs] if self.flip_pairs is not None
            else None,
            "skeleton": [list(p) for p in self.skeleton] if self.skeleton is not None else None,
            "summary": dict(self.summary),
        }

    @classmethod
    def from_json(cls, m, where="manifest") -> "Manifest":
        """Check and convert a parsed manifest; :class:`StoreError` naming ``where`` when it
        is not a fastload manifest, is newer than this fastload, or is malformed."""
        if not isinstance(m, dict) or m.get("format") != "fastload" or "shards" not in m:
            raise StoreError(f"{where}: not a fastload manifest")
        try:
            version = int(m.get("format_version", 0))
        except (TypeError, ValueError):
            raise StoreError(f"{where}: malformed manifest: format_version "
                             f"{m.get('format_version')!r}") from None
        if version > FORMAT_VERSION:
            raise StoreError(f"{where}: format version {version} is newer than this fastload "
                             f"supports ({FORMAT_VERSION}); upgrade fastload")
        if not isinstance(m["shards"], list):
            raise StoreError(f"{where}: malformed manifest: shards must be a list")
        shards = []
        for k, s in enumerate(m["shards"]):
            try:
                entry = ShardEntry(file=s["file"], count=int(s["count"]), bytes=int(s["bytes"]),
                                   blake2b=str(s["blake2b"]),
                                   file_bytes=int(s["file_bytes"]) if "file_bytes" in s else None,
                                   file_sha256=str(s["file_sha256"]) if "file_sha256" in s
                                   else None, digests=s.get("digests"))
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise StoreError(f"{where}: malformed manifest: shard {k}: {e!r}") from None
            for name in (entry.file, entry.digests):
                if name is not None and not _plain_name(name):
                    raise StoreError(f"{where}: shard {k} names the file {name!r}; a shard "
                                     f"file must be a plain name inside the dataset folder (no "
                                     f"path separator, not . or ..); refused")
            if entry.count < 0 or entry.bytes < 0:
                raise StoreError(f"{where}: malformed manifest: shard {entry.file} has a "
                                 f"negative count or size")
            shards.append(entry)
        if "num_records" in m and m["num_records"] != sum(s.count for s in shards):
            raise StoreError(f"{where}: malformed manifest: num_records {m['num_records']!r} "
                             f"differs from the shards' total count")
        classes = m.get("classes") or []
        kp = m.get("keypoint_names")
        if not isinstance(classes, list) or (kp is not None and not isinstance(kp, list)):
            raise StoreError(f"{where}: malformed manifest: classes and keypoint_names must "
                             f"be lists of names")
        summary = m.get("summary") or {}
        return cls(source_format=str(m.get("source_format", "")), shards=shards,
                   classes=[str(c) for c in classes],
                   keypoint_names=[str(n) for n in kp] if kp is not None else None,
                   flip_pairs=_pairs(m.get("flip_pairs"), "flip_pairs", where),
                   skeleton=_pairs(m.get("skeleton"), "skeleton", where),
                   summary=dict(summary) if isinstance(summary, dict) else {},
                   source=str(m.get("source", "")), created=str(m.get("created", "")),
                   fastload_version=str(m.get("fastload_version", "")),
                   record_version=int(m.get("record_version", 1)), format_version=version)

    # ---- files
    @classmethod
    def load(cls, path, check_files: bool = True) -> "Manifest":
        """Read and check ``path/manifest.json``; raises :class:`StoreError` with a clear
        message for a missing directory, a directory without manifest (an interrupted or
        foreign directory), unreadable JSON, a newer format version, a malformed manifest
        or a shard file name that leaves the folder, or (``check_files``) missing /
        truncated shard files."""
        path = Path(path)
        if not path.exists():
            aside = sorted(path.parent.glob(f".{path.name}.fastload-old-*")) \
                if path.parent.is_dir() else []
            raise StoreError(f"{path}: no such dataset directory" + (
                f" (a pack was killed while replacing it: the previous dataset is in "
                f"{aside[0]}; the next `fastload pack` to {path.name} puts it back)"
                if aside else ""))
        if not path.is_dir():
            raise StoreError(f"{path}: not a directory (a packed dataset is a directory "
                             f"with {MANIFEST_NAME} and shard-*.lmdb files)")
        mpath = path / MANIFEST_NAME
        if not mpath.exists():
            raise StoreError(f"{path}: no {MANIFEST_NAME}; this is not a packed fastload "
                             f"dataset (or its pack did not finish: run `fastload pack` again)")
        try:
            with open(mpath) as f:
                m = json.load(f)
        except (OSError, ValueError) as e:
            raise StoreError(f"{mpath}: unreadable manifest: {e}") from None
        manifest = cls.from_json(m, mpath)
        if check_files:
            bad = manifest.file_problems(path)
            if bad:
                raise StoreError(f"{path}: {bad[0]}")
        return manifest

    def file_problems(self, path) -> List[ShardProblem]:
        """Shard files under ``path`` that are missing or shorter than the manifest says (an
        incomplete copy): LMDB maps the file and would crash the process (SIGBUS) on pages
        past its end, so they are never opened."""
        out = []
        for s in self.shards:
            f = Path(path) / s.file
            try:
                size = f.stat().st_size
            except FileNotFoundError:
                out.append(ShardProblem(s.file, "missing", f"shard file {s.file} listed in "
                                                           f"the manifest is missing"))
                continue
            if s.file_bytes is not None and size < s.file_bytes:
                out.append(ShardProblem(s.file, "truncated",
                                        f"shard file {s.file} is truncated ({size} of "
                                        f"{s.file_bytes} bytes); copy the dataset again"))
        return out

    def write(self, path) -> Path:
        """Write ``path/manifest.json`` atomically (temp file, fsync, ``os.replace``): the last
        file of a pack. Returns the manifest's path."""
        for s in self.shards:
            for name in (s.file, s.digests):
                if name is not None and not _plain_name(name):
                    raise StoreError(f"{path}: shard file name {name!r} is not a plain name")
        mpath = Path(path) / MANIFEST_NAME
        write_json_atomic(mpath, self.to_json())
        return mpath

    # ---- the JSON form, read-only
    def __getitem__(self, key: str):
        return self.to_json()[key]

    def get(self, key: str, default=None):
        return self.to_json().get(key, default)
