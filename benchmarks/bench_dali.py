"""DALI augmentation pipeline per batch vs a PIL/NumPy baseline of the same augmentations.

Batch of 8 synthetic 640x480 JPEGs -> 512x512, default AugmentConfig (flip, rotation, scale,
translation, hue, noise, shadow, normalize to float32 NCHW). Images/s = 8 / mean time.

    python3 -m pytest benchmarks/bench_dali.py --benchmark-only
"""
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from fastload.augment.config import AugmentConfig
from fastload.augment.dali import DaliAugmenter
from fastload.augment.params import sample_params
from tests.conftest import requires_gpu
from fastload.synth.scenes import encode_jpeg, make_scene

BATCH = 8
CFG = AugmentConfig(out_size=(512, 512), shadow_prob=0.5)
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
_RGB = np.linalg.inv(_YIQ)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    encs = [encode_jpeg(make_scene(rng, 640, 480).image, 90) for _ in range(BATCH)]
    params = [sample_params(CFG, 0, 0, i, 480, 640) for i in range(BATCH)]
    return encs, params


def pil_numpy_augment(enc, p, cfg=CFG):
    """Baseline: the same augmentation the way a torch Dataset would do it in PIL/NumPy."""
    h, w = cfg.out_size
    img = Image.open(io.BytesIO(enc)).convert("RGB")
    inv = np.linalg.inv(p.matrix.astype(np.float64))
    # PIL samples at inv @ (x, y) for integer output (x, y); shift for pixel centers
    c = inv[:2] @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    c[:, 2] -= 0.5
    fill = (int(cfg.pad_value),) * 3
    img = img.transform((w, h), Image.AFFINE, data=tuple(c.ravel()), resample=Image.BILINEAR,
                        fillcolor=fill)
    a = np.asarray(img, np.float32)
    if p.hue_deg:
        th = np.radians(p.hue_deg)
        rot = np.array([[1, 0, 0], [0, np.cos(th), np.sin(th)], [0, -np.sin(th), np.cos(th)]])
        a = np.clip(a @ (_RGB @ rot @ _YIQ).T.astype(np.float32), 0, 255).round()
    if p.shadow_polygons:
        m = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(m)
        for poly in p.shadow_polygons:
            d.polygon([tuple(v) for v in poly.tolist()], fill=1)
        k = 1 - np.asarray(m, np.float32)[..., None] * (1 - p.shadow_darkness)
        a = (a * k).round()
    if p.noise_sigma:
        g = np.random.default_rng(p.noise_seed)
        a = np.clip(a + g.normal(0, p.noise_sigma, a.shape).astype(np.float32), 0, 255).round()
    a = (a - np.array(cfg.mean, np.float32)) / np.array(cfg.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def test_baseline_pil_numpy(benchmark, batch):
    encs, params = batch
    out = benchmark(lambda: torch.stack([pil_numpy_augment(e, p) for e, p in zip(encs, params)]))
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
