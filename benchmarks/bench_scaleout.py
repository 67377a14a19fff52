"""Scaling out: ``fastload pack --engine ray`` against the local engine, and the time to the
first batch of a dataset opened by URL with a cold and a warm shard cache.

    python3 benchmarks/bench_scaleout.py                  # the figures of docs/scaling.md
    python3 benchmarks/bench_scaleout.py --images 500 --rounds 2
    python3 -m pytest benchmarks/bench_scaleout.py -s     # the same, small (needs Ray, fsspec)

Pack: one synthetic COCO dataset (640x480 JPEGs), packed alternately by the local engine
(``workers`` threads) and the Ray engine (a local Ray instance with ``workers`` CPUs, started
once before the rounds: its start is reported on its own line, with a pack that starts and
stops its own instance as a whole), so that both see the same load on a shared machine.
Images/s are of the whole ``pack`` call (source index, shards, manifest, publish).

First batch: the packed dataset served by ``python -m http.server`` on 127.0.0.1 (loopback:
what the cache costs, not a network's bandwidth), opened by ``fastload.DataLoader(URL)``
with an empty cache (cold: manifest, every shard downloaded and checked), then with the
cache filled (warm: the manifest fetched, nothing else), and the local folder for
reference, alternately; the time is from the constructor to the first batch on the CPU.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fastload.packing import pack  # noqa: E402
from fastload.synth.datasets import write_dataset  # noqa: E402


def make_source(root: Path, n: int) -> Path:
    src = root / "src"
    if not (src / "annotations").exists():
        write_dataset(src, "coco", n_images=n, width=640, height=480, seed=0)
    return src


def bench_pack(root: Path, n: int, rounds: int, workers: int, shard_size: int) -> dict:
    """Images/s of both engines, alternating; Ray's start measured on its own."""
    import ray
    from fastload.packing.ray_engine import start_ray
    src = make_source(root, n)
    out = root / "packed"
    pack(src, out, "coco", workers=workers, overwrite=True, progress=False)  # warm caches, JIT
    t = time.perf_counter()
    pack(src, out, "coco", workers=workers, overwrite=True, progress=False, engine="ray",
         shard_size=shard_size)  # starts and stops its own Ray instance
    whole = time.perf_counter() - t
    t = time.perf_counter()
    start_ray(num_cpus=workers)
    started = time.perf_counter() - t
    res = {"local": [], "ray": []}
    try:
        pack(src, out, "coco", overwrite=True, progress=False, engine="ray",
             shard_size=shard_size)  # the workers' first imports
        for _ in range(rounds):
            for engine in ("local", "ray"):
                t = time.perf_counter()
                s = pack(src, out, "coco", workers=workers, overwrite=True, progress=False,
                         engine=engine, shard_size=shard_size)
                res[engine].append(s.images / (time.perf_counter() - t))
    finally:
        ray.shutdown()
    shutil.rmtree(out, ignore_errors=True)
    return dict(images=n, workers=workers, shard_size=shard_size, rounds=res,
                ray_start_s=started, ray_whole_pack_s=whole,
                ray_whole_pack_images_per_s=n / whole)


def bench_first_batch(root: Path, n: int, rounds: int, batch_size: int = 32) -> dict:
    """Seconds from DataLoader(URL) to the first batch: cold cache, warm cache, local."""
    from fastload import AugmentConfig, DataLoader
    from fastload.store import Dataset
    www = root / "www"
    packed = www / "ds"
    if not (packed / "manifest.json").exists():
        pack(make_source(root, n), packed, "coco", shard_size=max(1, n // 8), progress=False,
             overwrite=True)
    size = sum((packed / s.file).stat().st_size for s in Dataset(packed).manifest.shards)
    proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind",
                             "127.0.0.1", "--directory", str(www)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(re.search(r"port (\d+)", proc.stdout.readline()).group(1))
        url = f"http://127.0.0.1:{port}/ds"
        kw = dict(batch_size=batch_size, shuffle=True, augment=AugmentConfig(out_size=(512, 512)),
                  targets=["centernet"], device="cpu", backend="cpu")

        def first_batch(source):
            t = time.perf_counter()
            loader = DataLoader(source, **kw)
            next(iter(loader))
            dt = time.perf_counter() - t
            del loader
            return dt

        first_batch(str(packed))  # Numba's compile / cache load out of the way
        res = {"cold": [], "warm": [], "local": []}
        old = os.environ.get("FASTLOAD_CACHE_DIR")
        try:
            for r in range(rounds):
                cache = root / f"cache-{r}"
                os.environ["FASTLOAD_CACHE_DIR"] = str(cache)
                res["cold"].append(first_batch(url))
                res["warm"].append(first_batch(url))
                res["local"].append(first_batch(str(packed)))
                shutil.rmtree(cache, ignore_errors=True)
        finally:
            if old is None:
                os.environ.pop("FASTLOAD_CACHE_DIR", None)
            else:
                os.environ["FASTLOAD_CACHE_DIR"] = old
    finally:
        proc.terminate()
        proc.wait(10)
    return dict(images=n, dataset_mib=size / 2**20, batch_size=batch_size, seconds=res)


def _fmt(xs):
    return (f"median {statistics.median(xs):8.1f}   rounds " + " ".join(f"{x:.1f}" for x in xs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--dir", default=None, help="work folder (default: a temp folder, removed)")
    a = ap.parse_args(argv)
    root = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="bench_scaleout-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        p = bench_pack(root, a.images, a.rounds, a.workers, a.shard_size)
        print(f"pack {p['images']} images 640x480 COCO, {p['workers']} workers/CPUs, ray shard "
              f"size {p['shard_size']} (images/s, engines alternating)")
        for engine, xs in p["rounds"].items():
            print(f"  {engine:<6} {_fmt(xs)}")
        print(f"  ray start (ray.init, local instance): {p['ray_start_s']:.1f} s; a pack that "
              f"starts its own instance: {p['ray_whole_pack_s']:.1f} s "
              f"({p['ray_whole_pack_images_per_s']:.0f} images/s)")
        f = bench_first_batch(root, a.images, a.rounds)
        print(f"first batch of {f['batch_size']} (512x512, centernet, cpu backend) from "
              f"{f['images']} images / {f['dataset_mib']:.0f} MiB (seconds, alternating)")
        for kind, xs in f["seconds"].items():
            print(f"  {kind:<6} median {statistics.median(xs):6.2f}   rounds "
                  + " ".join(f"{x:.2f}" for x in xs))
    finally:
        if not a.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


# ---- pytest-benchmark entry points (small sizes; figures in extra_info)
def test_pack_engines_alternately(benchmark, tmp_path):
    import pytest
    pytest.importorskip("ray")
    res = benchmark.pedantic(bench_pack, args=(tmp_path, 200, 1, 2, 50), rounds=1, iterations=1)
    benchmark.extra_info.update({k: round(statistics.median(v), 1)
                                 for k, v in res["rounds"].items()})
    benchmark.extra_info["ray_start_s"] = round(res["ray_start_s"], 2)


def test_first_batch_cold_and_warm(benchmark, tmp_path):
    import pytest
    pytest.importorskip("fsspec")
    res = benchmark.pedantic(bench_first_batch, args=(tmp_path, 200, 1), rounds=1, iterations=1)
    benchmark.extra_info.update({k: round(statistics.median(v), 3)
                                 for k, v in res["seconds"].items()})


if __name__ == "__main__":
    sys.exit(main())
