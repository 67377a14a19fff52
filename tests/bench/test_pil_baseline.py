"""The one PIL/NumPy baseline (``fastload.bench.pil_baseline.pil_numpy_augment``) against fastload's
slow reference (``fastload.augment.cpu.augment_image_reference``): same geometry (no
half-pixel shift), same hue (sign and matrix), same shadow and normalize; noise aside
(the baseline draws NumPy normals, fastload its counter-based ones)."""
import colorsys

import numpy as np
import pytest

from fastload.augment.config import AugmentConfig
from fastload.augment.cpu import augment_image_reference
from fastload.augment.params import SampleParams, compose_matrix, sample_params
from fastload.bench.pil_baseline import pil_numpy_augment
from fastload.synth.scenes import make_scene

SRC_H, SRC_W = 120, 160
OUT_H, OUT_W = 96, 128


def _params(matrix, hue=0.0, sigma=0.0, noise_seed=0, shadows=(), darkness=1.0):
    return SampleParams(matrix=np.asarray(matrix, np.float32), hflip=False, vflip=False,
                        hue_deg=float(hue), noise_sigma=float(sigma), noise_seed=noise_seed,
                        shadow_polygons=list(shadows), shadow_darkness=float(darkness))


def _rectangle_image():
    img = np.zeros((SRC_H, SRC_W, 3), np.uint8)
    img[30:70, 50:110] = 255
    return img


def _interior(matrix, src_h, src_w, out_h, out_w, margin=1.0):
    """Output pixels whose center maps at least ``margin`` px inside the source frame (where
    PIL's edge rule, clamping taps to the image, and the reference's, padding them, agree)."""
    minv = np.linalg.inv(np.asarray(matrix, np.float64))
    ii, jj = np.mgrid[0:out_h, 0:out_w] + 0.5
    x = minv[0, 0] * jj + minv[0, 1] * ii + minv[0, 2]
    y = minv[1, 0] * jj + minv[1, 1] * ii + minv[1, 2]
    return (x >= margin) & (x <= src_w - margin) & (y >= margin) & (y <= src_h - margin)


GEOMETRIES = {
    "fit": dict(),
    "hflip": dict(hflip=True),
    "vflip-rotate": dict(vflip=True, rotate_deg=17.0),
    "hflip-rotate-scale-translate": dict(hflip=True, rotate_deg=-23.0, scale=1.3,
                                         translate=(0.07, -0.05)),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_geometry_matches_reference(name):
    """A white rectangle lands on the same pixels, and every interior pixel agrees within one
    level (rounding): PIL's AFFINE maps output pixel centers, in continuous coordinates."""
    img = _rectangle_image()
    m = compose_matrix(SRC_H, SRC_W, OUT_H, OUT_W, True, **GEOMETRIES[name])
    cfg = AugmentConfig.off(out_size=(OUT_H, OUT_W), dtype="uint8")
    base = pil_numpy_augment(img, _params(m), cfg).astype(np.int32)
    ref = augment_image_reference(img, _params(m), cfg).astype(np.int32)
    assert base.shape == ref.shape == (3, OUT_H, OUT_W)
    inside = _interior(m, SRC_H, SRC_W, OUT_H, OUT_W)
    assert inside.mean() > 0.3
    diff = np.abs(base - ref)[:, inside]
    assert diff.max() <= 1, (name, diff.max())
    white_b, white_r = base[0] > 127, ref[0] > 127
    assert white_r.sum() > 100
    for axis in (0, 1):
        span_b = np.flatnonzero(white_b.any(axis))
        span_r = np.flatnonzero(white_r.any(axis))
        assert abs(span_b[0] - span_r[0]) <= 1 and abs(span_b[-1] - span_r[-1]) <= 1
    cb = np.argwhere(white_b).mean(0)
    cr = np.argwhere(white_r).mean(0)
    np.testing.assert_allclose(cb, cr, atol=0.1)


def test_half_pixel_shift_would_be_caught():
    """The check above has teeth: the 'pixel-center correction' two old benchmark baselines
    applied to PIL's coefficients moves the rectangle's edges by tens of levels."""
    from PIL import Image
    img = _rectangle_image()
    m = compose_matrix(SRC_H, SRC_W, OUT_H, OUT_W, True, rotate_deg=10.0)
    cfg = AugmentConfig.off(out_size=(OUT_H, OUT_W), dtype="uint8")
    ref = augment_image_reference(img, _params(m), cfg)[0].astype(np.int32)
    inv = np.linalg.inv(m.astype(np.float64))
    shifted = inv[:2] @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    shifted[:, 2] -= 0.5
    out = Image.fromarray(img).transform((OUT_W, OUT_H), Image.AFFINE, tuple(shifted.ravel()),
                                         Image.BILINEAR)
    wrong = np.asarray(out, np.int32)[..., 0]
    inside = _interior(m, SRC_H, SRC_W, OUT_H, OUT_W)
    assert np.abs(wrong - ref)[inside].max() > 40


def _color_chart():
    """Saturated and muted colours, and grays, in 8x8 blocks (48x48)."""
    cols = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 200, 30), (30, 200, 220),
            (200, 30, 220), (128, 128, 128), (250, 250, 250), (10, 10, 10), (180, 120, 60),
            (60, 120, 180), (120, 180, 60), (255, 0, 0), (0, 255, 0), (0, 0, 255), (90, 60, 30)]
    img = np.zeros((48, 48, 3), np.uint8)
    for k, c in enumerate(cols * 3):
        img[(k // 6) * 8:(k // 6) * 8 + 8, (k % 6) * 8:(k % 6) * 8 + 8] = c
    return img


@pytest.mark.parametrize("hue", [30.0, -30.0, 12.5])
def test_hue_matches_reference(hue):
    img = _color_chart()
    ident = compose_matrix(48, 48, 48, 48, True)
    cfg = AugmentConfig.off(out_size=(48, 48))
    base = pil_numpy_augment(img, _params(ident, hue=hue), cfg)
    ref = augment_image_reference(img, _params(ident, hue=hue), cfg)
    std = np.asarray(cfg.std, np.float32)[:, None, None]
    assert np.abs(base - ref).max() * std.max() < 0.01  # 0..255 levels
    flipped = augment_image_reference(img, _params(ident, hue=-hue), cfg)
    assert np.abs(base - flipped).max() * std.min() > 20  # a flipped sign would be caught


def test_hue_sign_raises_hsv_hue():
    """DALI's convention (``hue_matrix``): a positive hue_deg raises the HSV hue (red turns
    orange); a negative one turns it toward magenta."""
    img = np.full((8, 8, 3), (200, 40, 40), np.uint8)
    ident = compose_matrix(8, 8, 8, 8, True)
    cfg = AugmentConfig.off(out_size=(8, 8), dtype="uint8")
    for hue, lo, hi in ((30.0, 10.0, 50.0), (-30.0, 310.0, 350.0)):
        r, g, b = pil_numpy_augment(img, _params(ident, hue=hue), cfg)[:, 4, 4] / 255.0
        h = colorsys.rgb_to_hsv(r, g, b)[0] * 360
        assert lo < h < hi, (hue, h)


def test_full_pipeline_matches_reference_without_noise():
    """Every augmentation but noise, with fastload's own parameter draws on a real scene:
    the two agree but for PIL's frame-edge and polygon-edge rules and its bilinear result,
    truncated to uint8 (0.5 level darker on average than the reference's exact value)."""
    scene = make_scene(np.random.default_rng(3), width=320, height=240)
    cfg = AugmentConfig(out_size=(192, 256), noise_sigma=(0.0, 0.0), shadow_prob=1.0,
                        hue_deg=(-30.0, 30.0), rotate_deg=(-20.0, 20.0))
    std = np.asarray(cfg.std, np.float32)[:, None, None]
    for index in range(4):
        p = sample_params(cfg, 11, 0, index, 240, 320)
        assert p.shadow_polygons and p.hue_deg != 0.0
        base = pil_numpy_augment(scene.image, p, cfg)
        ref = augment_image_reference(scene.image, p, cfg)
        assert base.dtype == np.float32 and base.shape == ref.shape == (3, 192, 256)
        d = np.abs(base - ref) * std
        assert d.mean() < 1.0, (index, d.mean())
        assert (d > 3).mean() < 0.03, (index, (d > 3).mean())


def test_noise_is_gaussian_with_the_sampled_sigma():
    img = np.full((64, 64, 3), 128, np.uint8)
    ident = compose_matrix(64, 64, 64, 64, True)
    cfg = AugmentConfig.off(out_size=(64, 64))
    clean = pil_numpy_augment(img, _params(ident), cfg)
    noisy = pil_numpy_augment(img, _params(ident, sigma=6.0, noise_seed=99), cfg)
    z = (noisy - clean) * np.asarray(cfg.std, np.float32)[:, None, None]
    assert abs(z.mean()) < 0.2 and abs(z.std() - 6.0) < 0.3
    again = pil_numpy_augment(img, _params(ident, sigma=6.0, noise_seed=99), cfg)
    assert np.array_equal(noisy, again)  # the noise seed decides it


def test_output_dtypes():
    img = _rectangle_image()
    m = compose_matrix(SRC_H, SRC_W, 32, 32, True)
    u8 = pil_numpy_augment(img, _params(m), AugmentConfig.off(out_size=(32, 32), dtype="uint8"))
    f32 = pil_numpy_augment(img, _params(m), AugmentConfig.off(out_size=(32, 32)))
    assert u8.dtype == np.uint8 and f32.dtype == np.float32
    assert u8.flags.c_contiguous and f32.flags.c_contiguous
    from PIL import Image
    from_pil = pil_numpy_augment(Image.fromarray(img), _params(m),
                                 AugmentConfig.off(out_size=(32, 32)))
    assert np.array_equal(from_pil, f32)
