"""LMDB shards: keys, checksums, the writer (``fastload pack``) and the process-wide cache of
read-only environments (readers).

Keys: inside a shard the record with local index ``j`` has the key ``struct.pack(">Q", j)``
(8 bytes big-endian, so LMDB's key order is index order). A shard's checksum is the hex
blake2b-256 of the concatenated per-record digests (blake2b-128 of each value,
:func:`record_digest`) in key order, so packing workers hash records in parallel and
``fastload verify`` recomputes it in one sequential scan. A shard's file also has a checksum
of its bytes (:func:`file_sha256`), which a copy is checked against before it is opened.

Digests file: beside each shard, ``shard-NNNNN.digests`` holds those per-record digests, 16
raw bytes per record in key order, nothing else (no header, no pickle). Its blake2b-256 is
therefore the shard's checksum: ``fastload verify`` checks the file against the manifest,
then each record against its own digest, and names the damaged record. Packs made before
the file existed have none (their manifest names none); verify then checks those shards as
a whole.
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
DIGEST_SIZE = 16
DIGESTS_SUFFIX = ".digests"


def digests_name(shard_file: str) -> str:
    """The digests file of shard file ``shard_file``: ``shard-00000.lmdb`` ->
    ``shard-00000.digests``."""
    return shard_file.rsplit(".", 1)[0] + DIGESTS_SUFFIX


def read_digests(path, count: int) -> List[bytes]:
    """The ``count`` per-record digests of a digests file; ``StoreError`` naming the file
    when it has another size (an unreadable file raises its ``OSError``)."""
    from fastload.formats.files import read_regular
    data = read_regular(path)
    if len(data) != count * DIGEST_SIZE:
        raise StoreError(f"{path}: {len(data)} bytes, expected {count} digests of "
                         f"{DIGEST_SIZE} bytes")
    return [data[k:k + DIGEST_SIZE] for k in range(0, len(data), DIGEST_SIZE)]


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
        self.digests_path = self.path.with_name(digests_name(self.path.name))
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
        self._written_digests: List[bytes] = []
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
        self._written_digests.extend(self._digests)
        self.count += len(self._pending)
        self._pending = []
        self._digests = []

    def close(self) -> ShardEntry:
        """Write what is queued, sync, write the digests file; the shard's entry."""
        self.flush()
        try:
            self.env.sync(True)
        except lmdb.Error as e:
            raise write_error(self.path, e) from None
        self.env.close()
        Path(str(self.path) + "-lock").unlink(missing_ok=True)
        try:
            with open(self.digests_path, "wb") as f:
                f.write(b"".join(self._written_digests))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a write error carries no file name: name it
            raise OSError(e.errno, e.strerror, str(self.digests_path)) from None
        return ShardEntry(file=self.path.name, count=self.count, bytes=self.nbytes,
                          blake2b=self._hash.hexdigest(), file_bytes=self.path.stat().st_size,
                          file_sha256=file_sha256(self.path),
                          digests=self.digests_path.name)

    def abort(self) -> None:
        """Close the environment without writing what is queued (a failed pack)."""
        try:
            self.env.close()
        except lmdb.Error:
            pass


# ---------------------------------------------------------------------------- reading
# Process-wide cache of open read-only environments.
#
# Keyed by the shard file's identity (path, device, inode, size, mtime), taken when a
# Dataset reads its manifest, not by its path: `fastload pack --overwrite` puts new files at
# the same paths, and a Dataset opened after it must read the new files (a path key handed
# it the old shard's environment under the new manifest). The rules:
#
# - A file *replaced* at its path (another device or inode: a re-pack, an rsync) is another
#   file. A Dataset that saw the old one raises StoreError ("open the dataset again") rather
#   than read the new shard under its old manifest. Opening the new one drops the old
#   identities of that path from the cache.
# - A file *changed in place* (same device and inode, new size or mtime: an LMDB write, a
#   copy over it) is the same file: py-lmdb refuses to open one inode twice in a process,
#   and LMDB reads the file's current state at each transaction. Its environment is kept
#   (or opened) and cached under both identities; damage it brings is found by reading
#   (a RecordError naming the record) or by `fastload verify`.
# - Dropping an entry never closes its environment: a reader in another thread may be
#   inside a transaction of it, and closing unmaps its pages (a crash). The environment
#   closes itself when its last transaction ends (py-lmdb transactions hold their
#   environment). Only Dataset.close() (close_env) closes one explicitly: never call it
#   while another thread reads that dataset.
# - After a fork the child closes the handles it inherited (its own copies: the parent's
#   stay valid) and opens its own on first use, so no environment is used across a fork.
_ENVS: Dict[tuple, lmdb.Environment] = {}
_ENVS_LOCK = threading.Lock()
_ENVS_PID = os.getpid()


def file_identity(path: str) -> tuple:
    """``(path, st_dev, st_ino, st_size, st_mtime_ns)`` of the file at ``path``: the key of
    its environment in the cache (``FileNotFoundError`` when it is missing)."""
    st = os.stat(path)
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


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


def _replaced(path: str) -> StoreError:
    return StoreError(f"{path}: the shard file was replaced (re-packed?) since this dataset "
                      f"was opened; open the dataset again")


def open_env(key) -> lmdb.Environment:
    """The read-only environment of a shard file for this process (opened lazily,
    ``lock=False``, ``readahead=False``; cached process-wide). ``key``: the file's
    :func:`file_identity` when the dataset was opened (a bare path: whatever file is there
    now). :class:`StoreError` when another file has replaced it at its path (see the rules
    above)."""
    if isinstance(key, str):
        try:
            key = file_identity(key)
        except OSError as e:
            raise StoreError(f"{key}: cannot open shard: {e.strerror or e}") from None
    env = _ENVS.get(key)
    if env is not None and _ENVS_PID == os.getpid():
        return env
    path = key[0]
    with _ENVS_LOCK:
        if _ENVS_PID != os.getpid():  # a fork made by C code runs no Python at-fork hook
            _after_fork_in_child()
        env = _ENVS.get(key)
        if env is not None:
            return env
        now = _current(path, key)
        for k in [k for k in _ENVS if k[0] == path and k[1:3] != now[1:3]]:
            del _ENVS[k]  # a replaced file: dropped, not closed (see the rules above)
        env = next((e for k, e in _ENVS.items() if k[0] == path), None)  # same file
        if env is None:
            try:
                env = lmdb.open(path, subdir=False, readonly=True, lock=False,
                                readahead=False, meminit=False, max_readers=2048,
                                max_spare_txns=64)
            except lmdb.Error as e:
                raise StoreError(f"{path}: cannot open shard: {e}") from None
            if _current(path, key)[1:3] != now[1:3]:  # replaced while it was being opened
                env.close()
                raise _replaced(path)
        _ENVS[key] = _ENVS[now] = env
        return env


def _current(path: str, key: tuple) -> tuple:
    """The identity of the file at ``path`` now; StoreError when it is missing or is not
    the file of ``key`` (another device or inode)."""
    try:
        now = file_identity(path)
    except FileNotFoundError:
        raise StoreError(f"{path}: the shard file is missing") from None
    if now[1:3] != key[1:3]:
        raise _replaced(path)
    return now


def close_env(key) -> None:
    """Close this process's environment of a shard file (``key``: one of its identities, or
    a path: every cached identity of that path). Only when no other thread reads it."""
    path = key if isinstance(key, str) else key[0]
    with _ENVS_LOCK:
        envs = {id(e): e for k, e in list(_ENVS.items()) if k[0] == path
                and (k == key or isinstance(key, str) or k[1:3] == key[1:3])}
        for k in [k for k, e in _ENVS.items() if id(e) in envs]:
            del _ENVS[k]
    for env in envs.values():
        env.close()
