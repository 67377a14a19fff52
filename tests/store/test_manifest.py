"""fastload.store.Manifest: the one owner of manifest.json (fields, checks, atomic write)."""
import hashlib
import json
import shutil

import pytest

from fastload.store import (FORMAT_VERSION, MANIFEST_NAME, Dataset, Manifest, ShardEntry,
                            StoreError)


def _manifest(**kw):
    m = dict(source_format="coco", classes=["a", "b"],
             shards=[ShardEntry("shard-00000.lmdb", 3, 300, "ab" * 32, 8192),
                     ShardEntry("shard-00001.lmdb", 2, 200, "cd" * 32, 8192)],
             keypoint_names=["nose", "left_eye", "right_eye"], flip_pairs=[(1, 2)],
             skeleton=[(0, 1), (0, 2)], summary={"images": 5, "skipped_images": {}},
             source="/data/src", created="2026-01-01T00:00:00Z", fastload_version="0.1.0",
             record_version=1)
    m.update(kw)
    return Manifest(**m)


def _with_files(tmp_path, m):
    for s in m.shards:
        (tmp_path / s.file).write_bytes(b"\0" * (s.file_bytes or 0))
    m.write(tmp_path)
    return tmp_path


def test_round_trip(tmp_path):
    m = _manifest()
    path = m.write(tmp_path)
    assert path == tmp_path / MANIFEST_NAME
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]  # no temp file left
    assert Manifest.load(tmp_path, check_files=False) == m
    d = json.loads(path.read_text())
    assert list(d) == ["format", "format_version", "record_version", "fastload_version",
                       "created", "source_format", "source", "key_format", "checksum",
                       "num_records", "shards", "classes", "keypoint_names", "flip_pairs",
                       "skeleton", "summary"]
    assert d["format"] == "fastload" and d["format_version"] == FORMAT_VERSION
    assert d["num_records"] == m.num_records == 5
    assert d["shards"][0] == {"file": "shard-00000.lmdb", "count": 3, "bytes": 300,
                              "blake2b": "ab" * 32, "file_bytes": 8192}
    assert d["flip_pairs"] == [[1, 2]] and d["skeleton"] == [[0, 1], [0, 2]]
    # without keypoints, the keypoint fields are null
    plain = _manifest(keypoint_names=None, flip_pairs=None, skeleton=None)
    plain.write(tmp_path)
    d = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert d["keypoint_names"] is d["flip_pairs"] is d["skeleton"] is None
    assert Manifest.load(tmp_path, check_files=False) == plain


def test_a_packed_manifest_loads(packed):
    out, _ = packed
    m = Manifest.load(out)
    assert m.num_records == 23 and [s.count for s in m.shards] == [5, 5, 5, 5, 3]
    assert all(s.file_bytes == (out / s.file).stat().st_size for s in m.shards)
    assert all(s.file_sha256 == hashlib.sha256((out / s.file).read_bytes()).hexdigest()
               for s in m.shards)
    assert m.summary["images"] == 23 and m.source_format == "coco"
    assert Manifest.from_json(m.to_json()) == m


def _rewrite(tmp_path, **changes):
    d = _manifest().to_json()
    d.update(changes)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(d))
    return tmp_path


def test_refusals_of_the_directory(tmp_path):
    with pytest.raises(StoreError, match="no such dataset directory"):
        Manifest.load(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        Manifest.load(tmp_path / "file")
    (tmp_path / "shard-00000.lmdb").write_bytes(b"")
    with pytest.raises(StoreError, match="no manifest.json.*did not finish"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(StoreError, match="unreadable manifest"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text('{"format": "other", "shards": []}')
    with pytest.raises(StoreError, match="not a fastload manifest"):
        Manifest.load(tmp_path)


def test_refuses_a_newer_version(tmp_path):
    _rewrite(tmp_path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(StoreError, match=f"format version {FORMAT_VERSION + 1} is newer .*upgrade"):
        Manifest.load(tmp_path, check_files=False)


@pytest.mark.parametrize("name", ["../shard-00000.lmdb", "/etc/passwd", "sub/shard.lmdb",
                                  "..", ".", "", "a\\b.lmdb", 7])
def test_refuses_shard_names_outside_the_folder(tmp_path, name):
    d = _manifest().to_json()
    d["shards"][1]["file"] = name
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(d))
    with pytest.raises(StoreError, match=r"must be a plain name inside the dataset folder .*refused"):
        Manifest.load(tmp_path, check_files=False)
    with pytest.raises(StoreError, match="not a plain name"):
        _manifest(shards=[ShardEntry(name, 1, 1, "00")]).write(tmp_path)


@pytest.mark.parametrize("changes, match", [
    (dict(shards={"file": "x"}), "shards must be a list"),
    (dict(shards=[{"file": "shard-00000.lmdb", "count": 1}]), "shard 0"),
    (dict(shards=[{"file": "s.lmdb", "count": "many", "bytes": 1, "blake2b": ""}]), "shard 0"),
    (dict(shards=[{"file": "s.lmdb", "count": -1, "bytes": 1, "blake2b": ""}]), "negative"),
    (dict(num_records=99), "num_records 99"),
    (dict(flip_pairs=[[1, 2, 3]]), "flip_pairs"),
    (dict(classes="abc"), "classes"),
])
def test_refuses_a_malformed_manifest(tmp_path, changes, match):
    _rewrite(tmp_path, **changes)
    with pytest.raises(StoreError, match=match):
        Manifest.load(tmp_path, check_files=False)


def test_missing_and_truncated_shard_files(tmp_path):
    m = _manifest()
    _with_files(tmp_path, m)
    assert Manifest.load(tmp_path) == m and m.file_problems(tmp_path) == []
    f = tmp_path / "shard-00001.lmdb"
    f.write_bytes(b"\0" * 100)
    (problem,) = m.file_problems(tmp_path)
    assert (problem.file, problem.kind) == ("shard-00001.lmdb", "truncated")
    with pytest.raises(StoreError, match="shard file shard-00001.lmdb is truncated "
                                         r"\(100 of 8192 bytes\); copy the dataset again"):
        Manifest.load(tmp_path)
    assert Manifest.load(tmp_path, check_files=False) == m  # verify reads it this way
    (tmp_path / "shard-00000.lmdb").unlink()
    assert [(p.file, p.kind) for p in m.file_problems(tmp_path)] == [
        ("shard-00000.lmdb", "missing"), ("shard-00001.lmdb", "truncated")]
    with pytest.raises(StoreError, match="shard file shard-00000.lmdb listed in the manifest "
                                         "is missing"):
        Manifest.load(tmp_path)
    # a manifest written before file sizes were recorded: only a missing file is refused
    old = _manifest(shards=[ShardEntry("shard-00001.lmdb", 3, 300, "ab" * 32)])
    old.write(tmp_path)
    assert "file_bytes" not in json.loads((tmp_path / MANIFEST_NAME).read_text())["shards"][0]
    assert "file_sha256" not in json.loads((tmp_path / MANIFEST_NAME).read_text())["shards"][0]
    assert Manifest.load(tmp_path).shards[0].file_bytes is None
    assert Manifest.load(tmp_path).shards[0].file_sha256 is None


def test_dataset_refusals_come_from_the_manifest(packed, tmp_path):
    out, _ = packed
    d = tmp_path / "copy"
    d.mkdir()
    m = json.loads((out / MANIFEST_NAME).read_text())
    (d / MANIFEST_NAME).write_text(json.dumps(dict(m, format_version=99)))
    with pytest.raises(StoreError, match="newer"):
        Dataset(d)
    (d / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(StoreError, match="missing"):
        Dataset(d)
    with pytest.raises(StoreError, match="no such dataset"):
        Dataset(tmp_path / "absent")
    shutil.copy(out / "shard-00000.lmdb", d)
    with pytest.raises(StoreError, match="shard-00001.lmdb listed in the manifest is missing"):
        Dataset(d)
