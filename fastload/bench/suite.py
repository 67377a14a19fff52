"""`fastload bench`: prepare the data, run every row in its own subprocess, write the report.

With no DATASET, a synthetic COCO dataset (``--images`` 640x480 JPEGs of
``fastload.synth``, default 128) is generated once into the cache directory
(``$FASTLOAD_CACHE`` or ``~/.cache/fastload``, under ``bench/``) and packed beside it;
later runs reuse both. A given DATASET is an ORIGINAL COCO dataset (a folder with the
annotation JSON and the images, or the JSON itself): the torch baselines read those files,
and it is packed into ``OUT/packed`` for the fastload rows unless ``--packed`` names an
existing pack of it.
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import shlex
import shutil
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import fastload
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


def cache_dir(explicit=None) -> Path:
    if explicit:
        return Path(explicit)
    base = os.environ.get("FASTLOAD_CACHE") or Path.home() / ".cache" / "fastload"
    return Path(base) / "bench"


def generate_synthetic(root: Path, n_images: int, seed: int) -> Path:
    """Write the synthetic COCO dataset once (atomically: a temp dir renamed at the end)."""
    done = root / ".complete"
    if done.exists():
        return root
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        from fastload.synth import write_dataset
        write_dataset(tmp, "coco", n_images, seed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".complete").write_text(json.dumps({"n_images": n_images, "seed": seed}))
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)
    return root


def pack_dataset(src: Path, out: Path, workers: int):
    """Pack ``src`` (COCO) into ``out`` unless already there; -> (path or None, error). A pack
    that fails does not stop the command: the rows that need it say why they did not run."""
    if (out / "manifest.json").exists():
        return out, None
    from fastload.packing import pack
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        pack(src, tmp, format="coco", workers=workers, progress=False)
    except Exception as e:  # reported in the fastload rows' reason; the torch rows still run
        shutil.rmtree(tmp, ignore_errors=True)
        return None, f"pack failed: {type(e).__name__}: {e}"
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out, None


def _versions():
    """Versions of Python and the libraries the rows use ("-": an optional one not installed)."""
    v = {"python": platform.python_version()}
    for name, mod in (("fastload", "fastload"), ("torch", "torch"), ("dali", "nvidia.dali"),
                      ("numba", "numba"), ("numpy", "numpy"), ("pillow", "PIL"),
                      ("simplejpeg", "simplejpeg")):
        try:
            v[name] = importlib.import_module(mod).__version__
        except (ImportError, OSError):  # not installed, or its native libraries missing
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


def _gpu_name():
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


def _run_row(row, args, data, packed, packed_error, step_ms, logdir, bar):
    js = logdir / f"{row}.json"
    js.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "fastload.bench.runner", "--row", row, "--data", str(data),
           "--batch-size", str(args.batch_size), "--size", str(args.size),
           "--seconds", str(args.seconds), "--windows", str(args.windows),
           "--warmup", str(args.warmup), "--workers", str(args.workers),
           "--seed", str(args.seed), "--json", str(js)]
    if packed:
        cmd += ["--packed", str(packed)]
    elif packed_error:
        cmd += ["--packed-error", packed_error]
    if step_ms is not None:
        cmd += ["--step-ms", str(step_ms)]
    env = row_environment()
    limit = args.warmup + 4 * args.seconds + 240
    t0 = time.monotonic()
    with open(logdir / f"{row}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                el = time.monotonic() - t0
                if el > limit:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return {"row": row, "label": LABELS[row], "status": "failed",
                            "reason": f"failed: timed out after {limit:.0f} s"}
                bar.set_postfix_str(f"{row} {el:.0f}s", refresh=False)
                bar.refresh() if int(el * 4) % 4 == 0 else None
                time.sleep(0.25)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if js.exists():
        return json.loads(js.read_text())
    tail = (logdir / f"{row}.log").read_text()[-600:].strip().splitlines()
    return {"row": row, "label": LABELS[row], "status": "failed",
            "reason": f"failed: exit {proc.returncode}: {tail[-1] if tail else 'no output'}"}


def run(args) -> int:
    """The `fastload bench` command (args from :func:`fastload.bench.add_parser`)."""
    from tqdm import tqdm

    from fastload.bench import report
    t_start = time.monotonic()
    rows = parse_rows(args.rows)
    for name in ("batch_size", "size", "workers", "windows", "images"):
        if getattr(args, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.seconds <= 0:
        raise BenchError(f"--seconds must be > 0, got {args.seconds}")
    if args.size % 4:
        raise BenchError(f"--size must be a multiple of 4 (CenterNet stride), got {args.size}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logdir = out / "rows"
    logdir.mkdir(exist_ok=True)

    # data
    if args.dataset is None:
        cdir = cache_dir(args.cache)
        src = cdir / f"synth-coco-{args.images}-s{args.seed}"
        print(f"fastload bench: synthetic COCO dataset ({args.images} images 640x480) in {src}",
              file=sys.stderr)
        generate_synthetic(src, args.images, args.seed)
        packed_default = cdir / f"synth-coco-{args.images}-s{args.seed}.packed"
    else:
        src = Path(args.dataset)
        if not src.exists():
            raise BenchError(f"DATASET {src}: no such file or directory")
        if (src / "manifest.json").exists():
            raise BenchError(f"DATASET {src} is a packed dataset; the baselines need the ORIGINAL "
                             f"COCO files: pass those as DATASET and this pack as --packed")
        packed_default = out / "packed"
    from fastload.bench.data import find_coco
    js, _ = find_coco(src)
    n_images = len(json.loads(Path(js).read_text())["images"])
    if args.packed:
        packed, packed_error = Path(args.packed), None
        if not (packed / "manifest.json").exists():
            raise BenchError(f"--packed {packed}: no manifest.json (not a packed dataset)")
    elif any(r in rows for r in ("fastload-cpu", "fastload-gpu", "bound-lmdb")):
        print(f"fastload bench: packing into {packed_default}", file=sys.stderr)
        packed, packed_error = pack_dataset(src, packed_default, args.workers)
    else:
        packed, packed_error = None, "not needed"

    gpu = _gpu_name()
    results = {"meta": {
        "command": "fastload bench " + " ".join(shlex.quote(a) for a in (args.argv or [])),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(), "cores": len(os.sched_getaffinity(0)), "gpu": gpu,
        "versions": _versions(), "dataset": str(src), "num_images": n_images,
        "packed": str(packed) if packed else None, "packed_error": packed_error,
        "batch_size": args.batch_size, "size": args.size, "seconds": args.seconds,
        "windows": args.windows, "warmup": args.warmup, "workers": args.workers,
        "rows": rows}, "rows": []}

    step_ms = args.step_ms
    step_source = "--step-ms" if step_ms is not None else None
    order = (["torch-seed"] if "torch-seed" in rows else []) + [r for r in rows if r != "torch-seed"]
    by_row = {}
    with tqdm(total=len(order), unit="row", desc="fastload bench", file=sys.stderr,
              mininterval=1.0) as bar:
        for row in order:
            if row in GPU_ROWS and gpu is None:
                by_row[row] = {"row": row, "label": LABELS[row], "status": "skipped",
                               "reason": "skipped: no GPU (torch.cuda.is_available() is False)"}
            else:
                s = step_ms
                if row == "torch-seed" and s is None:
                    s = "auto"
                by_row[row] = _run_row(row, args, src, packed, packed_error,
                                       None if row.startswith("bound-") else s, logdir, bar)
                if row == "torch-seed" and step_ms is None and by_row[row].get("step_ms"):
                    step_ms = by_row[row]["step_ms"]
                    step_source = "half of torch-seed's measured time per batch"
            r = by_row[row]
            msg = (f"{r['images_per_s']['median']:.1f} img/s" if r.get("status") == "ok"
                   else r.get("reason", r.get("status")))
            bar.write(f"  {row:13s} {msg}", file=sys.stderr)
            bar.update(1)
    results["rows"] = [by_row[r] for r in rows]
    if step_ms is None:
        step_source = "no torch-seed row: data wait not simulated (pass --step-ms)"
    results["meta"]["step_ms"] = step_ms
    results["meta"]["step_source"] = step_source
    results["meta"]["total_s"] = time.monotonic() - t_start
    md, written = report.write_all(results, out)
    print(md)
    print(f"wrote {', '.join(map(str, written))} in {results['meta']['total_s']:.0f} s",
          file=sys.stderr)
    return 0
