import json

import numpy as np
import pytest

from tests.helpers.env import COCO_SAMPLE
from fastload.formats.coco import (flip_pairs_from_names, rle_counts_to_string,
                                   rle_decode, rle_encode, rle_string_to_counts)
from fastload.packing import pack
from fastload.store import Dataset
from fastload.targets.raster import fill_polygon
from fastload.synth.scenes import FLIP_PAIRS, KEYPOINT_NAMES
from fastload.synth.datasets import coco_image_id, write_dataset

SAMPLE = COCO_SAMPLE
requires_sample = pytest.mark.skipif(not SAMPLE.exists(), reason=f"{SAMPLE} absent")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    scenes = write_dataset(root / "src", "coco", n_images=12, width=200, height=150, seed=1,
                           keypoints=True, multipart_prob=0.5)
    s = pack(root / "src", root / "out", "coco", shard_size=5, workers=1, progress=False)
    return root, scenes, s


def test_round_trip(synth):
    root, scenes, summary = synth
    ds = Dataset(root / "out")
    assert len(ds) == 12 and summary.images == 12 and summary.problems == 0
    assert ds.keypoint_names == KEYPOINT_NAMES and ds.flip_pairs == FLIP_PAIRS
    assert ds.skeleton == [(0, 1), (0, 2), (1, 3), (2, 4)]
    n_multi = 0
    for i, sc in enumerate(scenes):
        r = ds[i]
        assert r.id == coco_image_id(i) and r.file_name == f"{i:06d}.jpg"
        assert r.image_bytes == (root / "src" / "images" / r.file_name).read_bytes()
        assert (r.height, r.width, r.image_format) == (150, 200, "jpeg")
        assert len(r.instances) == len(sc.instances)
        for got, want in zip(r.instances, sc.instances):
            assert got.label == want.label and not got.ignore and not got.crowd
            assert len(got.polygons) == len(want.polygons)
            n_multi += len(got.polygons) > 1
            for p, q in zip(got.polygons, want.polygons):
                assert p.dtype == np.float32 and np.array_equal(p, q.astype(np.float32))
            allp = np.concatenate(want.polygons)
            assert np.array_equal(got.bbox, np.r_[allp.min(0), allp.max(0)].astype(np.float32))
            assert np.array_equal(got.keypoints, want.keypoints)
    assert n_multi > 0
    assert summary.instances == sum(len(s.instances) for s in scenes)
    assert summary.polygons == sum(len(i.polygons) for s in scenes for i in s.instances)
    report = json.loads((root / "out" / "pack_report.json").read_text())
    assert report["images"] == 12 and report["instances"] == summary.instances


@pytest.mark.parametrize("workers,executor", [(2, "process"), (2, "thread")])
def test_parallel_pack_is_identical(synth, tmp_path, workers, executor):
    root, _, _ = synth
    pack(root / "src", tmp_path / "o", "coco", shard_size=5, workers=workers, executor=executor,
         chunk=2, progress=False)
    a, b = Dataset(root / "out"), Dataset(tmp_path / "o")
    assert [a.get_raw(i) for i in range(len(a))] == [b.get_raw(i) for i in range(len(b))]
    ma = json.loads((root / "out" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert [s["blake2b"] for s in ma["shards"]] == [s["blake2b"] for s in mb["shards"]]


def test_src_forms(synth, tmp_path):
    root, _, _ = synth
    js = root / "src" / "annotations" / "instances.json"
    pack(js, tmp_path / "a", "coco", workers=1, progress=False)  # the JSON file itself
    pack(js, tmp_path / "b", "coco", workers=1, progress=False, images=root / "src" / "images")
    assert Dataset(tmp_path / "a").get_raw(3) == Dataset(tmp_path / "b").get_raw(3) == \
        Dataset(root / "out").get_raw(3)


def _rle_decode_reference(rle):
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = rle_string_to_counts(counts)
    flat, v = [], 0
    for c in counts:
        flat += [v] * int(c)
        v = 1 - v
    return np.array(flat, np.uint8).reshape(w, h).T


def test_rle_codec(rng):
    for _ in range(30):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = (rng.random((h, w)) < rng.uniform(0, 1)).astype(np.uint8)
        counts = rle_encode(m)
        s = rle_counts_to_string(counts)
        assert list(rle_string_to_counts(s)) == counts
        for c in (counts, s):
            assert np.array_equal(rle_decode({"size": [h, w], "counts": c}), m)
            assert np.array_equal(_rle_decode_reference({"size": [h, w], "counts": c}), m)
    with pytest.raises(ValueError, match="sum"):
        rle_decode({"size": [3, 3], "counts": [1, 2]})


@pytest.mark.parametrize("compressed", [True, False])
def test_crowd_ignore(tmp_path, compressed):
    write_dataset(tmp_path / "src", "coco", n_images=3, width=160, height=120, seed=2,
                  crowd_every=1, compressed_rle=compressed)
    s = pack(tmp_path / "src", tmp_path / "out", "coco", workers=1, progress=False)
    ds = Dataset(tmp_path / "out")
    assert s.ignore_instances == 3 and s.problems == 0
    want = np.zeros((120, 160), np.uint8)
    want[10:60, 20:120] = 1
    want[30:60, 60:80] = 0
    for i in range(3):
        crowd = [x for x in ds[i].instances if x.crowd]
        assert len(crowd) == 1 and crowd[0].ignore and crowd[0].label == 0
        r = np.zeros_like(want)
        for p in crowd[0].polygons:
            fill_polygon(r, p, 1, 1.0)
        assert np.array_equal(r, want)
        assert np.allclose(crowd[0].bbox, [20, 10, 120, 60])


def test_crowd_skip(tmp_path):
    scenes = write_dataset(tmp_path / "src", "coco", n_images=4, width=160, height=120, seed=2,
                           crowd_every=2)
    s = pack(tmp_path / "src", tmp_path / "out", "coco", workers=1, progress=False,
             crowd="skip", strict=True)  # a policy skip is not a --strict failure
    ds = Dataset(tmp_path / "out")
    assert s.skipped_annotations == {"crowd_skipped": 2} and s.ignore_instances == 0
    assert [ds[i].num_instances for i in range(4)] == [len(x.instances) for x in scenes]
    assert "crowd_skipped" in (tmp_path / "out" / "problems.txt").read_text()


def test_flip_pairs_from_names():
    names = ["nose", "left_eye", "right_eye", "Left Hand", "Right Hand", "l_x"]
    assert flip_pairs_from_names(names) == [(1, 2), (3, 4)]


@requires_sample
def test_real_coco_sample(tmp_path):
    s = pack(SAMPLE, tmp_path / "out", "coco", workers=1, progress=False, strict=True)
    data = json.loads((SAMPLE / "test_coco.json").read_text())
    ds = Dataset(tmp_path / "out")
    assert len(ds) == 4 and s.instances == 14 and ds.classes == ["person"]
    assert len(ds.keypoint_names) == 17 and (5, 6) in ds.flip_pairs and len(ds.flip_pairs) == 8
    anns = sorted(data["annotations"], key=lambda a: a["id"])
    parts_seen = []
    for i, im in enumerate(sorted(data["images"], key=lambda x: x["id"])):
        r = ds[i]
        assert r.id == im["id"] and r.file_name == im["file_name"]
        assert (r.height, r.width) == (im["height"], im["width"])
        assert r.image_bytes == (SAMPLE / im["file_name"]).read_bytes()
        mine = [a for a in anns if a["image_id"] == im["id"]]
        assert len(r.instances) == len(mine)
        for got, a in zip(r.instances, mine):
            parts_seen.append(len(got.polygons))
            for p, q in zip(got.polygons, a["segmentation"]):
                assert np.array_equal(p, np.asarray(q, np.float32).reshape(-1, 2))
            assert np.array_equal(got.keypoints, np.asarray(a["keypoints"], np.float32).reshape(17, 3))
    assert sorted(parts_seen)[-1] == 4 and len(parts_seen) == 14


def test_non_crowd_rle_is_a_plain_instance(tmp_path):
    write_dataset(tmp_path / "src", "coco", n_images=1, width=160, height=120, seed=2,
                  crowd_every=1)
    js = tmp_path / "src" / "annotations" / "instances.json"
    data = json.loads(js.read_text())
    data["annotations"][-1]["iscrowd"] = 0
    js.write_text(json.dumps(data))
    s = pack(tmp_path / "src", tmp_path / "out", "coco", workers=1, progress=False, crowd="skip")
    last = Dataset(tmp_path / "out")[0].instances[-1]
    assert s.problems == 0 and not last.ignore and not last.crowd and last.label == 0
    assert np.allclose(last.bbox, [20, 10, 120, 60])
