"""fastload.synth: the synthetic datasets the demo, bench, tests and benchmarks use are real
datasets: each format packs with no problem at all, and writing is deterministic."""
import json

import numpy as np
import pytest
from PIL import Image

from fastload.packing import pack
from fastload.store import Dataset
from fastload.synth import CLASSES, FORMATS, make_scene, write_dataset
from fastload.synth.datasets import main as synth_main

N, W, H = 3, 160, 120
EXACT = ("coco", "labelme")  # formats that keep every instance with all its parts, exactly


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_packs_without_problems(tmp_path, fmt):
    if fmt == "masks":
        pytest.importorskip("skimage", reason="tracing mask PNGs needs fastload[masks]")
    scenes = write_dataset(tmp_path / "src", fmt, n_images=N, seed=5, width=W, height=H)
    assert len(scenes) == N
    summary = pack(tmp_path / "src", tmp_path / "packed", format=fmt, workers=1, strict=True,
                   progress=False)
    assert summary.images == N and summary.problems == 0
    assert not summary.skipped_images and not summary.skipped_annotations
    assert summary.clipped_vertices == 0
    ds = Dataset(tmp_path / "packed")
    assert len(ds) == N
    for i, scene in enumerate(scenes):
        rec = ds[i]
        assert (rec.height, rec.width) == (H, W)
        assert len(rec.instances) >= 1
        if fmt in EXACT:
            assert [ds.classes[inst.label] for inst in rec.instances] == \
                [CLASSES[si.label] for si in scene.instances]
            for inst, si in zip(rec.instances, scene.instances):
                assert len(inst.polygons) == len(si.polygons)
                for got, want in zip(inst.polygons, si.polygons):
                    np.testing.assert_array_equal(np.asarray(got, np.float32), want)
    parts = sum(len(si.polygons) for s in scenes for si in s.instances)
    if fmt in EXACT:
        assert summary.instances == sum(len(s.instances) for s in scenes)
        assert summary.polygons == parts
    elif fmt == "via":  # one region per part: no grouping of parts into instances
        assert summary.instances == summary.polygons == parts


def test_coco_keypoints_pack(tmp_path):
    scenes = write_dataset(tmp_path / "src", "coco", n_images=2, seed=1, width=W, height=H,
                           keypoints=True)
    summary = pack(tmp_path / "src", tmp_path / "packed", format="coco", workers=1, strict=True,
                   progress=False)
    assert summary.problems == 0
    assert summary.keypoint_instances == sum(len(s.instances) for s in scenes)


def test_writing_is_deterministic(tmp_path):
    for d in ("a", "b"):
        write_dataset(tmp_path / d, "coco", n_images=2, seed=9, width=W, height=H)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3  # the JSON and two images
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    other = tmp_path / "c"
    write_dataset(other, "coco", n_images=2, seed=10, width=W, height=H)
    assert (other / files[0]).read_bytes() != (tmp_path / "a" / files[0]).read_bytes()


def test_scene_geometry():
    scene = make_scene(np.random.default_rng(0), width=W, height=H, keypoints=True)
    assert scene.image.shape == (H, W, 3) and scene.image.dtype == np.uint8
    assert scene.instances
    for inst in scene.instances:
        assert 0 <= inst.label < len(CLASSES)
        for p in inst.polygons:
            assert p.dtype == np.float32 and p.ndim == 2 and p.shape[1] == 2 and len(p) >= 3
            assert (p >= 0).all() and (p[:, 0] <= W).all() and (p[:, 1] <= H).all()
        assert inst.keypoints.shape == (5, 3)


def test_keypoints_only_in_coco(tmp_path):
    with pytest.raises(ValueError, match="COCO format only"):
        write_dataset(tmp_path, "labelme", n_images=1, keypoints=True)
    with pytest.raises(ValueError, match="unknown format"):
        write_dataset(tmp_path, "pascal", n_images=1)


def test_command_line(tmp_path, capsys):
    assert synth_main([str(tmp_path / "out"), "--format", "coco", "--n", "2", "--width", "64",
                       "--height", "48"]) == 0
    assert "wrote 2 images" in capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "annotations" / "instances.json").read_text())
    assert len(data["images"]) == 2
    assert Image.open(tmp_path / "out" / "images" / data["images"][0]["file_name"]).size == (64, 48)
    with pytest.raises(SystemExit):
        synth_main([str(tmp_path / "bad"), "--format", "yolo", "--keypoints"])
