"""The one mask tracer (fastload.formats.tracing): a mask packs to the same polygons whether
it comes as a COCO RLE segmentation or as a mask PNG, and those polygons rasterize back to
the mask (fastload.targets.raster.fill_polygon, the loader's rasterizer)."""
import json
import sys

import numpy as np
import pytest
from PIL import Image

from fastload.formats import coco, masks
from fastload.formats.coco import rle_counts_to_string, rle_encode
from fastload.formats.tracing import mask_to_polygons
from fastload.optional import MissingDependency
from fastload.packing import pack
from fastload.store import Dataset
from fastload.synth.scenes import encode_jpeg
from fastload.targets.raster import fill_polygon


def _raster(parts, shape):
    m = np.zeros(shape, np.uint8)
    for p in parts:
        fill_polygon(m, np.ascontiguousarray(p, np.float64), 1, 1.0)
    return m


def _holed_mask(h=48, w=64):
    """A blob with a hole, an island inside the hole, a notch, a diagonal contact and a
    one-pixel speck: every case the tracer has a rule for."""
    m = np.zeros((h, w), np.uint8)
    m[5:40, 10:58] = 1
    m[15:30, 20:40] = 0      # the hole
    m[20:24, 27:31] = 1      # an island inside it
    m[30:40, 45:50] = 0      # a notch from the bottom edge
    m[41, 58] = 1            # touches the blob only at a corner: its own part
    m[44, 3] = 1             # a one-pixel speck
    return m


def test_exact_tracing_reproduces_the_mask():
    m = _holed_mask()
    parts, holes = mask_to_polygons(m)
    assert holes == 1 and len(parts) == 4  # blob (with its bridged hole), island, corner, speck
    assert np.array_equal(_raster(parts, m.shape), m)
    for p in parts:  # no vertex in the middle of a straight run
        d1, d2 = p - np.roll(p, 1, 0), np.roll(p, -1, 0) - p
        straight = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0] == 0) & ((d1 * d2).sum(1) > 0)
        assert not straight.any()
    block = np.zeros((10, 10), np.uint8)
    block[2:5, 3:7] = 1
    (p,), _ = mask_to_polygons(block)
    assert len(p) == 8  # 4 corners, each cut diagonally through the border pixels' edges
    np.testing.assert_array_equal(p.min(0), [3, 2])
    np.testing.assert_array_equal(p.max(0), [7, 5])


def _write_coco(root, img_bytes, m, compressed):
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(img_bytes)
    counts = rle_encode(m)
    seg = {"size": list(m.shape), "counts": rle_counts_to_string(counts) if compressed else counts}
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": m.shape[0], "width": m.shape[1]}],
            "categories": [{"id": 1, "name": "object"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1,
                             "segmentation": seg}]}
    (root / "ann.json").write_text(json.dumps(data))


def _write_mask_png(root, img_bytes, m):
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    (root / "PNGImages" / "a.jpg").write_bytes(img_bytes)
    Image.fromarray(m).save(root / "PedMasks" / "a_mask.png")


@pytest.mark.parametrize("compressed", [True, False])
def test_coco_rle_and_mask_png_pack_the_same_polygons(tmp_path, compressed):
    m = _holed_mask()
    img = encode_jpeg(np.full(m.shape + (3,), 128, np.uint8))
    _write_coco(tmp_path / "coco", img, m, compressed)
    _write_mask_png(tmp_path / "png", img, m)
    from_coco = coco.read(tmp_path / "coco").samples[0].instances
    from_png = masks.read(tmp_path / "png", tolerance=0).samples[0].instances
    assert len(from_coco) == len(from_png) == 1
    assert from_coco[0].crowd and from_coco[0].ignore
    assert len(from_coco[0].polygons) == len(from_png[0].polygons) == 4
    for a, b in zip(from_coco[0].polygons, from_png[0].polygons):
        np.testing.assert_array_equal(a, b)
    assert np.array_equal(_raster(from_coco[0].polygons, m.shape), m)

    # and through pack: the same record geometry from either format
    pack(tmp_path / "coco", tmp_path / "out-coco", "coco", workers=1, progress=False)
    pack(tmp_path / "png", tmp_path / "out-png", "masks", workers=1, progress=False,
         options={"tolerance": "0"})
    rc, rp = Dataset(tmp_path / "out-coco")[0], Dataset(tmp_path / "out-png")[0]
    for field in ("points", "part_offsets", "inst_parts", "bboxes"):
        np.testing.assert_array_equal(getattr(rc, field), getattr(rp, field))
    assert np.array_equal(_raster(rc.instances[0].polygons, m.shape), m)


def test_simplified_tracing_stays_close():
    m = _holed_mask()
    parts, _ = mask_to_polygons(m, tolerance=0.5)
    exact, _ = mask_to_polygons(m)
    assert sum(map(len, parts)) < sum(map(len, exact))
    r = _raster(parts, m.shape).astype(bool)
    iou = (r & m.astype(bool)).sum() / (r | m.astype(bool)).sum()
    assert iou > 0.97


def test_min_area_and_hole_policy():
    m = _holed_mask()
    parts, _ = mask_to_polygons(m, min_area=1.0)  # the speck (area 0.5) and corner pixel go
    assert len(parts) == 2
    parts, holes = mask_to_polygons(m, holes="drop")
    filled = m.copy()
    filled[15:30, 20:40] = 1
    assert holes == 1 and np.array_equal(_raster(parts, m.shape), filled)
    with pytest.raises(ValueError, match="holes"):
        mask_to_polygons(m, holes="keep")
    with pytest.raises(ValueError, match="holes"):
        masks.read("unused", holes="keep")


def test_without_scikit_image_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now fails
    monkeypatch.setitem(sys.modules, "skimage.measure", None)
    with pytest.raises(MissingDependency, match=r"fastload\[masks\]"):
        mask_to_polygons(np.ones((3, 3), np.uint8))
