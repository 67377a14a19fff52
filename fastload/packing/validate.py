"""Validation of one sample for ``fastload pack``, with one policy for every format, and its
encoding into a :class:`fastload.record.Record` value.

Image format and size come from the header (libjpeg-turbo's header reader or PIL's lazy
``Image.open``: no decode); image bytes are stored exactly as read (never re-encoded).
Record ids: the COCO image id for COCO; for the other formats the position of the sample
in the reader's (sorted) order, so ids do not change when other samples are skipped.

Policy (:func:`prepare_sample` returns the problems; ``pack`` skips and counts them, or
fails under ``strict``):

- whole image skipped: image path escaping the dataset root (refused; symlinks resolved),
  missing or unreadable file, a path that is not a regular file (a FIFO, a device: never
  opened for reading), corrupt image (header does not parse, JPEG without end-of-image
  marker, PNG without IEND, unsupported format), more pixels than the cap
  (:mod:`fastload.limits`, from the header: a decompression bomb is never decoded), size
  differing from the size the annotation declares;
- one annotation skipped: unknown category, a part with fewer than 3 points, NaN/inf
  coordinates, zero area, vertices far outside the image (more than ``OVERSHOOT`` = 2 px;
  a smaller overshoot such as y = 375.4 on a 375-pixel image is clipped to the image),
  malformed keypoints.

The per-part checks and the clipping are one Numba kernel (:func:`validate_parts`, the
pack hot path) with a slow, obvious twin (:func:`validate_parts_reference`); record boxes
come from :func:`fastload.targets.boxes.fill_instance_boxes` (built on ``vertex_box``, the
one polygon-box helper).
"""
from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from numba import njit

from fastload.formats.base import Problem, SourceSample
from fastload.formats.files import SpecialFileError, inside_root, read_regular
from fastload.limits import ImageTooLarge, check_image_size
from fastload.record import FLAG_CROWD, FLAG_IGNORE, Record
from fastload.store import record_digest
from fastload.targets.boxes import fill_instance_boxes

#: vertices up to this many pixels outside the image are clipped; further is an error
OVERSHOOT = 2.0
SUPPORTED_IMAGE_FORMATS = {"jpeg", "png", "bmp", "tiff", "webp"}


def _image_header(data: bytes, max_pixels=None) -> Tuple[str, int, int]:
    """(format, height, width) from the header only; ValueError if corrupt/unsupported,
    :class:`fastload.limits.ImageTooLarge` when the header claims more pixels than the cap
    (``max_pixels``, see :func:`fastload.limits.check_image_size`), checked before PIL
    parses anything past the header.

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
        except (ImportError, ValueError):
            h = w = 0  # let PIL decide
        if h > 0 and w > 0:
            check_image_size(h, w, "image", max_pixels)
            return "jpeg", int(h), int(w)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        check_image_size(h, w, "image", max_pixels)  # before PIL's own (tighter) check
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: parses the header, decodes nothing
            fmt = (im.format or "").lower()
            w, h = im.size
    except UnidentifiedImageError:
        raise ValueError("not a recognised image (header does not parse)") from None
    except Image.DecompressionBombError as e:  # PIL's own cap (same default as fastload's)
        raise ImageTooLarge(f"{e} (PIL's limit: PIL.Image.MAX_IMAGE_PIXELS)") from None
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
    check_image_size(h, w, "image", max_pixels)
    return fmt, int(h), int(w)


def _path_escapes(file_name: str, image_path: Optional[Path], root: Optional[Path]) -> bool:
    """The stored name must be relative and must not climb out with ``..``; the image file
    must lie inside ``root`` with every symlink resolved (:func:`fastload.formats.files.
    inside_root`, the one containment rule: a symlinked root folder is fine, a symlink
    inside it pointing outside is not)."""
    fn = file_name.replace("\\", "/")
    if fn.startswith("/") or (len(fn) > 1 and fn[1] == ":"):
        return True
    norm = os.path.normpath(fn)
    if norm == ".." or norm.startswith("../"):
        return True
    return image_path is not None and root is not None and inside_root(image_path, root) is None


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
                   root: Optional[Path] = None, num_keypoints: Optional[int] = None,
                   max_pixels=None):
    """Validate one sample and encode its record.

    ``max_pixels``: the pixel cap of :func:`fastload.limits.check_image_size` (``None``:
    ``fastload.limits.MAX_IMAGE_PIXELS``; 0: none), applied to the header's size.

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
            data = read_regular(sample.image_path)
        except FileNotFoundError:
            return fatal(f"image file not found: {sample.image_path}", "missing_image")
        except SpecialFileError as e:
            return fatal(f"image file {sample.image_path} {e.strerror}", "special_file")
        except OSError as e:
            return fatal(f"cannot read image file {sample.image_path}: {e.strerror or e}",
                         "unreadable_image")
    try:
        fmt, h, w = _image_header(data, max_pixels)
    except ImageTooLarge as e:
        return fatal(str(e), "too_many_pixels")
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
    bboxes = np.empty((len(kept), 4), np.float32)
    fill_instance_boxes(points, part_offsets, inst_parts, bboxes)
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
