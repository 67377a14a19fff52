"""fastload.DataLoader end to end: throughput, and the data-wait fraction of a training loop.

Data: 32 synthetic 640x480 JPEGs (COCO layout, packed into LMDB), output 512x512,
the default AugmentConfig (flip, rotation, scale, translation, hue, noise, shadow),
CenterNet targets at stride 4, batch 8.

- ``test_throughput_fastload``: one epoch of fastload.DataLoader (CPU backend here, the
  fused Numba kernel; DALI on a GPU), images/s in ``extra_info``.
- ``test_throughput_torch_baseline``: the baseline of DESIGN.md on the same data and cores:
  ``torch.utils.data.DataLoader`` (``num_workers`` = the cores) over a Dataset that decodes
  with PIL, warps with PIL's affine transform, does hue / shadow / noise / normalize in
  NumPy and builds the CenterNet targets with the Python-loop reference.
- ``test_data_wait_fraction``: a simulated training loop whose step takes a fixed time on
  the device (``time.sleep`` on the CPU: the host is idle while the device works;
  ``torch.cuda._sleep`` + synchronize on a GPU), sized to 1.2x the loader's measured
  per-batch time, so the loader can keep up. Reports the fraction of wall time the loop
  spends waiting in ``next(loader)`` (goal: under 5%).

Run: python3 -m pytest benchmarks/bench_loader.py --benchmark-only -s
"""
import io
import math
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fastload.augment.config import AugmentConfig
from fastload.augment.geometry import transform_instances_reference
from fastload.augment.params import sample_params, shadow_mask
from fastload.loader import DataLoader, collate
from fastload.targets.reference import centernet_python

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
_HUE_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


class BaselineDataset(torch.utils.data.Dataset):
    """What a torch user writes: PIL decode + PIL affine + NumPy photometric + Python-loop targets."""

    def __init__(self, path):
        from fastload.store import Dataset
        self.ds = Dataset(path)
        self.epoch = 0

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        rec = self.ds[i]
        p = sample_params(CFG, 0, self.epoch, i, rec.height, rec.width)
        img = Image.open(io.BytesIO(rec.image_bytes)).convert("RGB")
        H, W = CFG.out_size
        inv = np.linalg.inv(p.matrix.astype(np.float64))  # PIL takes output -> input
        # PIL samples at integer output coords; shift by half a pixel to the continuous convention
        sh = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
        a = (np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]) @ inv @ sh)[:2].ravel()
        out = np.asarray(img.transform((W, H), Image.AFFINE, tuple(a), Image.BILINEAR), np.float64)
        th = np.deg2rad(p.hue_deg)
        rot = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]])
        m = np.linalg.inv(_HUE_YIQ) @ rot @ _HUE_YIQ
        out = np.clip(out @ m.T, 0, 255)
        mask = shadow_mask(p, H, W).astype(bool)
        out[mask] *= p.shadow_darkness
        out = np.clip(out + np.random.default_rng(p.noise_seed).normal(0, p.noise_sigma, out.shape), 0, 255)
        out = (out - np.array(CFG.mean)) / np.array(CFG.std)
        inst = transform_instances_reference(rec, p, CFG.out_size, CFG.min_visible)
        keep = ~inst.ignore
        t = centernet_python(inst.boxes[keep] / 4, inst.labels[keep], max(1, len(self.ds.classes)),
                             H // 4, W // 4)
        sample = {"image": torch.from_numpy(out.transpose(2, 0, 1).astype(np.float32)),
                  "index": torch.tensor(i), "boxes": torch.from_numpy(inst.boxes),
                  "labels": torch.from_numpy(inst.labels.astype(np.int64))}
        sample.update({k: torch.from_numpy(np.asarray(v)) for k, v in t.items()})
        return sample


def test_throughput_torch_baseline(benchmark, packed):
    tl = torch.utils.data.DataLoader(BaselineDataset(packed), batch_size=BATCH, shuffle=True,
                                     num_workers=THREADS, collate_fn=collate,
                                     persistent_workers=True)
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
