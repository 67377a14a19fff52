import numpy as np
import pytest

from fastload.targets import boxes_from_polygons, instance_centers
from fastload.targets.boxes import fill_instance_boxes
from fastload.targets.reference import boxes_reference, centers_reference
from tests.helpers.polys import random_instances


def test_matches_reference():
    rng = np.random.default_rng(7)
    for t in range(60):
        n = int(rng.integers(0, 10))
        pts, po, ip = random_instances(rng, n, 300, 200)
        np.testing.assert_array_equal(boxes_from_polygons(pts, po, ip), boxes_reference(pts, po, ip))
        # the unchecked kernel on a record's own dtypes (int32 offsets), as pack calls it
        out = np.full((len(ip) - 1, 4), np.nan, np.float32)
        fill_instance_boxes(np.asarray(pts, np.float32), np.asarray(po, np.int32),
                            np.asarray(ip, np.int32), out)
        np.testing.assert_array_equal(out, boxes_reference(pts, po, ip))
        for mode in ("box", "centroid"):
            np.testing.assert_allclose(instance_centers(pts, po, ip, mode), centers_reference(pts, po, ip, mode),
                                       rtol=1e-6, atol=1e-4)


def test_rotated_box_is_tight_and_centroid():
    # a unit square rotated 45 degrees about (10, 10): tight box is +-sqrt(2)/2 wide
    c = np.cos(np.pi / 4)
    sq = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * 0.5
    rot = sq @ np.array([[c, c], [-c, c]]) + 10
    b = boxes_from_polygons(rot.astype(np.float32), [0, 4], [0, 1])
    np.testing.assert_allclose(b[0], [10 - c, 10 - c, 10 + c, 10 + c], atol=1e-6)
    # L-shape: centroid differs from box center
    L = np.array([[0, 0], [4, 0], [4, 1], [1, 1], [1, 4], [0, 4]], np.float32)
    ctr = instance_centers(L, [0, 6], [0, 1], "centroid")[0]
    area = 4 + 3
    cx = (4 * 2 + 3 * 0.5) / area
    np.testing.assert_allclose(ctr, [cx, (4 * 0.5 + 3 * 2.5) / area], rtol=1e-6)
    np.testing.assert_allclose(instance_centers(L, [0, 6], [0, 1], "box")[0], [2, 2])
    # orientation does not matter; degenerate (collinear) -> box center
    np.testing.assert_allclose(instance_centers(L[::-1].copy(), [0, 6], [0, 1], "centroid")[0], ctr, rtol=1e-6)
    line = np.array([[0, 0], [2, 2], [4, 4]], np.float32)
    np.testing.assert_allclose(instance_centers(line, [0, 3], [0, 1], "centroid")[0], [2, 2])


def test_empty_instance_and_errors():
    b = boxes_from_polygons(np.zeros((0, 2), np.float32), [0], [0, 0])
    assert b.shape == (1, 4) and not b.any()
    with pytest.raises(ValueError, match="mode"):
        instance_centers(np.zeros((0, 2), np.float32), [0], [0], "foo")
    with pytest.raises(ValueError, match="NaN"):
        boxes_from_polygons(np.array([[np.nan, 0]], np.float32), [0, 1], [0, 1])
