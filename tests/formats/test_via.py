"""VIA reader: 1.x exports and 2.x projects, balloon-style, read back exactly."""
import json

import numpy as np
import pytest

from fastload.formats import via
from fastload.synth.scenes import make_scene
from fastload.synth.formats import check_reading, write_via


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(11)
    return [make_scene(rng, 160, 120, multipart_prob=0.4) for _ in range(4)]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("class_attribute", ["name", None])
def test_roundtrip(tmp_path, scenes, version, class_attribute):
    w = write_via(tmp_path, scenes, version=version, class_attribute=class_attribute,
                  rect_every=4, extra_shapes=True)
    ds = via.read(tmp_path)  # folder with one JSON
    assert ds.format == "via"
    assert ds.classes == w.classes
    if class_attribute is None:
        assert ds.classes == ["object"]  # balloon-style: no attributes at all
    check_reading(ds, w)
    for s in ds.samples:
        p, = s.problems
        assert p.reason == "unsupported_shape" and "circle" in p.what
        assert p.file == "via_region_data.json" and s.file_name in p.annotation and "region" in p.annotation
    # the JSON file itself works too, and gives the same thing
    ds2 = via.read(w.extra["json"])
    assert [len(s.instances) for s in ds2.samples] == [len(s.instances) for s in ds.samples]


def test_rect_becomes_four_points(tmp_path):
    doc = {"a.jpg1": {"filename": "a.jpg", "size": 1, "file_attributes": {},
                      "regions": {"1": {"shape_attributes": {"name": "rect", "x": 10, "y": 20, "width": 5.5, "height": 3},
                                        "region_attributes": {}},
                                  "0": {"shape_attributes": {"name": "polygon", "all_points_x": [1, 2, 3],
                                                             "all_points_y": [4, 5, 7]},
                                        "region_attributes": {}}}}}
    (tmp_path / "v.json").write_text(json.dumps(doc))
    s, = via.read(tmp_path / "v.json").samples
    # 1.x dict regions are read in numeric key order
    np.testing.assert_array_equal(s.instances[0].polygons[0], [[1, 4], [2, 5], [3, 7]])
    np.testing.assert_array_equal(s.instances[1].polygons[0], [[10, 20], [15.5, 20], [15.5, 23], [10, 23]])


def _doc(regions_attrs, version=2):
    pts = {"name": "polygon", "all_points_x": [1, 9, 9], "all_points_y": [1, 1, 9]}
    regions = [{"shape_attributes": dict(pts), "region_attributes": ra} for ra in regions_attrs]
    meta = {"x.jpg10": {"filename": "x.jpg", "size": 10, "regions": regions, "file_attributes": {}}}
    return {"_via_img_metadata": meta, "_via_settings": {}, "_via_attributes": {"region": {}, "file": {}}}


def test_class_attribute_detection(tmp_path):
    f = tmp_path / "p.json"
    # a single attribute with any name is the class
    f.write_text(json.dumps(_doc([{"kind": "cat"}, {"kind": "dog"}])))
    assert via.read(f).classes == ["cat", "dog"]
    # several attributes: the known names win
    f.write_text(json.dumps(_doc([{"label": "cat", "color": "red"}, {"label": "dog", "color": "blue"}])))
    assert via.read(f).classes == ["cat", "dog"]
    assert via.read(f, class_attribute="color").classes == ["blue", "red"]
    # several unknown attributes: ask for class_attribute
    f.write_text(json.dumps(_doc([{"a": "cat", "b": "x"}])))
    with pytest.raises(ValueError, match="class_attribute"):
        via.read(f)
    # checkbox attributes: {option: true}
    f.write_text(json.dumps(_doc([{"name": {"cat": True, "dog": False}}, {"name": {"cat": True, "dog": True}}])))
    ds = via.read(f)
    s, = ds.samples
    assert ds.classes == ["cat"] and len(s.instances) == 1
    assert s.problems[0].reason == "ambiguous_label" and "region 1" in s.problems[0].annotation


def test_region_without_class(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(_doc([{"name": "cat"}, {"name": ""}, {}])))
    ds = via.read(f)
    assert ds.classes == ["cat", "object"]
    assert [ds.classes[i.label] for i in ds.samples[0].instances] == ["cat", "object", "object"]
    ds = via.read(f, default_class=None)
    s, = ds.samples
    assert len(s.instances) == 1 and [p.reason for p in s.problems] == ["missing_label", "missing_label"]
    ds = via.read(f, classes=["dog", "cat"])
    assert ds.classes == ["dog", "cat"] and ds.samples[0].instances[0].label == 1
    assert [p.reason for p in ds.samples[0].problems] == ["unknown_label", "unknown_label"]


def test_images_option_and_paths(tmp_path, scenes):
    w = write_via(tmp_path / "imgs", scenes[:2], version=2)
    j = tmp_path / "ann.json"
    w.extra["json"].rename(j)
    ds = via.read(j, images=tmp_path / "imgs")
    check_reading(ds, w)
    doc = json.loads(j.read_text())
    e = next(iter(doc["_via_img_metadata"].values()))
    e["filename"] = "../../etc/passwd"
    e2 = dict(e, filename="http://example.com/a.jpg")
    doc["_via_img_metadata"]["zz"] = e2
    j.write_text(json.dumps(doc))
    ds = via.read(j, images=tmp_path / "imgs")
    reasons = {s.file_name: [p.reason for p in s.problems if p.fatal] for s in ds.samples}
    assert reasons["../../etc/passwd"] == ["path_escapes_root"]
    assert reasons["http://example.com/a.jpg"] == ["missing_image"]


def test_bad_files(tmp_path):
    f = tmp_path / "p.json"
    f.write_text("{ not json")
    with pytest.raises(ValueError, match="p.json: malformed JSON"):
        via.read(f)
    f.write_text(json.dumps({"project": {}, "config": {}, "attribute": {}, "file": {}, "view": {}, "metadata": {}}))
    with pytest.raises(ValueError, match="VIA 3"):
        via.read(f)
    f.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="not a VIA"):
        via.read(f)
    (tmp_path / "q.json").write_text("{}")
    with pytest.raises(ValueError, match="2 JSON files"):
        via.read(tmp_path)
    # malformed shapes are problems naming the file and region
    doc = _doc([{"name": "a"}, {"name": "a"}, {"name": "a"}])
    regs = doc["_via_img_metadata"]["x.jpg10"]["regions"]
    regs[0]["shape_attributes"] = {"name": "polygon", "all_points_x": [1, 2, 3], "all_points_y": [1, 2]}
    regs[1]["shape_attributes"] = {"name": "rect", "x": 1}
    regs[2]["shape_attributes"] = {"name": "ellipse", "cx": 1, "cy": 1, "rx": 2, "ry": 3}
    f.write_text(json.dumps(doc))
    s, = via.read(f).samples
    assert [p.reason for p in s.problems] == ["malformed_region", "malformed_region", "unsupported_shape"]
    assert [p.annotation.split(" (")[0] for p in s.problems] == ["x.jpg, region 0", "x.jpg, region 1",
                                                                 "x.jpg, region 2"]
    assert s.instances == []
