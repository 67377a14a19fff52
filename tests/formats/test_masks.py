"""Mask-PNG reader: contour tracing in continuous coordinates, checked by rasterizing the
traced polygons back with fastload.targets.raster.fill_polygon."""
import numpy as np
import pytest
from PIL import Image

from fastload.formats import masks
from fastload.formats.tracing import mask_to_polygons
from fastload.targets.raster import fill_polygon
from fastload.synth.scenes import make_scene
from fastload.synth.formats import write_masks


def _raster(parts, shape):
    m = np.zeros(shape, np.uint8)
    for p in parts:
        fill_polygon(m, np.ascontiguousarray(p, np.float64), 1, 1.0)
    return m.astype(bool)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_single_pixel_and_block_coordinates():
    m = np.zeros((10, 12), bool)
    m[4, 7] = True  # pixel (row 4, col 7) covers [7, 8) x [4, 5)
    (p,), holes = mask_to_polygons(m, tolerance=0)
    assert holes == 0
    np.testing.assert_allclose(sorted(map(tuple, p)), sorted([(7.5, 4.0), (8.0, 4.5), (7.5, 5.0), (7.0, 4.5)]))
    m[:] = False
    m[2:5, 3:6] = True  # rows 2..4, cols 3..5: the block [3, 6) x [2, 5)
    (p,), _ = mask_to_polygons(m, tolerance=0)
    np.testing.assert_allclose([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()], [3, 2, 6, 5])
    assert (_raster([p], m.shape) == m).all()


def test_random_masks_traced_exactly(rng):
    """Many random blobby masks (with holes, diagonal contacts, several components): the
    traced polygons rasterize back to the exact mask at tolerance 0, IoU > 0.95 at 0.5."""
    from scipy.ndimage import gaussian_filter
    n_holes = n_multi = 0
    for _ in range(40):
        h, w = rng.integers(8, 48, 2)
        field = gaussian_filter(rng.normal(size=(h, w)), rng.uniform(0.5, 2.5))
        m = field > np.quantile(field, rng.uniform(0.3, 0.7))
        parts, holes = mask_to_polygons(m, tolerance=0)
        n_holes += holes
        n_multi += len(parts) > 1
        assert (_raster(parts, m.shape) == m).all()
        parts, _ = mask_to_polygons(m, tolerance=0.5)
        if m.sum() > 150:
            assert _iou(_raster(parts, m.shape), m) > 0.9
    assert n_holes > 0 and n_multi > 0  # the cases were exercised


def test_holes_bridge_or_drop():
    m = np.zeros((20, 20), bool)
    m[2:15, 3:17] = True
    m[6:9, 7:11] = False  # a hole
    m[7, 8] = True         # an island inside the hole: its own part
    parts, holes = mask_to_polygons(m, tolerance=0)
    assert holes == 1 and len(parts) == 2
    assert (_raster(parts, m.shape) == m).all()
    parts, holes = mask_to_polygons(m, tolerance=0, holes="drop")
    filled = m.copy()
    filled[6:9, 7:11] = True
    assert (_raster(parts, m.shape) == filled).all()
    with pytest.raises(ValueError, match="holes"):
        mask_to_polygons(m, holes="keep")


@pytest.mark.parametrize("palette", [False, True])
def test_penn_fudan_roundtrip(tmp_path, palette):
    rng = np.random.default_rng(3)
    scenes = [make_scene(rng, 200, 150, multipart_prob=0.5) for _ in range(4)]
    w = write_masks(tmp_path, scenes, palette=palette)
    if palette:
        assert Image.open(next((tmp_path / "PedMasks").iterdir())).mode == "P"
    ds = masks.read(tmp_path, class_name="person")
    assert ds.format == "masks" and ds.classes == ["person"]
    assert [s.file_name for s in ds.samples] == [e.file_name for e in w.images]
    ious = []
    for s, e in zip(ds.samples, w.images):
        assert not s.problems
        assert s.image_path.read_bytes() == e.image_bytes
        values = [v for v in np.unique(e.mask) if v]
        assert len(s.instances) == len(values)
        for inst, v in zip(s.instances, values):
            assert inst.label == 0 and inst.name == f"mask value {v}"
            ious.append(_iou(_raster(inst.polygons, e.mask.shape), e.mask == v))
    assert min(ious) > 0.95
    assert any(len(i.polygons) > 1 for s in ds.samples for i in s.instances)  # components -> parts
    exact = masks.read(tmp_path, tolerance=0)
    for s, e in zip(exact.samples, w.images):
        for inst, v in zip(s.instances, [v for v in np.unique(e.mask) if v]):
            assert (_raster(inst.polygons, e.mask.shape) == (e.mask == v)).all()


def test_rgb_mask_and_bad_inputs(tmp_path):
    (tmp_path / "PNGImages").mkdir()
    (tmp_path / "PedMasks").mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "PNGImages" / "a.png")
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[2:5, 2:6] = (255, 0, 0)
    rgb[6:9, 10:15] = (0, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "PedMasks" / "a_mask.png")
    Image.new("RGB", (20, 10)).save(tmp_path / "PNGImages" / "b.png")          # no mask
    Image.new("RGB", (20, 10)).save(tmp_path / "PNGImages" / "c.png")
    Image.new("L", (21, 10)).save(tmp_path / "PedMasks" / "c_mask.png")        # wrong size
    Image.new("RGB", (20, 10)).save(tmp_path / "PNGImages" / "d.png")
    (tmp_path / "PedMasks" / "d_mask.png").write_bytes(b"garbage")              # unreadable
    Image.new("L", (20, 10)).save(tmp_path / "PedMasks" / "zz_mask.png")       # no image
    ds = masks.read(tmp_path)
    a, b, c, d = ds.samples
    assert len(a.instances) == 2 and not a.problems
    assert [(p.reason, p.fatal, p.file) for p in b.problems] == [("missing_mask", True, "PNGImages/b.png")]
    assert [(p.reason, p.fatal, p.file) for p in c.problems] == [("mask_size", True, "PedMasks/c_mask.png")]
    assert [(p.reason, p.fatal) for p in d.problems] == [("corrupt_mask", True)]
    assert [(p.file, p.reason) for p in ds.problems] == [("PedMasks/zz_mask.png", "orphan_mask")]
    with pytest.raises(ValueError, match="PNGImages"):
        masks.read(tmp_path / "PNGImages")


def test_lazy_tracing_matches_eager(tmp_path):
    import pickle
    rng = np.random.default_rng(9)
    write_masks(tmp_path, [make_scene(rng, 120, 90) for _ in range(2)])
    lazy = masks.read(tmp_path)
    assert not any(s._traced for s in lazy.samples)  # read() only lists files
    s = pickle.loads(pickle.dumps(lazy.samples[0]))  # travels to worker processes untraced
    eager = masks.read(tmp_path, lazy=False)
    for a, b in zip([s, lazy.samples[1]], eager.samples):
        assert len(a.instances) == len(b.instances) > 0 and a.problems == b.problems == []
        for ia, ib in zip(a.instances, b.instances):
            for pa, pb in zip(ia.polygons, ib.polygons):
                np.testing.assert_array_equal(pa, pb)
