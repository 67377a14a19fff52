"""Run ONE benchmark row and write its numbers as JSON (one fresh process per row, so RSS
and CPU numbers are not polluted by the other rows):

    python -m fastload.bench.runner --row torch-seed --data SRC_DIR --packed PACKED_DIR \
        --batch-size 32 --size 512 --seconds 8 --workers 2 --json OUT.json

Rows:
- ``torch-seed``  / ``torch-numpy``: ``torch.utils.data.DataLoader`` + :mod:`fastload.bench.baseline`
  with ``--workers`` worker processes (Python-loop / NumPy CenterNet targets).
- ``fastload-cpu`` / ``fastload-gpu``: ``fastload.DataLoader(..., device="cpu"|"cuda",
  num_threads=--workers)`` over the packed dataset.
- ``bound-lmdb``: ``fastload.Dataset`` random record reads (read + record decode), one thread.
- ``bound-decode``: JPEG decode alone of the same original files with simplejpeg (the
  fastest CPU decoder installed), ``--workers`` threads.
- ``bound-nvjpeg``: JPEG decode alone with DALI's ``mixed`` decoder (nvJPEG), GPU only.

Measurement (all rows): warm-up (at least ``--warmup`` seconds and ``max(2, workers)``
batches: worker start-up, Numba compilation, DALI/cuda init), then ``--windows`` windows
over ``--seconds``; a window ends at the first batch boundary after seconds/windows, and
its rate is images / window time. When batches are so slow that the windows overrun
2 x seconds, measuring stops after the second window (``images_per_s.windows`` has the
rates actually measured). On CUDA the device is synchronised at each window end.

- CPU utilisation: CPU time (user + system) of the whole process tree (this process and
  its worker children, read from /proc) during the windows / wall time / cores available
  (``os.sched_getaffinity``). 1.0 = every core busy.
- Peak RSS: maximum over the run of the summed RSS of the process tree, sampled every
  0.1 s from /proc (forked workers' shared pages are counted in each process, as ``top``
  shows them); the summed PSS (``/proc/PID/smaps_rollup``, shared pages split) is in
  results.json as ``peak_pss_mb``.
- GPU memory: ``torch.cuda.max_memory_allocated`` and the device-wide increase seen by
  ``torch.cuda.mem_get_info`` (DALI allocates outside torch); the larger is reported.
- Data wait: after the windows, a simulated training loop: ``next(batch)`` then a fixed
  step of ``--step-ms`` (``time.sleep``: the device busy, the host thread blocked, as in a
  loop that synchronises every step) for at least 2 batches and seconds/4. Data wait =
  time blocked in ``next`` / total loop time. ``--step-ms auto`` (the torch-seed row)
  sizes the step to HALF of this row's own measured time per batch: a model that could
  consume twice what the baseline delivers, the starved GPU of DESIGN.md. The suite then
  gives that same step to every other row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import fastload

ROWS_ALL = ["torch-seed", "torch-numpy", "fastload-cpu", "fastload-gpu",
            "bound-lmdb", "bound-decode", "bound-nvjpeg"]
GPU_ROWS = {"fastload-gpu", "bound-nvjpeg"}
LABELS = {
    "torch-seed": "torch DataLoader, PIL/NumPy aug, Python-loop targets",
    "torch-numpy": "torch DataLoader, PIL/NumPy aug, NumPy targets",
    "fastload-cpu": "fastload.DataLoader, device=cpu",
    "fastload-gpu": "fastload.DataLoader, device=cuda (DALI)",
    "bound-lmdb": "bound: LMDB record reads alone",
    "bound-decode": "bound: JPEG decode alone (simplejpeg, CPU)",
    "bound-nvjpeg": "bound: JPEG decode alone (nvJPEG, DALI mixed)",
}

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class RowUnavailable(Exception):
    """The row cannot run here (reason in the message); reported as skipped, not failed."""


# ------------------------------------------------------------------ process tree (/proc)
def tree_pids(root: int | None = None) -> list:
    """``root`` (default: this process) and all its descendants, from /proc/*/stat."""
    root = os.getpid() if root is None else root
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _stat(pid):
    """(cpu seconds, rss bytes) of one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fs = s[s.rindex(")") + 2:].split()
    # fields after ")" start at field 3 (state): utime=14, stime=15, rss=24 (1-based)
    return (int(fs[11]) + int(fs[12])) / _TICK, int(fs[21]) * _PAGE


def _pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def tree_cpu_seconds(pids=None) -> float:
    return sum(s[0] for s in map(_stat, pids or tree_pids()) if s)


class TreeMonitor:
    """Background sampler of the process tree's summed RSS and PSS (peaks)."""

    def __init__(self, interval=0.1):
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="fastload-bench-monitor")

    def __enter__(self):
        self.sample()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.sample()

    def sample(self):
        pids = tree_pids()
        rss = sum(s[1] for s in map(_stat, pids) if s)
        pss = [_pss(p) for p in pids]
        self.peak_rss = max(self.peak_rss, rss)
        if all(v is not None for v in pss):
            self.peak_pss = max(self.peak_pss, sum(pss))

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a process vanished mid-read: next sample
                pass


# ------------------------------------------------------------------------------ rows
def _cfg(size):
    from fastload.augment.config import AugmentConfig
    return AugmentConfig(out_size=(size, size))


def _cuda_available():
    import torch
    return torch.cuda.is_available()


def make_source(row, a):
    """Return ``(next_batch, sync, close)``; next_batch() returns the number of images."""
    if row in GPU_ROWS and not _cuda_available():
        raise RowUnavailable("skipped: no GPU (torch.cuda.is_available() is False)")

    if row in ("torch-seed", "torch-numpy"):
        from fastload.bench.baseline import make_baseline_loader
        dl = make_baseline_loader(a.data, targets="python" if row == "torch-seed" else "numpy",
                                  batch_size=a.batch_size, num_workers=a.workers,
                                  cfg=_cfg(a.size), seed=a.seed)
        iterators = [iter(dl)]

        def close():
            iterators.clear()  # the iterator's __del__ shuts its worker processes down
        return (lambda: next(iterators[0])["image"].shape[0]), (lambda: None), close

    if row in ("fastload-cpu", "fastload-gpu"):
        if not a.packed:
            raise RowUnavailable(f"not available: no packed dataset ({a.packed_error or 'pack failed'})")
        from fastload.loader import DataLoader
        dev = "cpu" if row == "fastload-cpu" else "cuda"
        loader = DataLoader(a.packed, batch_size=a.batch_size, shuffle=True, drop_last=True,
                            seed=a.seed, augment=_cfg(a.size), targets=["centernet"],
                            device=dev, num_threads=a.workers)

        def gen():
            e = 0
            while True:
                loader.set_epoch(e)
                n = 0
                for b in loader:
                    n += 1
                    yield b["image"].shape[0]
                if n == 0:
                    raise RuntimeError("fastload.DataLoader yielded no batch in an epoch")
                e += 1
        g = gen()
        sync = (lambda: __import__("torch").cuda.synchronize()) if dev == "cuda" else (lambda: None)
        return (lambda: next(g)), sync, (lambda: (g.close(), loader.close()))

    if row == "bound-lmdb":
        if not a.packed:
            raise RowUnavailable(f"not available: no packed dataset ({a.packed_error or 'pack failed'})")
        import numpy as np

        from fastload.store import Dataset
        ds = Dataset(a.packed)
        n = len(ds)
        rng = np.random.default_rng(a.seed)

        def nb():
            for i in rng.integers(0, n, a.batch_size).tolist():
                ds[i]
            return a.batch_size
        return nb, (lambda: None), ds.close

    if row in ("bound-decode", "bound-nvjpeg"):
        import numpy as np
        from fastload.bench.data import find_coco
        js, img_dir = find_coco(a.data)
        names = [im["file_name"] for im in json.loads(Path(js).read_text())["images"]]
        blobs = [(Path(img_dir) / nm).read_bytes() for nm in names]
        rng = np.random.default_rng(a.seed)
        if row == "bound-decode":
            import simplejpeg
            from concurrent.futures import ThreadPoolExecutor
            pool = ThreadPoolExecutor(a.workers)

            def nb():
                idx = rng.integers(0, len(blobs), a.batch_size).tolist()
                list(pool.map(simplejpeg.decode_jpeg, [blobs[i] for i in idx]))
                return a.batch_size
            return nb, (lambda: None), (lambda: pool.shutdown())
        # nvJPEG through DALI's mixed decoder
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


# ------------------------------------------------------------------------ measurement
def measure(next_batch, sync, seconds, windows, warmup_s, min_warm_batches, cores,
            step_ms=None, progress=None):
    """Warm-up, windows, then the simulated training loop; returns a dict of numbers."""
    now = time.perf_counter
    t0 = now()
    nwarm = 0
    while nwarm < min_warm_batches or now() - t0 < warmup_s:
        next_batch()
        nwarm += 1
    sync()
    warm_s = now() - t0
    win = seconds / windows
    rates, batches, images = [], 0, 0
    pids = tree_pids()
    cpu0, w0 = tree_cpu_seconds(pids), now()
    for _ in range(windows):
        ws, n = now(), 0
        while True:
            n += next_batch()
            batches += 1
            if now() - ws >= win:
                break
        sync()
        rates.append(n / (now() - ws))
        images += n
        if progress:
            progress(f"window {len(rates)}/{windows}: {rates[-1]:.1f} img/s")
        if len(rates) >= 2 and now() - w0 > 2 * seconds:
            break  # batches much longer than a window: stop at 2 windows (time budget)
    wall = now() - w0
    cpu = tree_cpu_seconds(tree_pids()) - cpu0
    rates_sorted = sorted(rates)
    med = (rates_sorted[(len(rates) - 1) // 2] + rates_sorted[len(rates) // 2]) / 2
    res = {"images_per_s": {"median": med, "min": min(rates), "max": max(rates), "windows": rates},
           "batches": batches, "images": images, "measured_s": wall, "warmup_s": warm_s,
           "warmup_batches": nwarm, "cpu_util": cpu / wall / cores, "cpu_seconds": cpu}
    per_batch_s = images / batches / med if batches else None
    if step_ms == "auto":
        step_ms = 0.5 * per_batch_s * 1000 if per_batch_s else None
    if step_ms is not None:
        step = float(step_ms) / 1000
        wait, nsteps, ls = 0.0, 0, now()
        while nsteps < 2 or now() - ls < seconds / 4:
            t = now()
            next_batch()
            sync()
            wait += now() - t
            time.sleep(step)
            nsteps += 1
        res.update(step_ms=float(step_ms), data_wait=wait / (now() - ls), sim_steps=nsteps)
    return res


def run_row(a) -> dict:
    cores = len(os.sched_getaffinity(0))
    base = {"row": a.row, "label": LABELS.get(a.row, a.row), "batch_size": a.batch_size,
            "size": a.size, "workers": a.workers, "cores": cores, "pid": os.getpid(),
            "fastload": str(Path(fastload.__file__).parent)}  # the code measured
    step = None if a.row.startswith("bound-") else a.step_ms
    if step not in (None, "auto"):
        step = float(step)
    try:
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
                return {**base, "status": "skipped", "reason": str(e)}
            except ImportError as e:  # a part of fastload this row needs is not there
                return {**base, "status": "skipped",
                        "reason": f"not available: {type(e).__name__}: {e}"}
            try:
                try:
                    res = measure(nb, sync, a.seconds, a.windows, a.warmup, max(2, a.workers),
                                  cores, step_ms=step,
                                  progress=lambda m: print(f"[{a.row}] {m}", file=sys.stderr,
                                                           flush=True))
                except ImportError as e:  # raised lazily by the first batch
                    print(traceback.format_exc(), file=sys.stderr)
                    return {**base, "status": "skipped",
                            "reason": f"not available: {type(e).__name__}: {e}"}
                if gpu:
                    free1, _ = torch.cuda.mem_get_info()  # after the run, before close()
                    res["gpu_torch_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
                    res["gpu_device_used_delta_mb"] = max(0, free0 - free1) / 2 ** 20
                    res["gpu_mem_mb"] = max(res["gpu_torch_max_allocated_mb"],
                                            res["gpu_device_used_delta_mb"])
                    res["gpu_name"] = torch.cuda.get_device_name()
            finally:
                try:
                    close()
                except Exception:  # the numbers stand; the row's log keeps the error
                    print(traceback.format_exc(), file=sys.stderr)
        return {**base, "status": "ok", **res, "peak_rss_mb": mon.peak_rss / 2 ** 20,
                "peak_pss_mb": (mon.peak_pss / 2 ** 20) or None}
    except Exception as e:
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
        return {**base, "status": "failed", "reason": f"failed: {type(e).__name__}: {e}",
                "traceback": tb[-4000:]}


def build_parser():
    p = argparse.ArgumentParser(prog="python -m fastload.bench.runner",
                                description="Run one `fastload bench` row, write JSON.")
    p.add_argument("--row", required=True, choices=ROWS_ALL)
    p.add_argument("--data", required=True, help="original COCO dataset directory (or JSON)")
    p.add_argument("--packed", default=None, help="packed fastload dataset directory")
    p.add_argument("--packed-error", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step-ms", default=None, help="simulated step in ms, or 'auto'")
    p.add_argument("--json", required=True, help="where to write the row's results")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    res = run_row(a)
    Path(a.json).write_text(json.dumps(res, indent=1))
    return 0 if res["status"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
