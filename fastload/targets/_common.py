"""Shared input checks and per-thread scratch buffers for the target kernels.

The checks are cheap (a handful of NumPy reductions over the small annotation
arrays, never over pixels) and run in Python before any kernel, so bad input
gives a clear ``ValueError`` naming the argument instead of a Numba traceback.
"""
from __future__ import annotations

import threading

import numpy as np
from numba import njit

_tls = threading.local()


def scratch(name: str, size: int, dtype) -> np.ndarray:
    """A per-thread reusable 1-D buffer of at least ``size`` elements (grown, never shrunk).

    Kernels run on a thread pool with the GIL released, so each thread keeps its own
    buffers; after warm-up no call allocates. Each ``name`` must always be used with
    the same ``dtype``.
    """
    bufs = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    buf = bufs.get(name)
    if buf is None or buf.shape[0] < size:
        buf = np.empty(max(int(size), 16), dtype)
        bufs[name] = buf
    return buf


def check_size(name: str, value, minimum: int = 1) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if v != value or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def boxes_array(boxes, name: str = "boxes") -> np.ndarray:
    """Shape and dtype check only: (K, 4) numeric -> float32 C-contiguous (values unchecked).
    An empty input of any shape gives (0, 4)."""
    b = np.asarray(boxes)
    if b.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a numeric array, got dtype {b.dtype}")
    if b.ndim != 2 or b.shape[1] != 4:
        if b.size == 0:
            return np.zeros((0, 4), np.float32)
        raise ValueError(f"{name} must have shape (K, 4) x1,y1,x2,y2, got {b.shape}")
    return np.ascontiguousarray(b, np.float32)


def check_boxes(boxes, name: str = "boxes") -> np.ndarray:
    """(K, 4) finite x1,y1,x2,y2 with x2 >= x1 and y2 >= y1 -> float32 C-contiguous."""
    b = boxes_array(boxes, name)
    if b.shape[0]:
        k, why = _bad_box(b)
        if k >= 0:
            what = "contains NaN or inf" if why == 1 else \
                "has negative width or height (expected x1 <= x2, y1 <= y2)"
            raise ValueError(f"{name}[{k}] = {b[k].tolist()} {what}")
    return b


@njit(nogil=True, cache=True)
def _bad_box(b):
    """(index, reason) of the first non-finite (1) or inverted (2) box, (-1, 0) if none."""
    for k in range(b.shape[0]):
        for c in range(4):
            if not np.isfinite(b[k, c]):
                return k, 1
        if b[k, 2] < b[k, 0] or b[k, 3] < b[k, 1]:
            return k, 2
    return -1, 0


@njit(nogil=True, cache=True)
def _minmax_int(a):
    lo = a[0]
    hi = a[0]
    for v in a:
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    return lo, hi


def check_labels(labels, n: int, num_classes: int | None, name: str = "labels") -> np.ndarray:
    """(n,) integers in [0, num_classes) -> int64 C-contiguous."""
    lab = np.asarray(labels)
    if lab.size == 0 and n == 0:
        return np.zeros(0, np.int64)
    if lab.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer class ids, got dtype {lab.dtype}")
    if lab.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the boxes/instances, got {lab.shape}")
    lab = np.ascontiguousarray(lab, np.int64)
    if n:
        lo, hi = _minmax_int(lab)
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            raise ValueError(f"{name} out of range [0, {num_classes}): min {lo}, max {hi}")
    return lab


def check_polygons(points, part_offsets, inst_parts):
    """Flat polygon layout of fastload.record -> (float32 (P,2), int64 offsets, int64 inst_parts)."""
    pts = np.asarray(points)
    if pts.size == 0:
        pts = np.zeros((0, 2), np.float32)
    if pts.dtype.kind not in "fiu" or pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be a numeric (P, 2) array, got {pts.dtype} {pts.shape}")
    pts = np.ascontiguousarray(pts, np.float32)
    if pts.shape[0] and not np.isfinite(pts).all():
        raise ValueError("points contains NaN or inf")
    po = np.asarray(part_offsets)
    ip = np.asarray(inst_parts)
    for nm, a in (("part_offsets", po), ("inst_parts", ip)):
        if a.dtype.kind not in "iu" or a.ndim != 1 or a.shape[0] < 1:
            raise ValueError(f"{nm} must be a 1-D integer array of length >= 1, got {a.dtype} {a.shape}")
        if a[0] != 0 or (a.shape[0] > 1 and (np.diff(a) < 0).any()):
            raise ValueError(f"{nm} must start at 0 and be non-decreasing")
    if int(po[-1]) != pts.shape[0]:
        raise ValueError(f"part_offsets[-1] = {int(po[-1])} != number of points {pts.shape[0]}")
    if int(ip[-1]) != po.shape[0] - 1:
        raise ValueError(f"inst_parts[-1] = {int(ip[-1])} != number of parts {po.shape[0] - 1}")
    return pts, np.ascontiguousarray(po, np.int64), np.ascontiguousarray(ip, np.int64)
