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
    :func:`fastload.targets.centernet`)."""
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
    :func:`fastload.targets.centernet`.
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
