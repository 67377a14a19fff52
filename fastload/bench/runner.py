"""One benchmark row in its own process, driven phase by phase by ``fastload bench``
(:mod:`fastload.bench.alternate`), so that its RSS and CPU numbers are its own:

    python -m fastload.bench.runner --row albumentations --packed PACKED_DIR \
        --batch-size 32 --size 512 --workers 2 --cmd-fd R --res-fd W

The row builds its loader, then reads one JSON command per line from ``--cmd-fd`` and answers
one JSON line on ``--res-fd``: ``warmup`` (at least ``seconds`` and ``min_batches`` batches:
worker start-up, Numba compilation, DALI/CUDA init), ``window`` (batches until the first batch
boundary after ``seconds``: images, batches, wall and CPU seconds), ``sim`` (the data-wait
loop below) and ``finish`` (close; the row's result). After each answer but the last, the row
STOPS its whole process group (``SIGSTOP``: itself, its threads and its DataLoader workers)
and the driver continues it (``SIGCONT``) for the next command: while other rows measure,
this one does nothing at all, not even prefetching, so each window starts from the state the
previous one ended in, as if the row had run without a break.

Rows:
- ``torch-seed`` / ``torch-numpy``: ``torch.utils.data.DataLoader`` over
  :class:`fastload.bench.pil_baseline.PilNumpyDataset` (PIL decode, PIL/NumPy augmentation,
  Python-loop / NumPy CenterNet targets), ``--workers`` worker processes.
- ``albumentations``: ``torch.utils.data.DataLoader`` over
  :class:`fastload.bench.albumentations_baseline.AlbumentationsDataset` (OpenCV decode,
  albumentations augmentation, NumPy CenterNet targets), ``--workers`` worker processes.
- ``fastload-cpu`` / ``fastload-gpu``: ``fastload.DataLoader(..., device="cpu"|"cuda",
  num_threads=--workers)``.
- ``bound-lmdb``: ``fastload.Dataset`` random record reads (read + record decode), one thread.
- ``bound-decode``: image decode alone of the records' image bytes with fastload's CPU decoder
  (``fastload.augment.decode.decode_image``, full size: simplejpeg for JPEG, the fastest CPU
  decoder installed; OpenCV or PIL for PNG), ``--workers`` threads.
- ``bound-nvjpeg``: JPEG decode alone with DALI's ``mixed`` decoder (nvJPEG), GPU only.
The torch and fastload rows span epochs without a break (a dataset smaller than a batch too).

Numbers: images/s per window (median, min, max over the windows); CPU utilisation = CPU time
of the process tree during the windows / their wall time / usable cores; peak RSS (and PSS)
summed over the tree, sampled every 0.1 s; GPU memory: the larger of
``torch.cuda.max_memory_allocated`` and the device-wide increase (DALI allocates outside
torch); on CUDA the device is synchronised at each window end. Data wait (``sim``): ``next``
then a fixed step of ``step_ms`` (``time.sleep``: the device busy, the host thread blocked)
for at least 2 batches and ``seconds``; data wait = time blocked in ``next`` / loop time.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import fastload
from fastload.bench.proctree import TreeMonitor, tree_cpu_seconds, tree_pids

ROWS_ALL = ["torch-seed", "torch-numpy", "albumentations", "fastload-cpu", "fastload-gpu",
            "bound-lmdb", "bound-decode", "bound-nvjpeg"]
GPU_ROWS = {"fastload-gpu", "bound-nvjpeg"}
TORCH_ROWS = {"torch-seed", "torch-numpy", "albumentations"}
LABELS = {
    "torch-seed": "torch DataLoader, PIL/NumPy aug, Python-loop targets",
    "torch-numpy": "torch DataLoader, PIL/NumPy aug, NumPy targets",
    "albumentations": "torch DataLoader, albumentations (OpenCV) aug, NumPy targets",
    "fastload-cpu": "fastload.DataLoader, device=cpu",
    "fastload-gpu": "fastload.DataLoader, device=cuda (DALI)",
    "bound-lmdb": "bound: LMDB record reads alone",
    "bound-decode": "bound: image decode alone (CPU: simplejpeg for JPEG)",
    "bound-nvjpeg": "bound: JPEG decode alone (nvJPEG, DALI mixed)",
}
BOUND_DECODE_RECORDS = 256  # the decode bounds keep at most this many images in memory


class RowUnavailable(Exception):
    """The row cannot run here (reason in the message); reported as skipped, not failed."""


def _cfg(size):
    from fastload.augment.config import AugmentConfig
    return AugmentConfig(out_size=(size, size))


def _cuda_available():
    import torch
    return torch.cuda.is_available()


def _epochs_forever(loader):
    """Batches of a torch DataLoader or fastload.DataLoader, epoch after epoch."""
    e = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(e)
        n = 0
        for b in loader:
            n += 1
            yield b["image"].shape[0]
        if n == 0:
            raise RuntimeError("the loader yielded no batch in an epoch")
        e += 1


def _worker_init(then, worker_id):
    """A bench row's DataLoader worker dies with the row, even while paused."""
    die_with_parent()
    if then is not None:
        then(worker_id)


def make_source(row, a):
    """Return ``(next_batch, sync, close)``; next_batch() returns the number of images."""
    if row in GPU_ROWS and not _cuda_available():
        raise RowUnavailable("skipped: no GPU (torch.cuda.is_available() is False)")
    from fastload.store import Dataset
    ds = Dataset(a.packed)
    n = len(ds)
    if n == 0:
        raise RuntimeError(f"{a.packed}: the packed dataset has no records")

    if row in TORCH_ROWS:
        if row == "albumentations":
            from fastload.bench.albumentations_baseline import albumentations_loader
            dl = albumentations_loader(ds, cfg=_cfg(a.size), batch_size=a.batch_size,
                                       num_workers=a.workers, seed=a.seed, epochs=1000)
        else:
            from fastload.bench.pil_baseline import pil_numpy_loader
            dl = pil_numpy_loader(ds, targets="python" if row == "torch-seed" else "numpy",
                                  batch_size=a.batch_size, num_workers=a.workers,
                                  cfg=_cfg(a.size), seed=a.seed, epochs=1000)
        dl.worker_init_fn = functools.partial(_worker_init, dl.worker_init_fn)
        g = _epochs_forever(dl)  # the sampler spans 1000 epochs: one iteration, no restarts
        return (lambda: next(g)), (lambda: None), g.close

    if row in ("fastload-cpu", "fastload-gpu"):
        from fastload.loader import DataLoader
        dev = "cpu" if row == "fastload-cpu" else "cuda"
        # a dataset smaller than one batch still yields its (short) batch every epoch
        loader = DataLoader(ds, batch_size=a.batch_size, shuffle=True,
                            drop_last=n >= a.batch_size, seed=a.seed, augment=_cfg(a.size),
                            targets=["centernet"], device=dev, num_threads=a.workers)
        g = _epochs_forever(loader)
        sync = (lambda: __import__("torch").cuda.synchronize()) if dev == "cuda" else (lambda: None)
        return (lambda: next(g)), sync, (lambda: (g.close(), loader.close()))

    import numpy as np
    rng = np.random.default_rng(a.seed)
    if row == "bound-lmdb":
        def nb():
            for i in rng.integers(0, n, a.batch_size).tolist():
                ds[i]
            return a.batch_size
        return nb, (lambda: None), ds.close

    if row in ("bound-decode", "bound-nvjpeg"):
        keep = sorted(rng.choice(n, min(n, BOUND_DECODE_RECORDS), replace=False).tolist())
        blobs = [ds[i].image_bytes for i in keep]
        if row == "bound-decode":
            from concurrent.futures import ThreadPoolExecutor

            from fastload.augment.decode import decode_image
            pool = ThreadPoolExecutor(a.workers)

            def nb():
                idx = rng.integers(0, len(blobs), a.batch_size).tolist()
                list(pool.map(decode_image, [blobs[i] for i in idx]))
                return a.batch_size
            return nb, (lambda: None), (lambda: pool.shutdown())
        import torch

        from fastload.optional import require
        dali = require("nvidia.dali", extra="dali", what="the bound-nvjpeg row")
        fn, pipeline_def, types = dali.fn, dali.pipeline_def, dali.types

        def feed():
            idx = rng.integers(0, len(blobs), a.batch_size).tolist()
            return [np.frombuffer(blobs[i], np.uint8) for i in idx]

        @pipeline_def(batch_size=a.batch_size, num_threads=a.workers, device_id=0,
                      prefetch_queue_depth=2)
        def pipe():
            enc = fn.external_source(source=feed, dtype=types.UINT8)
            return fn.decoders.image(enc, device="mixed", output_type=types.RGB)
        p = pipe()
        p.build()
        return (lambda: (p.run(), a.batch_size)[1]), torch.cuda.synchronize, (lambda: None)

    raise ValueError(f"unknown row {row!r}; known: {', '.join(ROWS_ALL)}")


def one_line(e: BaseException) -> str:
    """``Type: message`` on one line; an error re-raised from a DataLoader worker (its message
    carries the worker's traceback) as its first and last lines."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    msg = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"
    return f"{type(e).__name__}: {msg}"


class RowSession:
    """The phases of one row (module docstring) over its ``(next_batch, sync)``."""

    def __init__(self, next_batch, sync, cores):
        self.nb, self.sync, self.cores = next_batch, sync, cores
        self.rates, self.batches, self.images = [], 0, 0
        self.wall = self.cpu = 0.0
        self.extra = {}

    def warmup(self, seconds, min_batches):
        now = time.perf_counter
        t0, n = now(), 0
        while n < min_batches or now() - t0 < seconds:
            self.nb()
            n += 1
        self.sync()
        self.extra.update(warmup_s=now() - t0, warmup_batches=n)
        return {"seconds": now() - t0, "batches": n}

    def window(self, seconds):
        now = time.perf_counter
        pids = tree_pids()
        cpu0, ws, n, b = tree_cpu_seconds(pids), now(), 0, 0
        while True:
            n += self.nb()
            b += 1
            if now() - ws >= seconds:
                break
        self.sync()
        dt = now() - ws
        cpu = tree_cpu_seconds(tree_pids()) - cpu0
        self.rates.append(n / dt)
        self.batches, self.images = self.batches + b, self.images + n
        self.wall, self.cpu = self.wall + dt, self.cpu + cpu
        return {"images": n, "batches": b, "seconds": dt, "cpu_seconds": cpu, "rate": n / dt}

    def simulate(self, step_ms, seconds):
        now = time.perf_counter
        step = float(step_ms) / 1000
        wait, steps, ls = 0.0, 0, now()
        while steps < 2 or now() - ls < seconds:
            t = now()
            self.nb()
            self.sync()
            wait += now() - t
            time.sleep(step)
            steps += 1
        self.extra.update(step_ms=float(step_ms), data_wait=wait / (now() - ls), sim_steps=steps)
        return {"data_wait": self.extra["data_wait"], "steps": steps}

    def numbers(self):
        r = sorted(self.rates)
        med = (r[(len(r) - 1) // 2] + r[len(r) // 2]) / 2 if r else None
        return {"images_per_s": {"median": med, "min": r[0] if r else None,
                                 "max": r[-1] if r else None, "windows": self.rates},
                "batches": self.batches, "images": self.images, "measured_s": self.wall,
                "cpu_seconds": self.cpu,
                "cpu_util": self.cpu / self.wall / self.cores if self.wall else None,
                **self.extra}


class Channel:
    """The command (read) and answer (write) pipes to the driver."""

    def __init__(self, cmd_fd, res_fd):
        self.cmd = os.fdopen(cmd_fd, "r")
        self.res = os.fdopen(res_fd, "w")

    def answer(self, msg, stop=True):
        self.res.write(json.dumps(msg) + "\n")
        self.res.flush()
        if stop:  # the whole row (threads, worker processes) pauses until the driver continues it
            os.killpg(os.getpgrp(), signal.SIGSTOP)

    def command(self):
        line = self.cmd.readline()
        if not line:
            raise EOFError("the driver closed the command pipe")
        return json.loads(line)


def serve(a, chan) -> int:
    cores = len(os.sched_getaffinity(0))
    base = {"row": a.row, "label": LABELS.get(a.row, a.row), "batch_size": a.batch_size,
            "size": a.size, "workers": a.workers, "cores": cores, "pid": os.getpid(),
            "fastload": str(Path(fastload.__file__).parent)}  # the code measured

    def failed(e, phase):
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        return {**base, "status": "failed", "reason": f"failed in {phase}: {one_line(e)}",
                "traceback": tb[-4000:]}

    with TreeMonitor() as mon:
        gpu = a.row in GPU_ROWS and _cuda_available()
        if gpu:  # baseline before the loader / DALI pipeline allocates anything
            import torch
            torch.cuda.init()
            torch.cuda.reset_peak_memory_stats()
            free0, _ = torch.cuda.mem_get_info()
        try:
            nb, sync, close = make_source(a.row, a)
        except RowUnavailable as e:
            chan.answer({"phase": "final", "result": {**base, "status": "skipped",
                                                      "reason": str(e)}}, stop=False)
            return 0
        except ImportError as e:  # a part of fastload or a baseline library is not installed
            chan.answer({"phase": "final", "result": {
                **base, "status": "skipped", "reason": f"not available: {type(e).__name__}: {e}"}},
                stop=False)
            return 0
        except Exception as e:
            chan.answer({"phase": "final", "result": failed(e, "setup")}, stop=False)
            return 1
        session = RowSession(nb, sync, cores)
        chan.answer({"phase": "ready"})
        result = None
        while result is None:
            cmd = chan.command()
            kind = cmd["cmd"]
            try:
                if kind == "warmup":
                    chan.answer({"phase": kind, **session.warmup(cmd["seconds"], cmd["min_batches"])})
                elif kind == "window":
                    chan.answer({"phase": kind, **session.window(cmd["seconds"])})
                elif kind == "sim":
                    chan.answer({"phase": kind, **session.simulate(cmd["step_ms"], cmd["seconds"])})
                elif kind == "finish":
                    result = {**base, "status": "ok", **session.numbers()}
                    if gpu:  # after the run, before close()
                        free1, _ = torch.cuda.mem_get_info()
                        result["gpu_torch_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
                        result["gpu_device_used_delta_mb"] = max(0, free0 - free1) / 2 ** 20
                        result["gpu_mem_mb"] = max(result["gpu_torch_max_allocated_mb"],
                                                   result["gpu_device_used_delta_mb"])
                        result["gpu_name"] = torch.cuda.get_device_name()
                else:
                    raise ValueError(f"unknown command {kind!r}")
            except ImportError as e:  # raised lazily by the first batch
                print(traceback.format_exc(), file=sys.stderr, flush=True)
                result = {**base, "status": "skipped",
                          "reason": f"not available: {type(e).__name__}: {e}"}
            except Exception as e:
                result = failed(e, kind)
        try:
            close()
        except Exception:  # the numbers stand; the row's log keeps the error
            print(traceback.format_exc(), file=sys.stderr, flush=True)
    if result["status"] == "ok":
        result.update(peak_rss_mb=mon.peak_rss / 2 ** 20, peak_pss_mb=(mon.peak_pss / 2 ** 20) or None)
    chan.answer({"phase": "final", "result": result}, stop=False)
    return 0 if result["status"] != "failed" else 1


def build_parser():
    p = argparse.ArgumentParser(prog="python -m fastload.bench.runner",
                                description="Serve one `fastload bench` row (module docstring).")
    p.add_argument("--row", required=True, choices=ROWS_ALL)
    p.add_argument("--packed", required=True, help="packed fastload dataset directory")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cmd-fd", type=int, required=True, help="file descriptor of the commands")
    p.add_argument("--res-fd", type=int, required=True, help="file descriptor of the answers")
    return p


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (``PR_SET_PDEATHSIG``; SIGKILL ends
    a paused process too): a row whose driver was killed, or a worker whose row was, would
    otherwise stay paused forever."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the driver's own clean-up has to do
        pass


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    die_with_parent()
    return serve(a, Channel(a.cmd_fd, a.res_fd))


if __name__ == "__main__":
    sys.exit(main())
