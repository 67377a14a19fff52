"""brightness_contrast, the op added the way docs/extending.md describes: its config, its
draws (own stream), the fused CPU kernel vs its NumPy reference, and DALI's CPU operators."""
import numpy as np
import pytest

from fastload.augment.config import AugmentConfig
from fastload.augment.cpu import augment_image, augment_image_reference
from fastload.augment.params import SampleParams, sample_params
from fastload.dtypes import output_numpy_dtype
from fastload.synth.scenes import encode_png, make_scene

BC = dict(brightness=(-0.2, 0.3), contrast=(-0.4, 0.5))


def _identity(h, w, **values):
    return SampleParams(np.eye(3, dtype=np.float32), **values)


def test_config_default_off_and_shorthand():
    cfg = AugmentConfig()
    assert cfg.brightness == (0.0, 0.0) and cfg.contrast == (0.0, 0.0)
    cfg = AugmentConfig(brightness=0.2, contrast=0.3)
    assert cfg.brightness == (-0.2, 0.2) and cfg.contrast == (-0.3, 0.3)
    with pytest.raises(ValueError, match=r"AugmentConfig\.contrast"):
        AugmentConfig(contrast=(-1.5, 0.0))  # alpha = 1 + contrast must stay >= 0


def test_draws_in_range_and_other_ops_unchanged():
    base = AugmentConfig(out_size=(64, 64), shadow_prob=0.5)
    cfg = AugmentConfig(**{**base.to_dict(), **BC})
    ps = [sample_params(cfg, 7, 1, i, 80, 90) for i in range(300)]
    b = np.array([p.brightness for p in ps])
    c = np.array([p.contrast for p in ps])
    assert b.min() >= -0.2 and b.max() <= 0.3 and b.std() > 0.1
    assert c.min() >= -0.4 and c.max() <= 0.5 and c.std() > 0.1
    assert abs(np.corrcoef(b, c)[0, 1]) < 0.15
    for i, p in enumerate(ps[:50]):  # enabling it changes no other op's draws
        q = sample_params(base, 7, 1, i, 80, 90)
        assert (q.brightness, q.contrast) == (0.0, 0.0)
        assert p == SampleParams(q.matrix, **{**q.values_of("affine"), **q.values_of("hue"),
                                             **q.values_of("shadow"), **q.values_of("noise"),
                                             **p.values_of("brightness_contrast")})
    # and its own draws do not depend on the other ops' settings
    other = AugmentConfig(**{**cfg.to_dict(), "hue_deg": (0, 0), "shadow_prob": 1.0,
                             "noise_sigma": (0, 0), "rotate_deg": 90})
    for i in range(20):
        assert sample_params(other, 7, 1, i, 80, 90).values_of("brightness_contrast") == \
            ps[i].values_of("brightness_contrast")


def test_formula_on_a_flat_image():
    cfg = AugmentConfig.off(out_size=(8, 8), keep_aspect=False, dtype="float32", **BC)
    img = np.full((8, 8, 3), 100, np.uint8)
    img[..., 1] = 250
    p = _identity(8, 8, brightness=0.1, contrast=0.5)
    out = augment_image(img, p, cfg, np.empty((3, 8, 8), np.float32))
    levels = out * np.asarray(cfg.std)[:, None, None] + np.asarray(cfg.mean)[:, None, None]
    np.testing.assert_allclose(levels[0], 100 * 1.5 + 25.5, atol=1e-3)
    np.testing.assert_allclose(levels[1], 255.0, atol=1e-3)  # 400.5, clamped


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_fused_kernel_matches_reference(dtype):
    rng = np.random.default_rng(11)
    # brightness/contrast alone on an identity warp: the same float64 arithmetic, so uint8 is
    # exact; float32 differs only by the normalization (float32 v * (1/std) + (-mean/std) in
    # the kernel, float64 (v - mean) / std in the reference): a few ulp
    cfg = AugmentConfig.off(out_size=(40, 56), keep_aspect=False, dtype=dtype, **BC)
    img = make_scene(rng, width=56, height=40, n_instances=4).image
    for i in range(4):
        p = sample_params(cfg, 3, 0, i, 40, 56)
        assert p.contrast != 0.0
        a = augment_image(img, p, cfg, np.empty((3, 40, 56), output_numpy_dtype(dtype)))
        b = augment_image_reference(img, p, cfg)
        if dtype == "uint8":
            np.testing.assert_array_equal(a, b)
        else:
            assert np.abs(a - b).max() < 1e-6
    # with every other op on: the tolerance of tests/augment/test_cpu.py
    cfg = AugmentConfig(out_size=(48, 64), dtype=dtype, rotate_deg=40, hue_deg=30,
                        noise_sigma=(1, 6), shadow_prob=1.0, **BC)
    for i in range(3):
        img = make_scene(rng, width=90, height=70, n_instances=4).image
        p = sample_params(cfg, 3, 1, i, 70, 90)
        a = augment_image(img, p, cfg, np.empty((3, 48, 64), output_numpy_dtype(dtype)))
        b = augment_image_reference(img, p, cfg)
        d = np.abs(a.astype(np.float64) - b)
        if dtype == "uint8":
            assert d.max() <= 1 and np.mean(d > 0) < 1e-3
        else:
            assert d.max() < 1e-4


def test_dali_cpu_operators_agree():
    """DALI's fn.brightness_contrast (CPU operators) against the fused kernel: float32 math
    rounded to uint8 there, float64 here: at most 1 level apart."""
    pytest.importorskip("nvidia.dali")
    from fastload.augment.cpu import CpuAugmenter
    from fastload.augment.dali import DaliAugmenter
    cfg = AugmentConfig.off(out_size=(48, 64), keep_aspect=False, dtype="uint8", **BC)
    rng = np.random.default_rng(5)
    imgs = [make_scene(rng, width=64, height=48, n_instances=4).image for _ in range(4)]
    imgs[0][:8] = rng.integers(0, 256, (8, 64, 3), dtype=np.uint8)  # every level
    params = [sample_params(cfg, 2, 0, i, 48, 64) for i in range(4)]
    encs = [encode_png(im) for im in imgs]
    dali = DaliAugmenter(cfg, 4).run(encs, params).numpy().astype(np.int32)
    with CpuAugmenter(cfg, num_threads=1) as cpu:
        fused = cpu.run(imgs, params).astype(np.int32)
    ref = np.stack([augment_image_reference(im, p, cfg) for im, p in zip(imgs, params)])
    np.testing.assert_array_equal(fused, ref)
    d = np.abs(dali - fused)
    assert d.max() <= 1 and d.mean() < 0.02, (d.max(), d.mean())
    assert (fused != imgs[0].transpose(2, 0, 1)[None]).mean() > 0.5  # it did change the images
    # in the full graph with the other ops (geometry, hue, shadow; noise differs by design)
    full = AugmentConfig(out_size=(48, 64), dtype="uint8", hue_deg=20, shadow_prob=1.0,
                         noise_sigma=(0, 0), **BC)
    params = [sample_params(full, 2, 0, i, 48, 64) for i in range(4)]
    dali = DaliAugmenter(full, 4).run(encs, params).numpy().astype(np.int32)
    with CpuAugmenter(full, num_threads=1) as cpu:
        fused = cpu.run(imgs, params).astype(np.int32)
    d = np.abs(dali - fused)
    assert np.mean(d > 2) < 0.01 and d.mean() < 0.5, (np.mean(d > 2), d.mean())


def test_extending_md_shows_the_real_module():
    from pathlib import Path
    root = Path(__file__).parents[2]
    doc = (root / "docs" / "extending.md").read_text()
    module = (root / "fastload" / "augment" / "ops" / "brightness_contrast.py").read_text()
    assert "```python\n" + module + "```" in doc
