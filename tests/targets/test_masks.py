import numpy as np
import pytest

from fastload.targets import instance_masks, semantic_mask
from fastload.targets.reference import instance_masks_reference, semantic_mask_reference
from tests.helpers.polys import random_instances


@pytest.mark.parametrize("stride", [1.0, 4.0, 2.5])
def test_matches_reference(stride):
    rng = np.random.default_rng(5)
    for t in range(12):
        h, w = (int(v) for v in rng.integers(4, 24, 2))
        n = int(rng.integers(0, 7))
        pts, po, ip = random_instances(rng, n, h * stride, w * stride)
        lab = rng.integers(0, 10, n)
        ig = rng.random(n) < 0.25
        sem = semantic_mask(pts, po, ip, lab, ig, h, w, stride)
        np.testing.assert_array_equal(sem, semantic_mask_reference(pts, po, ip, lab, ig, h, w, stride))
        M = int(rng.integers(0, 8))
        im = instance_masks(pts, po, ip, h, w, stride, max_instances=M)
        assert im.shape == (M, h, w) and im.dtype == np.uint8
        np.testing.assert_array_equal(im, instance_masks_reference(pts, po, ip, h, w, stride, M))


def test_rules():
    # square [1,3)x[1,3) covers pixels with centers 1.5, 2.5; second instance over the first;
    # ignore wins even when earlier
    pts = np.array([[1, 1], [3, 1], [3, 3], [1, 3],
                    [2, 2], [4, 2], [4, 4], [2, 4],
                    [0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    po = np.array([0, 4, 8, 12])
    ip = np.array([0, 1, 2, 3])
    ignore = np.array([False, False, True])
    sem = semantic_mask(pts, po, ip, np.array([0, 1, 2]), ignore, 5, 5)
    exp = np.zeros((5, 5), np.uint8)
    exp[1:3, 1:3] = 1
    exp[2:4, 2:4] = 2
    exp[0, 0] = 255
    np.testing.assert_array_equal(sem, exp)
    # two parts of one instance -> union; stride 2 samples centers (1, 1), (3, 1), ...
    # (left/top edges inclusive: center (1, 1) is inside [1, 3)^2)
    im = instance_masks(pts[:8], np.array([0, 4, 8]), np.array([0, 2]), 3, 3, stride=2.0)
    np.testing.assert_array_equal(im[0], [[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    # self-touching figure eight: both lobes filled, even-odd
    fig8 = np.array([[4, 4], [8, 4], [8, 8], [4, 8], [4, 4], [0, 4], [0, 0], [4, 0]], np.float32)
    m = instance_masks(fig8, np.array([0, 8]), np.array([0, 1]), 8, 8)[0]
    assert m[:4, :4].all() and m[4:, 4:].all() and not m[:4, 4:].any() and not m[4:, :4].any()


def test_out_and_empty():
    out = np.full((6, 7), 9, np.uint8)
    r = semantic_mask(np.zeros((0, 2), np.float32), [0], [0], np.zeros(0, int), None, 6, 7, out=out)
    assert r is out and not out.any()
    im = instance_masks(np.zeros((0, 2), np.float32), [0], [0], 6, 7, max_instances=3)
    assert im.shape == (3, 6, 7) and not im.any()


@pytest.mark.parametrize("kw, match", [
    (dict(points=np.array([[0, 0], [np.nan, 1], [2, 2]], np.float32)), "NaN"),
    (dict(points=np.zeros((3, 3), np.float32)), r"\(P, 2\)"),
    (dict(part_offsets=np.array([0, 4])), "part_offsets"),
    (dict(inst_parts=np.array([0, 2])), "inst_parts"),
    (dict(labels=np.array([254])), "out of range"),
    (dict(ignore=np.array([True, False])), "ignore"),
    (dict(stride=0), "stride"),
    (dict(out_h=-1), "out_h"),
])
def test_bad_input(kw, match):
    args = dict(points=np.array([[0, 0], [4, 0], [4, 4]], np.float32), part_offsets=np.array([0, 3]),
                inst_parts=np.array([0, 1]), labels=np.array([1]), ignore=None, out_h=5, out_w=5)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        semantic_mask(**args)


def test_sort_inplace_equals_numpy_sort():
    """The scanline's sort (a Shell sort, not Numba's quicksort: see raster.sort_inplace)
    against np.sort: sizes 0..70 and 500, duplicates, negative values; only the view is
    touched."""
    from fastload.targets.raster import sort_inplace
    rng = np.random.default_rng(7)
    for n in list(range(71)) + [500]:
        for vals in (rng.normal(0, 100, n), rng.integers(-3, 4, n).astype(np.float64)):
            buf = np.concatenate([vals, [1e300, -1e300]])
            sort_inplace(buf[:n])
            assert buf[:n].tobytes() == np.sort(vals).tobytes()
            assert buf[n] == 1e300 and buf[n + 1] == -1e300
