"""``fastload verify`` and ``fastload info``: check a packed dataset against its manifest,
summarize the manifest."""
from __future__ import annotations

import sys
from typing import List

import lmdb

from fastload.record import Record, RecordError
from fastload.store.dataset import Dataset
from fastload.store.manifest import ShardEntry, StoreError
from fastload.store.shards import ShardHash, decode_key


def verify(path, decode_images: bool = True, progress: bool = False) -> List[str]:
    """Check a packed dataset: per shard, the record count, byte count and blake2b
    of the values in key order against the manifest; every record decodes; with
    ``decode_images``, every image fully decodes with the loader's decoder
    (:func:`fastload.augment.decode.decode_image`) and has the recorded size.
    Missing or truncated shard files are reported and never opened.

    Returns a list of problem strings (empty when everything is fine); records are
    named by global index, id and file name.
    """
    ds = Dataset(path, check_files=False)
    file_problems = ds.manifest.file_problems(ds.path)
    problems: List[str] = [p.message for p in file_problems]
    unsafe = {p.file for p in file_problems}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(ds), unit="rec", desc="verify", file=sys.stderr)
    try:
        for s, entry in enumerate(ds.manifest.shards):
            if entry.file in unsafe:
                continue
            try:
                _verify_shard(ds, s, entry, decode_images, problems, bar)
            except (lmdb.Error, StoreError) as e:
                problems.append(f"{entry.file}: cannot read the shard: {e}")
    finally:
        if bar is not None:
            bar.close()
        ds.close()
    return problems


def _image_problem(rec: Record):
    """Why the record's image does not fully decode to its recorded size, or None: the
    loader's own decoder and policy (:func:`fastload.augment.decode.decode_image`: the
    header checked against the pixel cap and the record's size first, corrupt data never
    decoded by a more lenient decoder, EXIF orientation ignored)."""
    from fastload.augment.decode import decode_image
    try:
        decode_image(rec.image_bytes, "image", size=(rec.height, rec.width))
    except ValueError as e:  # the decoder's errors: each says what is wrong
        return str(e)
    except Exception as e:  # noqa: BLE001 - anything else is a problem of this record too
        return f"{type(e).__name__}: {e}"
    return None


def _verify_shard(ds: Dataset, s: int, entry: ShardEntry, decode_images: bool, problems, bar):
    h = ShardHash()
    n = nbytes = 0
    expect_j = 0
    start = ds.shard_start(s)
    with ds.shard_env(s).begin(buffers=False) as txn:
        for k, v in txn.cursor():
            j = decode_key(k)
            if j != expect_j:
                problems.append(f"{entry.file}: key {j} where {expect_j} was expected")
            expect_j = j + 1
            h.update(v)
            n += 1
            nbytes += len(v)
            try:
                rec = Record.decode(v)
            except RecordError as e:
                problems.append(f"record {start + j}: {e}")
                continue
            if decode_images:
                why = _image_problem(rec)
                if why is not None:
                    problems.append(f"record {start + j} (id {rec.id}, {rec.file_name}): image "
                                    f"does not decode: {why}")
            if bar is not None:
                bar.update(1)
    if n != entry.count:
        problems.append(f"{entry.file}: {n} records, the manifest says {entry.count}")
    if nbytes != entry.bytes:
        problems.append(f"{entry.file}: {nbytes} bytes of records, the manifest says "
                        f"{entry.bytes}")
    if h.hexdigest() != entry.blake2b:
        problems.append(f"{entry.file}: checksum mismatch (the blake2b of the records in "
                        f"key order differs from the manifest)")


def format_info(path) -> str:
    """A human-readable summary of a packed dataset's manifest."""
    ds = Dataset(path)
    m = ds.manifest
    lines = [f"dataset      {ds.path}",
             f"records      {len(ds)} in {ds.num_shards} shard(s)",
             f"source       {m.source_format} ({m.source})",
             f"created      {m.created} by fastload {m.fastload_version}",
             f"classes      {len(ds.classes)}: {', '.join(ds.classes[:20])}"
             + (" ..." if len(ds.classes) > 20 else "")]
    if ds.keypoint_names:
        lines.append(f"keypoints    {len(ds.keypoint_names)}: {', '.join(ds.keypoint_names)}")
        lines.append(f"flip pairs   {ds.flip_pairs}")
    for key in ("images", "instances", "polygons", "ignore_instances", "skipped_images",
                "skipped_annotations", "bytes"):
        if key in m.summary:
            lines.append(f"{key:<12} {m.summary[key]}")
    total = sum(s.bytes for s in m.shards)
    lines.append(f"record bytes {total} ({total / 2**20:.1f} MiB)")
    return "\n".join(lines)
