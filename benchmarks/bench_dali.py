"""DALI augmentation pipeline per batch vs a PIL/NumPy baseline of the same augmentations.

Batch of 8 synthetic 640x480 JPEGs -> 512x512, default AugmentConfig (flip, rotation, scale,
translation, hue, noise, shadow, normalize to float32 NCHW). Images/s = 8 / mean time.
The baseline is PIL decode + ``fastload.bench.pil_baseline.pil_numpy_augment`` per image.

- ``test_dali_cpu`` / ``test_dali_gpu``: one batch at a time (``run``: submit + fetch).
- ``test_dali_*_prefetch``: the steady state of the loader's DALI backend: batch k + 1
  submitted before batch k is fetched (prefetch depth 2), a batch per round.
- ``test_dali_gpu_jpeg_decoder[hw]``: decode-heavy batches (32 JPEGs of 1280x960 -> 512x512)
  with ``hw_decoder_load`` = DALI's default / 0 (no hardware JPEG decoder) / 1 (all on it);
  the GPU machine's H100 has NVJPG engines.
- ``test_noise_field_*``: the per-sample noise field of a batch (Numba on the CPU, torch on
  the GPU), fed to the graph.

    python3 -m pytest benchmarks/bench_dali.py --benchmark-only
"""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from fastload.augment.config import AugmentConfig
from fastload.augment.dali import DaliAugmenter
from fastload.augment.noise import noise_field
from fastload.augment.params import sample_params
from fastload.bench.pil_baseline import pil_numpy_augment
from fastload.synth.scenes import encode_jpeg, make_scene
from tests.helpers.env import requires_gpu

BATCH = 8
CFG = AugmentConfig(out_size=(512, 512), shadow_prob=0.5)


def _batch(n, width, height, seed=0):
    rng = np.random.default_rng(seed)
    encs = [encode_jpeg(make_scene(rng, width, height).image, 90) for _ in range(n)]
    params = [sample_params(CFG, 0, 0, i, height, width) for i in range(n)]
    return encs, params


@pytest.fixture(scope="module")
def batch():
    return _batch(BATCH, 640, 480)


def decode_and_augment(enc, p):
    """The baseline per image: PIL decode, then the one PIL/NumPy augmentation."""
    img = Image.open(io.BytesIO(enc)).convert("RGB")
    return torch.from_numpy(pil_numpy_augment(img, p, CFG))


def test_baseline_pil_numpy(benchmark, batch):
    encs, params = batch
    out = benchmark(lambda: torch.stack([decode_and_augment(e, p) for e, p in zip(encs, params)]))
    assert out.shape == (BATCH, 3, 512, 512)


def _steady(aug, encs, params, sync=None):
    """One round of the prefetching loop: submit the next batch, fetch the oldest."""
    inflight = [aug.submit(encs, params)]

    def step():
        inflight.append(aug.submit(encs, params))
        out = aug.fetch(inflight.pop(0))
        if sync is not None:
            sync()
        return out
    return step


def test_dali_cpu(benchmark, batch):
    encs, params = batch
    aug = DaliAugmenter(CFG, BATCH, device_id=None, num_threads=2)
    aug.run(encs, params)  # warm up
    out = benchmark(aug.run, encs, params)
    assert out.shape == (BATCH, 3, 512, 512) and out.dtype == torch.float32


def test_dali_cpu_prefetch(benchmark, batch):
    encs, params = batch
    aug = DaliAugmenter(CFG, BATCH, device_id=None, num_threads=2, prefetch_queue_depth=2)
    step = _steady(aug, encs, params)
    step()
    out = benchmark(step)
    assert out.shape == (BATCH, 3, 512, 512)


def test_noise_field_cpu(benchmark, batch):
    _, params = batch
    out = benchmark(noise_field, [p.noise_seed for p in params], [p.noise_sigma for p in params],
                    512, 512)
    assert out.shape == (BATCH, 512, 512, 3)


@requires_gpu
def test_dali_gpu(benchmark, batch):
    encs, params = batch
    aug = DaliAugmenter(CFG, BATCH, device_id=0, num_threads=2)
    aug.run(encs, params)

    def step():
        out = aug.run(encs, params)
        torch.cuda.synchronize()
        return out

    out = benchmark(step)
    assert out.shape == (BATCH, 3, 512, 512) and out.is_cuda


@requires_gpu
def test_dali_gpu_prefetch(benchmark, batch):
    encs, params = batch
    aug = DaliAugmenter(CFG, BATCH, device_id=0, num_threads=2, prefetch_queue_depth=2)
    step = _steady(aug, encs, params, sync=torch.cuda.synchronize)
    step()
    out = benchmark(step)
    assert out.shape == (BATCH, 3, 512, 512) and out.is_cuda


@requires_gpu
@pytest.mark.parametrize("hw", [None, 0.0, 1.0], ids=["default", "hw0", "hw1"])
def test_dali_gpu_jpeg_decoder(benchmark, hw):
    encs, params = _batch(32, 1280, 960, seed=1)
    aug = DaliAugmenter(CFG, 32, device_id=0, num_threads=4, hw_decoder_load=hw)
    step = _steady(aug, encs, params, sync=torch.cuda.synchronize)
    step()
    out = benchmark(step)
    assert out.shape == (32, 3, 512, 512)


@requires_gpu
def test_noise_field_gpu(benchmark):
    params = [sample_params(CFG, 0, 0, i, 480, 640) for i in range(48)]
    dev = torch.device("cuda", 0)

    def step():
        out = noise_field([p.noise_seed for p in params], [p.noise_sigma for p in params],
                          512, 512, device=dev)
        torch.cuda.synchronize()
        return out
    out = benchmark(step)
    assert out.shape == (48, 512, 512, 3) and out.is_cuda
