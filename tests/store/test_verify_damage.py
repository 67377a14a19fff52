"""``fastload verify`` on the damage it exists to find: it never dies. Damaged LMDB pages that
kill the reading process (SIGBUS here), records changed after packing (named through the
per-record digests files), records whose fields have the wrong types, old packs without
digests files, a shard that stalls."""
import importlib
import json
import shutil
import struct
import time

import lmdb
import msgpack
import pytest

from fastload.cli import main as cli_main
from fastload.store import MANIFEST_NAME, Dataset, encode_key, verify

verify_module = importlib.import_module("fastload.store.verify")  # the package exports verify()


@pytest.fixture
def copy(packed, tmp_path):
    """A fresh copy of the 23-record, 5-shard dataset (shards of 5 records)."""
    out = tmp_path / "ds"
    shutil.copytree(packed[0], out)
    return out


def _put(out, shard_file, j, value):
    """Overwrite record j of a shard with LMDB itself (checksums and digests left as they
    were: the record no longer matches them)."""
    Dataset(out).close()
    env = lmdb.open(str(out / shard_file), subdir=False, map_size=1 << 30)
    with env.begin(write=True) as txn:
        txn.put(encode_key(j), value)
    env.close()
    (out / f"{shard_file}-lock").unlink(missing_ok=True)


def test_damaged_pages_that_crash_lmdb_are_a_damaged_shard(copy, capsys):
    """The size field of record 2 of shard 1 (global 7) says 2 GiB: LMDB reads past its map
    and the process dies with SIGBUS. verify walks that shard in a child process and reports
    it; the other shards are checked as usual."""
    ds = Dataset(copy)
    value = ds.get_raw(7)
    ds.close()
    path = copy / "shard-00001.lmdb"
    data = bytearray(path.read_bytes())
    node = struct.pack("<HHHH", len(value) & 0xFFFF, len(value) >> 16, 1, 8) + encode_key(2)
    at = data.index(node)  # the leaf node of record 2: size, flags (overflow), key size, key
    data[at:at + 4] = struct.pack("<HH", 0xFFFF, 0x7FFF)
    path.write_bytes(data)
    problems = verify(copy)
    assert problems == [
        "shard-00001.lmdb: damaged LMDB pages: reading record 7 (record 2 of the shard) crashed "
        "the reader (SIGBUS); the records after it were not checked. Copy the dataset again or "
        "pack it again"], problems
    assert cli_main(["verify", "-q", str(copy)]) == 1
    assert "crashed the reader (SIGBUS)" in capsys.readouterr().out


def test_a_changed_record_is_named_by_its_digest(copy):
    ds = Dataset(copy)
    raw = bytearray(ds.get_raw(12))
    rec = ds[12]
    img = rec.image_bytes
    raw[bytes(raw).index(img) + len(img) // 2] ^= 0x01  # one bit of the JPEG
    _put(copy, "shard-00002.lmdb", 2, bytes(raw))
    problems = verify(copy, decode_images=False)
    assert problems[0] == (f"record 12 (id {rec.id}, {rec.file_name}): not what was packed (its "
                           f"digest differs from shard-00002.digests; shard-00002.lmdb, record 2)")
    assert problems[-1].startswith("shard-00002.lmdb: checksum mismatch")
    assert len(problems) == 2


def test_old_packs_without_digests_are_checked_as_a_whole(copy):
    m = json.loads((copy / MANIFEST_NAME).read_text())
    for s in m["shards"]:
        (copy / s.pop("digests")).unlink()
    (copy / MANIFEST_NAME).write_text(json.dumps(m))
    notes = []
    assert verify(copy, notes=notes) == []
    assert notes == ["this pack has no per-record digests (made by an older fastload): its "
                     "shards are checked as a whole"]
    raw = bytearray(Dataset(copy).get_raw(12))
    raw[-1] ^= 0x01
    _put(copy, "shard-00002.lmdb", 2, bytes(raw))
    problems = verify(copy, decode_images=False)
    assert problems == ["shard-00002.lmdb: checksum mismatch (the blake2b of the records in key "
                        "order differs from the manifest) (no per-record digests to compare "
                        "with: this pack was made by an older fastload; verify can only check "
                        "the shard as a whole)"]


def test_a_missing_or_damaged_digests_file_is_said_and_the_shard_still_checked(copy, capsys):
    """A copy without a digests file: a note, the data is fine (exit 0); a damaged digests
    file: a problem."""
    (copy / "shard-00001.digests").unlink()
    notes = []
    assert verify(copy, notes=notes) == []
    assert notes == ["shard-00001.digests: cannot read the digests file (No such file or "
                     "directory); shard-00001.lmdb is checked as a whole"]
    assert cli_main(["verify", "-q", str(copy)]) == 0
    assert "verify: note: shard-00001.digests: cannot read" in capsys.readouterr().err
    d = copy / "shard-00003.digests"
    d.write_bytes(bytes(16) + d.read_bytes()[16:])
    (copy / "shard-00004.digests").write_bytes(b"short")
    problems = verify(copy)
    assert problems == [
        "shard-00003.digests: the digests file does not match the manifest (it is damaged); "
        "shard-00003.lmdb is checked as a whole",
        f"shard-00004.digests: the digests file is damaged ({copy / 'shard-00004.digests'}: 5 "
        f"bytes, expected 3 digests of 16 bytes); shard-00004.lmdb is checked as a whole"]


@pytest.mark.parametrize("field, value", [("v", "1"), ("v", None), ("v", [1]), ("v", 1.5),
                                          ("v", True), ("h", "64"), ("w", -3), ("id", 2 ** 64 - 1),
                                          ("file", 7), ("img", "not bytes"), ("nk", -1)])
def test_a_record_with_fields_of_the_wrong_type_is_reported_not_a_traceback(copy, field, value):
    ds = Dataset(copy)
    m = msgpack.unpackb(ds.get_raw(3), raw=False)
    m[field] = value
    if field == "nk":
        m["kps"] = b""
    _put(copy, "shard-00000.lmdb", 3, msgpack.packb(m, use_bin_type=True))
    problems = verify(copy)
    assert problems[0].startswith("record 3: record ") and \
        ("version" in problems[0] or "malformed" in problems[0]), problems
    assert any("not what was packed" in p for p in problems)


def test_a_shard_that_stalls_is_killed_and_reported(copy, monkeypatch):
    def slow(rec):
        time.sleep(30)
    monkeypatch.setattr(verify_module, "_image_problem", slow)  # the forked child inherits it
    t0 = time.perf_counter()
    problems = verify(copy, stall_s=1.0)
    assert time.perf_counter() - t0 < 25
    assert len(problems) == 5 and all("made no progress for 1 s (killed)" in p for p in problems)
    assert problems[0].startswith("shard-00000.lmdb: damaged: reading record 0 (record 0 of")
