import hashlib
import pickle
import threading

import numpy as np
import pytest

from fastload.store import Dataset, Manifest, StoreError


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


def test_record_location_and_manifest(packed):
    out, _ = packed
    ds = Dataset(out)
    assert ds.locate(7) == (1, 2) and ds.locate(-1) == (4, 2)
    assert ds.record_location(7) == f"{out / 'shard-00001.lmdb'}, record 2"
    assert ds.record_location(-1) == f"{out / 'shard-00004.lmdb'}, record 2"
    with pytest.raises(IndexError):
        ds.record_location(23)
    assert isinstance(ds.manifest, Manifest) and ds.manifest.num_records == 23
    # the JSON form stays readable by key, for code that knows the file
    assert ds.manifest["shards"][1]["file"] == "shard-00001.lmdb"
    assert ds.manifest["num_records"] == 23 and ds.manifest.get("absent", 5) == 5
    assert ds.source_format == "coco" and ds.keypoint_names is None and ds.flip_pairs is None


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

    ds.close()
    ds = Dataset(out)  # environments opened concurrently by the threads
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


def test_a_missing_record_is_named(packed, tmp_path):
    import shutil

    import lmdb

    from fastload.store import encode_key
    out = tmp_path / "copy"
    shutil.copytree(packed[0], out)
    env = lmdb.open(str(out / "shard-00002.lmdb"), subdir=False)
    with env.begin(write=True) as txn:
        txn.delete(encode_key(1))
    env.close()
    ds = Dataset(out)
    for read in (ds.get_raw, ds.__getitem__, lambda i: ds.get_raw_many([0, i]),
                 lambda i: ds.read_many([i])):
        with pytest.raises(StoreError, match=r"shard-00002.lmdb: record 1 \(global index 11\) "
                                             r"is missing"):
            read(11)
    ds.close()
