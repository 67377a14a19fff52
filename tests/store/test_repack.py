"""A re-pack to the same folder in the same process: the cache of open LMDB environments is
keyed by file identity, so a new Dataset reads the new shards (it used to read the old ones
under the new manifest), an old one refuses to mix, and readers in other threads never
crash."""
import threading

import pytest

from fastload.packing import pack
from fastload.store import Dataset, StoreError, verify
from fastload.store import shards
from fastload.synth.datasets import write_dataset


@pytest.fixture
def two_sources(tmp_path):
    write_dataset(tmp_path / "a", "coco", n_images=6, width=64, height=48, seed=0)
    write_dataset(tmp_path / "b", "coco", n_images=6, width=64, height=48, seed=1)
    return tmp_path / "a", tmp_path / "b"


def _pack(src, out, **kw):
    return pack(src, out, "coco", workers=1, progress=False, shard_size=4, **kw)


def test_a_new_dataset_after_a_repack_reads_the_new_shards(two_sources, tmp_path):
    a, b = two_sources
    out = tmp_path / "out"
    _pack(a, out)
    old = Dataset(out)
    old_records = [old.get_raw(i) for i in range(len(old))]  # opens every shard
    _pack(b, out, overwrite=True)
    new = Dataset(out)
    want = [r.file_name for r in Dataset(out)]
    got = [new.get_raw(i) for i in range(len(new))]
    assert got != old_records
    fresh = Dataset(out)
    assert [fresh[i].file_name for i in range(len(fresh))] == want
    assert all(new[i].image_bytes == (b / "images" / new[i].file_name).read_bytes()
               for i in range(len(new)))
    assert verify(out) == []  # it used to report checksum mismatches (the old shards)
    # the old Dataset refuses to read the new shards under its old manifest
    with pytest.raises(StoreError, match="replaced .* open the dataset again"):
        old.get_raw(0)


def test_stale_entries_are_dropped_not_kept_open(two_sources, tmp_path):
    a, b = two_sources
    out = tmp_path / "out"
    _pack(a, out)
    Dataset(out).get_raw(0)
    paths = {k[0] for k in shards._ENVS if k[0].startswith(str(out.resolve()))}
    assert paths
    _pack(b, out, overwrite=True)
    Dataset(out).get_raw(0)
    for path in paths:  # one environment per shard path: the old one left the cache
        assert sum(k[0] == path for k in shards._ENVS) == 1


def test_a_reader_thread_survives_a_repack(two_sources, tmp_path):
    """A thread reading the old dataset while the main thread re-packs and opens the new
    one: it reads old records or gets a StoreError, and never crashes the process (the old
    environment is dropped from the cache, never closed under it)."""
    a, b = two_sources
    out = tmp_path / "out"
    _pack(a, out)
    old = Dataset(out)
    want = {i: old.get_raw(i) for i in range(len(old))}
    stop = threading.Event()
    seen = {"ok": 0, "refused": 0, "wrong": 0}

    def read_old():
        while not stop.is_set():
            for i in range(len(old)):
                try:
                    seen["ok" if old.get_raw(i) == want[i] else "wrong"] += 1
                except StoreError:
                    seen["refused"] += 1
    t = threading.Thread(target=read_old)
    t.start()
    try:
        for _ in range(3):
            _pack(b, out, overwrite=True)
            new = Dataset(out)
            [new[i] for i in range(len(new))]
            _pack(a, out, overwrite=True)
    finally:
        stop.set()
        t.join()
    assert seen["wrong"] == 0 and seen["ok"] > 0 and seen["refused"] > 0


def test_a_shard_changed_in_place_is_the_same_file(two_sources, tmp_path):
    """An LMDB write into a shard (same device and inode, new size and mtime): the Dataset
    opened before reads the file as it is now (py-lmdb cannot open one inode twice, and
    LMDB reads the current state), and so does a new one, through one environment."""
    import lmdb

    from fastload.store import encode_key
    a, _ = two_sources
    out = tmp_path / "out"
    _pack(a, out)
    old = Dataset(out)
    shard = out / "shard-00000.lmdb"
    env = lmdb.open(str(shard), subdir=False, lock=False, map_size=1 << 30)
    with env.begin(write=True) as txn:
        txn.put(encode_key(1), b"changed")
    env.close()
    assert old.get_raw(1) == b"changed" == Dataset(out).get_raw(1)
    assert len({id(e) for k, e in shards._ENVS.items() if k[0] == str(shard.resolve())}) == 1


def test_a_pickled_dataset_takes_this_machines_identity_of_the_same_files(two_sources, tmp_path):
    """Another host sees the same files (inode, size, mtime) under its own device number:
    an unpickled Dataset reads them; one whose files were replaced meanwhile refuses."""
    import pickle
    a, b = two_sources
    out = tmp_path / "out"
    _pack(a, out)
    ds = Dataset(out)
    ds._shard_keys = [(k[0], k[1] + 1, *k[2:]) for k in ds._shard_keys]  # another st_dev
    blob = pickle.dumps(ds)
    assert pickle.loads(blob).get_raw(0) == Dataset(out).get_raw(0)
    _pack(b, out, overwrite=True)
    with pytest.raises(StoreError, match="replaced"):
        pickle.loads(blob).get_raw(0)
