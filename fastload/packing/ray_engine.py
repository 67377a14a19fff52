"""The ``ray`` engine of ``fastload pack`` (``--engine ray``): one Ray task per shard.

The driver (the process running :func:`fastload.packing.pack`) reads the source index, as
with the local engine, and cuts the samples into chunks of ``shard_size``. Each chunk goes
to one Ray task (:func:`pack_shard`) that prepares every sample with the pack's one
:class:`~fastload.packing.engine.SampleWork` (read, validate, encode) and writes the records
into one LMDB shard in the pack's staging folder; it returns the shard's entry, the
problems of its samples and its counts (:class:`ShardResult`). The driver takes the results
in chunk order (so problems are counted, and ``strict`` fails, exactly as with the local
engine), renames the shards ``shard-00000.lmdb``, ``shard-00001.lmdb``, ... in that order
(a chunk whose samples were all skipped gives no shard), and hands the entries back to
``pack``, which writes the report and the manifest and publishes: only the driver writes
the manifest.

Same dataset as the local engine: same record ids, order and bytes, same problems. Shard
boundaries differ when samples are skipped (a shard holds the records of its chunk:
at most ``shard_size``).

Storage: the staging folder is beside OUT, and the source images are read by the tasks,
so on a cluster OUT's parent and the source must be on storage every node mounts at the
same path (NFS, Lustre, a FUSE-mounted bucket). The driver checks that every shard a
task reports is there, with the reported size, before it uses it.

Failures: Ray retries a task whose worker dies and, here, also one that raises
(``retries`` times, default 3); a task that still fails ends the pack with a
:class:`~fastload.packing.engine.PackError` naming the chunk and the last error, the
other tasks are cancelled, the staging folder is removed and no manifest is written.

Ray itself is an extra (``pip install 'fastload[ray]'``). Without an ``address`` the
engine starts a local Ray instance (``ray.init(num_cpus=...)``) and stops it at the end;
inside a process where Ray is already initialized it uses that instance and leaves it
running.
"""
from __future__ import annotations

import logging
import os
import site
import socket
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional

from fastload.formats.base import Problem
from fastload.optional import require
from fastload.store import SHARD_PATTERN, ShardEntry, ShardWriter
from fastload.store.shards import digests_name

#: times Ray runs a failing shard task again before the pack fails
DEFAULT_RETRIES = 3


def require_ray():
    """The ``ray`` module, or :class:`fastload.optional.MissingDependency` naming the extra."""
    return require("ray", extra="ray", what="fastload pack --engine ray")


@dataclass
class ShardResult:
    """What a shard task sends back: its chunk, its shard (``None`` when every sample was
    skipped), its samples' problems in source order, its record counts (a
    :class:`~fastload.packing.engine.PackSummary` of the chunk) and who wrote it."""

    chunk: int
    samples: int
    entry: Optional[ShardEntry]
    problems: List[Problem] = field(default_factory=list)
    counts: object = None
    host: str = ""
    fastload_version: str = ""
    record_version: int = 0


def pack_shard(work, samples, first: int, staging: str, chunk: int) -> ShardResult:
    """The Ray task: prepare ``samples`` (global indices ``first``, ``first + 1``, ...) with
    ``work`` and write their records into a new shard in ``staging``. The file name is new
    on every attempt (a retried task never meets the file of an attempt that died); a
    failing attempt removes its file."""
    from fastload import __version__
    from fastload.packing.engine import PackError, PackSummary
    from fastload.record import RECORD_VERSION
    staging_dir = Path(staging)
    host = socket.gethostname()
    if not staging_dir.is_dir():
        raise PackError(f"{staging_dir}: the staging folder is not visible on Ray node {host}; "
                        f"OUT must be on storage every node mounts at the same path")
    path = staging_dir / f"part-{chunk:05d}-{uuid.uuid4().hex[:12]}.lmdb"
    counts = PackSummary(out="", format="")
    problems: List[Problem] = []
    writer = None
    try:
        for k, sample in enumerate(samples):
            value, sample_problems, stats = work.prepare(sample, first + k)
            problems.extend(sample_problems)
            if value is None:
                continue
            if writer is None:
                writer = ShardWriter(path)
            writer.append(value, stats["digest"])
            counts.add(stats, len(value))
        entry = writer.close() if writer is not None else None
    except BaseException:
        if writer is not None:
            writer.abort()
        for f in (path, Path(f"{path}-lock")):
            f.unlink(missing_ok=True)
        raise
    return ShardResult(chunk=chunk, samples=len(samples), entry=entry, problems=problems,
                       counts=counts, host=host, fastload_version=__version__,
                       record_version=RECORD_VERSION)


def start_ray(address: Optional[str] = None, num_cpus: Optional[int] = None):
    """``ray.init`` as the engine does it: connect to the cluster at ``address`` (``"auto"``,
    ``HOST:PORT``, ``ray://HOST:PORT``), or start a local instance with ``num_cpus`` CPUs
    whose workers import the same fastload as this process. Quiet: no dashboard, no
    worker logs on this terminal (errors come back as exceptions). Returns ``ray``."""
    ray = require_ray()
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address:
        ray.init(address=address, **quiet)
        return ray
    import fastload
    here = str(Path(fastload.__file__).resolve().parent.parent)
    env = {}
    site_dirs = {str(Path(p).resolve())
                 for p in site.getsitepackages() + [site.getusersitepackages()]}
    if here not in site_dirs:  # a source checkout: the workers must import this one
        env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in os.environ.get(
            "PYTHONPATH", "").split(os.pathsep) if p])
    ray.init(num_cpus=num_cpus, include_dashboard=False,
             runtime_env={"env_vars": env} if env else None, **quiet)
    return ray


def write_shards(job, address: Optional[str] = None, num_cpus: Optional[int] = None,
                 retries: int = DEFAULT_RETRIES) -> List[ShardEntry]:
    """The engine (the interface of :func:`fastload.packing.engine.write_shards_local`): run
    one :func:`pack_shard` task per ``job.shard_size`` samples, at most twice as many in
    flight as the cluster has CPUs; returns the shard entries in index order."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        desc = job.bar.desc if job.bar is not None else ""
        if job.bar is not None:
            job.bar.set_description_str(f"{desc} (starting Ray)")
        start_ray(address, num_cpus)
        if job.bar is not None:
            job.bar.set_description_str(desc)
    pending: Dict[object, int] = {}
    try:
        return _run(ray, job, retries, pending)
    except BaseException:
        _cancel(ray, pending)
        raise
    finally:
        if started:
            ray.shutdown()


def _run(ray, job, retries: int, pending: Dict[object, int]) -> List[ShardEntry]:
    from fastload import __version__
    from fastload.packing.engine import PackError
    from fastload.record import RECORD_VERSION
    n = len(job.samples)
    chunks = [(lo, min(lo + job.shard_size, n)) for lo in range(0, n, job.shard_size)]
    task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(pack_shard)
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    done: Dict[int, ShardResult] = {}
    entries: List[ShardEntry] = []
    submitted = taken = 0
    while taken < len(chunks):
        while submitted < len(chunks) and len(pending) < window:
            lo, hi = chunks[submitted]
            ref = task.remote(job.work, job.samples[lo:hi], lo, str(job.staging), submitted)
            pending[ref] = submitted
            submitted += 1
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            k = pending.pop(ref)
            try:
                done[k] = ray.get(ref)
            except ray.exceptions.RayError as e:
                lo, hi = chunks[k]
                raise PackError(
                    f"shard task {k} (samples {lo}..{hi - 1}, from {job.samples[lo].file_name}) "
                    f"failed {retries + 1} times; the last error: {_cause(e)}") from None
        while taken in done:  # in chunk order: problems and shard numbers as in the source
            res = done.pop(taken)
            if (res.fastload_version, res.record_version) != (__version__, RECORD_VERSION):
                raise PackError(f"the Ray worker on {res.host} runs fastload "
                                f"{res.fastload_version} (record version {res.record_version}), "
                                f"this driver fastload {__version__} (record version "
                                f"{RECORD_VERSION}); install the same fastload on every node")
            job.log.note(res.problems)
            job.summary.merge(res.counts)
            job.advance(res.samples)
            if res.entry is not None:
                entries.append(_adopt(job.staging, res, len(entries)))
            taken += 1
    return entries


def _adopt(staging: Path, res: ShardResult, index: int) -> ShardEntry:
    """Check the task's shard file from here and rename it to its place in the dataset."""
    from fastload.packing.engine import PackError
    src = staging / res.entry.file
    try:
        size = src.stat().st_size
    except FileNotFoundError:
        size = None
    if size != res.entry.file_bytes:
        seen = "missing" if size is None else f"{size} bytes, not {res.entry.file_bytes},"
        raise PackError(f"{src}: the shard written on Ray node {res.host} is {seen} here; OUT "
                        f"must be on storage every node mounts at the same path")
    name = SHARD_PATTERN.format(index)
    os.replace(src, staging / name)
    digests = None
    if res.entry.digests is not None:  # the shard's digests file follows it
        digests = digests_name(name)
        os.replace(staging / res.entry.digests, staging / digests)
    return replace(res.entry, file=name, digests=digests)


def _cause(e) -> str:
    """The error inside a Ray exception, in one line."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def _cancel(ray, pending: Dict[object, int], wait_s: float = 10.0) -> None:
    """Stop the tasks still running or queued (best effort), and give them a moment to go,
    so that none writes into the staging folder once the caller removes it."""
    refs = list(pending)
    pending.clear()
    if not refs:
        return
    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception:
            pass
    try:
        ray.wait(refs, num_returns=len(refs), timeout=wait_s)
    except Exception:
        pass
