"""fastload.formats.coco.locate: the one COCO locator (the reader and bench use it)."""
import json

import pytest

from fastload.formats import coco
from tests.helpers.env import COCO_SAMPLE


def _coco_json(path, first="x.jpg"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": [{"id": 9, "file_name": "late.jpg"},
                                           {"id": 2, "file_name": first}],
                                "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    return path


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("json_at, images_at", [
    ("ann.json", "."),                                  # JSON beside the images
    ("ann.json", "images"),                             # images/ beside the JSON
    ("annotations/instances.json", "images"),           # the synthetic layout
    ("annotations/instances.json", "."),                # images in the parent
    ("annotations/instances.json", "annotations/images"),
    ("annotations/instances_val2017.json", "val2017"),  # the COCO release layout
])
def test_layouts(tmp_path, json_at, images_at):
    js = _coco_json(tmp_path / json_at)
    img_dir = tmp_path / images_at
    _touch(img_dir / "x.jpg")  # the image with the smallest id decides
    for src in (tmp_path, js):
        assert coco.locate(src) == (js, img_dir)
    # the reader resolves images by the same rules
    assert coco.read(tmp_path).samples[0].image_path.parent == coco.locate(tmp_path)[1]


def test_given_image_folder_and_fallback(tmp_path):
    js = _coco_json(tmp_path / "ann.json")
    assert coco.locate(tmp_path, images=tmp_path / "elsewhere") == (js, tmp_path / "elsewhere")
    assert coco.locate(js) == (js, tmp_path)  # no candidate holds the image: the JSON's folder


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="no such COCO"):
        coco.locate(tmp_path / "absent")
    with pytest.raises(ValueError, match="no COCO annotation JSON"):
        coco.locate(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")  # a packed dataset's manifest is not COCO
    with pytest.raises(ValueError, match="no COCO annotation JSON"):
        coco.locate(tmp_path)
    _coco_json(tmp_path / "a.json")
    assert coco.locate(tmp_path)[0] == tmp_path / "a.json"
    _coco_json(tmp_path / "b.json")
    with pytest.raises(ValueError, match="several annotation files"):
        coco.locate(tmp_path)
    (tmp_path / "b.json").write_text('{"not": "coco"}')
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        coco.locate(tmp_path / "b.json")


@pytest.mark.skipif(not COCO_SAMPLE.exists(), reason=f"{COCO_SAMPLE} absent")
def test_real_sample():
    assert coco.locate(COCO_SAMPLE) == (COCO_SAMPLE / "test_coco.json", COCO_SAMPLE)
