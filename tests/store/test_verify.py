import json
import shutil

import lmdb
import pytest

from fastload.cli import main as cli_main
from fastload.record import Record
from fastload.store import (MANIFEST_NAME, Dataset, ShardHash, StoreError, encode_key, format_info,
                            record_digest, verify)


def _rewrite(out, shard_file, j, value, fix_manifest):
    Dataset(out).close()  # LMDB refuses a second (writable) open in this process
    env = lmdb.open(str(out / shard_file), subdir=False, map_size=1 << 30)
    with env.begin(write=True) as txn:
        txn.put(encode_key(j), value)
    env.close()
    if fix_manifest:  # keep the checksums (and digests files) right: only decoding can fail
        m = json.loads((out / MANIFEST_NAME).read_text())
        ds = Dataset(out)
        for s, e in enumerate(m["shards"]):
            h, n, digests = ShardHash(), 0, []
            with ds.shard_env(s).begin() as txn:
                for _, v in txn.cursor():
                    h.update(v)
                    n += len(v)
                    digests.append(record_digest(v))
            e["blake2b"], e["bytes"] = h.hexdigest(), n
            (out / e["digests"]).write_bytes(b"".join(digests))
        ds.close()
        (out / MANIFEST_NAME).write_text(json.dumps(m))


def test_verify_detects_corrupt_record(packed, tmp_path, capsys):
    out = tmp_path / "c"
    shutil.copytree(packed[0], out)
    assert verify(out) == []
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
    assert verify(out, decode_images=False) == []


def test_verify_counts_and_undecodable_records(packed, tmp_path):
    out = tmp_path / "n"
    shutil.copytree(packed[0], out)
    _rewrite(out, "shard-00004.lmdb", 3, b"\xc1 not a record", fix_manifest=False)
    problems = verify(out, decode_images=False)
    assert problems[0].startswith("record 23: ")
    assert "shard-00004.lmdb: 4 records, the manifest says 3" in problems
    assert any(p.startswith("shard-00004.lmdb: ") and "bytes of records" in p for p in problems)
    assert "shard-00004.lmdb: checksum mismatch" in problems[-1]


def test_verify_missing_and_truncated_shards(packed, tmp_path, capsys):
    out = tmp_path / "t"
    shutil.copytree(packed[0], out)
    f = out / "shard-00003.lmdb"
    f.write_bytes(f.read_bytes()[:5000])
    (out / "shard-00001.lmdb").unlink()
    assert cli_main(["verify", "-q", str(out)]) == 1
    text = capsys.readouterr().out
    assert "shard-00003.lmdb is truncated" in text and "shard-00001.lmdb listed in the manifest " \
                                                         "is missing" in text
    assert "shard-00002" not in text and "cannot read" not in text  # the others verify clean
    with pytest.raises(StoreError, match="missing"):
        Dataset(out)  # refused up front: LMDB would crash the process on the missing pages


def test_format_info(packed, tmp_path):
    out, _ = packed
    text = format_info(out)
    lines = text.splitlines()
    assert lines[0] == f"dataset      {out}" and lines[1] == "records      23 in 5 shard(s)"
    assert lines[2].startswith("source       coco (") and "person" in text
    assert "images       23" in text and text.endswith("MiB)")
