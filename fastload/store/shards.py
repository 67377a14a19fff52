"""LMDB shards: keys, checksums, the writer (``fastload pack``) and the process-wide cache of
read-only environments (readers).

Keys: inside a shard the record with local index ``j`` has the key ``struct.pack(">Q", j)``
(8 bytes big-endian, so LMDB's key order is index order). A shard's checksum is the hex
blake2b-256 of the concatenated per-record digests (blake2b-128 of each value,
:func:`record_digest`) in key order, so packing workers hash records in parallel and
``fastload verify`` recomputes it in one sequential scan. A shard's file also has a checksum
of its bytes (:func:`file_sha256`), which a copy is checked against before it is opened.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
import threading
from pathlib import Path
from typing import Dict, List, Optional

import lmdb

from fastload.store.manifest import ShardEntry, StoreError

SHARD_PATTERN = "shard-{:05d}.lmdb"


def record_digest(value) -> bytes:
    """blake2b-128 of one record value (the unit of the shard checksum)."""
    return hashlib.blake2b(value, digest_size=16).digest()


def file_sha256(path, chunk: int = 4 << 20) -> str:
    """Hex SHA-256 of a whole file (what ``sha256sum`` prints): the manifest's ``file_sha256``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


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


# ---------------------------------------------------------------------------- writing
#: free bytes under which a failed LMDB write is taken for a full disk (beyond the batch)
_FULL_MARGIN = 1 << 20


def write_error(path: Path, e: lmdb.Error, needed: int = 0) -> Exception:
    """The exception to raise for an LMDB error while writing shard ``path``.

    A full disk becomes ``OSError(ENOSPC)`` naming the file. LMDB does not always say so:
    a write cut short by the full disk comes back as "Input/output error", so an error
    while the file system has less than ``needed`` + 1 MiB free is a full disk too.
    Anything else is a :class:`StoreError` naming the file.
    """
    full = "No space left" in str(e)
    if not full:
        try:
            full = shutil.disk_usage(Path(path).parent).free < needed + _FULL_MARGIN
        except OSError:
            pass
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return StoreError(f"{path}: cannot write the shard: {e}")


class ShardWriter:
    """Append records to one LMDB shard (used by ``fastload pack``, main process only).

    Records get consecutive local indices 0, 1, 2, ... Writes are batched into
    transactions of ``batch`` records; when the map is full (``lmdb.MapFullError``) the
    transaction is aborted, the map size doubled with ``env.set_mapsize`` and the batch
    written again, so the map size grows as needed. A full disk raises
    ``OSError(ENOSPC)`` naming the file (:func:`write_error`). ``close()`` syncs, removes
    the writer's lock file and returns the shard's :class:`ShardEntry` (with the file's size
    and SHA-256: the file is final once closed, readers never write to it).
    """

    def __init__(self, path, map_size: int = 256 << 20, batch: int = 256):
        self.path = Path(path)
        self.map_size = int(map_size)
        self.batch = int(batch)
        try:
            self.env = lmdb.open(str(self.path), subdir=False, map_size=self.map_size,
                                 readonly=False, lock=True, sync=False, metasync=False,
                                 meminit=False, max_dbs=0, readahead=False)
        except lmdb.Error as e:
            raise write_error(self.path, e) from None
        self._pending: List[bytes] = []
        self._digests: List[bytes] = []
        self.count = 0
        self.nbytes = 0
        self._hash = ShardHash()

    @property
    def num_records(self) -> int:
        """Records appended so far (written or still queued)."""
        return self.count + len(self._pending)

    def append(self, value: bytes, digest: Optional[bytes] = None) -> int:
        """Queue ``value`` as the next record (``digest``: its :func:`record_digest`, if the
        caller computed it already); returns its local index."""
        j = self.num_records
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
            except lmdb.Error as e:
                raise write_error(self.path, e, sum(map(len, self._pending))) from None
        for v, d in zip(self._pending, self._digests):
            self._hash.update(digest=d)
            self.nbytes += len(v)
        self.count += len(self._pending)
        self._pending = []
        self._digests = []

    def close(self) -> ShardEntry:
        self.flush()
        try:
            self.env.sync(True)
        except lmdb.Error as e:
            raise write_error(self.path, e) from None
        self.env.close()
        Path(str(self.path) + "-lock").unlink(missing_ok=True)
        return ShardEntry(file=self.path.name, count=self.count, bytes=self.nbytes,
                          blake2b=self._hash.hexdigest(), file_bytes=self.path.stat().st_size,
                          file_sha256=file_sha256(self.path))

    def abort(self) -> None:
        """Close the environment without writing what is queued (a failed pack)."""
        try:
            self.env.close()
        except lmdb.Error:
            pass


# ---------------------------------------------------------------------------- reading
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


os.register_at_fork(after_in_child=_after_fork_in_child)


def open_env(path: str) -> lmdb.Environment:
    """The read-only environment of shard file ``path`` for this process (opened lazily,
    ``lock=False``, ``readahead=False``; cached process-wide)."""
    env = _ENVS.get(path)
    if env is not None and _ENVS_PID == os.getpid():
        return env
    with _ENVS_LOCK:
        if _ENVS_PID != os.getpid():  # a fork made by C code runs no Python at-fork hook
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
