"""Datasets by URL: ``fastload.Dataset("s3://bucket/train")`` fetches the manifest, copies each
shard once into a local cache, verified, and reads it from there through LMDB as usual.

Any fsspec protocol works (``s3://``, ``gs://``, ``https://``, ``file://``, ...): fsspec
and the HTTP client come with ``pip install 'fastload[remote]'``; S3 and GCS also need
fsspec's ``s3fs`` / ``gcsfs``.

The cache (:func:`fetch`)::

    CACHE/                          cache_dir=, else $FASTLOAD_CACHE_DIR, else
                                    $XDG_CACHE_HOME/fastload/datasets (~/.cache/...)
      train-3f2a9c1b7d4e/           one folder per URL: its last name + a hash of the URL
        url                         the URL, for people
        9c0e4b2a61d85f37/           one folder per manifest (a hash of its bytes)
          manifest.json             written last: the folder is complete
          shard-00000.lmdb          verified copies
          .shard-00001.lmdb.part    a download under way (or interrupted: resumed)
          .shard-00001.lmdb.lock    held by the process downloading that shard

- Every open reads the remote manifest (one small request). A manifest with other bytes
  is another version: its shards go to a new folder, never mixed with the old ones (old
  versions stay until deleted by hand).
- A shard is downloaded to a ``.part`` file, checked against the manifest (size, then the
  SHA-256 of the file, ``file_sha256``; manifests older than that field: the record
  checksum, read through LMDB after the size check) and renamed into place only if it
  matches: LMDB never maps an unchecked file. A mismatch removes the download and raises
  :class:`~fastload.store.StoreError` naming the shard's URL.
- Several processes (the ranks of one node) may open one URL at once: each shard has a
  lock file (``flock``); a process downloads the shards it can lock, then waits for the
  others' locks and finds those shards done, so every shard is downloaded once. A lock dies
  with its process: a killed download is taken over, and resumed from its ``.part`` where
  the server supports range requests (from the start where it does not).
- Downloads show a progress bar of bytes on stderr (``progress=False``: none).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

from fastload.optional import MissingDependency, require
from fastload.store.manifest import (MANIFEST_NAME, Manifest, ShardEntry, StoreError,
                                     write_bytes_atomic)
from fastload.store.shards import ShardHash

#: the environment variable naming the cache folder (``cache_dir=`` wins over it)
CACHE_ENV = "FASTLOAD_CACHE_DIR"
#: bytes read from the remote file per call
CHUNK = 8 << 20

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(path) -> bool:
    """Whether ``path`` is a URL (``PROTOCOL://...``) rather than a local path."""
    return isinstance(path, str) and bool(_URL.match(path))


def default_cache_dir() -> Path:
    """``$FASTLOAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastload/datasets``, else
    ``~/.cache/fastload/datasets``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastload" / "datasets"


def dataset_cache_dir(url: str, cache_dir=None) -> Path:
    """The cache folder of ``url`` (the versions are folders inside it)."""
    url = url.rstrip("/")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url.rsplit("/", 1)[-1])[:40].strip("._") or "dataset"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / f"{name}-{digest}"


def fetch(url: str, cache_dir=None, progress: bool = True) -> Path:
    """The local folder holding a complete, verified copy of the dataset at ``url`` (see the
    module docstring): downloads what the cache lacks. Raises :class:`StoreError` naming
    the URL when the manifest cannot be fetched or is not a fastload manifest, or a shard
    cannot be downloaded or does not match the manifest; ``OSError(ENOSPC)`` when the cache
    lacks the space; :class:`fastload.optional.MissingDependency` without fsspec (or the
    protocol's own package)."""
    url = url.rstrip("/")
    fs, root = _filesystem(url)
    raw = _read_manifest(fs, root, url)
    where = f"{url}/{MANIFEST_NAME}"
    try:
        manifest = Manifest.from_json(json.loads(raw), where)
    except ValueError as e:
        if isinstance(e, StoreError):
            raise
        raise StoreError(f"{where}: unreadable manifest: {e}") from None
    home = dataset_cache_dir(url, cache_dir)
    dest = home / hashlib.sha256(raw).hexdigest()[:16]
    done = dest / MANIFEST_NAME
    if done.is_file() and not manifest.file_problems(dest):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(home / "url", (url + "\n").encode())
    _fetch_shards(fs, root, url, manifest, dest, progress)
    write_bytes_atomic(done, raw)  # the copy is complete
    for s in manifest.shards:  # every shard is in place: nobody downloads them any more
        (dest / f".{s.file}.lock").unlink(missing_ok=True)
    return dest


# ---------------------------------------------------------------------------- plumbing
def _filesystem(url: str):
    fsspec = require("fsspec", extra="remote", what=f"reading a dataset by URL ({url})")
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:  # the protocol's own package (aiohttp, s3fs, gcsfs) is missing
        raise MissingDependency(f"reading {url} needs a package that is not installed: {e} "
                                f"(pip install 'fastload[remote]' brings fsspec and the HTTP "
                                f"client; S3 and GCS also need s3fs / gcsfs)") from None
    except ValueError as e:
        raise StoreError(f"{url}: {e}") from None


def _read_manifest(fs, root: str, url: str) -> bytes:
    try:
        return fs.cat_file(f"{root}/{MANIFEST_NAME}")
    except FileNotFoundError:
        raise StoreError(f"{url}: no {MANIFEST_NAME}; this is not a packed fastload dataset "
                         f"(or its pack did not finish)") from None
    except Exception as e:  # the protocol's own errors: HTTP, S3, network
        raise StoreError(f"{url}/{MANIFEST_NAME}: cannot fetch it: {type(e).__name__}: "
                         f"{e}") from None


@contextmanager
def _shard_lock(dest: Path, shard: str, blocking: bool):
    """Hold the shard's lock file (yields True), or yield False when another process holds
    it and ``blocking`` is False."""
    fd = os.open(dest / f".{shard}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _fetch_shards(fs, root: str, url: str, manifest: Manifest, dest: Path, progress: bool):
    todo = [s for s in manifest.shards if not (dest / s.file).is_file()]
    if not todo:
        return
    _check_space(dest, todo)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(s.file_bytes or 0 for s in todo) or None, unit="B", unit_scale=True,
                   unit_divisor=1024, desc=f"fetch {url.rsplit('/', 1)[-1]}", file=sys.stderr,
                   dynamic_ncols=True)
    def fetch_or_count(s: ShardEntry) -> None:  # under the shard's lock
        if not (dest / s.file).is_file():
            _fetch_digests(fs, root, url, s, dest)
            _fetch_shard(fs, f"{root}/{s.file}", f"{url}/{s.file}", s, dest, bar)
        elif bar is not None:  # another process brought it
            bar.update(s.file_bytes or 0)

    try:
        busy: List[ShardEntry] = []
        for s in todo:  # the shards no other process is downloading
            with _shard_lock(dest, s.file, blocking=False) as mine:
                if mine:
                    fetch_or_count(s)
                else:
                    busy.append(s)
        for s in busy:  # wait for the others' downloads; take over one whose process died
            with _shard_lock(dest, s.file, blocking=True):
                fetch_or_count(s)
    finally:
        if bar is not None:
            bar.close()


def _fetch_digests(fs, root: str, url: str, entry: ShardEntry, dest: Path) -> None:
    """The shard's per-record digests file (16 bytes a record, what ``fastload verify`` names a
    changed record with), checked against the manifest's shard checksum (the blake2b-256 of
    those digests) and written before the shard itself, so a shard in the cache always has
    it. Packs without digests files have nothing to fetch."""
    if entry.digests is None or (dest / entry.digests).is_file():
        return
    where = f"{url}/{entry.digests}"
    try:
        with fs.open(f"{root}/{entry.digests}", "rb") as f:
            data = f.read()
    except Exception as e:  # the protocol's own errors
        raise StoreError(f"{where}: download failed: {type(e).__name__}: {e}") from None
    if hashlib.blake2b(data, digest_size=32).hexdigest() != entry.blake2b:
        raise StoreError(f"{where}: the digests file does not match the manifest's checksum of "
                         f"{entry.file}; the remote copy is corrupt; refused")
    write_bytes_atomic(dest / entry.digests, data)


def _check_space(dest: Path, todo: List[ShardEntry]) -> None:
    need = sum((s.file_bytes or 0) for s in todo)
    free = shutil.disk_usage(dest).free
    if need > free:
        raise OSError(errno.ENOSPC, f"the cache needs {need / 2**30:.2f} GiB for the dataset's "
                                    f"shards and has {free / 2**30:.2f} GiB free; free some "
                                    f"space or choose another cache_dir / ${CACHE_ENV}", str(dest))


def _fetch_shard(fs, rpath: str, shard_url: str, entry: ShardEntry, dest: Path, bar) -> None:
    """Download one shard (resuming a ``.part`` left by a dead process), verify, rename."""
    part = dest / f".{entry.file}.part"
    offset = part.stat().st_size if part.exists() else 0
    if entry.file_bytes is not None and offset > entry.file_bytes:
        offset = 0
    h = hashlib.sha256()
    if offset:
        with open(part, "rb") as f:
            while True:
                b = f.read(CHUNK)
                if not b:
                    break
                h.update(b)
        if bar is not None:
            bar.update(offset)
        try:
            _download(fs, rpath, part, offset, entry, h, bar)
        except Exception:  # the server cannot resume (no range requests): start again
            if bar is not None:
                bar.update(-part.stat().st_size)
            offset, h = 0, hashlib.sha256()
    if not offset:
        try:
            _download(fs, rpath, part, 0, entry, h, bar)
        except MissingDependency:
            raise
        except Exception as e:  # the protocol's own errors: HTTP, S3, network
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise
            raise StoreError(f"{shard_url}: download failed: {type(e).__name__}: {e}; "
                             f"open the dataset again to resume it") from None
    _verify(part, shard_url, entry, h.hexdigest())
    os.replace(part, dest / entry.file)


def _download(fs, rpath: str, part: Path, offset: int, entry: ShardEntry, h, bar) -> None:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    kw = {}
    if entry.file_bytes is not None and any(p.startswith("http") for p in protocols):
        # one streaming GET from the start; a resume reads in ranges
        kw = dict(size=entry.file_bytes) if offset else dict(block_size=0, size=entry.file_bytes)
    with fs.open(rpath, "rb", **kw) as src, open(part, "r+b" if offset else "wb") as dst:
        if offset:
            src.seek(offset)
            dst.seek(offset)
            dst.truncate()
        while True:
            b = src.read(CHUNK)
            if not b:
                break
            dst.write(b)
            h.update(b)
            if bar is not None:
                bar.update(len(b))
        dst.flush()
        os.fsync(dst.fileno())


def _verify(part: Path, shard_url: str, entry: ShardEntry, sha256: str) -> None:
    """Check a downloaded shard against the manifest before it is renamed into place; a
    mismatch removes it and raises StoreError naming the shard's URL."""
    size = part.stat().st_size
    why = None
    if entry.file_bytes is not None and size != entry.file_bytes:
        why = f"{size} bytes, the manifest says {entry.file_bytes}"
    elif entry.file_sha256 is not None:
        if sha256 != entry.file_sha256:
            why = "its SHA-256 differs from the manifest's file_sha256"
    else:
        why = _record_problem(part, entry)
    if why is not None:
        part.unlink(missing_ok=True)
        raise StoreError(f"{shard_url}: the downloaded shard does not match the manifest ({why}); "
                         f"the remote copy is corrupt or changed during the download; refused")


def _record_problem(path: Path, entry: ShardEntry) -> Optional[str]:
    """For manifests without ``file_sha256``: the record count, bytes and checksum of the
    shard, read through LMDB (only after the size check, where the manifest has one)."""
    import lmdb
    try:
        env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False)
    except lmdb.Error as e:
        return f"not an LMDB file: {e}"
    try:
        h, n, nbytes = ShardHash(), 0, 0
        with env.begin(buffers=False) as txn:
            for _, v in txn.cursor():
                h.update(v)
                n += 1
                nbytes += len(v)
    except lmdb.Error as e:
        return f"unreadable LMDB file: {e}"
    finally:
        env.close()
    if (n, nbytes, h.hexdigest()) != (entry.count, entry.bytes, entry.blake2b):
        return "its records' count, size or checksum differ from the manifest"
    return None
