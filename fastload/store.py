"""The shard store: LMDB shards + ``manifest.json``, written by ``fastload pack``.

Layout of a packed dataset directory::

    OUT/
      manifest.json          written last, atomically (temp file + os.replace)
      shard-00000.lmdb       one LMDB environment per shard (subdir=False)
      shard-00001.lmdb
      pack_report.json       summary of the pack (counts, skipped with reasons, time)
      problems.txt           one line per problem found while packing

Keys: inside shard ``s`` the record with local index ``j`` has the key
``struct.pack(">Q", j)`` (8 bytes big-endian, so LMDB's key order is index order).
The global index ``i`` maps to ``(s, j)`` through the cumulative record counts of the
manifest's shard list. Values are :class:`fastload.record.Record` encodings
(versioned msgpack, no pickle).

Each shard entry of the manifest holds ``count``, ``file_bytes`` (size of the LMDB
file: a shorter file is an incomplete copy and is refused), ``bytes`` (sum of value lengths)
and ``blake2b``: the hex blake2b-256 of the concatenated per-record digests
(blake2b-128 of each value, :func:`record_digest`) in key order, so packing workers hash
records in parallel; ``fastload verify`` recomputes them.

Readers (:class:`Dataset`) open each environment lazily, read-only, ``lock=False``,
``readahead=False``, once per process: after a ``fork`` the child notices the new
``os.getpid()`` and opens its own environments, so no LMDB handle is ever shared
across processes.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import lmdb

from fastload.record import Record, RecordError

MANIFEST_NAME = "manifest.json"
#: Version of the directory layout / manifest. Readers refuse newer versions.
FORMAT_VERSION = 1
SHARD_PATTERN = "shard-{:05d}.lmdb"


class StoreError(ValueError):
    """A packed dataset directory is missing, incomplete or corrupt."""


def record_digest(value) -> bytes:
    """blake2b-128 of one record value (the unit of the shard checksum)."""
    return hashlib.blake2b(value, digest_size=16).digest()


class ShardHash:
    """The shard checksum: blake2b-256 over the per-record digests in key order."""

    def __init__(self):
        self._h = hashlib.blake2b(digest_size=32)

    def update(self, value=None, digest: Optional[bytes] = None) -> None:
        self._h.update(digest if digest is not None else record_digest(value))

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def encode_key(j: int) -> bytes:
    """LMDB key of the record with local index ``j`` inside its shard."""
    return struct.pack(">Q", j)


def decode_key(k: bytes) -> int:
    return struct.unpack(">Q", k)[0]


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to ``path`` via a temp file in the same directory, fsync, os.replace."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- writing
class ShardWriter:
    """Append records to one LMDB shard (used by ``fastload pack``, main process only).

    Records get consecutive local indices 0, 1, 2, ... Writes are batched into
    transactions of ``batch`` records; when the map is full (``lmdb.MapFullError``) the
    transaction is aborted, the map size doubled with ``env.set_mapsize`` and the batch
    written again, so the map size grows as needed. ``close()`` syncs, removes the
    writer's lock file and returns the manifest entry (file, count, bytes, blake2b).
    """

    def __init__(self, path, map_size: int = 256 << 20, batch: int = 256):
        self.path = Path(path)
        self.map_size = int(map_size)
        self.batch = int(batch)
        self.env = lmdb.open(str(self.path), subdir=False, map_size=self.map_size,
                             readonly=False, lock=True, sync=False, metasync=False,
                             meminit=False, max_dbs=0, readahead=False)
        self._pending: List[bytes] = []
        self._digests: List[bytes] = []
        self.count = 0
        self.nbytes = 0
        self._hash = ShardHash()

    def append(self, value: bytes, digest: Optional[bytes] = None) -> int:
        """Queue ``value`` as the next record (``digest``: its :func:`record_digest`, if the
        caller computed it already); returns its local index."""
        j = self.count + len(self._pending)
        self._pending.append(bytes(value))
        self._digests.append(digest if digest is not None else record_digest(value))
        if len(self._pending) >= self.batch:
            self.flush()
        return j

    def flush(self) -> None:
        if not self._pending:
            return
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in enumerate(self._pending):
                        txn.put(encode_key(self.count + k), v, append=True)
                break
            except lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
        for v, d in zip(self._pending, self._digests):
            self._hash.update(digest=d)
            self.nbytes += len(v)
        self.count += len(self._pending)
        self._pending = []
        self._digests = []

    def close(self) -> dict:
        self.flush()
        self.env.sync(True)
        self.env.close()
        lock = Path(str(self.path) + "-lock")
        if lock.exists():
            lock.unlink()
        return {"file": self.path.name, "count": self.count, "bytes": self.nbytes,
                "blake2b": self._hash.hexdigest(), "file_bytes": self.path.stat().st_size}


# ---------------------------------------------------------------------------- reading
def load_manifest(path, check_files: bool = True) -> dict:
    """Read and check ``path/manifest.json``; raises :class:`StoreError` with a clear
    message for a missing directory, a directory without manifest (an interrupted or
    foreign directory), unreadable JSON, a newer format version, or (``check_files``)
    missing / truncated shard files."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such dataset directory")
    if not path.is_dir():
        raise StoreError(f"{path}: not a directory (a packed dataset is a directory "
                         f"with {MANIFEST_NAME} and shard-*.lmdb files)")
    mpath = path / MANIFEST_NAME
    if not mpath.exists():
        raise StoreError(f"{path}: no {MANIFEST_NAME}; this is not a packed fastload dataset "
                         f"(or its pack did not finish: run `fastload pack` again)")
    try:
        with open(mpath) as f:
            m = json.load(f)
    except (OSError, ValueError) as e:
        raise StoreError(f"{mpath}: unreadable manifest: {e}") from None
    if not isinstance(m, dict) or m.get("format") != "fastload" or "shards" not in m:
        raise StoreError(f"{mpath}: not a fastload manifest")
    if int(m.get("format_version", 0)) > FORMAT_VERSION:
        raise StoreError(f"{mpath}: format version {m.get('format_version')} is newer than "
                         f"this fastload supports ({FORMAT_VERSION}); upgrade fastload")
    if check_files:
        bad = shard_file_problems(path, m)
        if bad:
            raise StoreError(f"{path}: {bad[0]}")
    return m


def shard_file_problems(path, manifest) -> List[str]:
    """Missing or truncated shard files (an incomplete copy): LMDB maps the file and
    would crash the process (SIGBUS) on pages past its end, so they are never opened."""
    out = []
    for s in manifest["shards"]:
        f = Path(path) / s["file"]
        if not f.exists():
            out.append(f"shard file {s['file']} listed in the manifest is missing")
        elif "file_bytes" in s and f.stat().st_size < int(s["file_bytes"]):
            out.append(f"shard file {s['file']} is truncated ({f.stat().st_size} of "
                       f"{s['file_bytes']} bytes); copy the dataset again")
    return out


# Process-wide cache of open read-only environments, keyed by shard path. LMDB (and
# py-lmdb) refuse to open one file twice in a process, so all Dataset objects share it.
# After a fork the child closes the handles it inherited (its own copies: the parent's
# stay valid) and opens its own on first use, so no environment is used across a fork.
_ENVS: Dict[str, lmdb.Environment] = {}
_ENVS_LOCK = threading.Lock()
_ENVS_PID = os.getpid()


def _after_fork_in_child() -> None:
    global _ENVS_LOCK, _ENVS_PID
    _ENVS_LOCK = threading.Lock()  # a lock held by another thread at fork time stays held
    inherited = list(_ENVS.values())
    _ENVS.clear()
    _ENVS_PID = os.getpid()
    for env in inherited:
        try:
            env.close()
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def open_env(path: str) -> lmdb.Environment:
    """The read-only environment of shard file ``path`` for this process (opened lazily,
    ``lock=False``, ``readahead=False``; cached process-wide)."""
    env = _ENVS.get(path)
    if env is not None and _ENVS_PID == os.getpid():
        return env
    with _ENVS_LOCK:
        if _ENVS_PID != os.getpid():  # forked without the at-fork hook (should not happen)
            _after_fork_in_child()
        env = _ENVS.get(path)
        if env is None:
            try:
                env = lmdb.open(path, subdir=False, readonly=True, lock=False, readahead=False,
                                meminit=False, max_readers=2048, max_spare_txns=64)
            except lmdb.Error as e:
                raise StoreError(f"{path}: cannot open shard: {e}") from None
            _ENVS[path] = env
        return env


def close_env(path: str) -> None:
    with _ENVS_LOCK:
        env = _ENVS.pop(path, None)
    if env is not None:
        env.close()


class Dataset:
    """A packed dataset: ``len(ds)``, ``ds[i]`` -> :class:`fastload.record.Record`.

    Annotations in the records use continuous pixel coordinates (pixel (i, j) covers
    [j, j+1) x [i, i+1)); ``record.instances`` gives per-instance objects, the flat
    arrays (``points``, ``part_offsets``, ...) are what loaders use.

    Thread-safe (each call opens its own short read transaction) and fork-safe: LMDB
    environments are opened lazily, read-only, ``lock=False``, ``readahead=False``, once
    per process (re-opened when ``os.getpid()`` changes). Pickling a Dataset (for spawn
    workers) carries only the path and manifest.

    Attributes: ``path``, ``manifest``, ``classes``, ``keypoint_names``,
    ``flip_pairs`` (list of (left, right) index pairs), ``skeleton``, ``source_format``.
    """

    def __init__(self, path, check_files: bool = True):
        self.path = Path(path)
        self.manifest = load_manifest(self.path, check_files)
        m = self.manifest
        self.classes: List[str] = list(m.get("classes") or [])
        self.keypoint_names: Optional[List[str]] = m.get("keypoint_names")
        fp = m.get("flip_pairs")
        self.flip_pairs = [tuple(p) for p in fp] if fp is not None else None
        sk = m.get("skeleton")
        self.skeleton = [tuple(p) for p in sk] if sk is not None else None
        self.source_format: str = m.get("source_format", "")
        self._shard_files = [os.path.realpath(self.path / s["file"]) for s in m["shards"]]
        counts = [int(s["count"]) for s in m["shards"]]
        self._starts = [0]
        for c in counts:
            self._starts.append(self._starts[-1] + c)
        self._len = self._starts[-1]

    # pickling (spawn workers) carries only the path, manifest and offsets: environments
    # live in the process-wide cache below, never in the object

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return (f"fastload.Dataset({str(self.path)!r}, {self._len} records, "
                f"{len(self._shard_files)} shards, {len(self.classes)} classes)")

    @property
    def num_shards(self) -> int:
        return len(self._shard_files)

    # ---- environments
    def _env(self, s: int) -> lmdb.Environment:
        return open_env(self._shard_files[s])

    def locate(self, i: int):
        """Global index -> (shard, local index). Negative indices count from the end."""
        i = int(i)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"index {i} out of range for a dataset of {self._len} records")
        s = bisect.bisect_right(self._starts, i) - 1
        return s, i - self._starts[s]

    # ---- raw access
    def get_raw(self, i: int) -> bytes:
        """The encoded record bytes of global index ``i``."""
        s, j = self.locate(i)
        with self._env(s).begin(buffers=False) as txn:
            v = txn.get(encode_key(j))
        if v is None:
            raise StoreError(f"{self._shard_files[s]}: record {j} (global index {i}) is missing")
        return v

    def get_raw_many(self, indices: Iterable[int]) -> List[bytes]:
        """Encoded records for many global indices, in the given order; one read
        transaction per shard touched (the fast path for loaders)."""
        idx = [self.locate(i) for i in indices]
        out: List[Optional[bytes]] = [None] * len(idx)
        by_shard: Dict[int, List[int]] = {}
        for k, (s, _) in enumerate(idx):
            by_shard.setdefault(s, []).append(k)
        for s, ks in by_shard.items():
            with self._env(s).begin(buffers=False) as txn:
                for k in ks:
                    v = txn.get(encode_key(idx[k][1]))
                    if v is None:
                        raise StoreError(f"{self._shard_files[s]}: record {idx[k][1]} is missing")
                    out[k] = v
        return out  # type: ignore[return-value]

    def __getitem__(self, i: int) -> Record:
        s, j = self.locate(i)
        # decode straight from LMDB's memory map (buffers=True) inside the transaction:
        # msgpack copies every field out, so the record outlives the transaction, and the
        # value is copied once instead of twice
        with self._env(s).begin(buffers=True) as txn:
            v = txn.get(encode_key(j))
            if v is None:
                raise StoreError(f"{self._shard_files[s]}: record {j} (global index {i}) is missing")
            try:
                return Record.decode(v)
            except RecordError as e:
                raise StoreError(f"{self.path}: record {i}: {e}") from None

    def read_many(self, indices: Iterable[int]) -> List[Record]:
        """Decoded records for many indices, in the given order (one transaction per shard)."""
        idx = [self.locate(i) for i in indices]
        out: List[Optional[Record]] = [None] * len(idx)
        by_shard: Dict[int, List[int]] = {}
        for k, (s, _) in enumerate(idx):
            by_shard.setdefault(s, []).append(k)
        for s, ks in by_shard.items():
            with self._env(s).begin(buffers=True) as txn:
                for k in ks:
                    v = txn.get(encode_key(idx[k][1]))
                    if v is None:
                        raise StoreError(f"{self._shard_files[s]}: record {idx[k][1]} is missing")
                    out[k] = Record.decode(v)
        return out  # type: ignore[return-value]

    def __iter__(self):
        for i in range(self._len):
            yield self[i]

    def iter_raw(self):
        """Yield ``(global index, raw bytes)`` for every record in order, with one cursor
        per shard (sequential scans: verify, checksums)."""
        for s in range(len(self._shard_files)):
            with self._env(s).begin(buffers=False) as txn:
                for k, v in txn.cursor():
                    yield self._starts[s] + decode_key(k), v

    def close(self) -> None:
        """Close this process's environments of this dataset's shards (shared with other
        Dataset objects of the same directory; they re-open lazily on the next read).
        Do not call while another thread is reading."""
        for f in self._shard_files:
            close_env(f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------------- verification
def verify(path, decode_images: bool = True, progress: bool = False):
    """Check a packed dataset: per shard, the record count, byte count and blake2b
    of the values in key order against the manifest; every record decodes; with
    ``decode_images``, every image fully decodes with PIL and has the recorded size.

    Returns a list of problem strings (empty when everything is fine); records are
    named by global index, id and file name.
    """
    ds = Dataset(path, check_files=False)
    problems: List[str] = []
    unsafe = set()
    for msg in shard_file_problems(ds.path, ds.manifest):
        problems.append(msg)
        unsafe.add(msg.split()[2])  # never open a missing / truncated file
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(ds), unit="rec", desc="verify", file=sys.stderr)
    for s, entry in enumerate(ds.manifest["shards"]):
        if entry["file"] in unsafe:
            continue
        try:
            _verify_shard(ds, s, entry, decode_images, problems, bar)
        except (lmdb.Error, StoreError) as e:
            problems.append(f"{entry['file']}: cannot read the shard: {e}")
    if bar is not None:
        bar.close()
    ds.close()
    return problems


def _verify_shard(ds, s, entry, decode_images, problems, bar):
    import io
    from PIL import Image
    h = ShardHash()
    n = nbytes = 0
    expect_j = 0
    with ds._env(s).begin(buffers=False) as txn:
        for k, v in txn.cursor():
            j = decode_key(k)
            gi = ds._starts[s] + j
            if j != expect_j:
                problems.append(f"{entry['file']}: key {j} where {expect_j} was expected")
            expect_j = j + 1
            h.update(v)
            n += 1
            nbytes += len(v)
            try:
                rec = Record.decode(v)
            except RecordError as e:
                problems.append(f"record {gi}: {e}")
                continue
            if decode_images:
                try:
                    with Image.open(io.BytesIO(rec.image_bytes)) as im:
                        im.load()
                        size = im.size
                    if size != (rec.width, rec.height):
                        raise ValueError(f"decoded size {size[0]}x{size[1]} differs from "
                                         f"recorded {rec.width}x{rec.height}")
                except Exception as e:
                    problems.append(f"record {gi} (id {rec.id}, {rec.file_name}): image does "
                                    f"not decode: {e}")
            if bar is not None:
                bar.update(1)
    if n != entry["count"]:
        problems.append(f"{entry['file']}: {n} records, the manifest says {entry['count']}")
    if nbytes != entry.get("bytes", nbytes):
        problems.append(f"{entry['file']}: {nbytes} bytes of records, the manifest says "
                        f"{entry['bytes']}")
    if h.hexdigest() != entry.get("blake2b"):
        problems.append(f"{entry['file']}: checksum mismatch (the blake2b of the records in "
                        f"key order differs from the manifest)")


def format_info(path) -> str:
    """A human-readable summary of a packed dataset's manifest."""
    ds = Dataset(path)
    m = ds.manifest
    lines = [f"dataset      {ds.path}",
             f"records      {len(ds)} in {ds.num_shards} shard(s)",
             f"source       {m.get('source_format')} ({m.get('source', '')})",
             f"created      {m.get('created')} by fastload {m.get('fastload_version')}",
             f"classes      {len(ds.classes)}: {', '.join(ds.classes[:20])}"
             + (" ..." if len(ds.classes) > 20 else "")]
    if ds.keypoint_names:
        lines.append(f"keypoints    {len(ds.keypoint_names)}: {', '.join(ds.keypoint_names)}")
        lines.append(f"flip pairs   {ds.flip_pairs}")
    sm = m.get("summary") or {}
    for key in ("images", "instances", "polygons", "ignore_instances", "skipped_images",
                "skipped_annotations", "bytes"):
        if key in sm:
            lines.append(f"{key:<12} {sm[key]}")
    total = sum(int(s.get("bytes", 0)) for s in m["shards"])
    lines.append(f"record bytes {total} ({total / 2**20:.1f} MiB)")
    return "\n".join(lines)
