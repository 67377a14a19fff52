"""Binary mask -> polygons: the one mask tracer, used by the mask-PNG reader
(:mod:`fastload.formats.masks`) and by COCO RLE segmentations (:mod:`fastload.formats.coco`),
so one mask packs to the same polygons whatever format it came in.

Each 4-connected component of the mask, cropped and zero-padded so every contour closes,
goes to ``skimage.measure.find_contours`` at level 0.5. find_contours works in (row, col)
index space, where pixel (i, j) sits at index (i, j); fastload's continuous coordinates put
that pixel's center at (x, y) = (j + 0.5, i + 0.5), so a contour point (r, c) becomes
(c + 0.5, r + 0.5). The level-0.5 contour between an inside and an outside pixel then lies
on their shared pixel border, and the traced polygon, filled with the pixel-center rule
(:func:`fastload.targets.raster.fill_polygon`), gives the mask back exactly (corners are cut
diagonally but never past a pixel center).

Policies:

- Several connected components become several parts (of one instance, for the caller).
- Vertices in the middle of a straight run are dropped: the region, its box and its
  raster are unchanged, the record is smaller.
- ``tolerance`` > 0 simplifies each outline with ``skimage.measure.approximate_polygon``
  (Douglas-Peucker, lossy; a part it would reduce below 3 vertices keeps its traced
  vertices); 0 keeps the exact outline. The mask reader defaults to 0.5, COCO RLE uses 0.
- Holes (``holes="bridge"``, the default): the record has no hole field, so each hole ring
  is spliced into the part that encloses it through a zero-width cut; the even-odd fill
  rule then leaves the hole empty, and the shoelace area of the part is outer minus hole.
  ``holes="drop"`` drops hole rings (the part then covers its holes).
- Parts whose traced area is under ``min_area`` px^2 are dropped (default 0: keep all).

scikit-image is an optional dependency (the ``masks`` extra); tracing without it raises
:class:`fastload.optional.MissingDependency` naming the extra.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from fastload.optional import require

HOLE_POLICIES = ("bridge", "drop")


def _signed_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _inside(pt: np.ndarray, poly: np.ndarray) -> bool:
    """Even-odd point-in-polygon test (not a hot path: one test per hole)."""
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cross = (y0 <= pt[1]) != (y1 <= pt[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x0 + (pt[1] - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(cross & (xc > pt[0])) % 2)


def _bridge(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Splice ``hole`` into ``outer`` through a zero-width cut between their closest
    vertices: outer[..i], hole[j..], hole[..j], outer[i..]. The cut's two edges coincide,
    so under the even-odd rule they cancel and the result covers outer minus hole."""
    d = ((outer[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    ring = np.concatenate([hole[j:], hole[:j + 1]])
    return np.concatenate([outer[:i + 1], ring, outer[i:]])


def _drop_straight_run_vertices(ring: np.ndarray) -> np.ndarray:
    """Drop vertices lying on the segment between their neighbours (exact: same region).
    Returns the ring unchanged when fewer than 3 vertices would remain."""
    if len(ring) < 4:
        return ring
    d1 = ring - np.roll(ring, 1, 0)
    d2 = np.roll(ring, -1, 0) - ring
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    keep = (cross != 0) | ((d1 * d2).sum(1) <= 0)
    return ring[keep] if keep.sum() >= 3 else ring


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0, min_area: float = 0.0,
                     holes: str = "bridge") -> Tuple[List[np.ndarray], int]:
    """Trace a boolean mask to polygons, one part per 4-connected component.

    Returns ``(parts, n_holes)``: ``parts`` a list of float64 (N, 2) (x, y) polygons in
    continuous pixel coordinates (pixel (i, j) covers [j, j+1) x [i, i+1)), open (the first
    vertex is not repeated); ``n_holes`` the number of hole contours found.
    ``tolerance``, ``min_area``, ``holes``: see the module docstring (the defaults are the
    exact outlines with bridged holes).
    """
    measure = require("skimage.measure", extra="masks", what="tracing masks into polygons")
    if holes not in HOLE_POLICIES:
        raise ValueError(f"mask_to_polygons: holes must be 'bridge' or 'drop', got {holes!r}")
    m = np.asarray(mask).astype(bool, copy=False)
    if m.ndim != 2:
        raise ValueError(f"mask_to_polygons: mask must be 2-D, got shape {m.shape}")
    rows = np.flatnonzero(m.any(1))
    if rows.size == 0:
        return [], 0
    cols = np.flatnonzero(m.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.zeros((r1 - r0 + 2, c1 - c0 + 2), np.float32)
    crop[1:-1, 1:-1] = m[r0:r1, c0:c1]
    contours = measure.find_contours(crop, 0.5, fully_connected="low",
                                     positive_orientation="high")
    # index (r, c) in the padded crop = pixel (r + r0 - 1, c + c0 - 1), center at +0.5
    offset = np.array([c0 - 0.5, r0 - 0.5])
    outers, outer_area, hole_rings = [], [], []
    for c in contours:
        xy = c[:, ::-1]  # (row, col) -> (x, y) index space, closed (first == last)
        area = _signed_area(xy[:-1])
        if tolerance > 0:
            simp = measure.approximate_polygon(xy, tolerance)
            if len(simp) - 1 >= 3:
                xy = simp
        pts = (xy[:-1] if np.array_equal(xy[0], xy[-1]) else xy) + offset
        pts = _drop_straight_run_vertices(pts)
        # with positive_orientation="high", outer boundaries have negative area here
        if area >= 0:
            hole_rings.append(pts)
        elif -area >= min_area:
            outers.append(pts)
            outer_area.append(-area)
    if holes == "bridge":
        for h in hole_rings:
            best = None
            for k, o in enumerate(outers):
                if (best is None or outer_area[k] < outer_area[best]) and _inside(h[0], o):
                    best = k
            if best is not None:
                outers[best] = _bridge(outers[best], h)
    return outers, len(hole_rings)
