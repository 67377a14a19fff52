"""Clip a polygon to the output frame [0, W] x [0, H]: the visible pieces, nothing else.

Coordinates are continuous pixel coordinates (DESIGN.md); the frame's border lines are
x = 0, x = W, y = 0 and y = H. Two steps:

1. **Sutherland-Hodgman** against x >= 0, x <= W, y >= 0, y <= H (that order): one ring,
   intersection points get exactly the bound. For a concave part that leaves the frame and
   comes back, that ring joins the visible pieces by zero-width *bridges* along the border,
   and a stretch that runs around a corner outside the frame leaves a zero-width *spike* to
   that corner (a C-shape whose visible arm is [150, 60]-[200, 80] in a 200 x 200 frame comes
   out as that arm plus a spike down the right border to (200, 200)). They cover no area and
   no pixel center (pixel centers are never on the border), so masks do not see them, but
   their vertices are not on the visible region: a box or a box center taken from them is
   too big.
2. **Cancelling the zero-width border edges.** On a border line, two edges of the ring that
   overlap in opposite directions bound nothing (the even-odd parity across the line does
   not change). The border edges are split at every border vertex of their line, so that
   overlaps become whole edges; each pair of exactly opposite border edges is removed and
   the ring re-linked around it (the two edges' successors are swapped), which splits it
   into the visible pieces. Then repeated points and vertices in the middle of a straight
   border run (left by the splitting) are dropped, and pieces with < 3 vertices or zero
   area are dropped.

Step 2 runs only when some border edges do overlap in opposite directions; any other ring
(a convex polygon, a concave one the border cuts once) is returned exactly as
Sutherland-Hodgman made it. The pieces of a valid (simple) polygon have disjoint interiors,
so a pixel center is inside the pieces exactly when it was inside the ring.

:func:`clip_polygon` (Numba) and :func:`clip_polygon_reference` (plain Python, the same
rules written out with lists) return the pieces as a list of float64 (k, 2) arrays; the
kernel of :mod:`fastload.augment.geometry` uses :func:`clip_rect` and :func:`clean_ring`.

Compile time (these kernels are compiled on a fresh install before the first batch, see
docs/cpu_backend.md): arrays are copied with loops, not slice assignment (Numba compiles a
formatted shape-mismatch error for every ``a[i:j] = b``, seconds of compilation), sorted with
``fastload.targets.raster.sort_inplace`` (not Numba's quicksort), and every helper is called
with the same argument types everywhere (a constant argument compiles it once more).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from fastload.targets.raster import sort_inplace

__all__ = ["clip_polygon", "clip_polygon_reference", "clip_rect", "clean_ring",
           "ring_area", "has_zero_width_border"]


# ----------------------------------------------------------------------------- kernels
@njit(nogil=True, cache=True)
def ring_area(a, m):
    """|shoelace area| of ring ``a[:m]``."""
    s = 0.0
    for i in range(m):
        j = i + 1 if i + 1 < m else 0
        s += a[i, 0] * a[j, 1] - a[j, 0] * a[i, 1]
    return abs(s) * 0.5


@njit(nogil=True, cache=True)
def clip_rect(poly, w, h):
    """Sutherland-Hodgman: float64 (m, 2) ``poly`` clipped to [0, w] x [0, h] as one ring
    (zero-width bridges and spikes included); returns (array, count)."""
    m = poly.shape[0]
    src = np.empty((2 * m + 2, 2), np.float64)
    for i in range(m):
        src[i, 0] = poly[i, 0]
        src[i, 1] = poly[i, 1]
    for stage in range(4):  # keep x >= 0, x <= w, y >= 0, y <= h
        axis = stage // 2
        keep_ge = stage % 2 == 0
        bound = 0.0 if keep_ge else (w if axis == 0 else h)
        dst = np.empty((2 * m + 2, 2), np.float64)  # a stage at most doubles the count
        k = 0
        if m > 0:
            px = src[m - 1, 0]
            py = src[m - 1, 1]
            pv = px if axis == 0 else py
            pin = pv >= bound if keep_ge else pv <= bound
            for i in range(m):
                cx = src[i, 0]
                cy = src[i, 1]
                cv = cx if axis == 0 else cy
                cin = cv >= bound if keep_ge else cv <= bound
                if cin != pin:  # intersection points get exactly the bound
                    t = (bound - pv) / (cv - pv)
                    if axis == 0:
                        dst[k, 0] = bound
                        dst[k, 1] = py + t * (cy - py)
                    else:
                        dst[k, 0] = px + t * (cx - px)
                        dst[k, 1] = bound
                    k += 1
                if cin:
                    dst[k, 0] = cx
                    dst[k, 1] = cy
                    k += 1
                px = cx
                py = cy
                pv = cv
                pin = cin
        src = dst
        m = k
    return src, m


@njit(nogil=True, cache=True)
def _border_line(ax, ay, bx, by, w, h):
    """The border line edge a -> b lies on: 1 (x = 0), 2 (x = w), 3 (y = 0), 4 (y = h), or 0
    (none, or a zero-length edge)."""
    if ax == bx and ay == by:
        return 0
    if ax == bx:
        if ax == 0.0:
            return 1
        if ax == w:
            return 2
    if ay == by:
        if ay == 0.0:
            return 3
        if ay == h:
            return 4
    return 0


@njit(nogil=True, cache=True)
def _on_line(x, y, line, w, h):
    if line == 1:
        return x == 0.0
    if line == 2:
        return x == w
    if line == 3:
        return y == 0.0
    return y == h


@njit(nogil=True, cache=True)
def has_zero_width_border(c, m, w, h):
    """True when two border edges of ring ``c[:m]`` on the same line overlap (over a positive
    length) in opposite directions: the ring has bridges or spikes to cancel."""
    lines = np.empty(m, np.int64)
    nb = 0
    for i in range(m):
        j = i + 1 if i + 1 < m else 0
        lines[i] = _border_line(c[i, 0], c[i, 1], c[j, 0], c[j, 1], w, h)
        if lines[i] != 0:
            nb += 1
    if nb < 2:
        return False
    for i in range(m):
        if lines[i] == 0:
            continue
        i1 = i + 1 if i + 1 < m else 0
        t = 1 if lines[i] <= 2 else 0  # the coordinate that varies along the line
        a0 = c[i, t]
        a1 = c[i1, t]
        for k in range(i + 1, m):
            if lines[k] != lines[i]:
                continue
            k1 = k + 1 if k + 1 < m else 0
            b0 = c[k, t]
            b1 = c[k1, t]
            if (a1 - a0) * (b1 - b0) >= 0.0:
                continue
            lo = max(min(a0, a1), min(b0, b1))
            hi = min(max(a0, a1), max(b0, b1))
            if lo < hi:
                return True
    return False


@njit(nogil=True, cache=True)
def _drop_repeats(buf, n):
    """Remove consecutive repeated points of ring ``buf[:n]`` in place (the closing pair
    too); returns the new count."""
    k = 0
    for i in range(n):
        if k > 0 and buf[i, 0] == buf[k - 1, 0] and buf[i, 1] == buf[k - 1, 1]:
            continue
        buf[k, 0] = buf[i, 0]
        buf[k, 1] = buf[i, 1]
        k += 1
    while k > 1 and buf[k - 1, 0] == buf[0, 0] and buf[k - 1, 1] == buf[0, 1]:
        k -= 1
    return k


@njit(nogil=True, cache=True)
def _drop_straight_border_vertices(buf, n, w, h):
    """Remove, in place, vertices in the middle of a straight border run (both edges on
    the same border line, going on in the same direction); returns the new count."""
    changed = True
    while changed and n >= 3:
        changed = False
        for i in range(n):
            p = i - 1 if i > 0 else n - 1
            q = i + 1 if i + 1 < n else 0
            la = _border_line(buf[p, 0], buf[p, 1], buf[i, 0], buf[i, 1], w, h)
            if la == 0 or la != _border_line(buf[i, 0], buf[i, 1], buf[q, 0], buf[q, 1], w, h):
                continue
            t = 1 if la <= 2 else 0
            if (buf[i, t] - buf[p, t]) * (buf[q, t] - buf[i, t]) <= 0.0:
                continue
            for k in range(i, n - 1):
                buf[k, 0] = buf[k + 1, 0]
                buf[k, 1] = buf[k + 1, 1]
            n -= 1
            changed = True
            break
    return n


@njit(nogil=True, cache=True)
def clean_ring(c, m, w, h):
    """Cancel the zero-width border edges of Sutherland-Hodgman ring ``c[:m]`` (step 2 of the
    module docstring) -> (points float64 (K, 2), offsets int64 (pieces + 1,)): the visible
    pieces, each with >= 3 vertices and a positive area, in the order of their first vertex
    in the ring."""
    d = np.empty((m, 2), np.float64)
    for i in range(m):
        d[i, 0] = c[i, 0]
        d[i, 1] = c[i, 1]
    n = _drop_repeats(d, m)
    # 1. split every border edge at the border vertices of its line strictly inside it
    lines = np.empty(n, np.int64)
    total = 0
    for i in range(n):
        j = i + 1 if i + 1 < n else 0
        lines[i] = _border_line(d[i, 0], d[i, 1], d[j, 0], d[j, 1], w, h)
        total += 1
        if lines[i] != 0:
            total += n
    pts = np.empty((total, 2), np.float64)
    line_of = np.empty(total, np.int64)  # border line of the edge leaving each vertex
    ts = np.empty(n, np.float64)
    q = 0
    for i in range(n):
        j = i + 1 if i + 1 < n else 0
        pts[q, 0] = d[i, 0]
        pts[q, 1] = d[i, 1]
        line_of[q] = lines[i]
        q += 1
        if lines[i] == 0:
            continue
        t = 1 if lines[i] <= 2 else 0
        a0 = d[i, t]
        a1 = d[j, t]
        lo = min(a0, a1)
        hi = max(a0, a1)
        nt = 0
        for k in range(n):
            if _on_line(d[k, 0], d[k, 1], lines[i], w, h) and lo < d[k, t] < hi:
                ts[nt] = d[k, t]
                nt += 1
        if nt == 0:
            continue
        sort_inplace(ts[:nt])
        for r in range(nt):
            v = ts[r] if a1 > a0 else ts[nt - 1 - r]
            if r > 0 and v == pts[q - 1, t]:
                continue  # a border vertex visited twice
            pts[q, 0] = d[i, 0]
            pts[q, 1] = d[i, 1]
            pts[q, t] = v
            line_of[q] = lines[i]
            q += 1
    # 2. remove each pair of exactly opposite border edges, re-linking the ring around it
    nxt = np.empty(q, np.int64)
    for i in range(q):
        nxt[i] = i + 1 if i + 1 < q else 0
    gone = np.empty(q, np.bool_)
    seen = np.empty(q, np.bool_)
    for i in range(q):
        gone[i] = False
        seen[i] = False
    for i in range(q):
        if line_of[i] == 0 or gone[i]:
            continue
        i1 = i + 1 if i + 1 < q else 0
        for j in range(i + 1, q):
            if gone[j] or line_of[j] != line_of[i]:
                continue
            j1 = j + 1 if j + 1 < q else 0
            if (pts[j, 0] == pts[i1, 0] and pts[j, 1] == pts[i1, 1]
                    and pts[j1, 0] == pts[i, 0] and pts[j1, 1] == pts[i, 1]):
                gone[i] = True
                gone[j] = True
                tmp = nxt[i]
                nxt[i] = nxt[j]
                nxt[j] = tmp
                break
    # 3. the pieces: the cycles of nxt, tidied, kept when they have an area
    out = np.empty((q, 2), np.float64)
    offs = np.empty(q + 1, np.int64)
    offs[0] = 0
    npieces = 0
    k_out = 0
    buf = np.empty((q, 2), np.float64)
    for s0 in range(q):
        if seen[s0]:
            continue
        nb = 0
        v = s0
        while not seen[v]:
            seen[v] = True
            buf[nb, 0] = pts[v, 0]
            buf[nb, 1] = pts[v, 1]
            nb += 1
            v = nxt[v]
        nb = _drop_repeats(buf, nb)
        nb = _drop_straight_border_vertices(buf, nb, w, h)
        if nb < 3 or ring_area(buf, nb) <= 0.0:
            continue
        for i in range(nb):
            out[k_out + i, 0] = buf[i, 0]
            out[k_out + i, 1] = buf[i, 1]
        k_out += nb
        npieces += 1
        offs[npieces] = k_out
    return out[:k_out].copy(), offs[:npieces + 1].copy()


@njit(nogil=True, cache=True)
def _clip_pieces(poly, w, h):
    c, m = clip_rect(poly, w, h)
    if m >= 3 and has_zero_width_border(c, m, w, h):
        return clean_ring(c, m, w, h)
    offs = np.zeros(2, np.int64)
    offs[1] = m
    if m < 3 or ring_area(c, m) <= 0.0:
        offs[1] = 0
        return c[:0].copy(), offs[:1].copy()
    return c[:m].copy(), offs


def clip_polygon(poly, w, h):
    """The visible pieces of float (m, 2) ``poly`` in the frame [0, w] x [0, h] (see the
    module docstring): a list of float64 (k, 2) arrays, each with >= 3 vertices and a
    positive area (empty when nothing is visible)."""
    pts, offs = _clip_pieces(np.ascontiguousarray(poly, np.float64).reshape(-1, 2),
                             np.float64(w), np.float64(h))
    return [pts[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]


# --------------------------------------------------------------------------- reference
def _sutherland_hodgman_reference(pts, w, h):
    for axis, bound, keep_ge in ((0, 0.0, True), (0, float(w), False), (1, 0.0, True),
                                 (1, float(h), False)):
        if not pts:
            break

        def inside(p):
            return p[axis] >= bound if keep_ge else p[axis] <= bound

        out = []
        prev = pts[-1]
        for cur in pts:
            if inside(cur) != inside(prev):
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                ix = prev[0] + t * (cur[0] - prev[0])
                iy = prev[1] + t * (cur[1] - prev[1])
                out.append((bound, iy) if axis == 0 else (ix, bound))
            if inside(cur):
                out.append(cur)
            prev = cur
        pts = out
    return pts


def _line_reference(a, b, w, h):
    if a == b:
        return 0
    if a[0] == b[0] and a[0] in (0.0, w):
        return 1 if a[0] == 0.0 else 2
    if a[1] == b[1] and a[1] in (0.0, h):
        return 3 if a[1] == 0.0 else 4
    return 0


def _edges_reference(ring, w, h):
    """[(start, end, border line)] of a ring given as a list of points."""
    nxt = ring[1:] + ring[:1]
    return [(a, b, _line_reference(a, b, w, h)) for a, b in zip(ring, nxt)]


def _without_repeats(ring):
    out = []
    for p in ring:
        if not out or p != out[-1]:
            out.append(p)
    while len(out) > 1 and out[-1] == out[0]:
        out.pop()
    return out


def _area_reference(ring):
    s = 0.0
    for i in range(len(ring)):
        (x0, y0), (x1, y1) = ring[i], ring[(i + 1) % len(ring)]
        s += x0 * y1 - x1 * y0
    return abs(s) * 0.5


def _has_zero_width_border_reference(ring, w, h):
    edges = [(a, b, ln) for a, b, ln in _edges_reference(ring, w, h) if ln]
    for i, (a, b, ln) in enumerate(edges):
        t = 1 if ln <= 2 else 0
        for c, d, ln2 in edges[i + 1:]:
            if ln2 == ln and (b[t] - a[t]) * (d[t] - c[t]) < 0 and \
                    max(min(a[t], b[t]), min(c[t], d[t])) < min(max(a[t], b[t]), max(c[t], d[t])):
                return True
    return False


def _clean_ring_reference(ring, w, h):
    ring = _without_repeats(ring)
    on = {1: lambda p: p[0] == 0.0, 2: lambda p: p[0] == w, 3: lambda p: p[1] == 0.0,
          4: lambda p: p[1] == h}
    # 1. split border edges at the border vertices of their line inside them
    pts, lines = [], []
    for a, b, ln in _edges_reference(ring, w, h):
        pts.append(a)
        lines.append(ln)
        if not ln:
            continue
        t = 1 if ln <= 2 else 0
        lo, hi = min(a[t], b[t]), max(a[t], b[t])
        inner = sorted({p[t] for p in ring if on[ln](p) and lo < p[t] < hi}, reverse=b[t] < a[t])
        for v in inner:
            p = list(a)
            p[t] = v
            pts.append(tuple(p))
            lines.append(ln)
    # 2. cancel exactly opposite border edges: swap their successors
    n = len(pts)
    nxt = [(i + 1) % n for i in range(n)]
    gone = [False] * n
    for i in range(n):
        if not lines[i] or gone[i]:
            continue
        for j in range(i + 1, n):
            if not gone[j] and lines[j] == lines[i] and pts[j] == pts[(i + 1) % n] \
                    and pts[(j + 1) % n] == pts[i]:
                gone[i] = gone[j] = True
                nxt[i], nxt[j] = nxt[j], nxt[i]
                break
    # 3. the cycles, tidied
    pieces, seen = [], [False] * n
    for s in range(n):
        cyc = []
        v = s
        while not seen[v]:
            seen[v] = True
            cyc.append(pts[v])
            v = nxt[v]
        cyc = _without_repeats(cyc)
        changed = True
        while changed and len(cyc) >= 3:
            changed = False
            for i in range(len(cyc)):
                p, c, q = cyc[i - 1], cyc[i], cyc[(i + 1) % len(cyc)]
                ln = _line_reference(p, c, w, h)
                t = 1 if ln <= 2 else 0
                if ln and ln == _line_reference(c, q, w, h) and (c[t] - p[t]) * (q[t] - c[t]) > 0:
                    del cyc[i]
                    changed = True
                    break
        if len(cyc) >= 3 and _area_reference(cyc) > 0:
            pieces.append(cyc)
    return pieces


def clip_polygon_reference(poly, w, h):
    """Plain-Python :func:`clip_polygon`: Sutherland-Hodgman against x >= 0, x <= w, y >= 0,
    y <= h (that order), then the zero-width border edges cancelled (module docstring)."""
    w, h = float(w), float(h)
    ring = _sutherland_hodgman_reference([(float(x), float(y)) for x, y in
                                          np.asarray(poly, np.float64).reshape(-1, 2)], w, h)
    if len(ring) >= 3 and _has_zero_width_border_reference(ring, w, h):
        pieces = _clean_ring_reference(ring, w, h)
    else:
        pieces = [ring] if len(ring) >= 3 and _area_reference(ring) > 0 else []
    return [np.array(p, np.float64).reshape(-1, 2) for p in pieces]
