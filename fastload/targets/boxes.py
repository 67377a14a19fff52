"""Boxes and centers of polygon instances (flat layout of fastload.record).

``points`` float (P, 2) x, y; part ``p`` is ``points[part_offsets[p]:part_offsets[p+1]]``;
instance ``k`` owns parts ``inst_parts[k]:inst_parts[k+1]``. Coordinates are whatever
the points are in (the loader passes continuous output pixels, DESIGN.md); nothing
here depends on the pixel convention.

The box of a transformed instance is the tight box of its transformed *vertices*,
not the transformed corners of the old box (after a rotation they differ).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._common import check_polygons

CENTER_MODES = ("box", "centroid")


@njit(nogil=True, cache=True)
def vertex_box(points, v0, v1):
    """Tight (x1, y1, x2, y2) of vertices ``points[v0:v1]`` (v1 > v0): the one polygon-box
    helper (Numba, inlinable into other kernels)."""
    x1 = points[v0, 0]
    y1 = points[v0, 1]
    x2 = x1
    y2 = y1
    for v in range(v0 + 1, v1):
        x = points[v, 0]
        y = points[v, 1]
        if x < x1:
            x1 = x
        if x > x2:
            x2 = x
        if y < y1:
            y1 = y
        if y > y2:
            y2 = y
    return x1, y1, x2, y2


@njit(nogil=True, cache=True)
def fill_instance_boxes(points, part_offsets, inst_parts, out):
    """Write the tight box of each instance's vertices into ``out`` (n, 4); (0, 0, 0, 0) for
    an instance without vertices. No checks: for callers whose arrays are valid by
    construction (``fastload pack``); :func:`boxes_from_polygons` checks, then calls this."""
    n = inst_parts.shape[0] - 1
    for k in range(n):
        v0 = part_offsets[inst_parts[k]]
        v1 = part_offsets[inst_parts[k + 1]]
        if v1 <= v0:
            out[k, 0] = 0.0
            out[k, 1] = 0.0
            out[k, 2] = 0.0
            out[k, 3] = 0.0
            continue
        x1, y1, x2, y2 = vertex_box(points, v0, v1)
        out[k, 0] = x1
        out[k, 1] = y1
        out[k, 2] = x2
        out[k, 3] = y2


@njit(nogil=True, cache=True)
def _centers_kernel(points, part_offsets, inst_parts, centroid, out):
    n = inst_parts.shape[0] - 1
    for k in range(n):
        v0 = part_offsets[inst_parts[k]]
        v1 = part_offsets[inst_parts[k + 1]]
        if v1 <= v0:
            out[k, 0] = 0.0
            out[k, 1] = 0.0
            continue
        x1, y1, x2, y2 = vertex_box(points, v0, v1)
        # box center, float32 like the boxes
        bx = np.float32((np.float64(x1) + np.float64(x2)) * 0.5)
        by = np.float32((np.float64(y1) + np.float64(y2)) * 0.5)
        if not centroid:
            out[k, 0] = bx
            out[k, 1] = by
            continue
        scale = max(np.float64(x2) - np.float64(x1), np.float64(y2) - np.float64(y1), 1e-30)
        tiny = 1e-7 * scale * scale  # |2 * area| below this: degenerate part
        asum = 0.0
        sx = 0.0
        sy = 0.0
        for p in range(inst_parts[k], inst_parts[k + 1]):
            a = part_offsets[p]
            m = part_offsets[p + 1] - a
            if m < 3:
                continue
            # shoelace relative to the part's first vertex (better conditioned)
            ox = np.float64(points[a, 0])
            oy = np.float64(points[a, 1])
            area2 = 0.0
            cx = 0.0
            cy = 0.0
            for i in range(m):
                j = i + 1 if i + 1 < m else 0
                xi = points[a + i, 0] - ox
                yi = points[a + i, 1] - oy
                xj = points[a + j, 0] - ox
                yj = points[a + j, 1] - oy
                cr = xi * yj - xj * yi
                area2 += cr
                cx += (xi + xj) * cr
                cy += (yi + yj) * cr
            if abs(area2) <= tiny:
                continue
            w = abs(area2)
            asum += w
            sx += w * (cx / (3.0 * area2) + ox)
            sy += w * (cy / (3.0 * area2) + oy)
        if asum <= 0.0:
            out[k, 0] = bx
            out[k, 1] = by
        else:
            out[k, 0] = sx / asum
            out[k, 1] = sy / asum


def boxes_from_polygons(points, part_offsets, inst_parts, out=None) -> np.ndarray:
    """Tight (n, 4) float32 x1, y1, x2, y2 of all parts of each instance.

    An instance without vertices gets (0, 0, 0, 0). ``out``: optional preallocated
    float32 (n, 4) to fill (no allocation).
    """
    pts, po, ip = check_polygons(points, part_offsets, inst_parts)
    n = ip.shape[0] - 1
    if out is None:
        out = np.empty((n, 4), np.float32)
    elif out.shape != (n, 4) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 ({n}, 4), got {out.dtype} {out.shape}")
    fill_instance_boxes(pts, po, ip, out)
    return out


def instance_centers(points, part_offsets, inst_parts, mode: str = "box", out=None) -> np.ndarray:
    """(n, 2) float32 center (x, y) of each instance.

    ``mode="box"``: center of the tight box. ``mode="centroid"``: area centroid of the
    parts (shoelace formula per part, parts weighted by their absolute area, so a
    part's orientation does not matter; overlapping parts count twice and holes are
    not subtracted: each part is a separate filled region; a self-intersecting part
    uses its signed shoelace area, e.g. a bow tie's lobes cancel). Parts with < 3
    vertices or ``|2 area| <= 1e-7 * s^2`` (s: the instance box's longer side) are skipped; when the total area is (numerically) zero the box center is
    used. An instance without vertices gets (0, 0).
    """
    if mode not in CENTER_MODES:
        raise ValueError(f"mode must be one of {CENTER_MODES}, got {mode!r}")
    pts, po, ip = check_polygons(points, part_offsets, inst_parts)
    n = ip.shape[0] - 1
    if out is None:
        out = np.empty((n, 2), np.float32)
    elif out.shape != (n, 2) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 ({n}, 2), got {out.dtype} {out.shape}")
    _centers_kernel(pts, po, ip, mode == "centroid", out)
    return out
