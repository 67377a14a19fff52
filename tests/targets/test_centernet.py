import numpy as np
import pytest

from fastload.targets import (alloc_centernet, centernet_into, centernet_targets,
                              gaussian_radius)
from fastload.targets.reference import centernet_numpy, centernet_python, gaussian_radius_reference

KEYS = ("hm", "wh", "reg", "ind", "reg_mask")


from tests.helpers.compare import assert_same


def random_boxes(rng, K, H, W):
    kind = rng.integers(0, 4, K)
    xy = rng.uniform(-0.3, 1.1, (K, 2)) * [W, H]
    wh = np.where(kind[:, None] == 0, rng.uniform(0, 1.5, (K, 2)),            # tiny
                  np.where(kind[:, None] == 1, rng.uniform(0.5, 3, (K, 2)) * [W, H],  # huge
                           rng.exponential(0.15, (K, 2)) * [W, H]))
    b = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    if K > 2:
        b[0] = [0, 0, W, H]             # whole map
        b[1] = [W - 1, H - 1, W + 5, H + 5]  # past the corner
        b[2, 2] = b[2, 0]               # zero width: skipped
    return b


def test_radius_checks():
    assert int(gaussian_radius(10, 10)) == 2
    assert int(gaussian_radius(32, 32)) == 8
    assert int(gaussian_radius(10, 10, mode="corrected")) == 0
    assert int(gaussian_radius(32, 32, mode="corrected")) == 2
    rng = np.random.default_rng(0)
    for h, w in rng.integers(1, 300, (200, 2)):
        for mode in ("centernet", "corrected"):
            assert gaussian_radius(h, w, mode=mode) == gaussian_radius_reference((h, w), mode=mode)


@pytest.mark.parametrize("coords", ["continuous", "centernet"])
@pytest.mark.parametrize("radius", ["centernet", "corrected"])
def test_matches_references(coords, radius):
    rng = np.random.default_rng(1)
    for t in range(40):
        K = int(rng.integers(0, 25))
        C = int(rng.integers(1, 4))
        H, W = (int(v) for v in rng.integers(3, 40, 2))
        b = random_boxes(rng, K, H, W)
        lab = rng.integers(0, C, K)
        M = int(rng.integers(1, 20))     # often fewer slots than objects
        kw = dict(max_objs=M, radius=radius, coords=coords)
        got = centernet_targets(b, lab, C, H, W, **kw)
        assert_same(got, centernet_numpy(b, lab, C, H, W, **kw))
        if t % 4 == 0:
            assert_same(got, centernet_python(b, lab, C, H, W, **kw))


def test_semantics_small_case():
    # one 8x8 box in a 16x16 map, continuous coords: center (6, 6) -> cell (6, 6)
    out = centernet_targets(np.array([[2, 2, 10, 10]], np.float32), np.array([0]), 1, 16, 16)
    r = int(gaussian_radius(8, 8))
    assert out["hm"][0, 6, 6] == 1.0 and out["hm"].max() == 1.0
    assert (out["hm"][0] > 0).sum() == (2 * r + 1) ** 2
    assert out["ind"][0] == 6 * 16 + 6 and out["reg_mask"][0] == 1 and out["reg_mask"][1:].sum() == 0
    np.testing.assert_array_equal(out["wh"][0], [8, 8])
    np.testing.assert_array_equal(out["reg"][0], [0, 0])
    # centernet coords clip to W-1: a box up to x=16 has width 15
    out2 = centernet_targets(np.array([[0, 0, 16, 16]], np.float32), np.array([0]), 1, 16, 16, coords="centernet")
    np.testing.assert_array_equal(out2["wh"][0], [15, 15])
    # overlapping gaussians of two classes and the same class merge by max
    b = np.array([[2, 2, 10, 10], [3, 3, 11, 11], [2, 2, 10, 10]], np.float32)
    o = centernet_targets(b, np.array([0, 0, 1]), 2, 16, 16)
    assert o["hm"][0, 6, 6] == 1.0 and o["hm"][0, 7, 7] == 1.0 and o["hm"][1, 6, 6] == 1.0


def test_max_objs_and_empty():
    b = np.tile(np.array([[1, 1, 5, 5]], np.float32), (10, 1))
    o = centernet_targets(b, np.zeros(10, int), 1, 8, 8, max_objs=4)
    assert o["reg_mask"].tolist() == [1, 1, 1, 1]
    e = centernet_targets(np.zeros((0, 4), np.float32), np.zeros(0, int), 3, 8, 8)
    assert e["hm"].shape == (3, 8, 8) and not e["hm"].any() and not e["reg_mask"].any()


def test_into_reuses_buffers():
    rng = np.random.default_rng(2)
    samples = [(random_boxes(rng, n, 32, 48), rng.integers(0, 3, n)) for n in (0, 5, 30)]
    out = alloc_centernet(3, 3, 32, 48, max_objs=16)
    for v in out.values():
        v[...] = 7  # garbage must be overwritten
    for i, (b, l) in enumerate(samples):
        centernet_into(out, i, b, l)
    for i, (b, l) in enumerate(samples):
        ref = centernet_numpy(b, l, 3, 32, 48, max_objs=16)
        assert_same({k: out[k][i] for k in KEYS}, ref)
    for i, (b, l) in enumerate(samples):  # refilled in another order: the same, no leftovers
        centernet_into(out, 2 - i, b, l)
        assert_same({k: out[k][2 - i] for k in KEYS}, centernet_numpy(b, l, 3, 32, 48, max_objs=16))


@pytest.mark.parametrize("bad, match", [
    (dict(boxes=np.array([[0, 0, np.nan, 3]], np.float32)), "NaN"),
    (dict(boxes=np.array([[5, 0, 3, 3]], np.float32)), "negative width"),
    (dict(boxes=np.zeros((1, 3), np.float32)), "shape"),
    (dict(boxes=np.array([["a", "b", "c", "d"]])), "numeric"),
    (dict(labels=np.array([3])), "out of range"),
    (dict(labels=np.array([-1])), "out of range"),
    (dict(labels=np.array([0.5])), "integer"),
    (dict(labels=np.array([0, 1])), "shape"),
    (dict(out_h=-4), "out_h"),
    (dict(num_classes=0), "num_classes"),
    (dict(radius="foo"), "radius"),
    (dict(coords="foo"), "coords"),
])
def test_bad_input(bad, match):
    kw = dict(boxes=np.array([[0, 0, 3, 3]], np.float32), labels=np.array([0]), num_classes=3,
              out_h=8, out_w=8)
    kw.update(bad)
    for f in (centernet_targets, centernet_numpy):
        with pytest.raises(ValueError, match=match):
            f(**kw)


def test_bad_out():
    out = alloc_centernet(2, 1, 8, 8)
    out["ind"] = out["ind"].astype(np.int32)
    with pytest.raises(ValueError, match="dtypes"):
        centernet_into(out, 0, np.zeros((0, 4), np.float32), np.zeros(0, int))
    with pytest.raises(ValueError, match="sample index"):
        centernet_into(alloc_centernet(2, 1, 8, 8), 2, np.zeros((0, 4), np.float32), np.zeros(0, int))


def test_thread_pool_fills_independent_samples():
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(9)
    samples = [(random_boxes(rng, 30, 64, 64), rng.integers(0, 2, 30)) for _ in range(8)]
    out = alloc_centernet(8, 2, 64, 64, max_objs=32)
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda i: centernet_into(out, i, *samples[i]), range(8)))
    for i, (b, l) in enumerate(samples):
        assert_same({k: out[k][i] for k in KEYS}, centernet_numpy(b, l, 2, 64, 64, max_objs=32))
