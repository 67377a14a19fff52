"""CenterNet ("Objects as Points", Zhou et al. 2019) detection targets, as a Numba kernel.

Reproduces ``xingyizhou/CenterNet`` ``src/lib/datasets/sample/ctdet.py`` together with
``gaussian_radius`` / ``gaussian2D`` / ``draw_umich_gaussian`` from
``src/lib/utils/image.py``, per object ``k < max_objs``:

1. clip the box to the map (see *Coordinates* below), ``h = y2 - y1``, ``w = x2 - x1``
   (float32); skip the object when ``h <= 0`` or ``w <= 0`` (its slot ``k`` stays zero);
2. ``radius = max(0, int(gaussian_radius((ceil(h), ceil(w)), 0.7)))``;
3. ``ct = ((x1 + x2) / 2, (y1 + y2) / 2)`` float32, ``ct_int = int(ct)``;
4. draw a ``(2r+1)^2`` gaussian with ``sigma = (2r+1) / 6`` centred on ``ct_int`` into
   ``hm[label]``, clipped at the map borders, merged with ``maximum``; values below
   ``eps(float64)`` are 0 (as ``gaussian2D`` does);
5. ``wh[k] = (w, h)``, ``ind[k] = ct_int_y * W + ct_int_x``, ``reg[k] = ct - ct_int``,
   ``reg_mask[k] = 1``.

Object slot ``k`` is the object's index in the input (skipped objects leave holes,
exactly like ctdet.py); objects with index ``>= max_objs`` are ignored entirely.

Radius formula (``radius=``):

- ``"centernet"``: the formula in the original CenterNet code (inherited from an early
  CornerNet), each root divided by 2 instead of ``2a``: ``r = min((b1 + sq1)/2,
  (b2 + sq2)/2, (b3 + sq3)/2)``. In practice only ``r3`` matters. ``(10, 10) -> 2``,
  ``(32, 32) -> 8``. This is what CenterNet's published models were trained with
  (discussed in the CenterNet repository's issue 273; its fix, PR 171, is unmerged).
  Later commits of that repository show the corrected formula; the released code (e.g.
  its commit a5a0483) has the quirk.
- ``"corrected"``: the algebraically correct roots used by mmdetection
  (``mmdet/models/utils/gaussian_target.py``) and fixed CornerNet: ``r1 = (b1 - sq1)/2``,
  ``r2 = (b2 - sq2)/8``, ``r3 = (b3 + sq3)/(2 a3)``. ``(10, 10) -> 0``, ``(32, 32) -> 2``.

Coordinates (``coords=``):

- ``"continuous"`` (default, what ``fastload.DataLoader`` passes): boxes are in
  continuous output-map coordinates (DESIGN.md: cell ``(i, j)`` covers
  ``[j, j+1) x [i, i+1)``); boxes are clipped to ``[0, W] x [0, H]``, the map's extent.
  ``ct_int = floor(ct)`` is then the cell that *contains* the center, ``reg`` in
  ``[0, 1)`` is the position inside that cell, and ``(ind_x + reg_x, ind_y + reg_y)``
  recovers the continuous center; ``wh`` is the true continuous extent. (A box whose
  center rounds onto the right/bottom edge in float32 is assigned the last cell,
  giving ``reg = 1``.)
- ``"centernet"``: boxes in the original integer-pixel-center convention (OpenCV style,
  pixel ``j`` is centred on ``x = j``), clipped to ``[0, W-1] x [0, H-1]`` exactly as
  ctdet.py does. Use this to compare with the original code bit for bit.

The two differ only by the clipping bound; to go from continuous to integer-center
coordinates subtract 0.5 from every coordinate (a box covering cells 2..5 is
``[2, 6)`` continuous, ``[1.5, 5.5]`` integer-centered; ctdet.py, which keeps COCO
``x + w`` as the right edge, effectively mixes both).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._common import boxes_array, check_size, scratch

_EPS64 = float(np.finfo(np.float64).eps)

RADIUS_MODES = ("centernet", "corrected")
COORD_MODES = ("continuous", "centernet")


@njit(nogil=True, cache=True)
def _radius_nb(height, width, min_overlap, corrected):
    """gaussian_radius of image.py, same operation order (float64)."""
    a1 = 1.0
    b1 = height + width
    c1 = width * height * (1.0 - min_overlap) / (1.0 + min_overlap)
    sq1 = math.sqrt(b1 ** 2 - 4.0 * a1 * c1)
    a2 = 4.0
    b2 = 2.0 * (height + width)
    c2 = (1.0 - min_overlap) * width * height
    sq2 = math.sqrt(b2 ** 2 - 4.0 * a2 * c2)
    a3 = 4.0 * min_overlap
    b3 = -2.0 * min_overlap * (height + width)
    c3 = (min_overlap - 1.0) * width * height
    sq3 = math.sqrt(b3 ** 2 - 4.0 * a3 * c3)
    if corrected:
        r1 = (b1 - sq1) / (2.0 * a1)
        r2 = (b2 - sq2) / (2.0 * a2)
        r3 = (b3 + sq3) / (2.0 * a3)
    else:
        r1 = (b1 + sq1) / 2.0
        r2 = (b2 + sq2) / 2.0
        r3 = (b3 + sq3) / 2.0
    return min(r1, r2, r3)


def gaussian_radius(h, w, min_overlap: float = 0.7, mode: str = "centernet") -> float:
    """Gaussian radius (float, not yet truncated) for a box of height ``h``, width ``w``.

    ``mode="centernet"`` is the original CenterNet formula with its quirk,
    ``mode="corrected"`` the mmdetection one (see the module docstring). CenterNet
    calls it with ``(ceil(h), ceil(w))`` and uses ``max(0, int(r))``.
    """
    if mode not in RADIUS_MODES:
        raise ValueError(f"radius mode must be one of {RADIUS_MODES}, got {mode!r}")
    h = float(h)
    w = float(w)
    if not (math.isfinite(h) and math.isfinite(w)) or h < 0 or w < 0:
        raise ValueError(f"gaussian_radius needs finite non-negative sizes, got h={h}, w={w}")
    return float(_radius_nb(h, w, float(min_overlap), mode == "corrected"))


@njit(nogil=True, cache=True)
def draw_gaussian(hm2d, cx, cy, radius, gbuf):
    """``draw_umich_gaussian``: max-merge a (2r+1)^2 gaussian (sigma=(2r+1)/6) at integer (cx, cy).

    ``gbuf``: float64 scratch of at least ``hm2d.shape[0] + hm2d.shape[1]`` elements.
    Only the part of the window inside the map is computed (separably: one exp per
    row and per column).
    """
    height, width = hm2d.shape
    diameter = 2 * radius + 1
    sigma = diameter / 6.0
    two_ss = 2.0 * sigma * sigma
    left = min(cx, radius)
    right = min(width - cx, radius + 1)
    top = min(cy, radius)
    bottom = min(height - cy, radius + 1)
    nx = left + right
    ny = top + bottom
    if nx <= 0 or ny <= 0:
        return
    for i in range(nx):
        d = float(i - left)
        gbuf[i] = math.exp(-(d * d) / two_ss)
    for i in range(ny):
        d = float(i - top)
        gbuf[nx + i] = math.exp(-(d * d) / two_ss)
    x0 = cx - left
    y0 = cy - top
    for i in range(ny):
        gy = gbuf[nx + i]
        row = hm2d[y0 + i]
        for j in range(nx):
            g = gy * gbuf[j]
            if g < 2.220446049250313e-16:
                g = 0.0
            gf = np.float32(g)
            if gf > row[x0 + j]:
                row[x0 + j] = gf


@njit(nogil=True, cache=True)
def box_center_radius(boxes, k, xmax, ymax, corrected):
    """Box ``k`` clipped to [0, xmax] x [0, ymax] -> (w, h, center x, center y, radius).

    float32 arithmetic as the original CenterNet code; radius = int(gaussian_radius of the
    ceil'd height and width, min_overlap 0.7), or -1 when the clipped box has no area.
    Shared by the CenterNet and keypoint kernels.
    """
    zero = np.float32(0.0)
    x1 = min(max(boxes[k, 0], zero), xmax)
    y1 = min(max(boxes[k, 1], zero), ymax)
    x2 = min(max(boxes[k, 2], zero), xmax)
    y2 = min(max(boxes[k, 3], zero), ymax)
    h = np.float32(np.float64(y2) - np.float64(y1))
    w = np.float32(np.float64(x2) - np.float64(x1))
    if not (h > 0 and w > 0):
        return w, h, zero, zero, -1
    radius = max(0, int(_radius_nb(math.ceil(h), math.ceil(w), 0.7, corrected)))
    ctx = np.float32((np.float64(x1) + np.float64(x2)) * 0.5)
    cty = np.float32((np.float64(y1) + np.float64(y2)) * 0.5)
    return w, h, ctx, cty, radius


@njit(nogil=True, cache=True)
def _centernet_one(hm, wh, reg, ind, reg_mask, boxes, labels, k0, k1,
                   corrected, continuous, gbuf):
    """One image: hm (C,H,W), wh/reg (M,2), ind (M,), reg_mask (M,); objects k0..k1-1."""
    C, H, W = hm.shape
    M = wh.shape[0]
    hm[:] = 0.0
    wh[:] = 0.0
    reg[:] = 0.0
    ind[:] = 0
    reg_mask[:] = 0
    if continuous:
        xmax = np.float32(W)
        ymax = np.float32(H)
    else:
        xmax = np.float32(W - 1)
        ymax = np.float32(H - 1)
    n = min(k1 - k0, M)
    for k in range(n):
        w, h, ctx, cty, radius = box_center_radius(boxes, k0 + k, xmax, ymax, corrected)
        if radius < 0:
            continue
        ix = int(ctx)
        iy = int(cty)
        if ix > W - 1:
            ix = W - 1
        if iy > H - 1:
            iy = H - 1
        draw_gaussian(hm[labels[k0 + k]], ix, iy, radius, gbuf)
        wh[k, 0] = w
        wh[k, 1] = h
        ind[k] = iy * W + ix
        reg[k, 0] = ctx - np.float32(ix)
        reg[k, 1] = cty - np.float32(iy)
        reg_mask[k] = 1


@njit(nogil=True, cache=True)
def _validate_nb(boxes, labels, num_classes):
    """(code, k): 0 ok, 1 non-finite box k, 2 inverted box k, 3 label k out of range."""
    for k in range(boxes.shape[0]):
        for c in range(4):
            if not np.isfinite(boxes[k, c]):
                return 1, k
        if boxes[k, 2] < boxes[k, 0] or boxes[k, 3] < boxes[k, 1]:
            return 2, k
        if labels[k] < 0 or labels[k] >= num_classes:
            return 3, k
    return 0, -1


@njit(nogil=True, cache=True)
def _centernet_into_nb(hm, wh, reg, ind, reg_mask, b, boxes, labels, corrected, continuous, gbuf):
    """Validate, then fill sample b: one dispatch for the whole call."""
    code, k = _validate_nb(boxes, labels, hm.shape[1])
    if code != 0:
        return code, k
    _centernet_one(hm[b], wh[b], reg[b], ind[b], reg_mask[b], boxes, labels, 0, boxes.shape[0],
                   corrected, continuous, gbuf)
    return 0, -1


def _raise_invalid(code, k, boxes, labels, num_classes):
    if code == 1:
        raise ValueError(f"boxes[{k}] = {boxes[k].tolist()} contains NaN or inf")
    if code == 2:
        raise ValueError(f"boxes[{k}] = {boxes[k].tolist()} has negative width or height "
                         "(expected x1 <= x2, y1 <= y2)")
    raise ValueError(f"labels[{k}] = {int(labels[k])} out of range [0, {num_classes})")


def _fast_boxes(boxes):
    """Shape/dtype check only (values are checked inside the kernel)."""
    if type(boxes) is np.ndarray and boxes.dtype == np.float32 and boxes.ndim == 2 \
            and boxes.shape[1] == 4 and boxes.flags.c_contiguous:
        return boxes
    return boxes_array(boxes)


def _fast_labels(labels, n):
    if type(labels) is np.ndarray and labels.dtype == np.int64 and labels.shape == (n,) \
            and labels.flags.c_contiguous:
        return labels
    lab = np.asarray(labels)
    if lab.size == 0 and n == 0:
        return np.zeros(0, np.int64)
    if lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class ids, got dtype {lab.dtype}")
    if lab.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the boxes, got {lab.shape}")
    return np.ascontiguousarray(lab, np.int64)


def _modes(radius, coords):
    if radius == "centernet" and coords == "continuous":
        return False, True
    if radius not in RADIUS_MODES:
        raise ValueError(f"radius must be one of {RADIUS_MODES}, got {radius!r}")
    if coords not in COORD_MODES:
        raise ValueError(f"coords must be one of {COORD_MODES}, got {coords!r}")
    return radius == "corrected", coords == "continuous"


def alloc_centernet(batch: int, num_classes: int, out_h: int, out_w: int, max_objs: int = 128) -> dict:
    """Preallocated (B, ...) output arrays for :func:`centernet_into`."""
    return {
        "hm": np.zeros((batch, num_classes, out_h, out_w), np.float32),
        "wh": np.zeros((batch, max_objs, 2), np.float32),
        "reg": np.zeros((batch, max_objs, 2), np.float32),
        "ind": np.zeros((batch, max_objs), np.int64),
        "reg_mask": np.zeros((batch, max_objs), np.uint8),
    }


def _check_out(out):
    try:
        hm, wh, reg, ind, rm = out["hm"], out["wh"], out["reg"], out["ind"], out["reg_mask"]
    except (KeyError, TypeError):
        raise ValueError("out must be a dict with hm, wh, reg, ind, reg_mask (see alloc_centernet)") from None
    if hm.ndim != 4 or wh.ndim != 3:
        raise ValueError("out arrays have wrong shapes: expected hm (B,C,H,W), wh (B,M,2)")
    B = hm.shape[0]
    M = wh.shape[1]
    ok = (hm.flags.c_contiguous and hm.dtype == np.float32 and hm.ndim == 4 and wh.dtype == np.float32 and wh.shape == (B, M, 2)
          and reg.dtype == np.float32 and reg.shape == (B, M, 2) and ind.dtype == np.int64
          and ind.shape == (B, M) and rm.dtype == np.uint8 and rm.shape == (B, M))
    if not ok:
        raise ValueError("out arrays have wrong shapes/dtypes: expected hm (B,C,H,W) float32, wh/reg "
                         "(B,M,2) float32, ind (B,M) int64, reg_mask (B,M) uint8")
    return hm, wh, reg, ind, rm


def centernet_targets(boxes, labels, num_classes: int, out_h: int, out_w: int, max_objs: int = 128,
              radius: str = "centernet", coords: str = "continuous") -> dict:
    """CenterNet targets of one image (allocates its outputs; see :func:`centernet_into`).

    ``boxes``: float (K, 4) x1, y1, x2, y2 in output-map pixels (``coords`` says which
    convention, default continuous: cell (i, j) covers [j, j+1) x [i, i+1)).
    ``labels``: int (K,) in [0, num_classes).
    Returns ``hm`` (C, out_h, out_w) float32, ``wh`` (max_objs, 2) float32 (w, h),
    ``reg`` (max_objs, 2) float32, ``ind`` (max_objs,) int64 (y * out_w + x),
    ``reg_mask`` (max_objs,) uint8. Semantics: module docstring.
    """
    num_classes = check_size("num_classes", num_classes)
    out_h = check_size("out_h", out_h)
    out_w = check_size("out_w", out_w)
    max_objs = check_size("max_objs", max_objs, 0)
    out = alloc_centernet(1, num_classes, out_h, out_w, max_objs)
    centernet_into(out, 0, boxes, labels, radius=radius, coords=coords)
    return {k: v[0] for k, v in out.items()}


def centernet_into(out: dict, b: int, boxes, labels, radius: str = "centernet",
                   coords: str = "continuous") -> None:
    """Fill sample ``b`` of preallocated ``out`` (from :func:`alloc_centernet`) in place.

    No allocation once warm (a per-thread scratch row is reused); releases the GIL
    inside the kernel, so several samples can be filled from a thread pool.
    ``boxes``/``labels``/``radius``/``coords`` as in :func:`centernet`.
    """
    hm, wh, reg, ind, rm = _check_out(out)
    corrected, continuous = _modes(radius, coords)
    if not (0 <= b < hm.shape[0]):
        raise ValueError(f"sample index b={b} out of range for batch of {hm.shape[0]}")
    bx = _fast_boxes(boxes)
    lab = _fast_labels(labels, bx.shape[0])
    gbuf = scratch("centernet_g", hm.shape[2] + hm.shape[3] + 2, np.float64)
    code, k = _centernet_into_nb(hm, wh, reg, ind, rm, b, bx, lab, corrected, continuous, gbuf)
    if code:
        _raise_invalid(code, k, bx, lab, hm.shape[1])
