import errno
import hashlib

import lmdb
import pytest

from fastload.store import ShardEntry, ShardHash, ShardWriter, StoreError, encode_key, record_digest
from fastload.store.shards import decode_key, write_error


def test_shard_writer_grows_map(tmp_path):
    w = ShardWriter(tmp_path / "s.lmdb", map_size=64 << 10, batch=7)
    vals = [bytes([k % 251]) * (5000 + k) for k in range(200)]  # ~1 MB into a 64 KiB map
    for k, v in enumerate(vals):
        assert w.append(v) == k and w.num_records == k + 1
    entry = w.close()
    assert isinstance(entry, ShardEntry) and entry.file == "s.lmdb"
    assert entry.count == 200 and entry.bytes == sum(map(len, vals))
    assert entry.file_bytes == (tmp_path / "s.lmdb").stat().st_size
    # the file's own checksum: what `sha256sum s.lmdb` prints
    assert entry.file_sha256 == hashlib.sha256((tmp_path / "s.lmdb").read_bytes()).hexdigest()
    h = hashlib.blake2b(digest_size=32)  # the documented definition, written out
    for v in vals:
        h.update(hashlib.blake2b(v, digest_size=16).digest())
    assert entry.blake2b == h.hexdigest()
    hs = ShardHash()
    for v in vals[:100]:
        hs.update(v)
    for v in vals[100:]:
        hs.update(digest=record_digest(v))  # what pack's workers hand the writer
    assert hs.hexdigest() == entry.blake2b
    assert not (tmp_path / "s.lmdb-lock").exists()
    env = lmdb.open(str(tmp_path / "s.lmdb"), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.get(encode_key(199)) == vals[199] and txn.stat()["entries"] == 200
        assert [decode_key(k) for k, _ in txn.cursor()] == list(range(200))
    env.close()


def test_keys_sort_in_index_order():
    keys = [encode_key(j) for j in (0, 1, 255, 256, 65536, 2**40)]
    assert sorted(keys) == keys and [decode_key(k) for k in keys] == [0, 1, 255, 256, 65536, 2**40]


def test_write_errors_of_a_full_disk_become_enospc(tmp_path):
    """LMDB reports a full disk as "No space left on device", or as "Input/output error"
    when a write was cut short; the latter counts as a full disk when the file system has
    less room than the write needed (checked with the real free space here)."""
    path = tmp_path / "s.lmdb"
    e = write_error(path, lmdb.Error("mdb_txn_commit: No space left on device"))
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC and e.filename == str(path)
    eio = lmdb.Error("mdb_txn_commit: Input/output error")
    e = write_error(path, eio, needed=1 << 62)  # more than any disk here has free
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC
    e = write_error(path, eio, needed=0)  # room enough: a real I/O error, named
    assert isinstance(e, StoreError) and str(e).startswith(f"{path}: cannot write the shard")


def test_digests_file_written_and_a_full_disk_named(tmp_path):
    import os

    from fastload.store.shards import read_digests
    w = ShardWriter(tmp_path / "shard-00000.lmdb")
    vals = [bytes([k]) * 100 for k in range(5)]
    for v in vals:
        w.append(v)
    entry = w.close()
    assert entry.digests == "shard-00000.digests"
    assert read_digests(tmp_path / entry.digests, 5) == [record_digest(v) for v in vals]
    assert hashlib.blake2b(b"".join(read_digests(tmp_path / entry.digests, 5)),
                           digest_size=32).hexdigest() == entry.blake2b
    with pytest.raises(StoreError, match="expected 4 digests"):
        read_digests(tmp_path / entry.digests, 4)
    # the digests file on a full disk (/dev/full: every write fails with ENOSPC)
    w = ShardWriter(tmp_path / "shard-00001.lmdb")
    w.append(b"x")
    os.symlink("/dev/full", tmp_path / "shard-00001.digests")
    with pytest.raises(OSError) as e:
        w.close()
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "shard-00001.digests")
