"""Move annotations by a sample's matrix, clip them to the output frame.

Coordinates: continuous pixel coordinates (DESIGN.md): pixel (row i, col j) covers
[j, j+1) x [i, i+1); the output frame is [0, W] x [0, H]. The matrix is the sample's
float32 (3, 3) source->output matrix (:class:`fastload.augment.params.SampleParams`).

    @dataclass
    class TransformedInstances:       # flat, like fastload.record.Record
        points: np.ndarray            # float32 (P, 2) output pixel coords, clipped to the frame
        part_offsets: np.ndarray      # int32 (n_parts + 1,)
        inst_parts: np.ndarray        # int32 (n + 1,)
        labels: np.ndarray            # int32 (n,)
        boxes: np.ndarray             # float32 (n, 4) tight x1,y1,x2,y2 of the visible parts
        ignore: np.ndarray            # bool (n,)
        keypoints: np.ndarray | None  # float32 (n, K, 3); outside the frame -> visibility 0;
                                      # left/right swapped by flip_pairs on a mirror
        src_index: np.ndarray         # int32 (n,) index of the instance in the record

Rules (both the Numba kernel and the plain reference implement them):

- every vertex is moved by the matrix (float64 arithmetic, stored float32);
- each polygon part is clipped to the frame [0, W] x [0, H] (:mod:`fastload.augment.clip`):
  Sutherland-Hodgman, then the zero-width bridges and spikes it leaves along the border
  when a concave part is cut more than once are cancelled, which may split the part into
  several visible pieces (each one part of the instance); pieces left with < 3 vertices
  or zero area are dropped. So the parts are the visible region and nothing else: boxes
  and centers taken from their vertices are those of what is visible;
- areas are |shoelace| per part, summed per instance (overlapping parts of one instance
  count twice; COCO multi-polygons rarely overlap);
- an instance is kept when its visible (clipped) area is > 0 and >= ``min_visible`` x its
  transformed (unclipped) area; an ignore region is kept when any of it is visible;
- an instance without polygon parts (box-only annotations) uses its record bbox, moved
  as a 4-corner polygon, for the decision and the box, and stays without parts;
- ``boxes`` are the tight min/max of the visible parts' vertices
  (``fastload.targets.boxes.vertex_box``): the extent of the visible region;
- keypoints are moved by the matrix; a keypoint whose moved position is outside the
  half-open frame [0, W) x [0, H), or whose visibility was 0, gets visibility 0 and
  (x, y) = (0, 0) (the COCO way of writing "not labeled");
- mirrors swap left/right keypoints: the pairs in ``flip_pairs`` are exchanged when
  ``params.hflip != params.vflip`` (the matrix has a negative determinant). A vertical
  flip alone is a mirror too (it equals a horizontal flip plus a 180-degree rotation);
  both flips together are a 180-degree rotation, which keeps handedness.
  (Detectron2 swaps on horizontal flips only; with ``vflip_prob = 0``, the default, the
  two agree.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from numba import njit

from fastload.augment.clip import (clean_ring, clip_polygon_reference, clip_rect,
                                   has_zero_width_border, ring_area)
from fastload.record import FLAG_IGNORE, Record
from fastload.targets.boxes import vertex_box


@dataclass
class TransformedInstances:
    """Annotations of one sample in output pixel coordinates (see module docstring)."""

    points: np.ndarray
    part_offsets: np.ndarray
    inst_parts: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    ignore: np.ndarray
    keypoints: Optional[np.ndarray]
    src_index: np.ndarray

    @property
    def num_instances(self) -> int:
        return int(self.labels.shape[0])

    def parts(self, k: int):
        """The clipped parts of instance ``k`` as a list of float32 (N, 2) arrays."""
        return [self.points[self.part_offsets[p]:self.part_offsets[p + 1]]
                for p in range(self.inst_parts[k], self.inst_parts[k + 1])]


# ----------------------------------------------------------------------------- kernels
@njit(nogil=True, cache=True)
def _transform_clip_kernel(points, part_offsets, inst_parts, bboxes, flags, mat, w, h,
                           min_visible):
    """Move, clip, measure and filter every instance of a record (see module docstring).

    Returns (out_points f32 (Q,2), out_part_offsets i32, out_inst_parts i32,
    keep i32 (n,), boxes f32 (n,4))."""
    n_inst = inst_parts.shape[0] - 1
    cap = 2 * points.shape[0] + 16
    out = np.empty((cap, 2), np.float32)
    q = np.int64(0)  # typed, not the literal 0: vertex_box(out, q_start, q) compiles once
    n_parts_total = inst_parts[n_inst] if n_inst > 0 else 0
    out_poff = np.empty(n_parts_total + 1, np.int32)
    out_poff[0] = 0
    np_out = 0
    out_iparts = np.empty(n_inst + 1, np.int32)
    out_iparts[0] = 0
    keep = np.empty(n_inst, np.int32)
    boxes = np.empty((n_inst, 4), np.float32)
    nk = 0
    m00 = mat[0, 0]
    m01 = mat[0, 1]
    m02 = mat[0, 2]
    m10 = mat[1, 0]
    m11 = mat[1, 1]
    m12 = mat[1, 2]
    for k in range(n_inst):
        p0 = inst_parts[k]
        p1 = inst_parts[k + 1]
        q_start = q
        np_start = np_out
        area_t = 0.0
        area_v = 0.0
        x1 = y1 = x2 = y2 = 0.0
        if p1 > p0:
            for p in range(p0, p1):
                s = part_offsets[p]
                e = part_offsets[p + 1]
                m = e - s
                poly = np.empty((m, 2), np.float64)
                for i in range(m):
                    x = np.float64(points[s + i, 0])
                    y = np.float64(points[s + i, 1])
                    poly[i, 0] = m00 * x + m01 * y + m02
                    poly[i, 1] = m10 * x + m11 * y + m12
                if m < 3:
                    continue
                area_t += ring_area(poly, m)
                c, mc = clip_rect(poly, w, h)
                if mc < 3:
                    continue
                if has_zero_width_border(c, mc, w, h):  # a concave part cut more than once
                    c, pieces = clean_ring(c, mc, w, h)
                else:
                    pieces = np.empty(2, np.int64)
                    pieces[0] = 0
                    pieces[1] = mc
                for r in range(pieces.shape[0] - 1):
                    ps = pieces[r]
                    pn = pieces[r + 1] - ps
                    piece = c[ps:ps + pn]
                    av = ring_area(piece, pn)
                    if av <= 0.0:
                        continue
                    area_v += av
                    if q + pn > cap:
                        cap = 2 * (q + pn)
                        grown = np.empty((cap, 2), np.float32)
                        for i in range(q):  # (loops, not slice assignment: see clip.py)
                            grown[i, 0] = out[i, 0]
                            grown[i, 1] = out[i, 1]
                        out = grown
                    for i in range(pn):
                        out[q + i, 0] = np.float32(piece[i, 0])
                        out[q + i, 1] = np.float32(piece[i, 1])
                    q += pn
                    np_out += 1
                    if np_out >= out_poff.shape[0]:
                        more = np.empty(2 * out_poff.shape[0], np.int32)
                        for i in range(np_out):
                            more[i] = out_poff[i]
                        out_poff = more
                    out_poff[np_out] = q
            if q > q_start:  # float32 rounding is monotonic: same box as in float64
                x1, y1, x2, y2 = vertex_box(out, q_start, q)
        else:
            # box-only instance: its bbox as a 4-corner polygon, no parts emitted
            bx1 = np.float64(bboxes[k, 0])
            by1 = np.float64(bboxes[k, 1])
            bx2 = np.float64(bboxes[k, 2])
            by2 = np.float64(bboxes[k, 3])
            poly = np.empty((4, 2), np.float64)
            cx = (bx1, bx2, bx2, bx1)
            cy = (by1, by1, by2, by2)
            for i in range(4):
                poly[i, 0] = m00 * cx[i] + m01 * cy[i] + m02
                poly[i, 1] = m10 * cx[i] + m11 * cy[i] + m12
            area_t = ring_area(poly, poly.shape[0])  # (a constant 4 compiles it once more)
            c, mc = clip_rect(poly, w, h)  # convex: no zero-width border edges
            if mc >= 3:
                area_v = ring_area(c, mc)
                x1, y1, x2, y2 = vertex_box(c, 0, mc)
        is_ignore = (flags[k] & 1) != 0
        ok = area_v > 0.0 and (is_ignore or area_v >= min_visible * area_t)
        if ok:
            keep[nk] = k
            boxes[nk, 0] = np.float32(x1)
            boxes[nk, 1] = np.float32(y1)
            boxes[nk, 2] = np.float32(x2)
            boxes[nk, 3] = np.float32(y2)
            nk += 1
            out_iparts[nk] = np_out
        else:  # roll back this instance's parts
            q = q_start
            np_out = np_start
    return out[:q].copy(), out_poff[:np_out + 1].copy(), out_iparts[:nk + 1].copy(), \
        keep[:nk].copy(), boxes[:nk].copy()


# --------------------------------------------------------------------------- reference
def _shoelace(p):
    p = np.asarray(p, np.float64)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return abs(float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))) * 0.5


def _move_keypoints(kps, mat, out_w, out_h, swap, flip_pairs):
    kps = np.asarray(kps, np.float32)
    m = mat.astype(np.float64)
    x = kps[..., 0].astype(np.float64)
    y = kps[..., 1].astype(np.float64)
    nx = m[0, 0] * x + m[0, 1] * y + m[0, 2]
    ny = m[1, 0] * x + m[1, 1] * y + m[1, 2]
    v = kps[..., 2].copy()
    vis = (v > 0) & (nx >= 0) & (nx < out_w) & (ny >= 0) & (ny < out_h)
    res = np.zeros(kps.shape, np.float32)
    res[..., 0] = np.where(vis, nx, 0.0)
    res[..., 1] = np.where(vis, ny, 0.0)
    res[..., 2] = np.where(vis, v, 0.0)
    if swap and flip_pairs is not None and len(flip_pairs):
        pairs = np.asarray(flip_pairs, np.int64).reshape(-1, 2)
        perm = np.arange(res.shape[1])
        perm[pairs[:, 0]] = pairs[:, 1]
        perm[pairs[:, 1]] = pairs[:, 0]
        res = res[:, perm]
    return res


def _c(a, dtype):
    # C-contiguous and writeable (records decoded from LMDB are read-only views; small
    # copies keep the kernel to one compiled specialization)
    return np.require(a, dtype, ["C", "W"])


def _check(record, params, out_size):
    m = np.asarray(params.matrix)
    if m.shape != (3, 3):
        raise ValueError(f"record {record.id} ({record.file_name}): matrix must be (3, 3), "
                         f"got {m.shape}")
    out_h, out_w = int(out_size[0]), int(out_size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"out_size must be positive, got {out_size}")
    return m.astype(np.float64), out_h, out_w


def transform_instances(record: Record, params, out_size: Tuple[int, int],
                        min_visible: float = 0.1,
                        flip_pairs: Optional[Sequence[Tuple[int, int]]] = None
                        ) -> TransformedInstances:
    """Move a record's instances by ``params.matrix`` into the (H, W) = ``out_size`` frame.

    Continuous pixel coordinates in and out (DESIGN.md). See the module docstring for the
    clipping, dropping, keypoint and flip-pair rules. Numba kernel; no Python loop over
    points or instances.
    """
    mat, out_h, out_w = _check(record, params, out_size)
    pts, poff, iparts, keep, boxes = _transform_clip_kernel(
        _c(record.points, np.float32).reshape(-1, 2), _c(record.part_offsets, np.int32),
        _c(record.inst_parts, np.int32), _c(record.bboxes, np.float32).reshape(-1, 4),
        _c(record.flags, np.uint8), mat, float(out_w), float(out_h), float(min_visible))
    kps = None
    if record.keypoints is not None:
        kps = _move_keypoints(np.asarray(record.keypoints)[keep], mat, out_w, out_h,
                              bool(params.hflip) != bool(params.vflip), flip_pairs)
    return TransformedInstances(
        points=pts, part_offsets=poff, inst_parts=iparts,
        labels=np.asarray(record.labels, np.int32)[keep],
        boxes=boxes, ignore=(np.asarray(record.flags, np.uint8)[keep] & FLAG_IGNORE) != 0,
        keypoints=kps, src_index=keep.astype(np.int32))


def transform_instances_reference(record: Record, params, out_size: Tuple[int, int],
                                  min_visible: float = 0.1, flip_pairs=None
                                  ) -> TransformedInstances:
    """Slow, obvious version of :func:`transform_instances` (loops over instances and parts)."""
    mat, out_h, out_w = _check(record, params, out_size)

    def move(p):
        p = np.asarray(p, np.float64)
        return p @ mat[:2, :2].T + mat[:2, 2]

    pts, poff, iparts, keep, boxes = [], [0], [0], [], []
    for k, inst in enumerate(record.instances):
        parts = []
        area_t = area_v = 0.0
        if inst.polygons:
            for poly in inst.polygons:
                mp = move(poly)
                if len(mp) < 3:
                    continue
                area_t += _shoelace(mp)
                for c in clip_polygon_reference(mp, out_w, out_h):
                    a = _shoelace(c)
                    if a <= 0:
                        continue
                    area_v += a
                    parts.append(c)
            allp = np.concatenate(parts) if parts else np.zeros((0, 2))
        else:
            b = np.asarray(inst.bbox, np.float64)
            corners = move([[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]])
            area_t = _shoelace(corners)
            pieces = clip_polygon_reference(corners, out_w, out_h)  # convex: one piece at most
            allp = pieces[0] if pieces else np.zeros((0, 2))
            area_v = _shoelace(allp) if len(allp) >= 3 else 0.0
        if not (area_v > 0 and (inst.ignore or area_v >= min_visible * area_t)):
            continue
        keep.append(k)
        boxes.append([allp[:, 0].min(), allp[:, 1].min(), allp[:, 0].max(), allp[:, 1].max()])
        for c in parts:
            pts.append(c.astype(np.float32))
            poff.append(poff[-1] + len(c))
        iparts.append(len(poff) - 1)
    keep = np.asarray(keep, np.int32)
    kps = None
    if record.keypoints is not None:
        kps = _move_keypoints(np.asarray(record.keypoints)[keep], mat, out_w, out_h,
                              bool(params.hflip) != bool(params.vflip), flip_pairs)
    return TransformedInstances(
        points=np.concatenate(pts).astype(np.float32) if pts else np.zeros((0, 2), np.float32),
        part_offsets=np.asarray(poff, np.int32), inst_parts=np.asarray(iparts, np.int32),
        labels=np.asarray(record.labels, np.int32)[keep],
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        ignore=(np.asarray(record.flags, np.uint8)[keep] & FLAG_IGNORE) != 0,
        keypoints=kps, src_index=keep)
