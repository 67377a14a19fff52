import math

import numpy as np
import pytest

from fastload.targets import (alloc_fcos, fcos_into, fcos_level_sizes, fcos_targets,
                              fcos_locations, fcos_num_locations)
from fastload.targets.reference import fcos_reference


from tests.helpers.compare import assert_same as _assert_same


def assert_same(a, b):
    _assert_same(a, b, relative=True)


def random_boxes(rng, K, H, W):
    xy = rng.uniform(-0.2, 1.0, (K, 2)) * [W, H]
    wh = np.exp(rng.uniform(np.log(2), np.log(2 * max(H, W)), (K, 2)))
    b = np.concatenate([xy, xy + wh], 1)
    b = np.where(rng.random((K, 1)) < 0.3, np.round(b / 8) * 8, b)  # boxes on grid lines
    return b.astype(np.float32)


def test_level_sizes_and_locations():
    assert fcos_level_sizes(512, 512) == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert fcos_level_sizes(500, 333) == [(63, 42), (32, 21), (16, 11), (8, 6), (4, 3)]
    assert fcos_num_locations(512, 512) == 64 * 64 + 32 * 32 + 256 + 64 + 16
    loc = fcos_locations(512, 512)
    np.testing.assert_array_equal(loc[:2], [[4, 4], [12, 4]])  # x * s + s // 2, x fastest
    np.testing.assert_array_equal(loc[64 * 64], [8, 8])


@pytest.mark.parametrize("radius", [0.0, 1.5])
@pytest.mark.parametrize("norm_reg", [False, True])
def test_matches_reference(radius, norm_reg):
    rng = np.random.default_rng(3)
    for t in range(25):
        H, W = (int(v) for v in rng.integers(64, 700, 2))
        K = int(rng.integers(0, 30))
        b = random_boxes(rng, K, H, W)
        if K > 3:
            b[0] = [20, 20, 120, 90]
            b[1] = b[0]                       # identical boxes: lowest index wins
            b[2] = [24, 24, 116, 86]          # nested: smaller wins
            b[3] = [0, 0, W, H]
        lab = rng.integers(0, 80, K)
        kw = dict(center_sampling_radius=radius, norm_reg=norm_reg)
        got = fcos_targets(b, lab, H, W, 80, **kw)
        assert_same(got, fcos_reference(b, lab, H, W, 80, **kw))


def test_semantics():
    # one 40x40 box in a 128x128 input: level 0 (stride 8) only, locations strictly inside
    b = np.array([[16, 16, 56, 56]], np.float32)
    o = fcos_targets(b, np.array([4]), 128, 128)
    n0 = 16 * 16
    lab0 = o["fcos_labels"][:n0].reshape(16, 16)
    assert set(np.unique(lab0)) == {0, 5} and not o["fcos_labels"][n0:].any()
    ys, xs = np.nonzero(lab0)
    assert xs.min() == 2 and xs.max() == 6  # x = 20 ... 52
    i = 4 * 16 + 4  # location (36, 36): the center
    np.testing.assert_array_equal(o["fcos_ltrb"][i], [20, 20, 20, 20])
    assert o["fcos_centerness"][i] == 1.0
    j = 2 * 16 + 2  # (20, 20)
    assert math.isclose(o["fcos_centerness"][j], math.sqrt(4 / 36 * 4 / 36), rel_tol=1e-6)
    # center sampling keeps only locations within 1.5 strides of the center
    oc = fcos_targets(b, np.array([4]), 128, 128, center_sampling_radius=1.5)
    assert (oc["fcos_labels"] > 0).sum() == 9
    # a big box goes to a coarser level
    ob = fcos_targets(np.array([[0, 0, 300, 300]], np.float32), np.array([0]), 512, 512)
    lv = np.repeat(np.arange(5), [s[0] * s[1] for s in fcos_level_sizes(512, 512)])
    assert set(lv[ob["fcos_labels"] > 0]) <= {2, 3}


def test_into_and_empty():
    rng = np.random.default_rng(4)
    samples = [(random_boxes(rng, n, 256, 320), rng.integers(0, 5, n)) for n in (0, 7, 40)]
    out = alloc_fcos(3, 256, 320)
    for v in out.values():
        v[...] = 3
    for i, (b, l) in enumerate(samples):
        fcos_into(out, i, b, l, 256, 320, center_sampling_radius=1.5)
    for i, (b, l) in enumerate(samples):
        ref = fcos_reference(b, l, 256, 320, center_sampling_radius=1.5)
        assert_same({k: out[k][i] for k in out}, ref)
    assert not out["fcos_labels"][0].any() and not out["fcos_ltrb"][0].any()


@pytest.mark.parametrize("kw, match", [
    (dict(boxes=np.array([[0, 0, np.inf, 3]], np.float32)), "NaN or inf"),
    (dict(boxes=np.array([[0, 5, 3, 3]], np.float32)), "negative"),
    (dict(labels=np.array([80])), "out of range"),
    (dict(img_h=0), "img_h"),
    (dict(center_sampling_radius=-1), "center_sampling_radius"),
    (dict(size_ranges=((0, 64),)), "size_ranges"),
])
def test_bad_input(kw, match):
    args = dict(boxes=np.array([[0, 0, 3, 3]], np.float32), labels=np.array([0]), img_h=64, img_w=64,
                num_classes=80)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        fcos_targets(**args)
