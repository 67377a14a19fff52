"""``fastload verify`` and ``fastload info``: check a packed dataset against its manifest,
summarize the manifest.

verify never dies on the damage it exists to find. LMDB has no page checksums: a damaged
page can make LMDB read outside its map, which kills the process (SIGSEGV, SIGBUS). So each
shard is walked in a child process (forked, one at a time); the parent only reads the
manifest and the child's messages (JSON lines over a pipe, no pickle) and a shared counter
of the records done. A child that dies is reported as a damaged shard, naming the record it
was reading; one that makes no progress for ``stall_s`` seconds is killed and reported.
"""
from __future__ import annotations

import faulthandler
import json
import multiprocessing as mp
import signal
import sys
import time
from typing import Iterator, List, Optional

from fastload.record import Record, RecordError
from fastload.store.dataset import Dataset
from fastload.store.manifest import ShardEntry
from fastload.store.shards import ShardHash, decode_key, read_digests, record_digest

#: problems reported per shard at most (a shard damaged all over would print millions)
MAX_SHARD_PROBLEMS = 200


class Note(str):
    """A line that says how a shard was checked, not what is wrong with it (a missing digests
    file: the shard is checked as a whole)."""


def verify(path, decode_images: bool = True, progress: bool = False,
           stall_s: float = 600.0, notes: Optional[list] = None) -> List[str]:
    """Check a packed dataset: per shard, the record count, byte count and blake2b
    of the values in key order against the manifest; each record against its digest in
    the shard's digests file (naming a changed record; packs without digests files are
    checked shard by shard); every record decodes; with ``decode_images``, every image
    fully decodes with the loader's decoder and has the recorded size. Missing or truncated shard files are
    reported and never opened; a shard whose reading crashes (damaged LMDB pages) or stalls
    for ``stall_s`` seconds is reported as damaged.

    Returns a list of problem strings (empty when everything is fine); records are
    named by global index, id and file name. ``notes``: a list that receives the lines that
    say how shards were checked without anything being wrong (a pack without digests files,
    a digests file missing from a copy: checked as a whole).
    """
    ds = Dataset(path, check_files=False)
    notes = [] if notes is None else notes
    if any(s.digests is None for s in ds.manifest.shards):
        notes.append("this pack has no per-record digests (made by an older fastload): its "
                     "shards are checked as a whole")
    file_problems = ds.manifest.file_problems(ds.path)
    problems: List[str] = [p.message for p in file_problems]
    unsafe = {p.file for p in file_problems}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(ds), unit="rec", desc="verify", file=sys.stderr)
    try:
        for s, entry in enumerate(ds.manifest.shards):
            if entry.file not in unsafe:
                for line in _verify_shard_in_child(ds, s, entry, decode_images, bar, stall_s):
                    (notes if isinstance(line, Note) else problems).append(str(line))
    finally:
        if bar is not None:
            bar.close()
    return problems


def _verify_shard_in_child(ds: Dataset, s: int, entry: ShardEntry, decode_images: bool, bar,
                           stall_s: float) -> List[str]:
    """Walk shard ``s`` in a forked child; its problems, and one for a crash or a stall."""
    ctx = mp.get_context("fork")
    done_upto = ctx.Value("q", -1, lock=False)  # local index of the last record checked
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(ds, s, entry, decode_images, done_upto, send),
                        daemon=True)
    child.start()
    send.close()
    problems: List[str] = []
    finished = stalled = False
    last, last_change, shown = -1, time.monotonic(), 0
    try:
        while True:
            if recv.poll(0.2):
                try:
                    msg = json.loads(recv.recv_bytes())
                except EOFError:  # the child is gone: everything it sent has been read
                    break
                if msg.get("done"):
                    finished = True
                elif "note" in msg:
                    problems.append(Note(msg["note"]))
                else:
                    problems.append(msg["problem"])
            now, upto = time.monotonic(), done_upto.value
            if bar is not None and upto + 1 > shown:
                bar.update(upto + 1 - shown)
                shown = upto + 1
            if upto != last:
                last, last_change = upto, now
            elif now - last_change > stall_s and child.is_alive():
                child.kill()
                stalled = True
    finally:
        recv.close()
        child.join()
    if finished:
        return problems
    start, at = ds.shard_start(s), done_upto.value + 1
    where = f"record {start + at} (record {at} of the shard)"
    if stalled:
        problems.append(f"{entry.file}: damaged: reading {where} made no progress for "
                        f"{stall_s:g} s (killed); the records after it were not checked")
    elif child.exitcode is not None and child.exitcode < 0:
        problems.append(f"{entry.file}: damaged LMDB pages: reading {where} crashed the reader "
                        f"({_signal_name(-child.exitcode)}); the records after it were not "
                        f"checked. Copy the dataset again or pack it again")
    else:
        problems.append(f"{entry.file}: the process checking it ended early (exit code "
                        f"{child.exitcode}) at {where}")
    return problems


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _child(ds: Dataset, s: int, entry: ShardEntry, decode_images: bool, done_upto, conn):
    """In the forked child: send each problem of shard ``s`` as a JSON line, then done."""
    faulthandler.disable()  # a crash here is the damage being found: the parent reports it

    def send(obj):
        conn.send_bytes(json.dumps(obj).encode())
    try:
        n = 0
        for text in _shard_problems(ds, s, entry, decode_images, done_upto):
            if isinstance(text, Note):
                send({"note": str(text)})
                continue
            n += 1
            if n <= MAX_SHARD_PROBLEMS:
                send({"problem": text})
        if n > MAX_SHARD_PROBLEMS:
            send({"problem": f"{entry.file}: ... and {n - MAX_SHARD_PROBLEMS} more problems"})
    except Exception as e:  # never die on what the damage does: report it
        send({"problem": f"{entry.file}: cannot read the shard: {type(e).__name__}: {e}"})
    send({"done": True})
    conn.close()


def _image_problem(rec: Record) -> Optional[str]:
    """Why the record's image does not decode to its recorded size with the loader's decoder
    (:func:`fastload.augment.decode.decode_image`: the same strict policy, the pixel cap and
    the size checked on the header before decoding), or None."""
    from fastload.augment.decode import decode_image
    try:
        decode_image(rec.image_bytes, "image", size=(rec.height, rec.width))
    except ValueError as e:
        return str(e)
    return None


def _digests(ds: Dataset, entry: ShardEntry):
    """``(digests or None, problem or None)``: the shard's per-record digests when its
    digests file is there and matches the manifest's checksum. A missing or unreadable file
    is a :class:`Note` (nothing is wrong with the data: a copy without it), a damaged one a
    problem."""
    if entry.digests is None:
        return None, None
    try:
        digests = read_digests(ds.path / entry.digests, entry.count)
    except OSError as e:
        return None, Note(f"{entry.digests}: cannot read the digests file ({e.strerror or e}); "
                          f"{entry.file} is checked as a whole")
    except ValueError as e:
        return None, (f"{entry.digests}: the digests file is damaged ({e}); {entry.file} is "
                      f"checked as a whole")
    h = ShardHash()
    for d in digests:
        h.update(digest=d)
    if h.hexdigest() != entry.blake2b:
        return None, (f"{entry.digests}: the digests file does not match the manifest (it is "
                      f"damaged); {entry.file} is checked as a whole")
    return digests, None


def _shard_problems(ds: Dataset, s: int, entry: ShardEntry, decode_images: bool,
                    done_upto) -> Iterator[str]:
    digests, said = _digests(ds, entry)
    if said is not None:
        yield said
    h = ShardHash()
    n = nbytes = changed = 0
    expect_j = 0
    start = ds.shard_start(s)
    with ds.shard_env(s).begin(buffers=False) as txn:
        for k, v in txn.cursor():
            j = decode_key(k) if len(k) == 8 else -1
            if j != expect_j:
                yield f"{entry.file}: key {k.hex()} where record {expect_j} was expected"
            if j < 0:
                j = expect_j
            expect_j = j + 1
            d = record_digest(v)
            h.update(digest=d)
            n += 1
            nbytes += len(v)
            name = f"record {start + j}"
            try:
                rec = Record.decode(v)
                name = f"record {start + j} (id {rec.id}, {rec.file_name})"
            except RecordError as e:
                rec = None
                yield f"record {start + j}: {e}"
            if digests is not None and (j >= len(digests) or digests[j] != d):
                changed += 1
                yield (f"{name}: not what was packed (its digest differs from "
                       f"{entry.digests}; {entry.file}, record {j})" if j < len(digests) else
                       f"{name}: not in the pack ({entry.file} has {len(digests)} records)")
            if rec is not None and decode_images:
                why = _image_problem(rec)
                if why is not None:
                    yield f"{name}: image does not decode: {why}"
            done_upto.value = j
            if n > entry.count + 1000:  # a damaged page can loop the cursor
                yield f"{entry.file}: more than {n - 1} records; stopped reading"
                break
    if n != entry.count:
        yield f"{entry.file}: {n} records, the manifest says {entry.count}"
    if nbytes != entry.bytes:
        yield f"{entry.file}: {nbytes} bytes of records, the manifest says {entry.bytes}"
    if h.hexdigest() != entry.blake2b:
        why = ""
        if digests is None:
            why = (" (no per-record digests to compare with" + (
                ": this pack was made by an older fastload; verify can only check the shard "
                "as a whole)" if entry.digests is None else ")"))
        elif not changed:
            why = " (every record matches its digest: records are missing or reordered)"
        yield (f"{entry.file}: checksum mismatch (the blake2b of the records in key order "
               f"differs from the manifest){why}")


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
