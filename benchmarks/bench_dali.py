"""DALI augmentation pipeline per batch vs a PIL/NumPy baseline of the same augmentations.

Batch of 8 synthetic 640x480 JPEGs -> 512x512, default AugmentConfig (flip, rotation, scale,
translation, hue, noise, shadow, normalize to float32 NCHW). Images/s = 8 / mean time.
The baseline is PIL decode + ``fastload.bench.pil_baseline.pil_numpy_augment`` per image.

    python3 -m pytest benchmarks/bench_dali.py --benchmark-only
"""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from fastload.augment.config import AugmentConfig
from fastload.augment.dali import DaliAugmenter
from fastload.augment.params import sample_params
from fastload.bench.pil_baseline import pil_numpy_augment
from fastload.synth.scenes import encode_jpeg, make_scene
from tests.helpers.env import requires_gpu

BATCH = 8
CFG = AugmentConfig(out_size=(512, 512), shadow_prob=0.5)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    encs = [encode_jpeg(make_scene(rng, 640, 480).image, 90) for _ in range(BATCH)]
    params = [sample_params(CFG, 0, 0, i, 480, 640) for i in range(BATCH)]
    return encs, params


def decode_and_augment(enc, p):
    """The baseline per image: PIL decode, then the one PIL/NumPy augmentation."""
    img = Image.open(io.BytesIO(enc)).convert("RGB")
    return torch.from_numpy(pil_numpy_augment(img, p, CFG))


def test_baseline_pil_numpy(benchmark, batch):
    encs, params = batch
    out = benchmark(lambda: torch.stack([decode_and_augment(e, p) for e, p in zip(encs, params)]))
    assert out.shape == (BATCH, 3, 512, 512)


def test_dali_cpu(benchmark, batch):
    encs, params = batch
    aug = DaliAugmenter(CFG, BATCH, device_id=None, num_threads=2)
    aug.run(encs, params)  # warm up
    out = benchmark(aug.run, encs, params)
    assert out.shape == (BATCH, 3, 512, 512) and out.dtype == torch.float32


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
