"""FCOS (Tian et al. 2019) per-location targets, as a Numba kernel.

Reproduces ``tianzhi0549/FCOS`` ``fcos_core/modeling/rpn/fcos``: ``compute_locations``
(fcos.py) and ``prepare_targets`` / ``compute_targets_for_locations`` /
``get_sample_region`` / ``compute_centerness_targets`` (loss.py):

- Level ``l`` with stride ``s`` has ``ceil(H / s) x ceil(W / s)`` locations (the
  feature-map size of a stride-``s`` FPN level for an ``H x W`` input); location
  ``(y, x)`` is at ``(x * s + s // 2, y * s + s // 2)``. For the even strides FCOS uses,
  that is exactly the center of the cell ``[x s, (x+1) s)`` in DESIGN.md's continuous
  coordinates, so boxes in continuous input pixels need no conversion.
- Locations are concatenated level by level, row-major inside a level (x fastest),
  like FCOS's ``torch.cat`` of ``locations`` and ``permute(0, 2, 3, 1).reshape``.
- ``l, t, r, b = x - x1, y - y1, x2 - x, y2 - y``. A location is a candidate for a box
  when it is strictly inside (``min(l,t,r,b) > 0``), or, with center sampling
  (``center_sampling_radius > 0``), strictly inside the box's center region
  ``center +- radius * stride`` clipped to the box; and when
  ``lo <= max(l, t, r, b) <= hi`` for its level's size range (both inclusive).
- Among candidate boxes the one with the smallest area wins, ties to the lowest box
  index (``torch.min``'s first index). Area is ``(x2 - x1) * (y2 - y1)`` (continuous);
  maskrcnn-benchmark's ``BoxList.area`` adds 1 to each side (``TO_REMOVE = 1``, integer
  pixel convention), which can change which of two nested boxes is smaller: we follow
  DESIGN.md's continuous convention here.
- ``fcos_labels`` = class id + 1, 0 = background (FCOS's ``labels`` are 1-based with 0
  background; we take 0-based class ids and add 1).
- ``fcos_ltrb`` (divided by the stride when ``norm_reg=True``, FCOS's
  ``NORM_REG_TARGETS``) and ``fcos_centerness`` =
  ``sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))`` for positives; both are 0 at
  background locations (FCOS leaves garbage there; no loss reads it).
- Not reproduced: get_sample_region's "no gt" shortcut (``center_x[..., 0].sum() == 0``
  returns all negatives when the first box's center x is 0), an artefact of padding.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._common import check_boxes, check_labels, check_size, scratch

STRIDES = (8, 16, 32, 64, 128)
SIZE_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf))


def fcos_level_sizes(img_h: int, img_w: int, strides=STRIDES) -> list:
    """[(h_l, w_l), ...] location grid size per level: ``(ceil(H / s), ceil(W / s))``."""
    return [(-(-int(img_h) // int(s)), -(-int(img_w) // int(s))) for s in strides]


def fcos_num_locations(img_h: int, img_w: int, strides=STRIDES) -> int:
    """Total number of locations L over all levels."""
    return sum(h * w for h, w in fcos_level_sizes(img_h, img_w, strides))


def fcos_locations(img_h: int, img_w: int, strides=STRIDES) -> np.ndarray:
    """(L, 2) float32 (x, y) of every location, in the output order."""
    out = []
    for (h, w), s in zip(fcos_level_sizes(img_h, img_w, strides), strides):
        ys, xs = np.meshgrid(np.arange(h) * s + s // 2, np.arange(w) * s + s // 2, indexing="ij")
        out.append(np.stack([xs.ravel(), ys.ravel()], 1))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 2), np.float32)


@njit(nogil=True, cache=True)
def _clampi(v, hi):
    """int(v) clamped to [0, hi] without overflowing on huge coordinates."""
    if v < 0.0:
        return 0
    if v > hi:
        return hi
    return int(v)


@njit(nogil=True, cache=True)
def _fcos_one(labels_out, ltrb_out, ctr_out, best_area, best_idx, boxes, labels, k0, k1,
              level_h, level_w, strides, lo, hi, radius, norm_reg):
    L = labels_out.shape[0]
    for i in range(L):
        best_area[i] = np.inf
        best_idx[i] = -1
    # pass 1: per location, the smallest-area candidate box (lowest index on ties)
    base = 0
    for lev in range(strides.shape[0]):
        s = strides[lev]
        half = s // 2
        lh = level_h[lev]
        lw = level_w[lev]
        for k in range(k0, k1):
            bx1 = boxes[k, 0]
            by1 = boxes[k, 1]
            bx2 = boxes[k, 2]
            by2 = boxes[k, 3]
            area = (np.float64(bx2) - np.float64(bx1)) * (np.float64(by2) - np.float64(by1))
            # region a location must be strictly inside
            rx1 = bx1
            ry1 = by1
            rx2 = bx2
            ry2 = by2
            if radius > 0:
                cx = (bx1 + bx2) / np.float32(2)
                cy = (by1 + by2) / np.float32(2)
                rs = np.float32(s * radius)
                rx1 = max(cx - rs, bx1)
                ry1 = max(cy - rs, by1)
                rx2 = min(cx + rs, bx2)
                ry2 = min(cy + rs, by2)
            # candidate index window (a superset; exact test below)
            jx0 = _clampi(math.floor((rx1 - half) / s), lw)
            jx1 = _clampi(math.ceil((rx2 - half) / s), lw - 1)
            iy0 = _clampi(math.floor((ry1 - half) / s), lh)
            iy1 = _clampi(math.ceil((ry2 - half) / s), lh - 1)
            for iy in range(iy0, iy1 + 1):
                y = np.float32(iy * s + half)
                t = y - by1
                b = by2 - y
                if not (y - ry1 > 0 and ry2 - y > 0):
                    continue
                for jx in range(jx0, jx1 + 1):
                    x = np.float32(jx * s + half)
                    if not (x - rx1 > 0 and rx2 - x > 0):
                        continue
                    l = x - bx1
                    r = bx2 - x
                    m = max(max(l, r), max(t, b))
                    if m < lo[lev] or m > hi[lev]:
                        continue
                    loc = base + iy * lw + jx
                    if area < best_area[loc]:
                        best_area[loc] = area
                        best_idx[loc] = k
        base += lh * lw
    # pass 2: write the targets
    base = 0
    for lev in range(strides.shape[0]):
        s = strides[lev]
        half = s // 2
        lh = level_h[lev]
        lw = level_w[lev]
        for iy in range(lh):
            y = np.float32(iy * s + half)
            for jx in range(lw):
                loc = base + iy * lw + jx
                k = best_idx[loc]
                if k < 0:
                    labels_out[loc] = 0
                    ltrb_out[loc, 0] = 0.0
                    ltrb_out[loc, 1] = 0.0
                    ltrb_out[loc, 2] = 0.0
                    ltrb_out[loc, 3] = 0.0
                    ctr_out[loc] = 0.0
                    continue
                x = np.float32(jx * s + half)
                l = x - boxes[k, 0]
                t = y - boxes[k, 1]
                r = boxes[k, 2] - x
                b = boxes[k, 3] - y
                labels_out[loc] = labels[k] + 1
                c = (min(l, r) / max(l, r)) * (min(t, b) / max(t, b))
                ctr_out[loc] = np.float32(math.sqrt(c))
                if norm_reg:
                    fs = np.float32(s)
                    l = l / fs
                    t = t / fs
                    r = r / fs
                    b = b / fs
                ltrb_out[loc, 0] = l
                ltrb_out[loc, 1] = t
                ltrb_out[loc, 2] = r
                ltrb_out[loc, 3] = b
        base += lh * lw


class _Levels:
    """Validated level geometry, cached per (img_h, img_w, strides, ranges)."""

    _cache: dict = {}

    @classmethod
    def get(cls, img_h, img_w, strides, size_ranges):
        key = (img_h, img_w, tuple(strides), tuple(tuple(r) for r in size_ranges))
        lv = cls._cache.get(key)
        if lv is None:
            img_h = check_size("img_h", img_h)
            img_w = check_size("img_w", img_w)
            st = [check_size("strides[]", s) for s in strides]
            if len(size_ranges) != len(st) or any(len(r) != 2 or not r[0] <= r[1] for r in size_ranges):
                raise ValueError("size_ranges must be one (lo, hi) pair with lo <= hi per stride")
            sizes = fcos_level_sizes(img_h, img_w, st)
            lv = cls()
            lv.strides = np.array(st, np.int64)
            lv.h = np.array([h for h, _ in sizes], np.int64)
            lv.w = np.array([w for _, w in sizes], np.int64)
            lv.lo = np.array([r[0] for r in size_ranges], np.float32)
            lv.hi = np.array([r[1] for r in size_ranges], np.float32)
            lv.L = int((lv.h * lv.w).sum())
            cls._cache[key] = lv
        return lv


def alloc_fcos(batch: int, img_h: int, img_w: int, strides=STRIDES) -> dict:
    """Preallocated (B, L...) outputs for :func:`fcos_into`."""
    L = fcos_num_locations(img_h, img_w, strides)
    return {"fcos_labels": np.zeros((batch, L), np.int64),
            "fcos_ltrb": np.zeros((batch, L, 4), np.float32),
            "fcos_centerness": np.zeros((batch, L), np.float32)}


def _check_out(out, L):
    try:
        lab, ltrb, ctr = out["fcos_labels"], out["fcos_ltrb"], out["fcos_centerness"]
    except (KeyError, TypeError):
        raise ValueError("out must be a dict with fcos_labels, fcos_ltrb, fcos_centerness") from None
    B = lab.shape[0] if lab.ndim == 2 else -1
    if not (lab.dtype == np.int64 and lab.shape == (B, L) and ltrb.dtype == np.float32
            and ltrb.shape == (B, L, 4) and ctr.dtype == np.float32 and ctr.shape == (B, L)):
        raise ValueError(f"fcos out arrays must be (B, {L}) int64, (B, {L}, 4) float32, (B, {L}) float32")
    return lab, ltrb, ctr


def _check_radius(r):
    r = float(r)
    if not np.isfinite(r) or r < 0:
        raise ValueError(f"center_sampling_radius must be >= 0, got {r}")
    return r


def fcos_targets(boxes, labels, img_h: int, img_w: int, num_classes: int | None = None, strides=STRIDES,
         size_ranges=SIZE_RANGES, center_sampling_radius: float = 0.0, norm_reg: bool = False) -> dict:
    """FCOS targets of one image (allocates; see :func:`fcos_into`).

    ``boxes`` float (K, 4) x1, y1, x2, y2 in input-image pixels (continuous convention);
    ``labels`` int (K,) 0-based (checked against ``num_classes`` when given);
    ``img_h, img_w`` the network input size. ``center_sampling_radius``: 0 disables,
    1.5 is FCOS's improved setting. Returns ``fcos_labels`` (L,) int64 (0 background,
    class + 1), ``fcos_ltrb`` (L, 4) float32, ``fcos_centerness`` (L,) float32, with
    L = :func:`fcos_num_locations`. Semantics: module docstring.
    """
    lv = _Levels.get(img_h, img_w, strides, size_ranges)
    out = {"fcos_labels": np.empty((1, lv.L), np.int64), "fcos_ltrb": np.empty((1, lv.L, 4), np.float32),
           "fcos_centerness": np.empty((1, lv.L), np.float32)}
    fcos_into(out, 0, boxes, labels, img_h, img_w, num_classes, strides, size_ranges,
              center_sampling_radius, norm_reg)
    return {k: v[0] for k, v in out.items()}


def fcos_into(out: dict, b: int, boxes, labels, img_h: int, img_w: int, num_classes: int | None = None,
              strides=STRIDES, size_ranges=SIZE_RANGES, center_sampling_radius: float = 0.0,
              norm_reg: bool = False) -> None:
    """Fill sample ``b`` of preallocated ``out`` (from :func:`alloc_fcos`); no allocation once warm."""
    lv = _Levels.get(img_h, img_w, strides, size_ranges)
    lab_o, ltrb_o, ctr_o = _check_out(out, lv.L)
    if not (0 <= b < lab_o.shape[0]):
        raise ValueError(f"sample index b={b} out of range for batch of {lab_o.shape[0]}")
    bx = check_boxes(boxes)
    lab = check_labels(labels, bx.shape[0], num_classes)
    r = _check_radius(center_sampling_radius)
    ba = scratch("fcos_area", lv.L, np.float64)
    bi = scratch("fcos_idx", lv.L, np.int64)
    _fcos_one(lab_o[b], ltrb_o[b], ctr_o[b], ba, bi, bx, lab, 0, bx.shape[0], lv.h, lv.w,
              lv.strides, lv.lo, lv.hi, r, bool(norm_reg))
