"""labelme reader: synthetic folders written as labelme writes them, read back exactly."""
import base64
import json

import numpy as np
import pytest

from fastload.formats import labelme
from fastload.synth.scenes import make_scene
from fastload.synth.formats import check_reading, write_labelme


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(7)
    return [make_scene(rng, 160, 120, multipart_prob=0.5) for _ in range(5)]


def test_roundtrip_groups_rectangles_ignore(tmp_path, scenes):
    w = write_labelme(tmp_path, scenes, rect_every=3, ignore_every=5, extra_shapes=True, nested=True)
    ds = labelme.read(tmp_path)
    assert ds.format == "labelme"
    assert ds.classes == w.classes == sorted(w.classes)
    check_reading(ds, w)
    # some instances really are multi-part (group_id), rectangles and ignore regions
    insts = [i for s in ds.samples for i in s.instances]
    assert any(len(i.polygons) == 2 for i in insts)
    assert any(i.ignore for i in insts)
    rects = [i for i in insts if len(i.polygons[0]) == 4 and "group_id" not in i.name]
    assert rects
    assert all(i.label == 0 for i in insts if i.ignore)  # __ignore__ creates no class
    # unsupported shapes are problems naming file and shape, not errors
    for s in ds.samples:
        msgs = [str(p) for p in s.problems]
        assert any("circle" in m for m in msgs) and any("'point'" in m for m in msgs)
        assert all(m.startswith(s.file_name.replace(".jpg", ".json")) and "shape " in m for m in msgs)
        assert all(p.reason == "unsupported_shape" and not p.fatal for p in s.problems)
    # deterministic
    again = labelme.read(tmp_path)
    assert [s.file_name for s in again.samples] == [s.file_name for s in ds.samples]


def test_rectangle_corners_any_order(tmp_path):
    doc = {"shapes": [{"label": "box", "points": [[30.5, 40.25], [10.0, 5.5]], "shape_type": "rectangle"},
                      {"label": "box", "points": [[1, 1], [5, 1], [5, 5]]}],  # no shape_type: polygon
           "imagePath": "a.jpg", "imageData": None, "imageHeight": 50, "imageWidth": 60}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    ds = labelme.read(tmp_path)
    s, = ds.samples
    assert s.declared_size == (50, 60)
    np.testing.assert_array_equal(s.instances[0].polygons[0],
                                  [[10.0, 5.5], [30.5, 5.5], [30.5, 40.25], [10.0, 40.25]])
    np.testing.assert_array_equal(s.instances[1].polygons[0], [[1, 1], [5, 1], [5, 5]])


def test_group_multipart_off_gives_one_instance_per_part(tmp_path, scenes):
    w = write_labelme(tmp_path, scenes, group_multipart=False)
    ds = labelme.read(tmp_path)
    check_reading(ds, w)
    assert all(len(i.polygons) == 1 for s in ds.samples for i in s.instances)


def test_same_group_id_different_labels_are_different_instances(tmp_path):
    sq = [[0, 0], [4, 0], [4, 4]]
    doc = {"shapes": [{"label": "a", "points": sq, "group_id": 1}, {"label": "b", "points": sq, "group_id": 1},
                      {"label": "a", "points": sq, "group_id": 1}, {"label": "a", "points": sq, "group_id": 2}],
           "imagePath": "x.jpg"}
    (tmp_path / "x.json").write_text(json.dumps(doc))
    s, = labelme.read(tmp_path).samples
    assert [len(i.polygons) for i in s.instances] == [2, 1, 1]
    assert "shapes 0,2" in s.instances[0].name


def test_image_data_embedded(tmp_path, scenes):
    w = write_labelme(tmp_path, scenes[:3], embed_image_data=True, image_files=False)
    ds = labelme.read(tmp_path)
    check_reading(ds, w)
    assert all(s.image_path is None and s.image_bytes is not None for s in ds.samples)
    assert [s.file_name for s in ds.samples] == [e.file_name for e in w.images]


def test_image_data_precedence(tmp_path, scenes):
    w = write_labelme(tmp_path, scenes[:2], embed_image_data=True)
    # the file wins by default: the original bytes (labelme's imageData is a re-encoded copy)
    ds = labelme.read(tmp_path)
    assert all(s.image_path is not None and s.image_bytes is None for s in ds.samples)
    # replace the embedded copy with other bytes to tell them apart
    j = tmp_path / "img_00000.json"
    d = json.loads(j.read_text())
    d["imageData"] = base64.b64encode(b"\xff\xd8\xff other").decode()
    j.write_text(json.dumps(d))
    s0 = labelme.read(tmp_path, image_data="always").samples[0]
    assert s0.image_bytes == b"\xff\xd8\xff other" and s0.image_path is None
    s0 = labelme.read(tmp_path, image_data="never").samples[0]
    assert s0.image_path is not None
    # file missing: fall back to imageData
    (tmp_path / "img_00000.jpg").unlink()
    s0 = labelme.read(tmp_path).samples[0]
    assert s0.image_bytes == b"\xff\xd8\xff other" and s0.file_name == "img_00000.jpg"
    assert labelme.read(tmp_path).samples[1].image_path.read_bytes() == w.images[1].image_bytes
    with pytest.raises(ValueError, match="image_data"):
        labelme.read(tmp_path, image_data="sometimes")


def test_fixed_classes_labels_txt_and_ignore_labels(tmp_path, scenes):
    write_labelme(tmp_path, scenes[:3])
    used = ["person", "car", "dog", "bicycle", "bottle"]  # not sorted: the file's order is kept
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\n" + "\n".join(used) + "\n")
    ds = labelme.read(tmp_path)
    assert ds.classes == used  # labels.txt order, specials dropped
    ds = labelme.read(tmp_path, classes=["person", "car"])
    assert ds.classes == ["person", "car"]
    unknown = [p for s in ds.samples for p in s.problems]
    assert unknown and all(p.reason == "unknown_label" and "shape" in p.annotation for p in unknown)
    assert all(ds.classes[i.label] in ("person", "car") for s in ds.samples for i in s.instances)
    # with a fixed list, an ignore region whose label is a class keeps its id
    ds = labelme.read(tmp_path, ignore_labels=["person"])
    assert {i.label for s in ds.samples for i in s.instances if i.ignore} == {0}
    # ignore_labels: those labels become ignore regions and create no class
    (tmp_path / "labels.txt").unlink()
    ds = labelme.read(tmp_path, ignore_labels=["person"])
    assert "person" not in ds.classes
    n_person = sum(1 for sc in scenes[:3] for i in sc.instances if i.label == 0)
    assert sum(i.ignore for s in ds.samples for i in s.instances) == n_person
    # given as a comma string (the CLI form)
    assert labelme.read(tmp_path, classes="person,car").classes == ["person", "car"]


def test_bad_inputs_are_problems(tmp_path):
    (tmp_path / "broken.json").write_text('{"shapes": [ {"label": "a", ')
    (tmp_path / "other.json").write_text('{"images": [], "annotations": []}')
    (tmp_path / "sub").mkdir()
    doc = {"shapes": [{"label": "a", "points": [[0, 0], [1]], "shape_type": "polygon"},
                      {"label": "a", "points": [[0, 0]], "shape_type": "rectangle"},
                      {"label": "a", "points": [[0, 0], [9, 0], [9, 9]], "shape_type": "linestrip"},
                      {"label": "_background_", "points": [[0, 0], [9, 0], [9, 9]]},
                      "not a shape",
                      {"label": None, "points": [[0, 0], [9, 0], [9, 9]]},
                      {"label": "a", "points": [[0, 0], [9, 0], [9, 9]]}],
           "imagePath": "..\\..\\outside.jpg"}
    (tmp_path / "sub" / "bad.json").write_text(json.dumps(doc))
    (tmp_path / "nodata.json").write_text(json.dumps({"shapes": [], "imagePath": "", "imageData": None}))
    ds = labelme.read(tmp_path)
    by_file = {p.file: p for p in ds.problems}
    assert by_file["broken.json"].reason == "malformed_json" and "malformed JSON" in str(by_file["broken.json"])
    assert by_file["other.json"].reason == "not_labelme"
    assert by_file["nodata.json"].reason == "missing_image"
    s, = ds.samples
    reasons = [(p.reason, p.annotation) for p in s.problems]
    assert ("malformed_shape", "shape 0 (label 'a')") in reasons
    assert ("malformed_shape", "shape 1 (label 'a')") in reasons
    assert ("unsupported_shape", "shape 2 (label 'a')") in reasons
    assert ("background_shape", "shape 3 (label '_background_')") in reasons
    assert ("malformed_shape", "shape 4") in reasons
    assert ("missing_label", "shape 5 (label '')") in reasons
    esc = [p for p in s.problems if p.reason == "path_escapes_root"]
    assert esc and esc[0].fatal and esc[0].file == "sub/bad.json"
    assert s.image_path is not None and s.image_path.name == "outside.jpg"  # backslashes normalized
    assert len(s.instances) == 1 and ds.classes == ["a"]


def test_not_a_folder(tmp_path):
    with pytest.raises(ValueError, match="neither a folder nor a JSON"):
        labelme.read(tmp_path / "missing")


def test_stale_image_path_falls_back_to_the_file_beside_the_json(tmp_path, scenes):
    w = write_labelme(tmp_path, scenes[:1])
    j = tmp_path / "img_00000.json"
    d = json.loads(j.read_text())
    d["imagePath"] = "C:\\Users\\me\\data\\img_00000.jpg"
    j.write_text(json.dumps(d))
    s, = labelme.read(tmp_path).samples
    assert s.file_name == "img_00000.jpg" and not s.problems
    assert s.image_path.read_bytes() == w.images[0].image_bytes
