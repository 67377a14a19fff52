"""YOLO-seg reader: Ultralytics layouts, names from data.yaml (list / dict) or classes.txt,
sizes from the image header, bad lines reported by file and line."""
import numpy as np
import pytest
import yaml
from PIL import Image

from fastload.formats import yolo
from fastload.synth.scenes import CLASSES, make_scene
from fastload.synth.formats import check_reading, write_yolo


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(5)
    # non-square, and two sizes: swapping width/height or using one size for all would fail
    return [make_scene(rng, 160 if i % 2 else 200, 120, multipart_prob=0.3) for i in range(5)]


@pytest.mark.parametrize("split,names", [("train", "list"), ("val", "dict"), (None, "txt")])
def test_roundtrip(tmp_path, scenes, split, names):
    w = write_yolo(tmp_path, scenes, split=split, names=names, decimals=6, empty_every=3)
    ds = yolo.read(tmp_path)
    assert ds.format == "yolo" and ds.classes == list(CLASSES)
    # normalized with 6 decimals: the writer's expected vertices are the rounded values times
    # the size, so the reader must match them up to float64 noise; 1e-3 px * size bounds it
    check_reading(ds, w, atol=1e-9 * 200)
    # and against the scene's float32 polygons: within the normalization rounding
    for s, sc in zip(ds.samples, scenes):
        src = [p for inst in sc.instances for p in inst.polygons]
        if not s.instances:
            continue
        for inst, p in zip(s.instances, src):
            err = np.abs(inst.polygons[0] - p).max()
            assert err <= 0.5e-6 * 200 + 1e-4, err
    assert sum(1 for s in ds.samples if not s.instances) == 1  # image without a label file
    assert all(not s.problems for s in ds.samples) and not ds.problems


def test_split_selection_and_yaml_src(tmp_path, scenes):
    write_yolo(tmp_path, scenes[:2], split="train")
    w_val = write_yolo(tmp_path, scenes[2:], split="val")
    assert len(yolo.read(tmp_path).samples) == 5
    ds = yolo.read(tmp_path, split="val")
    check_reading(ds, w_val, atol=1e-6)
    ds = yolo.read(tmp_path / "data.yaml", split="val")
    assert [s.file_name for s in ds.samples] == [e.file_name for e in w_val.images]
    with pytest.raises(ValueError, match="split 'test'"):
        yolo.read(tmp_path, split="test")


def test_names_dict_with_gap_and_option(tmp_path, scenes):
    write_yolo(tmp_path, scenes[:2], names="dict")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"names": {0: "a", 2: "c", 4: "e"}}))
    assert yolo.read(tmp_path).classes == ["a", "class_1", "c", "class_3", "e"]
    assert yolo.read(tmp_path, classes=list("vwxyz")).classes == list("vwxyz")
    (tmp_path / "data.yaml").unlink()
    ds = yolo.read(tmp_path)  # no names anywhere: class_<id> up to the largest id
    mx = max(i.label for s in ds.samples for i in s.instances)
    assert ds.classes == [f"class_{i}" for i in range(mx + 1)]


def _tiny(tmp_path, lines, size=(100, 50)):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", size).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels" / "a.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("p\nq\n")


def test_bad_lines_are_problems(tmp_path):
    _tiny(tmp_path, ["0 0.1 0.1 0.5 0.1 0.5 0.5",      # ok
                     "1 0.1 0.1 0.5 0.1 0.5",          # odd count
                     "0 0.1 0.1",                      # 1 point
                     "0 0.1 0.1 0.2 0.2 0.3 0.3 0.4 0.4 0.5",  # odd
                     "",                               # blank: fine
                     "0 0.1 abc 0.5 0.1 0.5 0.5",      # not a number
                     "7 0.1 0.1 0.5 0.1 0.5 0.5",      # class out of range
                     "1.5 0.1 0.1 0.5 0.1 0.5 0.5",    # class not an integer
                     "1 0.5 0.5 0.2 0.4"])             # detection box cx cy w h
    ds = yolo.read(tmp_path)
    s, = ds.samples
    got = [(p.file, p.annotation.split(" (")[0], p.reason) for p in s.problems]
    assert got == [("labels/a.txt", "line 2", "malformed_label"),
                   ("labels/a.txt", "line 3", "too_few_points"),
                   ("labels/a.txt", "line 4", "malformed_label"),
                   ("labels/a.txt", "line 6", "malformed_label"),
                   ("labels/a.txt", "line 7", "unknown_label"),
                   ("labels/a.txt", "line 8", "malformed_label")]
    assert "odd number of coordinates (5)" in str(s.problems[0])
    assert [i.label for i in s.instances] == [0, 1]
    np.testing.assert_allclose(s.instances[0].polygons[0], [[10, 5], [50, 5], [50, 25]])
    np.testing.assert_allclose(s.instances[1].polygons[0], [[40, 15], [60, 15], [60, 35], [40, 35]])
    ds = yolo.read(tmp_path, boxes=False)
    assert ds.samples[0].problems[-1].reason == "too_few_points"


def test_orphan_label_corrupt_image_exif(tmp_path):
    _tiny(tmp_path, ["0 0.1 0.1 0.5 0.1 0.5 0.5"])
    (tmp_path / "labels" / "ghost.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n")
    (tmp_path / "images" / "b.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "labels" / "b.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n")
    im = Image.new("RGB", (30, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "images" / "c.jpg", exif=exif)
    (tmp_path / "labels" / "c.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n")
    ds = yolo.read(tmp_path)
    assert [(p.file, p.reason) for p in ds.problems] == [("labels/ghost.txt", "orphan_label")]
    a, b, c = ds.samples
    assert len(a.instances) == 1 and not a.problems
    assert [(p.reason, p.fatal) for p in b.problems] == [("corrupt_image", True)]
    assert [(p.reason, p.fatal) for p in c.problems] == [("exif_orientation", True)]


def test_no_images(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        yolo.read(tmp_path)
