"""``fastload pack``: a source dataset (COCO, labelme, VIA, YOLO-seg, mask PNGs) into
LMDB shards plus ``manifest.json`` (see :mod:`fastload.store` for the layout).

Steps: the format's reader parses the annotations (:mod:`fastload.formats`); every
sample is then validated here, with one policy for all formats; valid samples become
:class:`fastload.record.Record` values written in source order into shards of
``shard_size`` records. Image bytes are stored exactly as read (never re-encoded);
image format and size come from the header (PIL's lazy ``Image.open``: no decode).

Record ids: the COCO image id for COCO; for the other formats the position of the
sample in the reader's (sorted) order. Either way ids do not change when other samples
are skipped. Dataset indices (``ds[i]``) are positions among the packed records.

Validation (default: skip and count, every problem listed in ``OUT/problems.txt``;
``strict=True``: raise :class:`PackError` at the first problem):

- whole image skipped: image path escaping the dataset root (refused), missing or
  unreadable file, corrupt image (header does not parse, JPEG without end-of-image
  marker, PNG without IEND, unsupported format), size differing from the size the
  annotation declares;
- one annotation skipped: unknown category, a part with fewer than 3 points, NaN/inf
  coordinates, zero area, vertices far outside the image (more than ``OVERSHOOT`` = 2 px;
  a smaller overshoot such as y = 375.4 on a 375-pixel image is clipped to the image),
  malformed keypoints.

Atomicity: everything is written into ``.OUT.fastload-tmp-PID`` beside OUT, the
manifest last (temp file + ``os.replace``), then the folder is renamed to OUT. A pack
that dies leaves no OUT (or the previous OUT, untouched), and the next pack removes
leftover temp folders whose process is gone.
"""
from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from numba import njit

from fastload.formats import READERS, read_source
from fastload.formats.base import Problem, SourceDataset, SourceSample
from fastload.record import FLAG_CROWD, FLAG_IGNORE, Record
from fastload.store import (FORMAT_VERSION, MANIFEST_NAME, SHARD_PATTERN, ShardWriter,
                            record_digest, write_json_atomic)

#: vertices up to this many pixels outside the image are clipped; further is an error
OVERSHOOT = 2.0
#: problem reasons that are policy decisions, not errors (counted, never fatal in strict mode)
POLICY_REASONS = {"crowd_skipped"}
SUPPORTED_IMAGE_FORMATS = {"jpeg", "png", "bmp", "tiff", "webp"}
TMP_MARK = ".fastload-tmp-"
OLD_MARK = ".fastload-old-"


class PackError(ValueError):
    """Packing failed (bad arguments, an existing OUT, or a problem under ``strict``)."""


@dataclass
class PackSummary:
    out: str
    format: str
    images: int = 0                 # records written
    instances: int = 0
    polygons: int = 0               # polygon parts
    ignore_instances: int = 0
    keypoint_instances: int = 0
    clipped_vertices: int = 0       # small overshoots clipped to the image
    skipped_images: Dict[str, int] = field(default_factory=dict)       # reason -> count
    skipped_annotations: Dict[str, int] = field(default_factory=dict)  # reason -> count
    problems: int = 0
    bytes: int = 0                  # total record bytes
    image_bytes: int = 0
    shards: int = 0
    time_s: float = 0.0
    images_per_s: float = 0.0

    def __str__(self) -> str:
        def fmt(d):
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"
        return (f"packed {self.images} images, {self.instances} instances "
                f"({self.ignore_instances} ignore), {self.polygons} polygons into {self.shards} "
                f"shard(s) at {self.out}\n"
                f"  skipped images: {sum(self.skipped_images.values())} ({fmt(self.skipped_images)})\n"
                f"  skipped annotations: {sum(self.skipped_annotations.values())} "
                f"({fmt(self.skipped_annotations)})\n"
                f"  clipped vertices: {self.clipped_vertices}\n"
                f"  {self.bytes / 2**20:.1f} MiB ({self.image_bytes / 2**20:.1f} MiB images) in "
                f"{self.time_s:.2f} s, {self.images_per_s:.0f} images/s")


# ------------------------------------------------------------------------ validation
def _image_header(data: bytes) -> Tuple[str, int, int]:
    """(format, height, width) from the header only; ValueError if corrupt/unsupported.

    JPEG: libjpeg-turbo's header reader (``simplejpeg.decode_jpeg_header``, ~30 us), PIL's
    lazy ``Image.open`` when that refuses (unusual subsampling, CMYK), plus a check for
    the end-of-image marker (truncated files). Other formats: PIL's lazy ``Image.open``
    (parses the header, decodes nothing); PNG must end with its IEND chunk.
    """
    if len(data) < 8:
        raise ValueError(f"image file is too short ({len(data)} bytes)")
    if data[:3] == b"\xff\xd8\xff":
        tail = data[-256:]
        if not tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9") and b"\xff\xd9" not in tail:
            raise ValueError("truncated JPEG (no end-of-image marker)")
        try:
            import simplejpeg
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
            if h > 0 and w > 0:
                return "jpeg", int(h), int(w)
        except (ImportError, ValueError):
            pass  # let PIL decide
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: parses the header, decodes nothing
            fmt = (im.format or "").lower()
            w, h = im.size
    except UnidentifiedImageError:
        raise ValueError("not a recognised image (header does not parse)") from None
    except Exception as e:  # PIL raises many types on broken headers
        raise ValueError(f"corrupt image header: {e}") from None
    if fmt == "mpo":  # multi-picture JPEG from cameras: a JPEG file
        fmt = "jpeg"
    if fmt not in SUPPORTED_IMAGE_FORMATS:
        raise ValueError(f"unsupported image format {fmt!r}")
    if fmt == "png" and b"IEND" not in data[-16:]:
        raise ValueError("truncated PNG (no IEND chunk)")
    if w <= 0 or h <= 0:
        raise ValueError(f"image has size {w}x{h}")
    return fmt, int(h), int(w)


def _path_escapes(file_name: str, image_path: Optional[Path], root: Optional[Path]) -> bool:
    """Lexical check (symlinked image folders stay allowed): the stored name must be
    relative and stay inside the root, and the path must lie under ``root``."""
    fn = file_name.replace("\\", "/")
    if fn.startswith("/") or (len(fn) > 1 and fn[1] == ":"):
        return True
    norm = os.path.normpath(fn)
    if norm == ".." or norm.startswith("../"):
        return True
    if image_path is not None and root is not None:
        rp = os.path.normpath(os.path.abspath(root))
        ip = os.path.normpath(os.path.abspath(image_path))
        if not (ip == rp or ip.startswith(rp.rstrip(os.sep) + os.sep)):
            return True
    return False


# Part status codes of the validation kernel
OK, TOO_FEW, NON_FINITE, OUTSIDE, ZERO_AREA = 0, 1, 2, 3, 4


@njit(nogil=True, cache=True)
def validate_parts(pts, offsets, width, height, overshoot, out):
    """Validate and clip polygon parts (the pack hot path).

    ``pts`` float64 (P, 2) (x, y) continuous pixel coords, all parts concatenated;
    ``offsets`` int64 (n+1,); ``out`` float32 (P, 2) receives the clipped vertices.
    A part is TOO_FEW (< 3 vertices), NON_FINITE (NaN/inf), OUTSIDE (a vertex more than
    ``overshoot`` px outside [0, width] x [0, height]), ZERO_AREA (|shoelace area| of the
    clipped float32 vertices <= 1e-9) or OK; vertices within the overshoot are clipped to
    the border. Returns (codes int32 (n,), clipped vertex count int64 (n,)).
    """
    n = offsets.shape[0] - 1
    codes = np.zeros(n, np.int32)
    clipped = np.zeros(n, np.int64)
    for p in range(n):
        a = offsets[p]
        b = offsets[p + 1]
        if b - a < 3:
            codes[p] = TOO_FEW
            continue
        bad = False
        for k in range(a, b):
            x = pts[k, 0]
            y = pts[k, 1]
            if not (np.isfinite(x) and np.isfinite(y)):
                bad = True
                break
        if bad:
            codes[p] = NON_FINITE
            continue
        for k in range(a, b):
            x = pts[k, 0]
            y = pts[k, 1]
            if x < -overshoot or x > width + overshoot or y < -overshoot or y > height + overshoot:
                bad = True
                break
        if bad:
            codes[p] = OUTSIDE
            continue
        nc = 0
        for k in range(a, b):
            x = pts[k, 0]
            y = pts[k, 1]
            cx = min(max(x, 0.0), width)
            cy = min(max(y, 0.0), height)
            if cx != x or cy != y:
                nc += 1
            out[k, 0] = np.float32(cx)
            out[k, 1] = np.float32(cy)
        clipped[p] = nc
        area2 = 0.0
        for k in range(a, b):
            k2 = k + 1 if k + 1 < b else a
            area2 += np.float64(out[k, 0]) * np.float64(out[k2, 1]) - \
                np.float64(out[k2, 0]) * np.float64(out[k, 1])
        if abs(0.5 * area2) <= 1e-9:
            codes[p] = ZERO_AREA
    return codes, clipped


def validate_parts_reference(pts, offsets, width, height, overshoot):
    """Slow, obvious version of :func:`validate_parts` (for the agreement test)."""
    n = len(offsets) - 1
    codes, clipped = np.zeros(n, np.int32), np.zeros(n, np.int64)
    out = np.zeros((len(pts), 2), np.float32)
    for p in range(n):
        part = np.asarray(pts[offsets[p]:offsets[p + 1]], np.float64)
        if len(part) < 3:
            codes[p] = TOO_FEW
        elif not np.isfinite(part).all():
            codes[p] = NON_FINITE
        elif ((part[:, 0] < -overshoot) | (part[:, 0] > width + overshoot)
              | (part[:, 1] < -overshoot) | (part[:, 1] > height + overshoot)).any():
            codes[p] = OUTSIDE
        else:
            c = np.stack([np.clip(part[:, 0], 0, width), np.clip(part[:, 1], 0, height)], 1)
            clipped[p] = int((c != part).any(1).sum())
            c32 = c.astype(np.float32)
            out[offsets[p]:offsets[p + 1]] = c32
            x, y = c32[:, 0].astype(np.float64), c32[:, 1].astype(np.float64)
            area = 0.5 * sum(x[i] * y[(i + 1) % len(x)] - x[(i + 1) % len(x)] * y[i]
                             for i in range(len(x)))
            if abs(area) <= 1e-9:
                codes[p] = ZERO_AREA
    return codes, clipped, out


_PART_MESSAGES = {
    TOO_FEW: ("too_few_points", "polygon{where} has {n} point(s), needs at least 3"),
    NON_FINITE: ("non_finite", "polygon{where} has NaN or infinite coordinates"),
    OUTSIDE: ("outside_image", "polygon{where} has vertices more than {ov:g} px outside the "
                               "{w}x{h} image (e.g. ({x:.1f}, {y:.1f}))"),
    ZERO_AREA: ("zero_area", "polygon{where} has zero area"),
}


def prepare_sample(sample: SourceSample, index: int, num_classes: int,
                   root: Optional[Path] = None, num_keypoints: Optional[int] = None):
    """Validate one sample and encode its record.

    Returns ``(value, problems, stats)``: ``value`` is the encoded record (``None`` when
    the whole image is skipped), ``problems`` a list of :class:`Problem` (fatal ones
    skipped the image, others one annotation), ``stats`` a dict of counts.
    Coordinates are continuous pixel coordinates; vertices within ``OVERSHOOT`` pixels
    outside [0, W] x [0, H] are clipped onto the border.
    """
    fname = sample.file_name
    problems: List[Problem] = list(sample.problems)
    stats = {"instances": 0, "polygons": 0, "ignore": 0, "keypoints": 0, "clipped": 0,
             "image_bytes": 0}
    if any(p.fatal for p in problems):
        return None, problems, stats

    def fatal(what, reason):
        problems.append(Problem(file=fname, what=what, fatal=True, reason=reason))
        return None, problems, stats

    if _path_escapes(fname, sample.image_path, root):
        return fatal(f"image path escapes the dataset root ({root}); refused", "path_escapes_root")
    data = sample.image_bytes
    if data is None:
        if sample.image_path is None:
            return fatal("sample has no image", "missing_image")
        try:
            with open(sample.image_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return fatal(f"image file not found: {sample.image_path}", "missing_image")
        except OSError as e:
            return fatal(f"cannot read image file {sample.image_path}: {e.strerror or e}",
                         "unreadable_image")
    try:
        fmt, h, w = _image_header(data)
    except ValueError as e:
        return fatal(str(e), "corrupt_image")
    if sample.declared_size is not None and tuple(sample.declared_size) != (h, w):
        dh, dw = sample.declared_size
        return fatal(f"image is {w}x{h} but the annotation declares {dw}x{dh}", "size_mismatch")

    # gather every part of every instance into one flat array (structure checks only)
    insts = sample.instances
    n_inst = len(insts)
    inst_ok = np.ones(n_inst, bool)
    parts, part_inst = [], []
    for k, si in enumerate(insts):
        name = si.name or f"instance {k}"
        if not (0 <= int(si.label) < num_classes):
            problems.append(Problem(fname, f"unknown category (class index {si.label}, the "
                                           f"dataset has {num_classes})", name,
                                    reason="unknown_category"))
            inst_ok[k] = False
            continue
        if not si.polygons:
            problems.append(Problem(fname, "has no polygon", name, reason="no_polygon"))
            inst_ok[k] = False
            continue
        mine = []
        for poly in si.polygons:
            try:
                mine.append(np.asarray(poly, np.float64).reshape(-1, 2))
            except (ValueError, TypeError):
                problems.append(Problem(fname, "polygon is not a list of (x, y) points", name,
                                        reason="bad_polygon"))
                inst_ok[k] = False
                break
        if inst_ok[k]:
            parts.extend(mine)
            part_inst.extend([k] * len(mine))
    lens = np.fromiter((len(p) for p in parts), np.int64, len(parts))
    offsets = np.zeros(len(parts) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    pts = np.concatenate(parts) if parts else np.zeros((0, 2), np.float64)
    clip = np.empty(pts.shape, np.float32)
    codes, clipped = validate_parts(pts, offsets, float(w), float(h), OVERSHOOT, clip)
    part_inst = np.asarray(part_inst, np.int64)
    if codes.any():  # rare: one message per bad annotation (its first bad part)
        for p in np.flatnonzero(codes):
            k = int(part_inst[p])
            if not inst_ok[k]:
                continue
            inst_ok[k] = False
            si = insts[k]
            first = int(np.flatnonzero(part_inst == k)[0])
            where = f" (part {p - first})" if len(si.polygons) > 1 else ""
            reason, msg = _PART_MESSAGES[int(codes[p])]
            seg = pts[offsets[p]:offsets[p + 1]]
            x = y = 0.0
            if codes[p] == OUTSIDE:
                o = ((seg[:, 0] < -OVERSHOOT) | (seg[:, 0] > w + OVERSHOOT)
                     | (seg[:, 1] < -OVERSHOOT) | (seg[:, 1] > h + OVERSHOOT))
                x, y = seg[np.argmax(o)]
            problems.append(Problem(fname, msg.format(where=where, n=len(seg), ov=OVERSHOOT, w=w,
                                                      h=h, x=x, y=y),
                                    si.name or f"instance {k}", reason=reason))
    # keypoints
    kps_list = [None] * n_inst
    has_kp = False
    for k, si in enumerate(insts):
        if inst_ok[k] and si.keypoints is not None:
            kp = np.asarray(si.keypoints, np.float64)
            if kp.ndim != 2 or kp.shape[1] != 3 or not np.isfinite(kp).all() or (
                    num_keypoints is not None and kp.shape[0] != num_keypoints):
                problems.append(Problem(fname, f"malformed keypoints (shape {kp.shape}, expected "
                                               f"({num_keypoints}, 3), finite)",
                                        si.name or f"instance {k}", reason="bad_keypoints"))
                inst_ok[k] = False
            else:
                kps_list[k] = kp.astype(np.float32)
                has_kp = True

    # flat record arrays for the kept instances
    keep_part = inst_ok[part_inst] if len(part_inst) else np.zeros(0, bool)
    kept = np.flatnonzero(inst_ok)
    points = clip[np.repeat(keep_part, lens)] if len(pts) else np.zeros((0, 2), np.float32)
    klens = lens[keep_part]
    part_offsets = np.zeros(len(klens) + 1, np.int32)
    np.cumsum(klens, out=part_offsets[1:])
    parts_per_inst = np.bincount(part_inst[keep_part], minlength=n_inst)[kept]
    inst_parts = np.zeros(len(kept) + 1, np.int32)
    np.cumsum(parts_per_inst, out=inst_parts[1:])
    bboxes = _bboxes(points, part_offsets.astype(np.int64), inst_parts.astype(np.int64))
    kps = None
    if has_kp or (num_keypoints and len(kept)):
        K = num_keypoints or max(a.shape[0] for a in kps_list if a is not None)
        kps = np.zeros((len(kept), K, 3), np.float32)
        for j, k in enumerate(kept):
            if kps_list[k] is not None:
                kps[j, : kps_list[k].shape[0]] = kps_list[k]
    flags = np.array([(FLAG_IGNORE if insts[k].ignore else 0) | (FLAG_CROWD if insts[k].crowd
                                                                  else 0) for k in kept], np.uint8)
    rid = sample.image_id
    rec = Record(id=index if rid is None else int(rid), file_name=fname, image_bytes=data,
                 image_format=fmt, height=h, width=w, points=points, part_offsets=part_offsets,
                 inst_parts=inst_parts,
                 labels=np.array([insts[k].label for k in kept], np.int32),
                 bboxes=bboxes, flags=flags, keypoints=kps)
    stats.update(instances=len(kept), polygons=int(len(klens)),
                 ignore=int((flags & FLAG_IGNORE).astype(bool).sum()),
                 keypoints=sum(kps_list[k] is not None for k in kept),
                 clipped=int(clipped[keep_part].sum()), image_bytes=len(data))
    value = rec.encode()
    stats["digest"] = record_digest(value)  # hashed here, in the worker, not in the writer
    return value, problems, stats


@njit(nogil=True, cache=True)
def _bboxes(points, part_offsets, inst_parts):
    """Tight x1, y1, x2, y2 of each instance's vertices (float32 (n_inst, 4))."""
    n = inst_parts.shape[0] - 1
    out = np.zeros((n, 4), np.float32)
    for k in range(n):
        a = part_offsets[inst_parts[k]]
        b = part_offsets[inst_parts[k + 1]]
        if b <= a:
            continue
        x1 = x2 = points[a, 0]
        y1 = y2 = points[a, 1]
        for i in range(a + 1, b):
            x1 = min(x1, points[i, 0])
            x2 = max(x2, points[i, 0])
            y1 = min(y1, points[i, 1])
            y2 = max(y2, points[i, 1])
        out[k, 0] = x1
        out[k, 1] = y1
        out[k, 2] = x2
        out[k, 3] = y2
    return out


# -------------------------------------------------------------------- worker plumbing
_W: dict = {}  # per-process worker state (inherited through fork)


def _work_chunk(bounds, state=None):
    lo, hi = bounds
    w = _W if state is None else state
    out = []
    for i in range(lo, hi):
        try:
            out.append(prepare_sample(w["samples"][i], i, w["num_classes"], w["root"],
                                      w["num_keypoints"]))
        except Exception as e:  # a reader's lazy parsing failed: skip the sample, say why
            smp = w["samples"][i]
            name = getattr(smp, "file_name", f"sample {i}")
            out.append((None, [Problem(file=str(name), fatal=True, reason="unreadable_sample",
                                       what=f"could not be prepared: {type(e).__name__}: {e}")],
                        {}))
    return out


def _ordered_map(pool, chunks, window: int, state=None):
    """Results of ``_work_chunk`` over ``chunks`` in order, with at most ``window`` chunks
    in flight (bounded memory when the LMDB writer is slower than the workers)."""
    from collections import deque
    pending = deque()
    it = iter(chunks)
    for c in it:
        pending.append(pool.submit(_work_chunk, c, state))
        if len(pending) >= window:
            break
    while pending:
        res = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(_work_chunk, nxt, state))
        yield res


def _cleanup_leftovers(out: Path) -> None:
    """Remove temp/old folders of earlier packs to ``out`` whose process is gone."""
    parent = out.parent
    if not parent.exists():
        return
    for prefix in (f".{out.name}{TMP_MARK}", f".{out.name}{OLD_MARK}"):
        for d in parent.glob(prefix + "*"):
            try:
                pid = int(d.name[len(prefix):])
            except ValueError:
                continue
            alive = True
            if pid != os.getpid():
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    alive = True
            else:
                alive = False
            if not alive:
                shutil.rmtree(d, ignore_errors=True)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise PackError(f"{out}: exists and is not a directory")
        if any(out.iterdir()) and not overwrite:
            raise PackError(f"{out}: exists and is not empty; pass --overwrite to replace it")


def pack(src, out, format: str, shard_size: int = 10000, workers: Optional[int] = None,
         strict: bool = False, overwrite: bool = False, crowd: str = "ignore",
         progress: bool = True, images=None, executor: str = "thread",
         chunk: int = 32, options: Optional[dict] = None) -> PackSummary:
    """Pack the ``format`` dataset at ``src`` into ``out`` (see the module docstring).

    ``shard_size``: records per LMDB shard. ``workers``: threads (or processes) for
    reading, header parsing, validation and encoding (default all cores; 1 = in this
    thread); LMDB writing stays in the calling thread, in source order.
    ``crowd``: COCO crowd/RLE policy, ``"ignore"`` (kept as ignore regions) or
    ``"skip"``. ``images``: image folder for COCO (default: found beside the JSON).
    ``options``: extra keyword options for the format's reader (e.g. labelme
    ``ignore_labels``, VIA ``class_attribute``, YOLO ``split``, masks ``tolerance``; see
    docs/formats.md); an option the reader does not take is refused.
    ``executor``: ``"thread"`` (default) or ``"process"`` (fork pool). On the shared
    2-core development machine both gave 700-1100 images/s of 640x480 JPEG, within the
    noise of each other; threads avoid pickling every ~60 KB record back to the writer,
    and file reads, libjpeg-turbo header parsing, hashing and the Numba kernel release
    the GIL.
    Returns a :class:`PackSummary`; raises :class:`PackError` (a ``ValueError``) for bad
    arguments, an existing non-empty OUT without ``overwrite``, or any problem under
    ``strict``.
    """
    t0 = time.perf_counter()
    src, out = Path(src), Path(out).absolute()
    if format not in READERS:
        raise PackError(f"unknown format {format!r}; choose one of {', '.join(READERS)}")
    if crowd not in ("ignore", "skip"):
        raise PackError(f"crowd must be 'ignore' or 'skip', not {crowd!r}")
    if shard_size < 1:
        raise PackError(f"shard_size must be >= 1, not {shard_size}")
    if not src.exists():
        raise PackError(f"{src}: no such file or directory")
    rs, ro = src.resolve(), out.resolve()
    if rs == ro or ro in rs.parents:
        raise PackError(f"{out}: OUT is or contains the source {src}; choose another OUT "
                        f"(--overwrite would delete the source)")
    options = dict(options or {})
    if options:
        import inspect
        from fastload.formats import get_reader
        accepted = [n for n, p in inspect.signature(get_reader(format).read).parameters.items()
                    if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and n != "src")]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise PackError(f"the {format} reader takes no option {', '.join(unknown)}; "
                            f"it takes: {', '.join(accepted) or 'none'}")
    _check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    _cleanup_leftovers(out)

    try:
        sds: SourceDataset = read_source(format, src, **{"crowd": crowd, "images": images, **options})
    except PackError:
        raise
    except (ValueError, OSError) as e:
        raise PackError(f"cannot read {format} dataset {src}: {e}") from None
    samples = list(sds.samples)
    root = sds.root
    if root is None:
        root = src if src.is_dir() else src.parent
    num_kp = len(sds.keypoint_names) if sds.keypoint_names else None

    all_problems: List[Problem] = []
    summary = PackSummary(out=str(out), format=format)
    skipped_img: Counter = Counter()
    skipped_ann: Counter = Counter()

    def note(problems):
        for p in problems:
            if strict and p.reason not in POLICY_REASONS:
                raise PackError(f"--strict: {p}")
            all_problems.append(p)
            (skipped_img if p.fatal else skipped_ann)[p.reason] += 1

    note(sds.problems)

    tmp = out.parent / f".{out.name}{TMP_MARK}{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    pool = None
    bar = None
    writer = None
    try:
        workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
        chunks = [(lo, min(lo + chunk, len(samples))) for lo in range(0, len(samples), chunk)]
        state = dict(samples=samples, num_classes=len(sds.classes), root=root,
                     num_keypoints=num_kp)
        if workers > 1 and len(chunks) > 1:
            from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
            if executor == "thread":
                pool = ThreadPoolExecutor(workers)
                results = _ordered_map(pool, chunks, 4 * workers, state)
            else:  # fork: workers inherit the samples (_W) instead of receiving them pickled
                _W.update(state)
                pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
                results = _ordered_map(pool, chunks, 4 * workers)
        else:
            results = (_work_chunk(c, state) for c in chunks)
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(samples), unit="img", desc=f"pack {format}", file=sys.stderr,
                       dynamic_ncols=True)
        shards: List[dict] = []
        for res in results:
            for value, problems, st in res:
                note(problems)
                if bar is not None:
                    bar.update(1)
                if value is None:
                    continue
                if writer is None:
                    writer = ShardWriter(tmp / SHARD_PATTERN.format(len(shards)))
                writer.append(value, st.get("digest"))
                summary.images += 1
                summary.instances += st["instances"]
                summary.polygons += st["polygons"]
                summary.ignore_instances += st["ignore"]
                summary.keypoint_instances += st["keypoints"]
                summary.clipped_vertices += st["clipped"]
                summary.image_bytes += st["image_bytes"]
                summary.bytes += len(value)
                if writer.count + len(writer._pending) >= shard_size:
                    shards.append(writer.close())
                    writer = None
        if writer is not None:
            shards.append(writer.close())
            writer = None
        if bar is not None:
            bar.close()
            bar = None
        if pool is not None:
            pool.shutdown()
            pool = None

        summary.shards = len(shards)
        summary.skipped_images = dict(skipped_img)
        summary.skipped_annotations = dict(skipped_ann)
        summary.problems = len(all_problems)
        summary.time_s = time.perf_counter() - t0
        summary.images_per_s = summary.images / max(summary.time_s, 1e-9)
        from fastload import __version__
        from fastload.record import RECORD_VERSION
        with open(tmp / "problems.txt", "w") as f:
            f.write(f"# fastload pack {format} {src}: {len(all_problems)} problem(s)\n")
            for p in all_problems:
                kind = "image skipped" if p.fatal else "annotation skipped"
                f.write(f"{p}  [{kind}: {p.reason}]\n")
        write_json_atomic(tmp / "pack_report.json", asdict(summary))
        manifest = {
            "format": "fastload",
            "format_version": FORMAT_VERSION,
            "record_version": RECORD_VERSION,
            "fastload_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source_format": format,
            "source": str(src.absolute()),
            "key_format": "uint64 big-endian local index within the shard",
            "checksum": "blake2b-256 of the blake2b-128 digests of the record values in key order",
            "num_records": summary.images,
            "shards": shards,
            "classes": list(sds.classes),
            "keypoint_names": list(sds.keypoint_names) if sds.keypoint_names else None,
            "flip_pairs": [list(map(int, p)) for p in sds.flip_pairs] if sds.flip_pairs else (
                [] if sds.keypoint_names else None),
            "skeleton": [list(map(int, p)) for p in sds.skeleton] if sds.skeleton else None,
            "summary": {"images": summary.images, "instances": summary.instances,
                        "polygons": summary.polygons, "ignore_instances": summary.ignore_instances,
                        "skipped_images": summary.skipped_images,
                        "skipped_annotations": summary.skipped_annotations,
                        "bytes": summary.bytes},
        }
        write_json_atomic(tmp / MANIFEST_NAME, manifest)  # last file written
        _fsync_dir(tmp)
        _publish(tmp, out)
    except BaseException:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if writer is not None:
            try:
                writer.env.close()
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _W.clear()
    return summary


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished temp folder to OUT (an existing OUT is moved aside first and
    removed after)."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}{OLD_MARK}{os.getpid()}"
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(tmp, out)
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
