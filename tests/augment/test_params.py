"""Parameter sampling: determinism, ranges, matrix composition, flip convention, shadow mask."""
import numpy as np
import pytest

from fastload.augment.config import AugmentConfig
from fastload.augment.params import (SampleParams, batch_matrices, compose_matrix, make_generator,
                                     sample_params, sample_params_batch, shadow_mask)
from fastload.targets.raster import fill_polygon_reference

CFG = AugmentConfig(out_size=(96, 128), hflip_prob=0.5, vflip_prob=0.5, rotate_deg=(-30, 30),
                    scale=(0.7, 1.3), translate=(-0.2, 0.2), hue_deg=(-20, 20),
                    noise_sigma=(1, 9), shadow_prob=0.5, shadow_count=(1, 3),
                    shadow_darkness=(0.3, 0.7))


def test_bit_identical_any_order():
    a = [sample_params(CFG, 42, 3, i, 120, 160) for i in range(50)]
    b = [sample_params(CFG, 42, 3, i, 120, 160) for i in reversed(range(50))][::-1]
    for x, y in zip(a, b):
        assert x == y
        assert x.matrix.tobytes() == y.matrix.tobytes()
    assert sample_params_batch(CFG, 42, 3, list(range(50)), [(120, 160)] * 50) == a


def test_known_values_pinned():
    """The key derivation is part of the contract: pin one draw so a change is noticed."""
    g = make_generator(1, 2, 3)
    st = g.bit_generator.state["state"]
    assert st["key"].tolist() == [1, (2 << 32) | 3]
    u = make_generator(1, 2, 3).random(3)
    v = np.random.Generator(np.random.Philox(key=np.array([1, (2 << 32) | 3], np.uint64))).random(3)
    assert u.tobytes() == v.tobytes()


def test_other_epoch_seed_index_differ():
    p = sample_params(CFG, 1, 0, 5, 120, 160)
    for q in (sample_params(CFG, 1, 1, 5, 120, 160), sample_params(CFG, 2, 0, 5, 120, 160),
              sample_params(CFG, 1, 0, 6, 120, 160)):
        assert not np.array_equal(p.matrix, q.matrix) or p.hue_deg != q.hue_deg
        assert p.noise_seed != q.noise_seed


def test_bad_arguments():
    with pytest.raises(ValueError, match="epoch"):
        sample_params(CFG, 1, -1, 0, 10, 10)
    with pytest.raises(ValueError, match="index"):
        sample_params(CFG, 1, 0, 1 << 32, 10, 10)
    with pytest.raises(ValueError, match="source size"):
        sample_params(CFG, 1, 0, 0, 0, 10)


def test_ranges_and_types():
    ps = [sample_params(CFG, 0, 0, i, 100, 200) for i in range(300)]
    hue = np.array([p.hue_deg for p in ps])
    sig = np.array([p.noise_sigma for p in ps])
    assert hue.min() >= -20 and hue.max() <= 20 and hue.std() > 5
    assert sig.min() >= 1 and sig.max() <= 9
    hf = np.mean([p.hflip for p in ps])
    assert 0.4 < hf < 0.6
    sh = [p for p in ps if p.shadow_polygons]
    assert 0.4 < len(sh) / len(ps) < 0.6
    for p in ps:
        assert p.matrix.dtype == np.float32 and p.matrix.shape == (3, 3)
        assert 0 <= p.noise_seed < 2 ** 64
        if p.shadow_polygons:
            assert 1 <= len(p.shadow_polygons) <= 3 and 0.3 <= p.shadow_darkness <= 0.7
            assert all(q.dtype == np.float32 and q.shape[1] == 2 and 3 <= len(q) <= 6
                       for q in p.shadow_polygons)
        else:
            assert p.shadow_darkness == 1.0
        det = np.linalg.det(p.matrix[:2, :2].astype(np.float64))
        assert (det < 0) == (p.hflip != p.vflip)
    assert batch_matrices(ps[:4]).shape == (4, 2, 3)


def test_off_is_plain_fit():
    cfg = AugmentConfig.off(out_size=(128, 128))
    p = sample_params(cfg, 9, 9, 9, 120, 160)
    np.testing.assert_allclose(p.matrix, [[0.8, 0, 0], [0, 0.8, 16], [0, 0, 1]], atol=1e-6)
    assert not p.hflip and p.hue_deg == 0 and p.noise_sigma == 0 and p.shadow_polygons == []
    cfg = AugmentConfig.off(out_size=(128, 128), keep_aspect=False)
    p = sample_params(cfg, 9, 9, 9, 120, 160)
    np.testing.assert_allclose(p.matrix, [[0.8, 0, 0], [0, 128 / 120, 0], [0, 0, 1]], atol=1e-6)


def test_flip_convention_and_composition():
    m = compose_matrix(50, 80, 50, 80, keep_aspect=True, hflip=True)
    np.testing.assert_allclose(m, [[-1, 0, 80], [0, 1, 0], [0, 0, 1]])
    m = compose_matrix(50, 80, 50, 80, vflip=True)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, -1, 50], [0, 0, 1]])
    # rotation about the output center keeps the center; +90 deg: right of center -> above it
    m = compose_matrix(100, 100, 100, 100, rotate_deg=90).astype(np.float64)
    np.testing.assert_allclose(m @ [50, 50, 1], [50, 50, 1], atol=1e-4)
    np.testing.assert_allclose(m @ [60, 50, 1], [50, 40, 1], atol=1e-4)
    # scale about the center, translation as a fraction of the output size
    m = compose_matrix(100, 100, 100, 200, keep_aspect=False, scale=2.0, translate=(0.1, -0.2))
    np.testing.assert_allclose(m.astype(np.float64) @ [50, 50, 1], [100 + 20, 50 - 20, 1],
                               atol=1e-4)
    np.testing.assert_allclose(m.astype(np.float64) @ [60, 50, 1], [100 + 20 + 40, 30, 1],
                               atol=1e-4)


def test_shadow_mask_matches_reference():
    cfg = AugmentConfig(out_size=(48, 64), shadow_prob=1.0, shadow_count=(2, 3))
    for i in range(10):
        p = sample_params(cfg, 0, 0, i, 48, 64)
        m = shadow_mask(p, 48, 64)
        ref = np.zeros((48, 64), np.uint8)
        for poly in p.shadow_polygons:
            fill_polygon_reference(ref, poly, 1)
        np.testing.assert_array_equal(m, ref)
        assert m.dtype == np.uint8 and 0 < m.mean() < 1
    none = SampleParams(np.eye(3, dtype=np.float32), hflip=False, vflip=False, hue_deg=0.0,
                        noise_sigma=0.0, noise_seed=0)
    assert shadow_mask(none, 10, 12).sum() == 0


# --------------------------------------------------------------- the legacy draw layout
def _legacy_sample_params(cfg, seed, epoch, index, src_h, src_w):
    """fastload 0.1's sampler, written out flat (the layout the op table must keep)."""
    import math

    def lerp(rng, u):
        lo, hi = float(rng[0]), float(rng[1])
        return lo + (hi - lo) * u if hi > lo else lo

    out_h, out_w = cfg.out_size
    gen = make_generator(seed, epoch, index)
    u = gen.random(10).tolist()
    noise_seed = int(gen.integers(0, 1 << 64, dtype=np.uint64, endpoint=False))
    hflip, vflip = u[0] < cfg.hflip_prob, u[1] < cfg.vflip_prob
    rot, scl = lerp(cfg.rotate_deg, u[2]), lerp(cfg.scale, u[3])
    tx, ty = lerp(cfg.translate, u[4]), lerp(cfg.translate, u[5])
    if cfg.keep_aspect:
        s = min(out_w / src_w, out_h / src_h)
        m = np.array([[s, 0.0, (out_w - s * src_w) / 2.0], [0.0, s, (out_h - s * src_h) / 2.0],
                      [0.0, 0.0, 1.0]])
    else:
        m = np.array([[out_w / src_w, 0.0, 0.0], [0.0, out_h / src_h, 0.0], [0.0, 0.0, 1.0]])
    if hflip:
        m = np.array([[-1.0, 0.0, out_w], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    if vflip:
        m = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, out_h], [0.0, 0.0, 1.0]]) @ m
    cx, cy = out_w / 2.0, out_h / 2.0
    c, s = math.cos(math.radians(rot)) * scl, math.sin(math.radians(rot)) * scl
    a = np.array([[c, s, cx + tx * out_w - (c * cx + s * cy)],
                  [-s, c, cy + ty * out_h - (-s * cx + c * cy)], [0.0, 0.0, 1.0]])
    polys, dark = [], 1.0
    if u[8] < cfg.shadow_prob:
        lo, hi = cfg.shadow_count
        k = int(gen.integers(lo, hi + 1)) if hi > lo else lo
        for _ in range(k):
            n = int(gen.integers(3, 7))
            px, py = gen.random(2) * np.array([out_w, out_h], np.float64)
            r = min(out_h, out_w) * (0.15 + 0.30 * gen.random())
            ang = np.sort(gen.random(n)) * (2.0 * np.pi)
            rad = r * (0.5 + 0.5 * gen.random(n))
            polys.append(np.stack([px + rad * np.cos(ang), py + rad * np.sin(ang)], 1)
                         .astype(np.float32))
        if polys:
            dark = lerp(cfg.shadow_darkness, u[9])
    return dict(matrix=(a @ m).astype(np.float32), hflip=hflip, vflip=vflip,
                hue_deg=lerp(cfg.hue_deg, u[6]), noise_sigma=lerp(cfg.noise_sigma, u[7]),
                noise_seed=noise_seed, shadow_polygons=polys, shadow_darkness=dark)


@pytest.mark.parametrize("extra", [{}, dict(brightness=0.3, contrast=(-0.4, 0.2))])
def test_draws_bit_identical_to_the_legacy_layout(extra):
    """The four original ops draw exactly what fastload 0.1 drew, with or without ops that
    came later (they have their own streams)."""
    cfgs = [CFG, AugmentConfig(), AugmentConfig.off(out_size=(40, 70), keep_aspect=False),
            AugmentConfig(out_size=(33, 65), shadow_prob=1.0, shadow_count=(0, 4),
                          rotate_deg=(-180, 180), vflip_prob=0.5)]
    for cfg in cfgs:
        cfg = AugmentConfig(**{**cfg.to_dict(), **extra})
        for i in range(40):
            got = sample_params(cfg, 2024, i % 3, i, 90 + i, 160 - i)
            want = _legacy_sample_params(cfg, 2024, i % 3, i, 90 + i, 160 - i)
            assert got.matrix.tobytes() == want["matrix"].tobytes()
            for k, v in want.items():
                if k == "shadow_polygons":
                    assert len(got.shadow_polygons) == len(v)
                    assert all(a.tobytes() == b.tobytes() for a, b in zip(got.shadow_polygons, v))
                elif k != "matrix":
                    assert getattr(got, k) == v and type(getattr(got, k)) is type(v), k
