import hashlib
import json
import pickle
import threading

import lmdb
import numpy as np
import pytest

from fastload.cli import main as cli_main
from fastload.packing import pack
from fastload.record import Record
from fastload.store import (MANIFEST_NAME, Dataset, ShardHash, ShardWriter, StoreError,
                            encode_key, verify)
from fastload.synth.datasets import write_dataset


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    scenes = write_dataset(root / "src", "coco", n_images=23, width=96, height=64, seed=3)
    pack(root / "src", root / "out", "coco", shard_size=5, workers=1, progress=False)
    return root / "out", scenes


def test_len_index_and_shards(packed):
    out, scenes = packed
    ds = Dataset(out)
    assert len(ds) == 23 and ds.num_shards == 5
    assert ds.classes[:2] == ["person", "car"]
    recs = [ds[i] for i in range(len(ds))]
    assert [r.file_name for r in recs] == [f"{i:06d}.jpg" for i in range(23)]
    assert ds[-1].file_name == recs[-1].file_name
    with pytest.raises(IndexError):
        ds[23]
    # many-record fast path gives the same bytes in the requested order
    order = [22, 0, 7, 7, 13, 4]
    assert ds.get_raw_many(order) == [ds.get_raw(i) for i in order]
    assert [r.id for r in ds.read_many(order)] == [recs[i].id for i in order]
    assert [i for i, _ in ds.iter_raw()] == list(range(23))
    # records decoded from the memory map stay valid after their transaction and a close
    r = ds[3]
    ds.close()
    assert r.image_bytes == (out.parent / "src" / "images" / r.file_name).read_bytes()
    assert np.array_equal(r.instances[0].polygons[0], scenes[3].instances[0].polygons[0])


def test_threads_share_a_dataset(packed):
    out, _ = packed
    ds = Dataset(out)
    want = [hashlib.sha1(ds.get_raw(i)).hexdigest() for i in range(len(ds))]
    errors, got = [], {}

    def work(t):
        try:
            rng = np.random.default_rng(t)
            for i in rng.integers(0, len(ds), 200):
                got.setdefault(t, []).append(hashlib.sha1(ds.get_raw(int(i))).hexdigest() == want[i])
        except Exception as e:  # pragma: no cover
            errors.append(e)

    fresh = Dataset(out)  # environments opened concurrently by the threads
    ds = fresh
    th = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    [t.start() for t in th]
    [t.join() for t in th]
    assert not errors and all(all(v) for v in got.values()) and len(got) == 4


def test_pickle_carries_no_environment(packed):
    out, _ = packed
    ds = Dataset(out)
    ds[0]
    ds2 = pickle.loads(pickle.dumps(ds))
    assert not any("Environment" in type(v).__name__ for v in vars(ds2).values())
    assert ds2.get_raw(3) == ds.get_raw(3)
    ds3 = Dataset(out)  # a second Dataset of the same directory in the same process
    assert ds3.get_raw(4) == ds.get_raw(4)


def test_refuses_directory_without_manifest(tmp_path):
    (tmp_path / "shard-00000.lmdb").write_bytes(b"")
    with pytest.raises(StoreError, match="no manifest.json"):
        Dataset(tmp_path)
    with pytest.raises(StoreError, match="no such dataset"):
        Dataset(tmp_path / "absent")


def test_refuses_newer_format_and_missing_shard(packed, tmp_path):
    out, _ = packed
    m = json.loads((out / MANIFEST_NAME).read_text())
    d = tmp_path / "copy"
    d.mkdir()
    (d / MANIFEST_NAME).write_text(json.dumps(dict(m, format_version=99)))
    with pytest.raises(StoreError, match="newer"):
        Dataset(d)
    (d / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(StoreError, match="missing"):
        Dataset(d)


def test_shard_writer_grows_map(tmp_path):
    w = ShardWriter(tmp_path / "s.lmdb", map_size=64 << 10, batch=7)
    vals = [bytes([k % 251]) * (5000 + k) for k in range(200)]  # ~1 MB into a 64 KiB map
    for v in vals:
        w.append(v)
    entry = w.close()
    assert entry.count == 200 and entry.bytes == sum(map(len, vals))
    h = hashlib.blake2b(digest_size=32)  # the documented definition, written out
    for v in vals:
        h.update(hashlib.blake2b(v, digest_size=16).digest())
    assert entry.blake2b == h.hexdigest()
    assert not (tmp_path / "s.lmdb-lock").exists()
    env = lmdb.open(str(tmp_path / "s.lmdb"), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.get(encode_key(199)) == vals[199] and txn.stat()["entries"] == 200


def test_cli_info(packed, capsys):
    out, _ = packed
    assert cli_main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "23 in 5 shard(s)" in text and "person" in text
    assert cli_main(["info", str(out / "nope")]) == 2


def _rewrite(out, shard_file, j, value, fix_manifest):
    Dataset(out).close()  # LMDB refuses a second (writable) open in this process
    env = lmdb.open(str(out / shard_file), subdir=False, map_size=1 << 30)
    with env.begin(write=True) as txn:
        txn.put(encode_key(j), value)
    env.close()
    if fix_manifest:  # keep the checksums right so only the image decode can fail
        m = json.loads((out / MANIFEST_NAME).read_text())
        ds = Dataset(out)
        for s, e in enumerate(m["shards"]):
            h, n = ShardHash(), 0
            with ds.shard_env(s).begin() as txn:
                for _, v in txn.cursor():
                    h.update(v)
                    n += len(v)
            e["blake2b"], e["bytes"] = h.hexdigest(), n
        ds.close()
        (out / MANIFEST_NAME).write_text(json.dumps(m))


def test_verify_detects_corrupt_record(packed, tmp_path, capsys):
    import shutil
    out = tmp_path / "c"
    shutil.copytree(packed[0], out)
    assert cli_main(["verify", "-q", str(out)]) == 0
    ds = Dataset(out)
    raw = bytearray(ds.get_raw(7))
    img = ds[7].image_bytes
    off = bytes(raw).index(img) + len(img) // 2
    raw[off] ^= 0x55  # one byte of the JPEG inside the LMDB value
    _rewrite(out, "shard-00001.lmdb", 2, bytes(raw), fix_manifest=False)
    capsys.readouterr()
    assert cli_main(["verify", "-q", str(out)]) == 1
    assert "shard-00001.lmdb: checksum mismatch" in capsys.readouterr().out

    # a truncated image with consistent checksums: found by decoding, named by id and file
    rec = Record.decode(ds.get_raw(12))
    rec.image_bytes = rec.image_bytes[: len(rec.image_bytes) // 2]
    _rewrite(out, "shard-00002.lmdb", 2, rec.encode(), fix_manifest=True)
    problems = verify(out)
    assert any(p.startswith(f"record 12 (id {rec.id}, {rec.file_name}): image does not decode")
               for p in problems), problems
    assert not any("checksum" in p for p in problems)


def test_demo_cli(tmp_path, capsys):
    assert cli_main(["demo", "--dir", str(tmp_path), "--n", "3"]) == 0
    text = capsys.readouterr().out
    assert "packed 3 images" in text and "records      3 in 1 shard(s)" in text
    assert len(Dataset(tmp_path / "packed")) == 3
    assert "epoch 0: 3 images" in text and "epoch 1: 3 images" in text


def test_reader_registry_errors():
    from fastload.formats import READERS, get_reader
    assert set(READERS) == {"coco", "labelme", "via", "yolo", "masks"}
    with pytest.raises(ValueError, match="unknown input format 'nope'"):
        get_reader("nope")
    assert hasattr(get_reader("coco"), "read")


def test_verify_truncated_shard(packed, tmp_path, capsys):
    import shutil
    out = tmp_path / "t"
    shutil.copytree(packed[0], out)
    f = out / "shard-00003.lmdb"
    f.write_bytes(f.read_bytes()[:5000])
    assert cli_main(["verify", "-q", str(out)]) == 1
    text = capsys.readouterr().out
    assert "shard-00003.lmdb is truncated" in text and "shard-00002" not in text
    with pytest.raises(StoreError, match="truncated"):
        Dataset(out)  # refused up front: LMDB would crash the process on the missing pages
