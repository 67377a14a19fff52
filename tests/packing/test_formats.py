"""Round trip of the labelme / VIA / YOLO / mask-PNG readers through ``fastload.pack`` and
``fastload.Dataset``: images byte-identical to the source files, every vertex equal to
the source (float32), labels, parts, ignore flags and class lists preserved."""
import numpy as np
import pytest

pytest.importorskip("fastload.store")

from fastload.formats import read_source  # noqa: E402
from fastload.packing import pack  # noqa: E402
from fastload.store import Dataset  # noqa: E402
from fastload.targets.raster import fill_polygon  # noqa: E402
from fastload.synth.scenes import make_scene  # noqa: E402
from fastload.synth.formats import write_labelme, write_masks, write_via, write_yolo  # noqa: E402

WRITERS = {
    "labelme": lambda root, sc: write_labelme(root, sc, rect_every=3, ignore_every=4, extra_shapes=True,
                                              nested=True),
    "labelme-imagedata": lambda root, sc: write_labelme(root, sc, embed_image_data=True, image_files=False),
    "via1": lambda root, sc: write_via(root, sc, version=1, rect_every=4),
    "via2-balloon": lambda root, sc: write_via(root, sc, version=2, class_attribute=None),
    "yolo": lambda root, sc: write_yolo(root, sc, split="train", names="dict", empty_every=3),
    "masks": lambda root, sc: write_masks(root, sc),
}


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(21)
    return [make_scene(rng, 160, 120, multipart_prob=0.4) for _ in range(4)]


@pytest.mark.parametrize("case", list(WRITERS))
def test_pack_roundtrip(tmp_path, scenes, case):
    fmt = case.split("-")[0].rstrip("12")
    w = WRITERS[case](tmp_path / "src", scenes)
    src = read_source(fmt, w.root)
    summary = pack(w.root, tmp_path / "out", format=fmt, workers=1, progress=False)
    assert summary.images == len(w.images) and not summary.skipped_images
    ds = Dataset(tmp_path / "out")
    try:
        assert len(ds) == len(w.images)
        assert list(ds.classes) == list(src.classes)
        expected = {e.file_name: e for e in w.images}
        for i, s in enumerate(src.samples):
            rec = ds[i]
            e = expected[rec.file_name]
            assert rec.file_name == s.file_name
            assert rec.image_bytes == e.image_bytes  # never re-encoded
            assert (rec.height, rec.width) == (e.height, e.width)
            insts = rec.instances
            assert len(insts) == len(s.instances) == len(e.instances)
            for k, (a, b, x) in enumerate(zip(insts, s.instances, e.instances)):
                assert a.label == b.label and a.ignore == b.ignore
                if x.label is not None:
                    assert ds.classes[a.label] == x.label
                assert len(a.polygons) == len(b.polygons)
                for pa, pb in zip(a.polygons, b.polygons):
                    np.testing.assert_array_equal(pa, np.asarray(pb, np.float32),
                                                  err_msg=f"{rec.file_name} instance {k}")
                if fmt in ("labelme", "via"):  # exact against what the writer wrote
                    for pa, px in zip(a.polygons, x.polygons):
                        np.testing.assert_array_equal(pa, px.astype(np.float32))
                elif fmt == "yolo":  # within the 6-decimal normalization
                    for pa, px in zip(a.polygons, x.polygons):
                        assert np.abs(pa - px).max() <= 1e-3
                else:  # masks: the packed polygons rasterize back to the instance's mask
                    v = [v for v in np.unique(e.mask) if v][k]
                    m = np.zeros(e.mask.shape, np.uint8)
                    for pa in a.polygons:
                        fill_polygon(m, np.ascontiguousarray(pa, np.float64), 1, 1.0)
                    g, r = e.mask == v, m.astype(bool)
                    assert (g & r).sum() / (g | r).sum() > 0.95
                np.testing.assert_allclose(
                    a.bbox, [*np.concatenate(a.polygons).min(0), *np.concatenate(a.polygons).max(0)])
    finally:
        ds.close()


def test_reader_options_reach_the_reader_and_unknown_ones_are_refused(tmp_path):
    """`fastload pack -o KEY=VALUE` passes reader options through; a wrong key is refused."""
    from fastload.cli import main
    from fastload.store import Dataset
    from fastload.synth.datasets import write_dataset

    src = tmp_path / "masks"
    write_dataset(src, "masks", n_images=2, seed=3, width=96, height=80)
    out = tmp_path / "out"
    assert main(["pack", str(src), str(out), "-f", "masks", "-q", "-o", "class_name=pedestrian"]) == 0
    assert Dataset(out).classes == ["pedestrian"]
    bad = tmp_path / "bad"
    assert main(["pack", str(src), str(bad), "-f", "masks", "-q", "-o", "no_such_option=1"]) == 2
    assert not bad.exists()
    assert main(["pack", str(src), str(bad), "-f", "masks", "-q", "-o", "novalue"]) == 2
