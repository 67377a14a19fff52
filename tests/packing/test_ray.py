"""``fastload pack --engine ray`` on a real local Ray instance (one for the whole module: its
start takes 5-15 s): the same dataset as the local engine, record by record; a failing task
is retried, one that keeps failing ends the pack with a clear error and no manifest."""
import json
import sys
from pathlib import Path

import pytest

from fastload.cli import main as cli_main
from fastload.formats import READERS
from fastload.packing import PackError, pack
from fastload.store import MANIFEST_NAME, Dataset, verify
from fastload.synth.datasets import write_dataset
from tests.helpers.env import COCO_SAMPLE, requires_coco_sample
from tests.helpers.faults import attempts

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    from fastload.packing.ray_engine import start_ray
    start_ray(num_cpus=2)  # pack(engine="ray") uses it and leaves it running
    yield
    ray.shutdown()


def assert_same_dataset(a: Path, b: Path, engine_b="ray"):
    """Two packs of one source: same records (ids, order, bytes), same problems, same counts."""
    da, db = Dataset(a), Dataset(b)
    assert len(da) == len(db) > 0
    for i in range(len(da)):
        assert da.get_raw(i) == db.get_raw(i), f"record {i} differs"
    ma, mb = da.manifest, db.manifest
    assert (ma.classes, ma.keypoint_names, ma.flip_pairs, ma.skeleton, ma.summary) == \
           (mb.classes, mb.keypoint_names, mb.flip_pairs, mb.skeleton, mb.summary)
    assert (a / "problems.txt").read_text() == (b / "problems.txt").read_text()
    ra, rb = (json.loads((d / "pack_report.json").read_text()) for d in (a, b))
    for key in ("images", "instances", "polygons", "ignore_instances", "keypoint_instances",
                "clipped_vertices", "skipped_images", "skipped_annotations", "problems",
                "bytes", "image_bytes"):
        assert ra[key] == rb[key], key
    da.close()
    db.close()
    return ma, mb


def no_leftovers(out: Path):
    return not any(out.parent.glob(f".{out.name}.fastload-*"))


@requires_coco_sample
def test_coco_sample_equals_local(tmp_path):
    local = pack(COCO_SAMPLE, tmp_path / "local", "coco", shard_size=2, workers=2, progress=False)
    dist = pack(COCO_SAMPLE, tmp_path / "ray", "coco", shard_size=2, engine="ray",
                progress=False)
    assert dist.images == local.images == 4 and dist.shards == 2
    assert_same_dataset(tmp_path / "local", tmp_path / "ray")


@pytest.fixture(scope="module")
def broken_synth(tmp_path_factory):
    """A generated COCO dataset with keypoints, crowd regions and broken images: 30 images,
    of which image 3 is truncated, image 9 missing and image 10 not an image."""
    src = tmp_path_factory.mktemp("synth") / "src"
    write_dataset(src, "coco", n_images=30, width=128, height=96, seed=5, keypoints=True,
                  multipart_prob=0.3)
    img = src / "images"
    (img / "000003.jpg").write_bytes((img / "000003.jpg").read_bytes()[:900])
    (img / "000009.jpg").unlink()
    (img / "000010.jpg").write_bytes(b"not a jpeg at all" * 20)
    return src


def test_generated_dataset_with_problems_equals_local(broken_synth, tmp_path):
    local = pack(broken_synth, tmp_path / "local", "coco", shard_size=8, workers=2,
                 progress=False)
    dist = pack(broken_synth, tmp_path / "ray", "coco", shard_size=8, engine="ray",
                progress=False)
    assert local.images == dist.images == 27 and local.problems == dist.problems == 3
    ma, mb = assert_same_dataset(tmp_path / "local", tmp_path / "ray")
    # shard boundaries differ: the ray engine's shards hold the records of 8 samples each
    assert [s.count for s in ma.shards] == [8, 8, 8, 3]
    assert [s.count for s in mb.shards] == [7, 6, 8, 6]
    assert [s.file for s in mb.shards] == [f"shard-{k:05d}.lmdb" for k in range(4)]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(
        [s.file for s in mb.shards] + [s.digests for s in mb.shards]
        + [MANIFEST_NAME, "pack_report.json", "problems.txt"])
    assert [s.digests for s in mb.shards] == [f"shard-{k:05d}.digests" for k in range(4)]
    assert verify(tmp_path / "ray") == []
    assert no_leftovers(tmp_path / "ray")


def test_strict_fails_on_the_same_problem(broken_synth, tmp_path):
    with pytest.raises(PackError) as local:
        pack(broken_synth, tmp_path / "local", "coco", shard_size=8, strict=True, progress=False)
    with pytest.raises(PackError) as dist:
        pack(broken_synth, tmp_path / "ray", "coco", shard_size=8, strict=True, engine="ray",
             progress=False)
    assert str(local.value) == str(dist.value) and "000003.jpg" in str(dist.value)
    assert not (tmp_path / "ray").exists() and no_leftovers(tmp_path / "ray")


@pytest.fixture
def faulty_format(monkeypatch, tmp_path):
    src = tmp_path / "src"
    write_dataset(src, "coco", n_images=9, width=96, height=64, seed=2)
    monkeypatch.setitem(READERS, "faulty", "tests.helpers.faults")
    pack(src, tmp_path / "local", "faulty", shard_size=3, workers=1, progress=False,
         options=dict(counter=str(tmp_path / "local-attempts"), fail=0))
    return src


@pytest.mark.parametrize("mode", ["raise", "exit"])
def test_a_failing_task_is_retried(faulty_format, tmp_path, mode):
    counter = tmp_path / "attempts"
    s = pack(faulty_format, tmp_path / "ray", "faulty", shard_size=3, engine="ray",
             progress=False, options=dict(counter=str(counter), fail=1, mode=mode, index=4))
    assert attempts(counter) == 2  # failed once (raised / the worker died), then succeeded
    assert s.images == 9 and s.problems == 0
    assert_same_dataset(tmp_path / "local", tmp_path / "ray")


@pytest.mark.parametrize("mode,error", [
    ("raise", "MissingDependency: injected failure 4 of 100"),
    ("exit", "WorkerCrashedError: The worker died unexpectedly")])
def test_a_task_that_keeps_failing_ends_the_pack(faulty_format, tmp_path, mode, error):
    from fastload.packing.ray_engine import DEFAULT_RETRIES
    counter, out = tmp_path / "attempts", tmp_path / "ray"
    with pytest.raises(PackError) as e:
        pack(faulty_format, out, "faulty", shard_size=3, engine="ray", progress=False,
             options=dict(counter=str(counter), fail=100, mode=mode, index=4))
    msg = str(e.value)
    assert msg.startswith("shard task 1 (samples 3..5, from 000003.jpg) failed 4 times; "
                          "the last error: " + error), msg
    assert attempts(counter) == DEFAULT_RETRIES + 1
    assert not out.exists() and no_leftovers(out)  # no manifest, no staging folder


def test_a_shard_the_driver_cannot_see_is_refused(tmp_path):
    """What a cluster without shared storage gives: the task's file is not where the driver
    looks (here: not there at all, then of another size)."""
    from fastload.packing.ray_engine import ShardResult, _adopt
    from fastload.store import ShardEntry
    entry = ShardEntry("part-00000-abc.lmdb", 3, 300, "ab" * 32, file_bytes=8192)
    res = ShardResult(chunk=0, samples=3, entry=entry, host="node-7")
    with pytest.raises(PackError, match=r"part-00000-abc.lmdb: the shard written on Ray node "
                                        r"node-7 is missing here; OUT must be on storage every "
                                        r"node mounts at the same path"):
        _adopt(tmp_path, res, 0)
    (tmp_path / entry.file).write_bytes(b"\0" * 4096)
    with pytest.raises(PackError, match="is 4096 bytes, not 8192, here"):
        _adopt(tmp_path, res, 0)
    (tmp_path / entry.file).write_bytes(b"\0" * 8192)
    assert _adopt(tmp_path, res, 5).file == "shard-00005.lmdb"
    assert (tmp_path / "shard-00005.lmdb").exists()


def test_cli_engine_ray(broken_synth, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["pack", str(broken_synth), str(out), "-f", "coco", "-q", "--engine", "ray",
                     "--shard-size", "16"]) == 0
    assert "packed 27 images" in capsys.readouterr().out
    assert [s.count for s in Dataset(out).manifest.shards] == [13, 14]
    assert cli_main(["pack", str(broken_synth), str(tmp_path / "o2"), "-f", "coco", "-q",
                     "--address", "auto"]) == 2
    assert "it needs engine='ray' (--engine ray)" in capsys.readouterr().err


def test_without_ray_the_error_names_the_extra(broken_synth, tmp_path, monkeypatch, capsys):
    from fastload.optional import MissingDependency
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is absent
    with pytest.raises(MissingDependency, match=r"pip install 'fastload\[ray\]'"):
        pack(broken_synth, tmp_path / "out", "coco", engine="ray", progress=False)
    assert not (tmp_path / "out").exists()
    assert cli_main(["pack", str(broken_synth), str(tmp_path / "out"), "-f", "coco", "-q",
                     "--engine", "ray"]) == 2
    assert "fastload[ray]" in capsys.readouterr().err
