"""Slow, obvious reference implementations of every target kernel.

These are what the tests check the Numba kernels against and what the benchmarks
(and the torch-DataLoader baseline) use as "the slow way":

- :func:`centernet_python`: the way the problem in DESIGN.md was first written: each
  box turned into an OpenCV-contour-like ``(n, 1, 2)`` point array, Python loops over
  objects and over every pixel of each gaussian (~4 ms per image at 20 objects).
- :func:`centernet_numpy`: the NumPy fix (~0.4 ms): a transcription of the original
  CenterNet code (``ctdet.py`` + ``gaussian_radius`` / ``gaussian2D`` /
  ``draw_umich_gaussian`` of ``utils/image.py``): per-object ``np.ogrid`` gaussian and
  ``np.maximum`` on a slice.
- :func:`keypoints_reference`, :func:`fcos_reference`, :func:`semantic_mask_reference`,
  :func:`instance_masks_reference`, :func:`boxes_reference`, :func:`centers_reference`.

All take and return the same things as the kernels (same signatures for CenterNet).
They validate their input through the same checks as the kernels.
"""
from __future__ import annotations

import math

import numpy as np

from ._common import check_boxes, check_labels, check_polygons, check_size
from .raster import fill_polygon_reference


# ----------------------------------------------------------------------------- CenterNet
def gaussian_radius_reference(det_size, min_overlap=0.7, mode="centernet"):
    """``utils/image.py`` gaussian_radius, verbatim arithmetic (mode "corrected": mmdet's)."""
    height, width = det_size
    a1 = 1
    b1 = (height + width)
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    sq1 = np.sqrt(b1 ** 2 - 4 * a1 * c1)
    a2 = 4
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    sq2 = np.sqrt(b2 ** 2 - 4 * a2 * c2)
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    sq3 = np.sqrt(b3 ** 2 - 4 * a3 * c3)
    if mode == "centernet":
        r1 = (b1 + sq1) / 2
        r2 = (b2 + sq2) / 2
        r3 = (b3 + sq3) / 2
    else:
        r1 = (b1 - sq1) / (2 * a1)
        r2 = (b2 - sq2) / (2 * a2)
        r3 = (b3 + sq3) / (2 * a3)
    return min(r1, r2, r3)


def gaussian2D(shape, sigma=1):
    m, n = [(ss - 1.) / 2. for ss in shape]
    y, x = np.ogrid[-m:m + 1, -n:n + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h


def draw_umich_gaussian(heatmap, center, radius, k=1):
    diameter = 2 * radius + 1
    gaussian = gaussian2D((diameter, diameter), sigma=diameter / 6)
    x, y = int(center[0]), int(center[1])
    height, width = heatmap.shape[0:2]
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    masked_heatmap = heatmap[y - top:y + bottom, x - left:x + right]
    masked_gaussian = gaussian[radius - top:radius + bottom, radius - left:radius + right]
    if min(masked_gaussian.shape) > 0 and min(masked_heatmap.shape) > 0:
        np.maximum(masked_heatmap, masked_gaussian * k, out=masked_heatmap)
    return heatmap


def _validate_cn(boxes, labels, num_classes, out_h, out_w, max_objs, radius, coords):
    if radius not in ("centernet", "corrected"):
        raise ValueError(f"radius must be 'centernet' or 'corrected', got {radius!r}")
    if coords not in ("continuous", "centernet"):
        raise ValueError(f"coords must be 'continuous' or 'centernet', got {coords!r}")
    num_classes = check_size("num_classes", num_classes)
    out_h = check_size("out_h", out_h)
    out_w = check_size("out_w", out_w)
    max_objs = check_size("max_objs", max_objs, 0)
    bx = check_boxes(boxes)
    lab = check_labels(labels, bx.shape[0], num_classes)
    return bx, lab, num_classes, out_h, out_w, max_objs


def centernet_numpy(boxes, labels, num_classes, out_h, out_w, max_objs=128,
                    radius="centernet", coords="continuous"):
    """The original CenterNet ctdet target code, NumPy per object (same signature/outputs as
    :func:`fastload.targets.centernet_targets`)."""
    boxes, labels, num_classes, output_h, output_w, max_objs = _validate_cn(
        boxes, labels, num_classes, out_h, out_w, max_objs, radius, coords)
    xmax = output_w if coords == "continuous" else output_w - 1
    ymax = output_h if coords == "continuous" else output_h - 1
    hm = np.zeros((num_classes, output_h, output_w), dtype=np.float32)
    wh = np.zeros((max_objs, 2), dtype=np.float32)
    reg = np.zeros((max_objs, 2), dtype=np.float32)
    ind = np.zeros((max_objs), dtype=np.int64)
    reg_mask = np.zeros((max_objs), dtype=np.uint8)
    num_objs = min(len(boxes), max_objs)
    for k in range(num_objs):
        bbox = boxes[k].copy()
        cls_id = int(labels[k])
        bbox[[0, 2]] = np.clip(bbox[[0, 2]], 0, xmax)
        bbox[[1, 3]] = np.clip(bbox[[1, 3]], 0, ymax)
        h, w = bbox[3] - bbox[1], bbox[2] - bbox[0]
        if h > 0 and w > 0:
            r = gaussian_radius_reference((math.ceil(h), math.ceil(w)), mode=radius)
            r = max(0, int(r))
            ct = np.array([(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2], dtype=np.float32)
            ct_int = ct.astype(np.int32)
            ct_int = np.minimum(ct_int, [output_w - 1, output_h - 1]).astype(np.int32)
            draw_umich_gaussian(hm[cls_id], ct_int, r)
            wh[k] = 1. * w, 1. * h
            ind[k] = ct_int[1] * output_w + ct_int[0]
            reg[k] = ct - ct_int
            reg_mask[k] = 1
    return {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "reg_mask": reg_mask}


def centernet_python(boxes, labels, num_classes, out_h, out_w, max_objs=128,
                     radius="centernet", coords="continuous"):
    """CenterNet targets with plain Python loops (the "4 ms" version of DESIGN.md).

    Each box becomes a ``(2, 1, 2)`` contour-style point array (its two corners), and
    each gaussian is drawn pixel by pixel. Same signature and outputs as
    :func:`fastload.targets.centernet_targets`.
    """
    boxes, labels, num_classes, out_h, out_w, max_objs = _validate_cn(
        boxes, labels, num_classes, out_h, out_w, max_objs, radius, coords)
    xmax = out_w if coords == "continuous" else out_w - 1
    ymax = out_h if coords == "continuous" else out_h - 1
    hm = np.zeros((num_classes, out_h, out_w), np.float32)
    wh = np.zeros((max_objs, 2), np.float32)
    reg = np.zeros((max_objs, 2), np.float32)
    ind = np.zeros((max_objs,), np.int64)
    reg_mask = np.zeros((max_objs,), np.uint8)
    contours = [boxes[k].reshape(2, 1, 2) for k in range(len(boxes))]
    for k, cnt in enumerate(contours):
        if k >= max_objs:
            break
        xs = [min(max(float(p[0][0]), 0.0), xmax) for p in cnt]
        ys = [min(max(float(p[0][1]), 0.0), ymax) for p in cnt]
        x1, x2 = np.float32(min(xs)), np.float32(max(xs))
        y1, y2 = np.float32(min(ys)), np.float32(max(ys))
        w = np.float32(x2 - x1)
        h = np.float32(y2 - y1)
        if not (h > 0 and w > 0):
            continue
        r = max(0, int(gaussian_radius_reference((math.ceil(h), math.ceil(w)), mode=radius)))
        cx = np.float32((x1 + x2) / np.float32(2))
        cy = np.float32((y1 + y2) / np.float32(2))
        ix = min(int(cx), out_w - 1)
        iy = min(int(cy), out_h - 1)
        sigma = (2 * r + 1) / 6
        plane = hm[int(labels[k])]
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                y, x = iy + dy, ix + dx
                if 0 <= y < out_h and 0 <= x < out_w:
                    g = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
                    if g < np.finfo(np.float64).eps:
                        g = 0.0
                    if g > plane[y, x]:
                        plane[y, x] = g
        wh[k, 0], wh[k, 1] = w, h
        ind[k] = iy * out_w + ix
        reg[k, 0] = cx - ix
        reg[k, 1] = cy - iy
        reg_mask[k] = 1
    return {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "reg_mask": reg_mask}


# ----------------------------------------------------------------------------- keypoints
def keypoints_reference(boxes, keypoints, out_h, out_w, max_objs=128, radius="centernet",
                        coords="continuous"):
    """multi_pose.py's keypoint loop, NumPy per joint (same signature/outputs as
    :func:`fastload.targets.keypoint_targets`)."""
    if radius not in ("centernet", "corrected") or coords not in ("continuous", "centernet"):
        raise ValueError(f"bad radius/coords: {radius!r}, {coords!r}")
    out_h = check_size("out_h", out_h)
    out_w = check_size("out_w", out_w)
    max_objs = check_size("max_objs", max_objs, 0)
    boxes = check_boxes(boxes)
    kp_all = np.asarray(keypoints, np.float32)
    if kp_all.ndim != 3 or kp_all.shape[0] != len(boxes) or kp_all.shape[2] != 3:
        raise ValueError(f"keypoints must have shape ({len(boxes)}, J, 3), got {kp_all.shape}")
    if not np.isfinite(kp_all).all():
        raise ValueError("keypoints contains NaN or inf")
    num_joints = kp_all.shape[1]
    xmax = out_w if coords == "continuous" else out_w - 1
    ymax = out_h if coords == "continuous" else out_h - 1
    hm_hp = np.zeros((num_joints, out_h, out_w), dtype=np.float32)
    kps = np.zeros((max_objs, num_joints * 2), dtype=np.float32)
    kps_mask = np.zeros((max_objs, num_joints * 2), dtype=np.uint8)
    hp_offset = np.zeros((max_objs * num_joints, 2), dtype=np.float32)
    hp_ind = np.zeros((max_objs * num_joints), dtype=np.int64)
    hp_mask = np.zeros((max_objs * num_joints), dtype=np.uint8)
    for k in range(min(len(boxes), max_objs)):
        bbox = boxes[k].copy()
        pts = kp_all[k].copy()
        bbox[[0, 2]] = np.clip(bbox[[0, 2]], 0, xmax)
        bbox[[1, 3]] = np.clip(bbox[[1, 3]], 0, ymax)
        h, w = bbox[3] - bbox[1], bbox[2] - bbox[0]
        if h > 0 and w > 0:
            ct = np.array([(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2], dtype=np.float32)
            ct_int = np.minimum(ct.astype(np.int32), [out_w - 1, out_h - 1]).astype(np.int32)
            hp_radius = gaussian_radius_reference((math.ceil(h), math.ceil(w)), mode=radius)
            hp_radius = max(0, int(hp_radius))
            for j in range(num_joints):
                if pts[j, 2] > 0:
                    if pts[j, 0] >= 0 and pts[j, 0] < out_w and pts[j, 1] >= 0 and pts[j, 1] < out_h:
                        kps[k, j * 2: j * 2 + 2] = pts[j, :2] - ct_int
                        kps_mask[k, j * 2: j * 2 + 2] = 1
                        pt_int = pts[j, :2].astype(np.int32)
                        hp_offset[k * num_joints + j] = pts[j, :2] - pt_int
                        hp_ind[k * num_joints + j] = pt_int[1] * out_w + pt_int[0]
                        hp_mask[k * num_joints + j] = 1
                        draw_umich_gaussian(hm_hp[j], pt_int, hp_radius)
    return {"hp_hm": hm_hp, "hp_offset": hp_offset, "hp_ind": hp_ind, "hp_mask": hp_mask,
            "hp_kps": kps, "hp_kps_mask": kps_mask}


# ----------------------------------------------------------------------------- FCOS
def fcos_reference(boxes, labels, img_h, img_w, num_classes=None, strides=(8, 16, 32, 64, 128),
                   size_ranges=((0, 64), (64, 128), (128, 256), (256, 512), (512, np.inf)),
                   center_sampling_radius=0.0, norm_reg=False):
    """FCOS compute_targets_for_locations, dense NumPy over (locations x boxes), float32."""
    boxes = check_boxes(boxes)
    labels = check_labels(labels, len(boxes), num_classes)
    locs, lvl = [], []
    for li, s in enumerate(strides):
        h, w = -(-img_h // s), -(-img_w // s)
        shifts_x = np.arange(0, w * s, s, dtype=np.float32)
        shifts_y = np.arange(0, h * s, s, dtype=np.float32)
        shift_y, shift_x = np.meshgrid(shifts_y, shifts_x, indexing="ij")
        locs.append(np.stack([shift_x.ravel(), shift_y.ravel()], 1) + np.float32(s // 2))
        lvl.append(np.full(h * w, li))
    locs = np.concatenate(locs).astype(np.float32)
    lvl = np.concatenate(lvl)
    L = len(locs)
    INF = np.float64(1e300)
    if len(boxes) == 0:
        return {"fcos_labels": np.zeros(L, np.int64), "fcos_ltrb": np.zeros((L, 4), np.float32),
                "fcos_centerness": np.zeros(L, np.float32)}
    xs, ys = locs[:, 0], locs[:, 1]
    l = xs[:, None] - boxes[:, 0][None]
    t = ys[:, None] - boxes[:, 1][None]
    r = boxes[:, 2][None] - xs[:, None]
    b = boxes[:, 3][None] - ys[:, None]
    reg = np.stack([l, t, r, b], 2)
    if center_sampling_radius > 0:
        cx = (boxes[:, 0] + boxes[:, 2]) / np.float32(2)
        cy = (boxes[:, 1] + boxes[:, 3]) / np.float32(2)
        st = np.array(strides, np.float32)[lvl][:, None] * np.float32(center_sampling_radius)
        x1 = np.maximum(cx[None] - st, boxes[None, :, 0])
        y1 = np.maximum(cy[None] - st, boxes[None, :, 1])
        x2 = np.minimum(cx[None] + st, boxes[None, :, 2])
        y2 = np.minimum(cy[None] + st, boxes[None, :, 3])
        cb = np.stack([xs[:, None] - x1, ys[:, None] - y1, x2 - xs[:, None], y2 - ys[:, None]], 2)
        inside = cb.min(2) > 0
    else:
        inside = reg.min(2) > 0
    mx = reg.max(2)
    lo = np.array([a for a, _ in size_ranges], np.float32)[lvl][:, None]
    hi = np.array([c for _, c in size_ranges], np.float32)[lvl][:, None]
    cared = (mx >= lo) & (mx <= hi)
    area = (boxes[:, 2].astype(np.float64) - boxes[:, 0]) * (boxes[:, 3].astype(np.float64) - boxes[:, 1])
    a = np.repeat(area[None], L, 0)
    a[~inside] = INF
    a[~cared] = INF
    best = a.argmin(1)
    pos = a[np.arange(L), best] < INF
    ltrb = reg[np.arange(L), best]
    ltrb[~pos] = 0
    lab = np.where(pos, labels[best] + 1, 0).astype(np.int64)
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.sqrt((lr.min(1) / lr.max(1)) * (tb.min(1) / tb.max(1)))
    c = np.where(pos, c, 0).astype(np.float32)
    if norm_reg:
        ltrb = ltrb / np.array(strides, np.float32)[lvl][:, None]
    return {"fcos_labels": lab, "fcos_ltrb": ltrb.astype(np.float32), "fcos_centerness": c}


# ----------------------------------------------------------------------------- masks
def semantic_mask_reference(points, part_offsets, inst_parts, labels, ignore, out_h, out_w,
                            stride=1.0):
    """Per-pixel crossing tests in Python (fill_polygon_reference), same order as the kernel."""
    pts, po, ip = check_polygons(points, part_offsets, inst_parts)
    n = len(ip) - 1
    labels = check_labels(labels, n, 254)
    ignore = np.zeros(n, bool) if ignore is None else np.asarray(ignore, bool)
    mask = np.zeros((out_h, out_w), np.uint8)
    order = [k for k in range(n) if not ignore[k]] + [k for k in range(n) if ignore[k]]
    for k in order:
        value = 255 if ignore[k] else int(labels[k]) + 1
        for p in range(ip[k], ip[k + 1]):
            fill_polygon_reference(mask, pts[po[p]:po[p + 1]], value, stride)
    return mask


def instance_masks_reference(points, part_offsets, inst_parts, out_h, out_w, stride=1.0,
                             max_instances=None):
    pts, po, ip = check_polygons(points, part_offsets, inst_parts)
    n = len(ip) - 1
    M = n if max_instances is None else max_instances
    masks = np.zeros((M, out_h, out_w), np.uint8)
    for k in range(min(n, M)):
        for p in range(ip[k], ip[k + 1]):
            fill_polygon_reference(masks[k], pts[po[p]:po[p + 1]], 1, stride)
    return masks


def masks_reference(points, part_offsets, inst_parts, labels, ignore, out_h, out_w, stride=1.0,
                    max_instances=None):
    """(semantic, instance masks) references."""
    return (semantic_mask_reference(points, part_offsets, inst_parts, labels, ignore, out_h, out_w, stride),
            instance_masks_reference(points, part_offsets, inst_parts, out_h, out_w, stride, max_instances))


# ----------------------------------------------------------------------------- boxes
def boxes_reference(points, part_offsets, inst_parts):
    """Tight boxes with Python min/max over each instance's vertices."""
    pts, po, ip = check_polygons(points, part_offsets, inst_parts)
    out = np.zeros((len(ip) - 1, 4), np.float32)
    for k in range(len(ip) - 1):
        v = pts[po[ip[k]]:po[ip[k + 1]]]
        if len(v):
            out[k] = [v[:, 0].min(), v[:, 1].min(), v[:, 0].max(), v[:, 1].max()]
    return out


def centers_reference(points, part_offsets, inst_parts, mode="box"):
    """Box centers, or area centroids (parts weighted by |area|; box center if degenerate)."""
    pts, po, ip = check_polygons(points, part_offsets, inst_parts)
    boxes = boxes_reference(points, part_offsets, inst_parts)
    out = np.zeros((len(ip) - 1, 2), np.float32)
    for k in range(len(ip) - 1):
        if po[ip[k + 1]] == po[ip[k]]:
            continue
        bx = np.float32((np.float64(boxes[k, 0]) + boxes[k, 2]) / 2)
        by = np.float32((np.float64(boxes[k, 1]) + boxes[k, 3]) / 2)
        out[k] = bx, by
        if mode != "centroid":
            continue
        size = max(float(boxes[k, 2]) - float(boxes[k, 0]), float(boxes[k, 3]) - float(boxes[k, 1]), 1e-30)
        tot, sx, sy = 0.0, 0.0, 0.0
        for p in range(ip[k], ip[k + 1]):
            v = pts[po[p]:po[p + 1]].astype(np.float64)
            if len(v) < 3:
                continue
            x, y = v[:, 0], v[:, 1]
            xn, yn = np.roll(x, -1), np.roll(y, -1)
            cr = x * yn - xn * y
            a = cr.sum() / 2
            if abs(2 * a) <= 1e-7 * size * size:
                continue
            cx = ((x + xn) * cr).sum() / (6 * a)
            cy = ((y + yn) * cr).sum() / (6 * a)
            tot += abs(a)
            sx += abs(a) * cx
            sy += abs(a) * cy
        if tot > 0:
            out[k] = sx / tot, sy / tot
    return out


def draw_msra_gaussian(heatmap, center, sigma):
    """CenterNet utils/image.py draw_msra_gaussian, verbatim."""
    tmp_size = sigma * 3
    mu_x = int(center[0] + 0.5)
    mu_y = int(center[1] + 0.5)
    w, h = heatmap.shape[0], heatmap.shape[1]
    ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
    br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
    if ul[0] >= h or ul[1] >= w or br[0] < 0 or br[1] < 0:
        return heatmap, False
    size = 2 * tmp_size + 1
    x = np.arange(0, size, 1, np.float32)
    y = x[:, np.newaxis]
    x0 = y0 = size // 2
    g = np.exp(- ((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2))
    g_x = max(0, -ul[0]), min(br[0], h) - ul[0]
    g_y = max(0, -ul[1]), min(br[1], w) - ul[1]
    img_x = max(0, ul[0]), min(br[0], h)
    img_y = max(0, ul[1]), min(br[1], w)
    heatmap[img_y[0]:img_y[1], img_x[0]:img_x[1]] = np.maximum(
        heatmap[img_y[0]:img_y[1], img_x[0]:img_x[1]],
        g[g_y[0]:g_y[1], g_x[0]:g_x[1]])
    return heatmap, True


def msra_reference(keypoints, out_h, out_w, sigma=2.0, coords="continuous"):
    """Per-joint draw_msra_gaussian; continuous coords are shifted by -0.5 first."""
    kp = np.asarray(keypoints, np.float32)
    K, J = kp.shape[:2]
    hm = np.zeros((J, out_h, out_w), np.float32)
    weight = np.zeros((K, J), np.float32)
    for k in range(K):
        for j in range(J):
            if kp[k, j, 2] > 0:
                if coords == "continuous":  # integer-center coords x - .5: int(x - .5 + .5) = int(x)
                    c = (int(kp[k, j, 0]) - 0.5, int(kp[k, j, 1]) - 0.5)
                else:
                    c = kp[k, j, :2]
                _, ok = draw_msra_gaussian(hm[j], c, sigma)
                weight[k, j] = float(ok)
    return hm, weight
