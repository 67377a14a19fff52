"""``Dataset``: read a packed dataset (records by global index, from the cached read-only
environments of :mod:`fastload.store.shards`), from a folder or by URL (through the local
shard cache of :mod:`fastload.store.remote`)."""
from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import lmdb

from fastload.record import Record, RecordError
from fastload.store.manifest import Manifest, StoreError
from fastload.store.shards import close_env, decode_key, encode_key, file_identity, open_env


def _identity_or_path(path: str):
    """The file's identity, or its path when it is missing (opening it then says so)."""
    try:
        return file_identity(path)
    except OSError:
        return path


class Dataset:
    """A packed dataset: ``len(ds)``, ``ds[i]`` -> :class:`fastload.record.Record`.

    Annotations in the records use continuous pixel coordinates (pixel (i, j) covers
    [j, j+1) x [i, i+1)); ``record.instances`` gives per-instance objects, the flat
    arrays (``points``, ``part_offsets``, ...) are what loaders use.

    Thread-safe (each call opens its own short read transaction) and fork-safe: LMDB
    environments are opened lazily, read-only, ``lock=False``, ``readahead=False``, once
    per process (re-opened when ``os.getpid()`` changes). Pickling a Dataset (for spawn
    workers) carries only the path, manifest, offsets and shard file identities.

    A Dataset reads the shard files that were there when it was opened: each file's
    identity (device, inode, size, mtime) is taken with the manifest. After a re-pack to the
    same folder a new Dataset reads the new shards; this one raises :class:`StoreError`
    ("open the dataset again") rather than read a new shard under its old manifest. A shard
    changed in place (same inode) is the same file, read as it is now (see
    :mod:`fastload.store.shards` for the cache's rules).

    ``path`` is a dataset folder or a URL (``s3://``, ``gs://``, ``https://``, ``file://``:
    any fsspec protocol; needs ``fastload[remote]``). A URL's manifest is fetched and its
    shards are copied once into a local cache and verified against the manifest before
    they are opened (:func:`fastload.store.remote.fetch`); ``cache_dir`` is that cache
    (default ``$FASTLOAD_CACHE_DIR``, else ``~/.cache/fastload/datasets``), ``progress``
    shows a progress bar while downloading. ``fastload.DataLoader(URL, ...)`` opens it
    this way.

    Attributes: ``path`` (the local folder: the cache's copy for a URL), ``url`` (or
    ``None``), ``manifest`` (:class:`fastload.store.Manifest`), ``classes``,
    ``keypoint_names``, ``flip_pairs`` (list of (left, right) index pairs), ``skeleton``,
    ``source_format``.
    """

    def __init__(self, path, check_files: bool = True, *, cache_dir=None, progress: bool = True):
        from fastload.store.remote import fetch, is_url
        self.url: Optional[str] = None
        if is_url(path):
            self.url = str(path)
            path = fetch(self.url, cache_dir=cache_dir, progress=progress)
        elif cache_dir is not None:
            raise ValueError(f"cache_dir is for datasets opened by URL; {path} is a local path")
        self.path = Path(path)
        self.manifest = m = Manifest.load(self.path, check_files)
        self.classes: List[str] = list(m.classes)
        self.keypoint_names: Optional[List[str]] = m.keypoint_names
        self.flip_pairs = list(m.flip_pairs) if m.flip_pairs is not None else None
        self.skeleton = list(m.skeleton) if m.skeleton is not None else None
        self.source_format: str = m.source_format
        self._shard_files = [os.path.realpath(self.path / s.file) for s in m.shards]
        self._shard_keys = [_identity_or_path(f) for f in self._shard_files]
        self._starts = [0]
        for s in m.shards:
            self._starts.append(self._starts[-1] + s.count)
        self._len = self._starts[-1]

    # environments live in the process-wide cache of fastload.store.shards, never in the
    # object, so pickling (spawn workers) carries none

    def __setstate__(self, state):
        """Unpickled (a spawn worker, another host sharing the folder): a shard file that is
        still the one pickled (same inode, size and mtime) takes this machine's identity of
        it (the device number is per machine); any other keeps the pickled key, and reading
        it says the file was replaced."""
        self.__dict__.update(state)
        keys = []
        for key in self._shard_keys:
            if isinstance(key, tuple):
                now = _identity_or_path(key[0])
                if isinstance(now, tuple) and now[2:] == key[2:]:
                    key = now
            keys.append(key)
        self._shard_keys = keys

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        where = repr(str(self.path)) if self.url is None else f"{self.url!r} -> {str(self.path)!r}"
        return (f"fastload.Dataset({where}, {self._len} records, "
                f"{len(self._shard_files)} shards, {len(self.classes)} classes)")

    @property
    def num_shards(self) -> int:
        return len(self._shard_files)

    def shard_start(self, s: int) -> int:
        """Global index of shard ``s``'s first record."""
        return self._starts[s]

    def shard_env(self, s: int) -> lmdb.Environment:
        """This process's read-only environment of shard ``s`` (opened on first use);
        :class:`StoreError` when the file was replaced since the dataset was opened."""
        return open_env(self._shard_keys[s])

    def locate(self, i: int):
        """Global index -> (shard, local index). Negative indices count from the end."""
        i = int(i)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"index {i} out of range for a dataset of {self._len} records")
        s = bisect.bisect_right(self._starts, i) - 1
        return s, i - self._starts[s]

    def record_location(self, i: int) -> str:
        """Where record ``i`` lives, in words: ``"DIR/shard-00000.lmdb, record 5"`` (the shard
        file and the record's local index in it), to name a record that cannot be read."""
        s, j = self.locate(i)
        return f"{self.path / self.manifest.shards[s].file}, record {j}"

    # ---- raw access
    def _missing(self, s: int, j: int) -> StoreError:
        return StoreError(f"{self._shard_files[s]}: record {j} (global index "
                          f"{self._starts[s] + j}) is missing")

    def get_raw(self, i: int) -> bytes:
        """The encoded record bytes of global index ``i``."""
        s, j = self.locate(i)
        with self.shard_env(s).begin(buffers=False) as txn:
            v = txn.get(encode_key(j))
        if v is None:
            raise self._missing(s, j)
        return v

    def _by_shard(self, indices: Iterable[int]):
        idx = [self.locate(i) for i in indices]
        by_shard: Dict[int, List[int]] = {}
        for k, (s, _) in enumerate(idx):
            by_shard.setdefault(s, []).append(k)
        return idx, by_shard

    def get_raw_many(self, indices: Iterable[int]) -> List[bytes]:
        """Encoded records for many global indices, in the given order; one read
        transaction per shard touched (the fast path for loaders)."""
        idx, by_shard = self._by_shard(indices)
        out: List[Optional[bytes]] = [None] * len(idx)
        for s, ks in by_shard.items():
            with self.shard_env(s).begin(buffers=False) as txn:
                for k in ks:
                    v = txn.get(encode_key(idx[k][1]))
                    if v is None:
                        raise self._missing(s, idx[k][1])
                    out[k] = v
        return out  # type: ignore[return-value]

    def __getitem__(self, i: int) -> Record:
        s, j = self.locate(i)
        # decode straight from LMDB's memory map (buffers=True) inside the transaction:
        # msgpack copies every field out, so the record outlives the transaction, and the
        # value is copied once instead of twice
        with self.shard_env(s).begin(buffers=True) as txn:
            v = txn.get(encode_key(j))
            if v is None:
                raise self._missing(s, j)
            try:
                return Record.decode(v)
            except RecordError as e:
                raise StoreError(f"{self.path}: record {i}: {e}") from None

    def read_many(self, indices: Iterable[int]) -> List[Record]:
        """Decoded records for many indices, in the given order (one transaction per shard)."""
        idx, by_shard = self._by_shard(indices)
        out: List[Optional[Record]] = [None] * len(idx)
        for s, ks in by_shard.items():
            with self.shard_env(s).begin(buffers=True) as txn:
                for k in ks:
                    v = txn.get(encode_key(idx[k][1]))
                    if v is None:
                        raise self._missing(s, idx[k][1])
                    out[k] = Record.decode(v)
        return out  # type: ignore[return-value]

    def __iter__(self):
        for i in range(self._len):
            yield self[i]

    def iter_raw(self):
        """Yield ``(global index, raw bytes)`` for every record in order, with one cursor
        per shard (sequential scans: verify, checksums)."""
        for s in range(len(self._shard_files)):
            with self.shard_env(s).begin(buffers=False) as txn:
                for k, v in txn.cursor():
                    yield self._starts[s] + decode_key(k), v

    def close(self) -> None:
        """Close this process's environments of this dataset's shards (shared with other
        Dataset objects of the same directory; they re-open lazily on the next read).
        Do not call while another thread is reading."""
        for key in self._shard_keys:
            close_env(key)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
