"""``fastload pack``: a source dataset (COCO, labelme, VIA, YOLO-seg, mask PNGs) into
LMDB shards plus ``manifest.json`` (see :mod:`fastload.store` for the layout).

Steps (:func:`pack`): the format's reader parses the annotations on this machine
(:mod:`fastload.formats`); an engine validates every sample with one policy for all formats,
encodes its record (:meth:`SampleWork.prepare`, :func:`fastload.packing.validate.prepare_sample`)
and writes the shards into the staging folder; then this process writes ``problems.txt``,
``pack_report.json`` and the manifest (:class:`fastload.store.Manifest`, the last file), and
publishes the folder atomically (:mod:`fastload.packing.publish`). The engines, behind one
interface (:class:`PackJob` in, shard entries out):

- ``local`` (:func:`write_shards_local`): worker threads or processes prepare the samples,
  the calling thread writes the records in source order into shards of ``shard_size``;
- ``ray`` (:mod:`fastload.packing.ray_engine`): one Ray task per ``shard_size`` samples
  prepares them and writes its own shard, on a Ray cluster or a local Ray instance.

Both give the same records (ids, order, bytes) and the same problems.

Validation (default: skip and count, every problem listed in ``OUT/problems.txt``;
``strict=True``: raise :class:`PackError` at the first problem); the policy is in
:mod:`fastload.packing.validate`.

A full disk raises ``OSError(ENOSPC)`` naming the file (LMDB's own disk errors included)
and, like every failure, removes the temp folder: no OUT is left behind.

What OUT may be, its lock and the restore after a killed publish: :mod:`fastload.packing.
publish`. Nothing packed is a :class:`PackError`; bad input of every kind: docs/bad_input.md.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from fastload.formats import READERS, read_source
from fastload.formats.base import Problem, SourceDataset
from fastload.optional import MissingDependency
from fastload.packing.publish import (OutBusy, OutLock, input_refusal, out_refusal,
                                      prepare_out, publish, temp_dir_for)
from fastload.packing.validate import prepare_sample
from fastload.store import SHARD_PATTERN, Manifest, ShardEntry, ShardWriter, write_json_atomic

#: problem reasons that are policy decisions, not errors (counted, never fatal in strict mode)
POLICY_REASONS = {"crowd_skipped"}


class PackError(ValueError):
    """Packing failed (bad arguments, an existing OUT, or a problem under ``strict``)."""


@dataclass
class PackSummary:
    out: str
    format: str
    images: int = 0                 # records written
    instances: int = 0
    polygons: int = 0               # polygon parts
    ignore_instances: int = 0
    keypoint_instances: int = 0
    clipped_vertices: int = 0       # small overshoots clipped to the image
    skipped_images: Dict[str, int] = field(default_factory=dict)       # reason -> count
    skipped_annotations: Dict[str, int] = field(default_factory=dict)  # reason -> count
    problems: int = 0
    bytes: int = 0                  # total record bytes
    image_bytes: int = 0
    shards: int = 0
    time_s: float = 0.0
    images_per_s: float = 0.0

    def add(self, stats: dict, nbytes: int) -> None:
        """Count one written record (``stats`` from :func:`prepare_sample`)."""
        self.images += 1
        self.instances += stats["instances"]
        self.polygons += stats["polygons"]
        self.ignore_instances += stats["ignore"]
        self.keypoint_instances += stats["keypoints"]
        self.clipped_vertices += stats["clipped"]
        self.image_bytes += stats["image_bytes"]
        self.bytes += nbytes

    def merge(self, part: "PackSummary") -> None:
        """Add the record counts of ``part`` (a shard task's own summary) to these."""
        for name in _RECORD_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(part, name))

    def __str__(self) -> str:
        def fmt(d):
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"
        return (f"packed {self.images} images, {self.instances} instances "
                f"({self.ignore_instances} ignore), {self.polygons} polygons into {self.shards} "
                f"shard(s) at {self.out}\n"
                f"  skipped images: {sum(self.skipped_images.values())} ({fmt(self.skipped_images)})\n"
                f"  skipped annotations: {sum(self.skipped_annotations.values())} "
                f"({fmt(self.skipped_annotations)})\n"
                f"  clipped vertices: {self.clipped_vertices}\n"
                f"  {self.bytes / 2**20:.1f} MiB ({self.image_bytes / 2**20:.1f} MiB images) in "
                f"{self.time_s:.2f} s, {self.images_per_s:.0f} images/s")


#: the PackSummary fields that PackSummary.add counts per record
_RECORD_COUNTS = ("images", "instances", "polygons", "ignore_instances", "keypoint_instances",
                  "clipped_vertices", "image_bytes", "bytes")


# -------------------------------------------------------------------- the shared pieces
@dataclass(frozen=True)
class SampleWork:
    """What a worker needs to turn source sample ``i`` into a record: one instance per pack,
    shared by every engine (the Ray engine ships it to its tasks, so it stays small)."""

    num_classes: int
    root: Optional[Path]
    num_keypoints: Optional[int]
    max_pixels: Optional[int] = None  # the pixel cap (fastload.limits; None: the default)

    def prepare(self, sample, i: int):
        """``(value, problems, stats)`` of :func:`prepare_sample`; a sample whose reader fails
        while parsing it lazily is skipped with an ``unreadable_sample`` problem."""
        try:
            return prepare_sample(sample, i, self.num_classes, self.root, self.num_keypoints,
                                  self.max_pixels)
        except MissingDependency:
            raise  # not the sample's fault: pack stops and names the extra to install
        except Exception as e:  # a reader's lazy parsing failed: skip the sample, say why
            return (None, [Problem(file=str(sample.file_name), fatal=True,
                                   reason="unreadable_sample",
                                   what=f"could not be prepared: {type(e).__name__}: {e}")], {})


class ProblemLog:
    """Every problem of a pack in source order, counted by reason; under ``strict`` the first
    one that is not a policy decision raises :class:`PackError`."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.problems: List[Problem] = []
        self.skipped_images: Counter = Counter()
        self.skipped_annotations: Counter = Counter()

    def note(self, problems) -> None:
        for p in problems:
            if self.strict and p.reason not in POLICY_REASONS:
                raise PackError(f"--strict: {p}")
            self.problems.append(p)
            (self.skipped_images if p.fatal else self.skipped_annotations)[p.reason] += 1


@dataclass
class PackJob:
    """One pack as the engines see it: the samples, how to prepare one, the staging folder
    the shards go to, and where results are tallied. An engine writes the shards (files in
    ``staging`` named ``shard-NNNNN.lmdb``, numbered from 0 in source order), adds every
    record to ``summary`` and every problem to ``log`` in source order, advances ``bar`` by
    samples done, and returns the shards' entries in index order; :func:`pack` does the
    rest (report, manifest, publish)."""

    samples: list
    work: SampleWork
    staging: Path
    shard_size: int
    log: ProblemLog
    summary: PackSummary
    bar: Any = None  # a tqdm bar or None

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)


#: the engines ``pack(engine=...)`` accepts
ENGINES = ("local", "ray")


# -------------------------------------------------------------------- the local engine
_W: dict = {}  # per-process worker state of the fork pool (inherited through fork)


def _work_chunk(bounds, state=None):
    lo, hi = bounds
    w = _W if state is None else state
    return [w["work"].prepare(w["samples"][i], i) for i in range(lo, hi)]


def _ordered_map(pool, chunks, window: int, state=None):
    """Results of ``_work_chunk`` over ``chunks`` in order, with at most ``window`` chunks
    in flight (bounded memory when the LMDB writer is slower than the workers)."""
    from collections import deque
    pending = deque()
    it = iter(chunks)
    for c in it:
        pending.append(pool.submit(_work_chunk, c, state))
        if len(pending) >= window:
            break
    while pending:
        res = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(_work_chunk, nxt, state))
        yield res


def write_shards_local(job: PackJob, workers: int, executor: str, chunk: int) -> List[ShardEntry]:
    """The local engine: ``workers`` threads (or forked processes) prepare the samples in
    chunks of ``chunk``; this thread writes the records in source order into shards of
    exactly ``shard_size`` records (the last one shorter)."""
    pool = writer = None
    shards: List[ShardEntry] = []
    try:
        state = dict(samples=job.samples, work=job.work)
        pool, results = _start_workers(state, workers, executor, chunk)
        for res in results:
            for value, problems, st in res:
                job.log.note(problems)
                job.advance(1)
                if value is None:
                    continue
                if writer is None:
                    writer = ShardWriter(job.staging / SHARD_PATTERN.format(len(shards)))
                writer.append(value, st["digest"])
                job.summary.add(st, len(value))
                if writer.num_records >= job.shard_size:
                    shards.append(writer.close())
                    writer = None
        if writer is not None:
            shards.append(writer.close())
            writer = None
        if pool is not None:
            pool.shutdown()
            pool = None
        return shards
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if writer is not None:
            writer.abort()
        raise
    finally:
        _W.clear()


def _start_workers(state: dict, workers: int, executor: str, chunk: int):
    """(pool or None, iterator of chunk results in source order)."""
    n = len(state["samples"])
    chunks = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    if workers <= 1 or len(chunks) <= 1:
        return None, (_work_chunk(c, state) for c in chunks)
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    if executor == "thread":
        pool = ThreadPoolExecutor(workers)
        return pool, _ordered_map(pool, chunks, 4 * workers, state)
    # fork: workers inherit the samples (_W) instead of receiving them pickled
    _W.update(state)
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
    return pool, _ordered_map(pool, chunks, 4 * workers)


# -------------------------------------------------------------------- pack
def pack(src, out, format: str, shard_size: int = 10000, workers: Optional[int] = None,
         strict: bool = False, overwrite: bool = False, crowd: str = "ignore",
         progress: bool = True, images=None, executor: str = "thread",
         chunk: int = 32, options: Optional[dict] = None, engine: str = "local",
         address: Optional[str] = None, max_pixels=None,
         allow_empty: bool = False) -> PackSummary:
    """Pack the ``format`` dataset at ``src`` into ``out`` (see the module docstring).

    ``shard_size``: records per LMDB shard (the ``ray`` engine: samples per shard task, so
    a shard holds at most that many records). ``workers``: threads (or processes) for
    reading, header parsing, validation and encoding (default all cores; 1 = in this
    thread); LMDB writing stays in the calling thread, in source order. With
    ``engine="ray"``: the CPUs of the local Ray instance it starts (ignored with
    ``address``).
    ``crowd``: COCO crowd/RLE policy, ``"ignore"`` (kept as ignore regions) or
    ``"skip"``. ``images``: image folder for COCO (default: found beside the JSON).
    ``options``: extra keyword options for the format's reader (e.g. labelme
    ``ignore_labels``, VIA ``class_attribute``, YOLO ``split``, masks ``tolerance``; see
    docs/formats.md); an option the reader does not take is refused.
    ``max_pixels``: pixels one image may have, checked on the header before anything is
    decoded (``None``: :data:`fastload.limits.MAX_IMAGE_PIXELS`; 0: no limit); a larger
    image is skipped and counted (``too_many_pixels``), and so is a COCO RLE or mask larger
    than that.
    ``executor``: ``"thread"`` (default) or ``"process"`` (fork pool). On the shared
    2-core development machine both gave 700-1100 images/s of 640x480 JPEG, within the
    noise of each other; threads avoid pickling every ~60 KB record back to the writer,
    and file reads, libjpeg-turbo header parsing, hashing and the Numba kernel release
    the GIL.
    ``engine``: ``"local"`` (this machine's cores) or ``"ray"``
    (:mod:`fastload.packing.ray_engine`: one Ray task per shard, on the Ray cluster at
    ``address``, or on a local Ray instance without it; OUT and the source must then be
    on storage every node sees at the same path). Both give the same records in the same
    order and the same problems; the ``ray`` engine's shards may hold fewer records.
    ``allow_empty``: write a dataset even when no image, or not one annotation, packs (by
    default that is a :class:`PackError` saying what the reader looked for: a wrong
    ``format`` or SRC, or every image missing).
    Returns a :class:`PackSummary`; raises :class:`PackError` (a ``ValueError``) for bad
    arguments, an existing non-empty OUT without ``overwrite``, nothing packed, any problem
    under ``strict``, or a Ray task that fails on every retry; ``OSError(ENOSPC)`` naming the
    file when the disk fills up; :class:`fastload.optional.MissingDependency` when the
    format needs an extra that is not installed (scikit-image for mask tracing, Ray for
    ``engine="ray"``). On any failure the temp folder is removed and OUT is left as it
    was.
    """
    t0 = time.perf_counter()
    src, out = Path(src), Path(out).absolute()
    options = _check_args(src, out, format, crowd, shard_size, overwrite, options, images)
    max_pixels = _check_max_pixels(max_pixels)
    if engine not in ENGINES:
        raise PackError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if address is not None and engine != "ray":
        raise PackError("address (--address) is the Ray cluster to pack on; it needs "
                        "engine='ray' (--engine ray)")
    if engine == "ray":
        from fastload.packing import ray_engine  # MissingDependency now, before any work
        ray_engine.require_ray()
    out.parent.mkdir(parents=True, exist_ok=True)
    with _out_lock(out):
        _refuse(prepare_out(out, overwrite))  # may restore what a killed publish left aside
        return _pack_locked(t0, src, out, format, shard_size, workers, strict, overwrite, crowd,
                            progress, images, executor, chunk, options, engine, address,
                            max_pixels, allow_empty)


def _pack_locked(t0, src, out, format, shard_size, workers, strict, overwrite, crowd, progress,
                 images, executor, chunk, options, engine, address, max_pixels,
                 allow_empty) -> PackSummary:
    """:func:`pack` from reading the source to the publish, with OUT's lock held."""
    try:
        sds: SourceDataset = read_source(format, src, **{"crowd": crowd, "images": images,
                                                         "max_pixels": max_pixels, **options})
    except PackError:
        raise
    except (ValueError, OSError) as e:
        raise PackError(f"cannot read {format} dataset {src}: {e}") from None
    samples = list(sds.samples)
    root = sds.root
    if root is None:
        root = src if src.is_dir() else src.parent
    _refuse(input_refusal(Path(root), out, "the image folder"))

    log = ProblemLog(strict)
    summary = PackSummary(out=str(out), format=format)
    log.note(sds.problems)

    tmp = temp_dir_for(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    job = PackJob(samples=samples, staging=tmp, shard_size=shard_size, log=log, summary=summary,
                  work=SampleWork(num_classes=len(sds.classes), root=root,
                                  num_keypoints=len(sds.keypoint_names) if sds.keypoint_names
                                  else None, max_pixels=max_pixels))
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    try:
        if progress:
            from tqdm import tqdm
            job.bar = tqdm(total=len(samples), unit="img", desc=f"pack {format}",
                           file=sys.stderr, dynamic_ncols=True)
        if engine == "ray":
            from fastload.packing import ray_engine
            shards = ray_engine.write_shards(job, address=address, num_cpus=workers)
        else:
            shards = write_shards_local(job, workers, executor, chunk)
        if job.bar is not None:
            job.bar.close()
            job.bar = None

        if (summary.images == 0 or summary.instances == 0) and not allow_empty:
            raise PackError(_nothing_packed(format, src, sds, len(samples), summary.images,
                                            log.skipped_images, log.problems))
        summary.shards = len(shards)
        summary.skipped_images = dict(log.skipped_images)
        summary.skipped_annotations = dict(log.skipped_annotations)
        summary.problems = len(log.problems)
        summary.time_s = time.perf_counter() - t0
        summary.images_per_s = summary.images / max(summary.time_s, 1e-9)
        _write_problems(tmp / "problems.txt", f"{format} {src}", log.problems)
        write_json_atomic(tmp / "pack_report.json", asdict(summary))
        _manifest(sds, src, shards, summary).write(tmp)  # the last file written
        _refuse(out_refusal(out, overwrite))  # OUT may have gained files while packing
        publish(tmp, out)
    except BaseException:
        if job.bar is not None:
            job.bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _check_args(src: Path, out: Path, format: str, crowd: str, shard_size: int,
                overwrite: bool, options: Optional[dict], images=None) -> dict:
    """PackError for bad arguments, before anything is read or written; returns the
    reader options."""
    if format not in READERS:
        raise PackError(f"unknown format {format!r}; choose one of {', '.join(READERS)}")
    if crowd not in ("ignore", "skip"):
        raise PackError(f"crowd must be 'ignore' or 'skip', not {crowd!r}")
    if shard_size < 1:
        raise PackError(f"shard_size must be >= 1, not {shard_size}")
    if not src.exists():
        raise PackError(f"{src}: no such file or directory")
    _refuse(input_refusal(src, out, "the source"))
    if images is not None:
        _refuse(input_refusal(Path(images), out, "the image folder"))
    options = dict(options or {})
    if options:
        import inspect
        from fastload.formats import get_reader
        accepted = [n for n, p in inspect.signature(get_reader(format).read).parameters.items()
                    if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and n != "src")]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise PackError(f"the {format} reader takes no option {', '.join(unknown)}; "
                            f"it takes: {', '.join(accepted) or 'none'}")
    _refuse(out_refusal(out, overwrite))
    return options


def _refuse(why: Optional[str]) -> None:
    """PackError saying ``why`` (an OUT or input refusal of :mod:`fastload.packing.publish`)."""
    if why is not None:
        raise PackError(why)


@contextmanager
def _out_lock(out: Path):
    """OUT's lock (:class:`fastload.packing.publish.OutLock`) for the block; PackError when
    another pack holds it."""
    lock = OutLock(out)
    try:
        lock.acquire()
    except OutBusy:
        raise PackError(f"{out}: another fastload pack is writing it (lock {lock.path}); wait "
                        f"for it to finish or choose another OUT") from None
    try:
        yield
    finally:
        lock.release()


def _nothing_packed(format: str, src: Path, sds: SourceDataset, n_samples: int, n_packed: int,
                    skipped_img: Counter, problems: List[Problem]) -> str:
    """The one-line message of a pack where no image, or not one annotation, packs."""
    looked = f" (looked for {sds.searched})" if sds.searched else ""
    first = next((p for p in problems if p.fatal), None)
    first = f"; the first problem: {first}" if first is not None else ""
    if n_samples == 0:
        found = f"the {format} reader found no image in {src}{looked}{first}"
    elif n_packed:
        found = f"{n_packed} images of {src} packed, but not one annotation{looked}{first}"
    else:
        reasons = ", ".join(f"{r} {n}" for r, n in skipped_img.most_common())
        found = f"all {n_samples} images of {src} were skipped{looked}: {reasons}{first}"
    others = ", ".join(n for n in READERS if n != format)
    return (f"nothing to pack: {found}. Is --format {format} right (others: {others})? "
            f"--allow-empty writes an empty dataset")


def _check_max_pixels(max_pixels):
    """The pixel cap as :func:`fastload.limits.check_image_size` takes it: ``None`` (the
    module's default) or a number (0: no limit); PackError for anything else."""
    from fastload.limits import parse_max_pixels
    if max_pixels is None:
        return None
    try:
        return parse_max_pixels(max_pixels, "max_pixels") or 0
    except ValueError as e:
        raise PackError(str(e)) from None


def _write_problems(path: Path, what: str, problems: List[Problem]) -> None:
    with open(path, "w") as f:
        f.write(f"# fastload pack {what}: {len(problems)} problem(s)\n")
        for p in problems:
            kind = "image skipped" if p.fatal else "annotation skipped"
            f.write(f"{p}  [{kind}: {p.reason}]\n")


def _manifest(sds: SourceDataset, src: Path, shards: List[ShardEntry],
              summary: PackSummary) -> Manifest:
    from fastload import __version__
    from fastload.record import RECORD_VERSION
    return Manifest(
        source_format=summary.format, shards=shards, classes=list(sds.classes),
        keypoint_names=list(sds.keypoint_names) if sds.keypoint_names else None,
        flip_pairs=[(int(a), int(b)) for a, b in sds.flip_pairs] if sds.flip_pairs else (
            [] if sds.keypoint_names else None),
        skeleton=[(int(a), int(b)) for a, b in sds.skeleton] if sds.skeleton else None,
        summary={"images": summary.images, "instances": summary.instances,
                 "polygons": summary.polygons, "ignore_instances": summary.ignore_instances,
                 "skipped_images": summary.skipped_images,
                 "skipped_annotations": summary.skipped_annotations, "bytes": summary.bytes},
        source=str(src.absolute()), created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        fastload_version=__version__, record_version=RECORD_VERSION)
