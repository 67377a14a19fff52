"""Per-image augmentation cost on the CPU: 640x480 RGB -> 512x512, warp (flip + rotation +
scale + translation, letterbox) + hue + shadow + gaussian noise + normalize to float32 CHW.

- fused: fastload's one-pass Numba kernel (fastload.augment.cpu.augment_image);
- dali_cpu: DALI 2.4 CPU operators warp_affine + hue + noise.gaussian (batch 1, 1 thread;
  no shadow, no normalize: the chain measured in DESIGN.md's performance rules);
- pil_numpy: the baseline a torch Dataset would do, ``fastload.bench.pil_baseline.pil_numpy_augment``
  (PIL affine, NumPy hue / shadow / noise / normalize; the one baseline of every benchmark);
- batch of 8 through CpuAugmenter with 1 and 2 threads (GIL release / scaling), and
  decode + augment for the whole per-image CPU path.

Run: python3 -m pytest benchmarks/bench_cpu_backend.py --benchmark-only
Goal: fused at least 5x faster than dali_cpu.
"""
import numpy as np
import pytest

from fastload.augment.config import AugmentConfig
from fastload.augment.cpu import CpuAugmenter, augment_image
from fastload.dtypes import output_numpy_dtype
from fastload.augment.params import sample_params
from fastload.bench.pil_baseline import pil_numpy_augment
from fastload.synth.scenes import encode_jpeg, make_scene

CFG = AugmentConfig(out_size=(512, 512), hflip_prob=0.5, rotate_deg=(-15.0, 15.0),
                    scale=(0.8, 1.2), translate=(-0.1, 0.1), hue_deg=(10.0, 18.0),
                    noise_sigma=(4.0, 8.0), shadow_prob=1.0, shadow_count=(1, 2),
                    shadow_darkness=(0.5, 0.8), dtype="float32")
IMG = make_scene(np.random.default_rng(0), width=640, height=480).image
JPEG = encode_jpeg(IMG)
P = sample_params(CFG, seed=0, epoch=0, index=1, src_h=480, src_w=640)


def test_fused_kernel(benchmark):
    out = np.empty((3, 512, 512), np.float32)
    mask = np.empty((512, 512), np.uint8)
    benchmark(augment_image, IMG, P, CFG, out, mask)
    assert np.isfinite(out).all()


def test_fused_kernel_float16(benchmark):
    cfg = AugmentConfig(**{**CFG.to_dict(), "dtype": "float16"})
    out = np.empty((3, 512, 512), output_numpy_dtype("float16"))
    mask = np.empty((512, 512), np.uint8)
    benchmark(augment_image, IMG, P, cfg, out, mask)


def test_dali_cpu_warp_hue_noise(benchmark):
    from nvidia.dali import fn, pipeline_def, types
    m = P.matrix[:2].reshape(-1).tolist()

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1, seed=1)
    def pipe():
        x = fn.external_source(source=lambda: [IMG], batch=True, layout="HWC", dtype=types.UINT8)
        x = fn.warp_affine(x, matrix=m, size=[512, 512], inverse_map=False,
                           fill_value=float(CFG.pad_value), interp_type=types.INTERP_LINEAR)
        x = fn.hue(x, hue=float(P.hue_deg))
        return fn.noise.gaussian(x, stddev=float(P.noise_sigma))

    p = pipe()
    p.build()
    out = benchmark(lambda: np.asarray(p.run()[0][0]))
    assert out.shape == (512, 512, 3)


def test_pil_numpy_baseline(benchmark):
    out = benchmark(pil_numpy_augment, IMG, P, CFG)
    assert out.shape == (3, 512, 512)


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_augmenter_batch8_decode_and_augment(benchmark, threads):
    params = [sample_params(CFG, 0, 0, i, 480, 640) for i in range(8)]
    out = np.empty((8, 3, 512, 512), np.float32)
    with CpuAugmenter(CFG, num_threads=threads) as aug:
        benchmark(aug.run, [JPEG] * 8, params, out)
