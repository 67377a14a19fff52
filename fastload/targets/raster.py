"""Polygon rasterization: the primitive behind masks, shadows and the alignment tests.

Rule (DESIGN.md convention): an output pixel (row i, col j) at ``stride`` s has its
center at ((j + 0.5) * s, (i + 0.5) * s) in input coordinates, and is inside a
polygon part when that center is, by the **even-odd** rule. A point exactly on a
left/top edge is inside, on a right/bottom edge outside (half-open spans), so two
polygons sharing an edge never both cover a pixel. An instance with several parts
covers the **union** of its parts (each part filled even-odd on its own), which is
what COCO multi-polygons and labelme ``group_id`` mean.

``fill_polygon`` is the Numba kernel (scanline, O(rows * vertices); the crossings of a row
are sorted by ``sort_inplace``); the reference
``fill_polygon_reference`` tests every pixel center with a crossing count.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def sort_inplace(a):
    """Sort the 1-D array ``a`` ascending in place (Shell sort, Knuth's gaps: insertion sort
    for the few crossings of a scanline, O(n^1.5) for many). Used instead of ``ndarray.sort``
    because Numba's quicksort costs seconds of compilation in every kernel that uses it; for
    values without NaN the result is the same sequence. Callers pass a view (``xs[:m]``), so
    it compiles once per dtype."""
    n = a.shape[0]
    gap = 1
    while gap < n // 3:
        gap = 3 * gap + 1
    while gap >= 1:
        for i in range(gap, n):
            v = a[i]
            k = i
            while k >= gap and a[k - gap] > v:
                a[k] = a[k - gap]
                k -= gap
            a[k] = v
        gap //= 3


@njit(nogil=True, cache=True)
def fill_polygon(mask, pts, value, stride=1.0):
    """Set ``mask[i, j] = value`` for every pixel whose center is inside polygon ``pts``.

    ``mask``: 2-D array (any numeric dtype), modified in place.
    ``pts``: float32/float64 ``(N, 2)`` (x, y) in input coordinates; N < 3 draws nothing.
    ``stride``: input pixels per mask pixel.
    """
    n = pts.shape[0]
    h, w = mask.shape
    if n < 3:
        return
    inv = 1.0 / stride
    ymin = pts[0, 1]
    ymax = pts[0, 1]
    for k in range(1, n):
        y = pts[k, 1]
        if y < ymin:
            ymin = y
        if y > ymax:
            ymax = y
    # rows whose center y_c = (i + .5) * stride lies in [ymin, ymax)
    i0 = int(np.ceil(ymin * inv - 0.5))
    i1 = int(np.ceil(ymax * inv - 0.5))
    if i0 < 0:
        i0 = 0
    if i1 > h:
        i1 = h
    xs = np.empty(n, np.float64)
    for i in range(i0, i1):
        yc = (i + 0.5) * stride
        m = 0
        for k in range(n):
            x0 = pts[k, 0]
            y0 = pts[k, 1]
            x1 = pts[(k + 1) % n, 0]
            y1 = pts[(k + 1) % n, 1]
            if (y0 <= yc < y1) or (y1 <= yc < y0):
                xs[m] = x0 + (yc - y0) * (x1 - x0) / (y1 - y0)
                m += 1
        if m < 2:
            continue
        sort_inplace(xs[:m])
        for q in range(0, m - 1, 2):
            # pixels whose center x_c = (j + .5) * stride lies in [xa, xb)
            j0 = int(np.ceil(xs[q] * inv - 0.5))
            j1 = int(np.ceil(xs[q + 1] * inv - 0.5))
            if j0 < 0:
                j0 = 0
            if j1 > w:
                j1 = w
            for j in range(j0, j1):
                mask[i, j] = value


@njit(nogil=True, cache=True)
def fill_parts(mask, points, part_offsets, p0, p1, value, stride=1.0):
    """Fill the union of parts ``p0..p1-1`` of a flat polygon list (see fastload.record)."""
    for p in range(p0, p1):
        fill_polygon(mask, points[part_offsets[p]:part_offsets[p + 1]], value, stride)


def fill_polygon_reference(mask, pts, value, stride=1.0):
    """Slow, obvious version of :func:`fill_polygon`: a crossing-number test per pixel center.

    A crossing is counted for an edge when the center's y is in [min(y0,y1), max(y0,y1))
    and the center's x is left of the edge's x at that y, i.e. the center lies in
    [x_cross, ...) of a half-open span, the same tie rule as the kernel.
    """
    pts = np.asarray(pts, np.float64)
    n = len(pts)
    if n < 3:
        return
    h, w = mask.shape
    for i in range(h):
        yc = (i + 0.5) * stride
        for j in range(w):
            xc = (j + 0.5) * stride
            inside = False
            for k in range(n):
                x0, y0 = pts[k]
                x1, y1 = pts[(k + 1) % n]
                if (y0 <= yc < y1) or (y1 <= yc < y0):
                    xcross = x0 + (yc - y0) * (x1 - x0) / (y1 - y0)
                    if xcross <= xc:
                        inside = not inside
            if inside:
                mask[i, j] = value
