"""fastload.DataLoader end to end: throughput, and the data-wait fraction of a training loop.

Data: 32 synthetic 640x480 JPEGs (COCO layout, packed into LMDB), output 512x512,
the default AugmentConfig (flip, rotation, scale, translation, hue, noise, shadow),
CenterNet targets at stride 4, batch 8.

- ``test_throughput_fastload``: one epoch of fastload.DataLoader (CPU backend here, the
  fused Numba kernel; DALI on a GPU), images/s in ``extra_info``.
- ``test_throughput_torch_baseline``: the baseline of DESIGN.md on the same data and cores:
  ``torch.utils.data.DataLoader`` (``num_workers`` = the cores) over
  ``fastload.bench.pil_baseline.PilNumpyDataset`` (the same pack: PIL decode, the one
  PIL/NumPy augmentation ``pil_numpy_augment``, CenterNet targets with the Python-loop
  reference), the torch-seed row of ``fastload bench``;
- ``test_throughput_albumentations``: the same with
  ``fastload.bench.albumentations_baseline.albumentations_loader`` (OpenCV decode,
  albumentations, NumPy targets), the albumentations row of ``fastload bench``.
- ``test_data_wait_fraction``: a simulated training loop whose step takes a fixed time on
  the device (``time.sleep`` on the CPU: the host is idle while the device works;
  ``torch.cuda._sleep`` + synchronize on a GPU), sized to 1.2x the loader's measured
  per-batch time, so the loader can keep up. Reports the fraction of wall time the loop
  spends waiting in ``next(loader)`` (goal: under 5%).

Run: python3 -m pytest benchmarks/bench_loader.py --benchmark-only -s
"""
import math
import os
import time

import pytest
import torch

from fastload.augment.config import AugmentConfig
from fastload.bench import pil_baseline, torch_data
from fastload.loader import DataLoader

N_IMAGES, BATCH = 32, 8
CFG = AugmentConfig(out_size=(512, 512))
THREADS = max(1, min(8, len(os.sched_getaffinity(0))))


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    from fastload.packing import pack
    from fastload.synth.datasets import write_dataset
    root = tmp_path_factory.mktemp("bench_loader")
    write_dataset(root / "src", "coco", n_images=N_IMAGES, seed=0, width=640, height=480)
    pack(root / "src", root / "packed", "coco", workers=1, progress=False)
    return root / "packed"


def _epoch(loader):
    n = 0
    for b in loader:
        n += b["image"].shape[0]
    return n


def test_throughput_fastload(benchmark, packed):
    ld = DataLoader(packed, batch_size=BATCH, shuffle=True, augment=CFG, targets=["centernet"],
                    num_threads=THREADS)
    _epoch(ld)  # warm: Numba cache load, thread pool
    n = benchmark.pedantic(_epoch, args=(ld,), rounds=3, iterations=1)
    benchmark.extra_info["images_per_s"] = n / benchmark.stats.stats.mean if benchmark.stats else None
    benchmark.extra_info["device"] = str(ld.device)
    benchmark.extra_info["backend"] = ld.backend


# ---------------------------------------------------------------- the baseline
def test_throughput_torch_baseline(benchmark, packed):
    ds = pil_baseline.PilNumpyDataset(packed, cfg=CFG, seed=0, targets="python")
    tl = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=THREADS,
                                     collate_fn=torch_data.collate, persistent_workers=True)
    _epoch(tl)
    n = benchmark.pedantic(_epoch, args=(tl,), rounds=1, iterations=1)
    benchmark.extra_info["images_per_s"] = n / benchmark.stats.stats.mean if benchmark.stats else None


def test_throughput_albumentations(benchmark, packed):
    pytest.importorskip("albumentations")
    from fastload.bench.albumentations_baseline import albumentations_loader
    tl = albumentations_loader(packed, cfg=CFG, batch_size=BATCH, num_workers=THREADS, seed=0)
    _epoch(tl)
    n = benchmark.pedantic(_epoch, args=(tl,), rounds=1, iterations=1)
    benchmark.extra_info["images_per_s"] = n / benchmark.stats.stats.mean if benchmark.stats else None


# ---------------------------------------------------------------- training loop simulation
def _device_step(seconds, device):
    if device.type == "cuda":
        # ~1.4 GHz: cycles for `seconds`; the host then waits like a loss.item() would
        torch.cuda._sleep(int(seconds * 1.4e9))
        torch.cuda.synchronize(device)
    else:
        time.sleep(seconds)  # the host is idle while the "device" computes


def simulate(loader, step_s, epochs=2):
    """Run a training loop; returns (wall s, s waiting for data, s waiting for the very
    first batch, batches). Epoch boundaries are included (the loader prefetches across them)."""
    wait = first = 0.0
    nb = 0
    t_start = time.perf_counter()
    for _ in range(epochs):
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            dt = time.perf_counter() - t0
            wait += dt
            if nb == 0:
                first = dt
            _device_step(step_s, batch["image"].device)
            nb += 1
    return time.perf_counter() - t_start, wait, first, nb


def test_data_wait_fraction(benchmark, packed):
    ld = DataLoader(packed, batch_size=BATCH, shuffle=True, augment=CFG, targets=["centernet"],
                    num_threads=THREADS, prefetch=3)
    _epoch(ld)
    t0 = time.perf_counter()
    _epoch(ld)
    per_batch = (time.perf_counter() - t0) / len(ld)
    step = 1.2 * per_batch

    def run():
        return simulate(ld, step, epochs=4)

    wall, wait, first, nb = benchmark.pedantic(run, rounds=1, iterations=1)
    frac = wait / wall
    # the very first batch of a run cannot be prefetched (the loop starts with it);
    # steady state leaves it out
    steady = (wait - first) / (wall - first)
    benchmark.extra_info.update({
        "loader_s_per_batch": per_batch, "step_s": step, "batches": nb,
        "data_wait_fraction": frac, "data_wait_fraction_steady": steady,
        "goal": "< 0.05 when the loader is faster than the step",
    })
    print(f"\nloader {per_batch * 1e3:.1f} ms/batch, step {step * 1e3:.1f} ms, data wait "
          f"{100 * frac:.1f}% of {wall:.2f} s over {nb} batches ({100 * steady:.1f}% after the first)")
    assert math.isfinite(frac)
