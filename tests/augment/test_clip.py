"""Clipping to the frame: kernel vs reference, and both against an independent clipper
(shapely): the parts are the visible region, so boxes and areas are shapely's."""
import numpy as np
import pytest

from fastload.augment.clip import clip_polygon, clip_polygon_reference, clip_rect
from fastload.augment.geometry import transform_instances, transform_instances_reference
from fastload.augment.params import SampleParams
from fastload.record import Instance, Record
from fastload.targets.boxes import instance_centers
from fastload.targets.raster import fill_polygon

# the C-shape of the bug report: in a 200 x 200 frame only its top arm [150, 60]-[200, 80] is
# visible; the rest runs outside around the bottom-right corner
C_SHAPE = np.array([(150, 60), (260, 60), (260, 260), (100, 260), (100, 240), (240, 240),
                    (240, 80), (150, 80)], np.float64)
# a U whose two arms come in through the left and right borders, its bottom below the frame,
# outside both bottom corners
U_TWO_CORNERS = np.array([(20, 50), (20, 150), (-30, 150), (-30, 250), (230, 250), (230, 150),
                          (180, 150), (180, 50), (190, 50), (190, 140), (240, 140), (240, 260),
                          (-40, 260), (-40, 140), (10, 140), (10, 50)], np.float64)


def _params(matrix):
    return SampleParams(matrix=np.asarray(matrix, np.float32), hflip=False, vflip=False,
                        hue_deg=0.0, noise_sigma=0.0, noise_seed=0)


def _pieces_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_c_shape_box_is_the_visible_arm():
    """The bug: Sutherland-Hodgman's spike down the border to (200, 200) made the box
    [150, 60, 200, 200]."""
    raw, m = clip_rect(C_SHAPE, 200.0, 200.0)
    assert raw[:m, 1].max() == 200  # the spike is there before the fix's step 2
    for clip in (clip_polygon, clip_polygon_reference):
        pieces = clip(C_SHAPE, 200, 200)
        assert len(pieces) == 1
        assert sorted(map(tuple, pieces[0].tolist())) == [(150, 60), (150, 80), (200, 60), (200, 80)]
    rec = Record.from_instances(0, "c.png", b"", "png", 200, 200, [
        Instance(0, [C_SHAPE.astype(np.float32)], np.array([100, 60, 260, 260], np.float32))])
    for transform in (transform_instances, transform_instances_reference):
        t = transform(rec, _params(np.eye(3)), (200, 200), min_visible=0.0)
        assert t.boxes.tolist() == [[150, 60, 200, 80]]
        c = instance_centers(t.points, t.part_offsets, t.inst_parts, mode="box")
        assert c.tolist() == [[175, 70]]
        c = instance_centers(t.points, t.part_offsets, t.inst_parts, mode="centroid")
        np.testing.assert_allclose(c, [[175, 70]], atol=1e-4)


def test_u_through_two_corners_splits_into_its_arms():
    for clip in (clip_polygon, clip_polygon_reference):
        pieces = clip(U_TWO_CORNERS, 200, 200)
        boxes = sorted([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in pieces)
        assert boxes == [[0, 50, 20, 150], [180, 50, 200, 150]]  # not down to y = 200


def test_clip_known_square():
    sq = np.array([[-10, -10], [50, -10], [50, 50], [-10, 50]], np.float64)
    (c,) = clip_polygon(sq, 20, 30)
    assert sorted(map(tuple, c.tolist())) == sorted([(0, 0), (20, 0), (20, 30), (0, 30)])
    inside = np.array([[1, 1], [5, 1], [5, 5]], np.float64)
    (c,) = clip_polygon(inside, 20, 30)
    np.testing.assert_array_equal(c, inside)
    outside = np.array([[30, 1], [35, 1], [35, 5]], np.float64)
    assert clip_polygon(outside, 20, 30) == []


def _concave(rng, cx, cy, r):
    """A random concave simple polygon: a star (sorted angles), or a comb / U / C of
    rectangles, rotated, so that parts leave the frame and come back around corners."""
    if rng.random() < 0.5:
        n = int(rng.integers(5, 24))
        ang = (np.arange(n) + rng.uniform(0, 0.9, n)) * (2 * np.pi / n)  # gaps < pi: simple
        rad = r * rng.uniform(0.1, 1.0, n)
        return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
    teeth = int(rng.integers(2, 5))
    tw = 2 * r / (2 * teeth - 1)
    depth = r * rng.uniform(0.5, 1.8)
    base = r * rng.uniform(0.1, 0.4)
    pts = [(-r, 0.0)]
    for k in range(teeth):  # teeth pointing up from a base along y in [0, base]
        x0 = -r + 2 * k * tw
        pts += [(x0, -depth), (x0 + tw, -depth), (x0 + tw, 0.0)]
        if k + 1 < teeth:
            pts += [(x0 + 2 * tw, 0.0)]
    pts += [(r, base), (-r, base)]
    p = np.array(pts[1:], np.float64)
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return p @ rot.T + [cx, cy]


def _random_matrix(rng, w, h):
    a = rng.uniform(-np.pi, np.pi)
    s = rng.uniform(0.5, 2.0)
    m = np.eye(3)
    m[:2, :2] = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    if rng.random() < 0.5:
        m[0, :2] *= -1
    m[:2, 2] = rng.uniform(-0.5, 1.5, 2) * [w, h]
    return m.astype(np.float32)


def test_kernel_matches_reference_random():
    rng = np.random.default_rng(0)
    for _ in range(300):  # random vertices: self-intersecting rings
        poly = rng.uniform(-60, 160, (int(rng.integers(3, 20)), 2))
        a, b = clip_polygon(poly, 100.0, 80.0), clip_polygon_reference(poly, 100.0, 80.0)
        _pieces_equal(a, b)
        for p in a:
            assert p[:, 0].min() >= 0 and p[:, 0].max() <= 100
            assert p[:, 1].min() >= 0 and p[:, 1].max() <= 80
    split = 0
    for _ in range(600):
        w, h = float(rng.integers(20, 200)), float(rng.integers(20, 200))
        poly = _concave(rng, *rng.uniform(-0.3, 1.3, 2) * [w, h], rng.uniform(5, 1.2 * max(w, h)))
        if rng.random() < 0.3:
            poly = np.round(poly)  # vertices exactly on the border
        a, b = clip_polygon(poly, w, h), clip_polygon_reference(poly, w, h)
        _pieces_equal(a, b)
        split += len(a) > 1
        for p in a:
            assert len(p) >= 3 and p[:, 0].min() >= 0 and p[:, 0].max() <= w
            assert p[:, 1].min() >= 0 and p[:, 1].max() <= h
    assert split > 20  # cut into several pieces often enough to test that path


def _shapely_visible(parts, w, h):
    """Per part: shapely's intersection with the frame, polygonal pieces only."""
    shapely = pytest.importorskip("shapely")
    from shapely.geometry import Polygon, box
    frame = box(0, 0, w, h)
    out = []
    for p in parts:
        poly = Polygon(p)
        assert poly.is_valid
        inter = shapely.intersection(poly, frame)
        out.append([g for g in getattr(inter, "geoms", [inter]) if g.geom_type == "Polygon"
                    and g.area > 0])
    return out


def test_boxes_and_areas_match_shapely():
    """Random concave and multi-part instances under random matrices: each kept instance's
    box is the bounds of shapely's intersection with the frame, its visible area (parts'
    areas summed) shapely's, and an instance shapely sees nothing of is dropped."""
    from shapely.ops import unary_union

    rng = np.random.default_rng(1)
    checked = differs_from_raw = 0
    for trial in range(400):
        H, W = int(rng.integers(40, 160)), int(rng.integers(40, 160))
        insts, moved = [], []
        m = _random_matrix(rng, W, H)
        for _ in range(int(rng.integers(1, 4))):
            parts = []
            for _ in range(int(rng.integers(1, 3))):
                c = rng.uniform(-0.2, 1.2, 2) * [W, H]
                parts.append(_concave(rng, *c, rng.uniform(4, 0.8 * max(W, H))).astype(np.float32))
            allp = np.concatenate(parts)
            insts.append(Instance(0, parts, np.r_[allp.min(0), allp.max(0)].astype(np.float32)))
            moved.append([p.astype(np.float64) @ m[:2, :2].T.astype(np.float64) + m[:2, 2]
                          for p in parts])
        rec = Record.from_instances(0, "r.png", b"", "png", H, W, insts)
        t = transform_instances(rec, _params(m), (H, W), min_visible=0.0)
        kept = t.src_index.tolist()
        for k, parts in enumerate(moved):
            vis = _shapely_visible(parts, W, H)
            area = sum(g.area for v in vis for g in v)
            scale = max(W, H)
            if k not in kept:
                assert area <= 1e-6 * scale * scale, (trial, k, area)
                continue
            j = kept.index(k)
            ours = sum(_area(p) for p in t.parts(j))
            assert abs(ours - area) <= 1e-4 * scale * scale, (trial, k, ours, area)
            geoms = [g for v in vis for g in v]
            if not geoms:  # a sliver only float rounding keeps
                assert ours <= 1e-4 * scale * scale
                continue
            want = np.array(unary_union(geoms).bounds)
            np.testing.assert_allclose(t.boxes[j], want, rtol=0, atol=1e-4 * scale,
                                       err_msg=f"trial {trial}, instance {k}")
            raw = np.concatenate([_ring(p, W, H) for p in parts])
            differs_from_raw += bool(np.abs(np.r_[raw.min(0), raw.max(0)] - want).max() > 1e-3 * scale)
            checked += 1
    assert checked > 300
    assert differs_from_raw > 8  # cases where Sutherland-Hodgman's own box was too big


def _ring(p, w, h):
    ring, m = clip_rect(p, float(w), float(h))
    return ring[:m]


def _area(p):
    p = np.asarray(p, np.float64)
    return abs(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1])) / 2


def test_masks_unchanged_by_cancelling():
    """The cancelled edges lie on the border, where no pixel center is: a mask of the pieces
    equals the mask of Sutherland-Hodgman's ring."""
    rng = np.random.default_rng(2)
    n_split = 0
    for _ in range(200):
        w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        poly = _concave(rng, *rng.uniform(-0.3, 1.3, 2) * [w, h], rng.uniform(5, max(w, h)))
        ring, m = clip_rect(poly, float(w), float(h))
        before = np.zeros((h, w), np.uint8)
        if m >= 3:
            fill_polygon(before, ring[:m].astype(np.float32), 1)
        after = np.zeros((h, w), np.uint8)
        pieces = clip_polygon(poly, w, h)
        for p in pieces:
            fill_polygon(after, p.astype(np.float32), 1)
        np.testing.assert_array_equal(before, after)
        n_split += len(pieces) > 1
    assert n_split > 5
