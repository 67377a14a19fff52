"""Warm-up: compile (or load from Numba's on-disk cache) the kernels a configuration uses,
before its first batch, in two processes when the cache is cold.

fastload's kernels are Numba functions with ``cache=True``: the first process on a machine
compiles them (about 15 s of CPU on this project's machines for the default loader with
CenterNet targets) and writes Numba's cache; every later process loads them (well under a
second). Numba compiles under one process-wide lock, so threads cannot share that work; a
second process can, because what it compiles reaches this process through the cache.

A **job** is a small JSON-able dict naming one independent group of kernels and how to call
them on tiny synthetic inputs with exactly the argument types the loader passes:

- ``{"kind": "geometry"}``: moving and clipping annotations
  (:func:`fastload.augment.geometry.transform_instances`);
- ``{"kind": "target", "spec": NAME, "fields": {...}, "out_size": [H, W]}``: one target spec
  (:mod:`fastload.targets.specs`) filling its arrays from synthetic moved instances (made by
  the NumPy reference of the geometry, so this job compiles no geometry);
- ``{"kind": "image", "config": AugmentConfig.to_dict()}``: the fused CPU kernel for the
  config's op set and output dtype, and the kernels its ops call (noise table, shadow
  raster), on samples drawn until every op of the config has been on once;
- ``{"kind": "dali", "config": ..., "gpu": bool}``: what the DALI graph's external inputs
  compute on the CPU (the shadow mask; the noise field when DALI runs on the CPU), on the
  same samples.

:func:`loader_jobs` lists the jobs of a loader configuration; :func:`warm_up` runs them:
in order in this process, and at the first compilation (Numba's ``numba:compile`` event,
which a cache hit does not fire) it starts a helper process, when a core is idle
(:func:`spare_core`), that takes jobs from the other end of the list. Each job is claimed
by creating a file, so exactly one process runs it. When this process finds the next job
claimed, it waits for the helper, then runs the helper's jobs itself: Numba loads what the
helper compiled from the cache. On a warm cache nothing compiles and no helper starts; a
helper that fails or cannot start only costs time (this process compiles what is missing).
Jobs already run in this process are skipped.

The loader warms up at its first iteration (``DataLoader.__iter__``, in the calling thread,
so no kernel is still compiling in a background thread when that returns), ``TorchDataset``
at construction (before torch's worker processes fork: they inherit the compiled kernels
instead of each compiling them), ``fastload warmup`` ahead of time (e.g. in a Dockerfile).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["geometry_job", "image_job", "dali_job", "target_job", "loader_jobs", "run_job",
           "warm_up", "spare_core", "WarmupReport"]

#: the target specs a job can rebuild in another process (the built-in ones)
_SPEC_NAMES = ("CenterNetTarget", "MaskTarget", "FCOSTarget", "KeypointTarget")
#: how long warm_up waits for its helper before going on without it
HELPER_TIMEOUT_S = 900.0

_DONE: set = set()        # keys of the jobs run in this process (a forked child inherits
_LOCK = threading.Lock()  # them with the compiled kernels); one warm-up at a time


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # a warm-up of another thread of the parent is not in the child


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass
class WarmupReport:
    """What :func:`warm_up` did: the jobs run here and by the helper (by their ``kind``),
    the jobs that failed (``(kind, error)``; the loader goes on: a real failure shows up,
    attributed to its sample, when the batch runs the same code), the Numba compilations in
    this process and, of those, the ones while running the helper's jobs (0 when Numba
    found everything the helper compiled in the cache), the helper's exit status (None: no
    helper) and the end of its output when that is not 0, and the seconds it took."""
    here: List[str] = field(default_factory=list)
    by_helper: List[str] = field(default_factory=list)
    errors: List[tuple] = field(default_factory=list)
    compiled_here: int = 0
    compiled_after_helper: int = 0
    helper_returncode: Optional[int] = None
    helper_output: str = ""
    seconds: float = 0.0


# ------------------------------------------------------------------------------- jobs
def geometry_job() -> dict:
    return {"kind": "geometry"}


def image_job(cfg) -> dict:
    """The fused CPU kernel (and its ops' kernels) for AugmentConfig ``cfg``."""
    return {"kind": "image", "config": cfg.to_dict()}


def target_job(spec, out_size) -> Optional[dict]:
    """The kernels of the bound target spec ``spec`` at ``out_size``; None for a spec another
    process cannot rebuild (a ``FunctionTarget`` or a user subclass: nothing to warm)."""
    name = type(spec).__name__
    if name not in _SPEC_NAMES or type(spec).__module__ != "fastload.targets.specs":
        return None
    return {"kind": "target", "spec": name, "fields": dataclasses.asdict(spec),
            "out_size": [int(out_size[0]), int(out_size[1])]}


def dali_job(cfg, gpu: bool) -> dict:
    """The CPU side of the DALI graph's inputs for AugmentConfig ``cfg`` (on a GPU or not)."""
    return {"kind": "dali", "config": cfg.to_dict(), "gpu": bool(gpu)}


#: what the image side of a loader compiles, by (backend, device type)
_IMAGE_JOBS = {("cpu", "cpu"): image_job, ("cpu", "cuda"): image_job,
               ("dali", "cpu"): lambda cfg: dali_job(cfg, False),
               ("dali", "cuda"): lambda cfg: dali_job(cfg, True)}


def loader_jobs(cfg, specs: Sequence = (), backend: Optional[str] = "cpu",
                device_type: str = "cpu") -> List[dict]:
    """The jobs of a loader with AugmentConfig ``cfg``, bound target ``specs`` and image
    ``backend`` ("cpu", "dali"; another name or None: no image job) on ``device_type``:
    the geometry first and the image last, so that this process and the helper start with
    the two biggest groups."""
    jobs = [geometry_job()]
    jobs += [j for j in (target_job(s, cfg.out_size) for s in specs) if j is not None]
    make = _IMAGE_JOBS.get((backend, device_type))
    if make is not None:
        jobs.append(make(cfg))
    return jobs


def _key(job: dict) -> str:
    return json.dumps(job, sort_keys=True)


def _tuples(v):
    """JSON lists back into the tuples the specs were given."""
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _synthetic_record(with_keypoints: bool):
    """A small record that reaches every branch the kernels' types depend on: a concave
    two-part instance cut by the frame, a box-only instance, an ignore region (class 0 only,
    so that any number of classes fits)."""
    from fastload.record import Instance, Record
    u = np.array([[40, 4], [70, 4], [70, 40], [58, 40], [58, 16], [52, 16], [52, 40],
                  [40, 40]], np.float32)
    tri = np.array([[5, 30], [20, 30], [12, 44]], np.float32)
    sq = np.array([[22, 6], [34, 6], [34, 18], [22, 18]], np.float32)
    kps = np.array([[45, 10, 2], [65, 10, 2], [60, 30, 1]], np.float32)
    insts = [Instance(0, [u, tri], np.array([5, 4, 70, 44], np.float32),
                      keypoints=kps if with_keypoints else None),
             Instance(0, [], np.array([3, 3, 15, 12], np.float32),
                      keypoints=kps * 0.5 if with_keypoints else None),
             Instance(0, [sq], np.array([22, 6, 34, 18], np.float32), ignore=True,
                      keypoints=np.zeros_like(kps) if with_keypoints else None)]
    rec = Record.from_instances(0, "warmup", b"", "jpeg", 48, 64, insts)
    return Record.decode(rec.encode())  # read-only arrays, like records read from a shard


def _run_geometry(job: dict) -> None:
    from fastload.augment.config import AugmentConfig
    from fastload.augment.geometry import transform_instances
    from fastload.augment.params import sample_params
    cfg = AugmentConfig(out_size=(32, 32), rotate_deg=10.0)
    rec = _synthetic_record(with_keypoints=True)
    for index in range(2):
        params = sample_params(cfg, 0, 0, index, rec.height, rec.width)
        transform_instances(rec, params, cfg.out_size, 0.1, [(0, 1)])


def _run_target(job: dict) -> None:
    from fastload.augment.config import AugmentConfig
    from fastload.augment.geometry import transform_instances_reference
    from fastload.augment.params import sample_params
    from fastload.targets import specs as specs_module
    spec = getattr(specs_module, job["spec"])(**{k: _tuples(v) for k, v in job["fields"].items()})
    out_size = tuple(job["out_size"])
    cfg = AugmentConfig.off(out_size=out_size)
    rec = _synthetic_record(with_keypoints=isinstance(spec, specs_module.KeypointTarget))
    inst = transform_instances_reference(rec, sample_params(cfg, 0, 0, 0, rec.height, rec.width),
                                         out_size, 0.1, None)
    views = {k: np.zeros((1,) + tuple(shape), dt)
             for k, (shape, dt) in spec.fixed_shapes(out_size).items()}
    spec.fill(views, inst, out_size)


def _samples(cfg, ops, h: int, w: int):
    """Parameters for an (h, w) source, drawn until every op of ``ops`` has been on once
    (the shadow is on for 30% of the samples by default): the first sample and each that
    turns a new op on, at most 64 draws."""
    from fastload.augment.params import sample_params
    seen = set()
    for index in range(64):
        params = sample_params(cfg, 0, 0, index, h, w)
        on = {op.name for op in ops if op.needed(params)}
        if index == 0 or on - seen:
            yield params
            seen |= on
        if len(seen) == len(ops):
            return


def _run_image(job: dict) -> None:
    from fastload.augment.config import AugmentConfig
    from fastload.augment.cpu import augment_image, kernel_ops
    from fastload.dtypes import output_numpy_dtype
    cfg = AugmentConfig.from_dict(job["config"])
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = np.empty((3,) + tuple(cfg.out_size), output_numpy_dtype(cfg.dtype))
    mask = np.empty(tuple(cfg.out_size), np.uint8)
    for params in _samples(cfg, kernel_ops(cfg), img.shape[0], img.shape[1]):
        augment_image(img, params, cfg, out, mask)


def _run_dali(job: dict) -> None:
    from fastload.augment.config import AugmentConfig
    from fastload.augment.ops import PIXEL_OPS
    cfg = AugmentConfig.from_dict(job["config"])
    ops = [op for op in PIXEL_OPS if op.active(cfg)]  # the ops in the graph
    for params in _samples(cfg, ops, 48, 64):
        for op in ops:
            for inp in op.dali_inputs:
                if inp.batch_feed is None:
                    inp.feed(params, cfg)
                elif not job["gpu"]:  # (on a GPU it is made by torch, on the device)
                    inp.batch_feed([params], cfg, None)


_RUNNERS = {"geometry": _run_geometry, "target": _run_target, "image": _run_image,
            "dali": _run_dali}


def run_job(job: dict) -> None:
    """Run one job in this process (compiling or loading its kernels)."""
    try:
        runner = _RUNNERS[job["kind"]]
    except KeyError:
        raise ValueError(f"unknown warm-up job {job!r}; kinds: {sorted(_RUNNERS)}") from None
    runner(job)


# --------------------------------------------------------------------- orchestration
def _claim(folder: Path, i: int) -> bool:
    try:
        os.close(os.open(folder / f"claim-{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _start_helper(folder: Path) -> Optional[subprocess.Popen]:
    """``python -c`` running :func:`_helper` on ``folder`` with this fastload first on its
    path; None when no process can be started."""
    root = str(Path(__file__).resolve().parents[1])
    code = (f"import sys; sys.path.insert(0, {root!r}); "
            f"from fastload.warmup import _helper; _helper({str(folder)!r})")
    try:
        with open(folder / "helper.log", "wb") as log:
            return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)
    except OSError:
        return None


def _helper(folder: str) -> None:
    """The helper process: run the jobs of ``folder/jobs.json`` from the last one down, as
    long as it can claim them."""
    folder = Path(folder)
    jobs = json.loads((folder / "jobs.json").read_text())
    for i in range(len(jobs) - 1, -1, -1):
        if not _claim(folder, i):
            break
        run_job(jobs[i])


def _run_logged(job: dict, report: WarmupReport) -> bool:
    try:
        run_job(job)
        return True
    except Exception as e:  # noqa: BLE001 (reported; see WarmupReport)
        report.errors.append((job.get("kind"), f"{type(e).__name__}: {e}"))
        return False


def spare_core() -> bool:
    """Whether a helper process would find an idle core: at least 2 usable cores and a
    1-minute load average (this process included) of at most their number minus one. On a
    busy machine a helper only adds its start-up to the same CPU time (measured: 1 to 2 s
    more for the default loader on 2 cores shared with two busy processes)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # (macOS)
        cores = os.cpu_count() or 1
    if cores < 2:
        return False
    try:
        return os.getloadavg()[0] <= cores - 1
    except OSError:  # no load average on this platform
        return True


def warm_up(jobs: Sequence[dict], helper: Optional[bool] = None) -> WarmupReport:
    """Run ``jobs`` (see the module docstring): in this process, with a helper process taking
    jobs from the end of the list once this process has to compile. ``helper``: True: always;
    False: never; None (the loader's choice): when :func:`spare_core` says a core is idle,
    unless the environment variable ``FASTLOAD_WARMUP_HELPER`` is ``0`` (``1``: always).
    Jobs already run in this process are skipped. Returns a :class:`WarmupReport`; a job that
    raises is listed in its ``errors``, not raised."""
    from numba.core import event

    if helper is None:
        env = os.environ.get("FASTLOAD_WARMUP_HELPER", "").strip()
        helper = env == "1" if env in ("0", "1") else None
    t0 = time.perf_counter()
    report = WarmupReport()
    with _LOCK:
        todo = list({_key(j): j for j in jobs if _key(j) not in _DONE}.values())
        if not todo:
            return report
        try:  # the helper's job list and the claims
            folder: Optional[Path] = Path(tempfile.mkdtemp(prefix="fastload-warmup-"))
            (folder / "jobs.json").write_text(json.dumps(todo))
        except OSError:  # no temporary folder: no helper
            folder = None
        state: Dict[str, object] = {"proc": None, "compiles": 0}

        class _OnCompile(event.Listener):
            def on_start(self, ev):
                state["compiles"] += 1
                if state["proc"] is None and folder is not None and len(todo) > 1:
                    wanted = spare_core() if helper is None else helper
                    state["proc"] = (wanted and _start_helper(folder)) or False

            def on_end(self, ev):
                pass

        ok, theirs = [], []  # ok: keys of the jobs that ran without an error
        try:
            with event.install_listener("numba:compile", _OnCompile()):
                for i, job in enumerate(todo):
                    if folder is None or _claim(folder, i):
                        if _run_logged(job, report):
                            ok.append(_key(job))
                        report.here.append(job["kind"])
                    else:
                        theirs.append(job)
            proc = state["proc"] or None
            if proc is not None:
                try:
                    report.helper_returncode = proc.wait(HELPER_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    report.helper_returncode = proc.wait()
                if report.helper_returncode != 0:
                    log = (folder / "helper.log").read_text(errors="replace")
                    report.helper_output = log[-2000:]
            before_theirs = int(state["compiles"])
            with event.install_listener("numba:compile", _OnCompile()):
                for job in theirs:  # loaded from the cache the helper wrote (or compiled)
                    if _run_logged(job, report):
                        ok.append(_key(job))
                    report.by_helper.append(job["kind"])
            report.compiled_here = int(state["compiles"])
            report.compiled_after_helper = report.compiled_here - before_theirs
            _DONE.update(ok)
        finally:
            proc = state["proc"] or None
            if proc is not None and proc.poll() is None:  # (interrupted)
                proc.kill()
                proc.wait()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report
