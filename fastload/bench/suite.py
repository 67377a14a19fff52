"""`fastload bench`: prepare the data, measure the rows in alternating windows, write the report.

Every row runs on the same PACKED dataset (:mod:`fastload.bench.data`): the fastload rows load
it, the torch baselines read each record's original image bytes and polygons from it in their
own workers. So any packed dataset can be benchmarked, whatever its source format. With no
DATASET, a synthetic COCO dataset (``--num-images`` 640x480 scenes, default 128) is generated
and packed once into the cache folder (``$FASTLOAD_CACHE`` or ``~/.cache/fastload``, under
``bench/``). ``--megapixels`` runs the megapixel mode instead (:mod:`fastload.bench.megapixels`).

The rows are measured in alternating windows (:mod:`fastload.bench.alternate`), each in its
own process.
"""
from __future__ import annotations

import datetime
import importlib
import os
import platform
import shlex
import site
import sys
import time
from pathlib import Path

import fastload
from fastload.bench.alternate import RowSpec, Settings, run_alternating
from fastload.bench.runner import GPU_ROWS, LABELS, ROWS_ALL

BOUNDS = ["bound-lmdb", "bound-decode", "bound-nvjpeg"]


class BenchError(ValueError):
    """Bad `fastload bench` arguments or dataset."""


def parse_rows(spec: str) -> list:
    rows = []
    for r in (s.strip() for s in spec.split(",")):
        if not r:
            continue
        new = BOUNDS if r == "bounds" else [r]
        for x in new:
            if x not in ROWS_ALL:
                raise BenchError(f"--rows: unknown row {x!r}; known: "
                                 f"{', '.join(ROWS_ALL)}, bounds")
            if x not in rows:
                rows.append(x)
    if not rows:
        raise BenchError("--rows: no row given")
    return rows


def check_args(args) -> None:
    for name in ("batch_size", "size", "workers", "windows", "num_images"):
        if getattr(args, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.seconds <= 0:
        raise BenchError(f"--seconds must be > 0, got {args.seconds}")
    if args.size % 4:
        raise BenchError(f"--size must be a multiple of 4 (CenterNet stride), got {args.size}")


def _versions():
    """Versions of Python and the libraries the rows use ("-": an optional one not installed)."""
    v = {"python": platform.python_version()}
    for name, mod in (("fastload", "fastload"), ("torch", "torch"), ("dali", "nvidia.dali"),
                      ("numba", "numba"), ("numpy", "numpy"), ("pillow", "PIL"),
                      ("simplejpeg", "simplejpeg"), ("albumentations", "albumentations"),
                      ("opencv", "cv2")):
        try:
            v[name] = importlib.import_module(mod).__version__
        except (ImportError, OSError, AttributeError):  # not installed, or native libs missing
            v[name] = "-"
    return v


def _cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gpu_name():
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def row_environment() -> dict:
    """The environment of a row's process, which must import the fastload this process runs.

    An installed fastload (in a site directory) is what any interpreter of this environment
    imports. One imported from elsewhere (a checkout put on ``sys.path`` in-process, as
    pytest's ``pythonpath`` does) has its parent folder put first on ``PYTHONPATH``.
    """
    env = dict(os.environ)
    here = Path(fastload.__file__).resolve().parent.parent
    sites = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in sites and paths[:1] != [str(here)]:
        env["PYTHONPATH"] = os.pathsep.join([str(here)] + paths)
    return env


def meta(args, rows) -> dict:
    """What every report says about the run: command, machine, versions, settings."""
    return {
        "command": "fastload bench " + " ".join(shlex.quote(a) for a in (args.argv or [])),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(), "cores": len(os.sched_getaffinity(0)), "gpu": gpu_name(),
        "versions": _versions(), "batch_size": args.batch_size, "size": args.size,
        "seconds": args.seconds, "windows": args.windows, "warmup": args.warmup,
        "workers": args.workers, "rows": rows,
        "schedule": f"{args.windows} rounds, each row one {args.seconds / args.windows:.2f} s "
                    f"window per round in the order listed (paused in between)"}


def settings(args) -> Settings:
    return Settings(batch_size=args.batch_size, size=args.size, workers=args.workers,
                    seed=args.seed, seconds=args.seconds, windows=args.windows,
                    warmup=args.warmup)


def measure(specs, args, out: Path, step_ms=None) -> dict:
    """Run ``specs`` (GPU rows skipped without a GPU, no process started); ``{key: result}``."""
    gpu = gpu_name()
    skipped, live = {}, []
    for s in specs:
        if s.row in GPU_ROWS and gpu is None:
            skipped[s.key] = {"row": s.row, "label": LABELS[s.row], "status": "skipped",
                              "reason": "skipped: no GPU (torch.cuda.is_available() is False)",
                              **s.extra}
        else:
            live.append(s)

    def progress(msg):
        print(f"  {msg}", file=sys.stderr, flush=True)

    res = run_alternating(live, settings(args), out / "rows", row_environment(),
                          step_ms=step_ms, progress=progress) if live else {}
    return {s.key: skipped.get(s.key) or res[s.key] for s in specs}


def seed_step(args, key="torch-seed"):
    """``step_ms(answers)`` for :func:`run_alternating`: ``--step-ms``, else half of the
    torch-seed row's measured time per batch (None without one)."""
    def step(answers):
        if args.step_ms is not None:
            return float(args.step_ms)
        wins = answers.get(key) or []
        if not wins:
            return None
        rates = sorted(w["rate"] for w in wins)
        med = (rates[(len(rates) - 1) // 2] + rates[len(rates) // 2]) / 2
        per_batch = sum(w["images"] for w in wins) / sum(w["batches"] for w in wins)
        return 0.5 * per_batch / med * 1000 if med > 0 else None
    return step


def run(args) -> int:
    """The `fastload bench` command (args from :mod:`fastload.cli.cmd_bench`)."""
    from fastload.bench import data, report
    check_args(args)
    if args.megapixels:
        from fastload.bench.megapixels import run as run_megapixels
        return run_megapixels(args)
    t_start = time.monotonic()
    rows = parse_rows(args.rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.dataset is None:
        if args.format:
            raise BenchError("--format needs a DATASET (the source to pack)")
        cache = data.cache_dir(args.cache)
        print(f"fastload bench: synthetic COCO dataset ({args.num_images} images 640x480), "
              f"packed, in {cache}", file=sys.stderr)
        packed = data.synthetic_pack(cache, args.num_images, args.seed, args.workers)
    else:
        try:
            packed = data.resolve_dataset(args.dataset, args.format, out, args.workers)
        except data.BenchDataError as e:
            raise BenchError(str(e)) from None
    summary = data.dataset_summary(packed)
    results = {"meta": {**meta(args, rows), "dataset": str(args.dataset or packed),
                        "packed": str(packed), **summary}}
    print(f"fastload bench: {len(rows)} rows on {packed} ({summary['num_images']} images, "
          f"{summary['median_size']}), {args.windows} alternating windows each", file=sys.stderr)
    step = seed_step(args)
    by_key = measure([RowSpec(r, packed) for r in rows], args, out, step_ms=step)
    results["rows"] = [by_key[r] for r in rows]
    ok_steps = [r.get("step_ms") for r in results["rows"] if r.get("step_ms") is not None]
    results["meta"]["step_ms"] = ok_steps[0] if ok_steps else None
    results["meta"]["step_source"] = (
        "--step-ms" if args.step_ms is not None else
        "half of torch-seed's measured time per batch" if ok_steps else
        "no torch-seed row: data wait not simulated (pass --step-ms)")
    if args.stages:
        from fastload.bench.stages import profile
        print("fastload bench: per-stage times (one thread, in-process)", file=sys.stderr)
        results["stages"] = profile(packed, settings(args), n_images=min(32, summary["num_images"]))
    results["meta"]["total_s"] = time.monotonic() - t_start
    md, written = report.write_all(results, out)
    print(md)
    print(f"wrote {', '.join(map(str, written))} in {results['meta']['total_s']:.0f} s",
          file=sys.stderr)
    return 0
