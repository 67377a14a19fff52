"""Semantic and per-instance masks rasterized from polygons (no mask files).

Pixel rule (fastload.targets.raster, DESIGN.md convention): mask pixel (i, j) at
``stride`` s is inside a part when its center ((j + .5) s, (i + .5) s), in the
polygons' (output image) coordinates, is inside by the **even-odd** rule; left/top
edges inclusive, right/bottom exclusive. An instance covers the **union** of its parts.
Concave and self-touching polygons follow the even-odd rule (a self-overlapping loop
leaves a hole where it overlaps itself).

Semantic map values: ``label + 1`` for an object, 0 background, 255 ignore.
Overlaps: instances are painted in their order, **later instances over earlier ones**;
all ignore instances are painted after every object, so ignore always wins.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._common import check_labels, check_polygons, check_size
from .raster import fill_parts

IGNORE_VALUE = 255


@njit(nogil=True, cache=True)
def _semantic_kernel(mask, points, part_offsets, inst_parts, labels, ignore, stride):
    mask[:] = 0
    n = inst_parts.shape[0] - 1
    for k in range(n):
        if not ignore[k]:
            fill_parts(mask, points, part_offsets, inst_parts[k], inst_parts[k + 1],
                       np.uint8(labels[k] + 1), stride)
    for k in range(n):
        if ignore[k]:
            fill_parts(mask, points, part_offsets, inst_parts[k], inst_parts[k + 1],
                       np.uint8(255), stride)


@njit(nogil=True, cache=True)
def _instance_kernel(masks, points, part_offsets, inst_parts, stride):
    masks[:] = 0
    n = min(inst_parts.shape[0] - 1, masks.shape[0])
    for k in range(n):
        fill_parts(masks[k], points, part_offsets, inst_parts[k], inst_parts[k + 1],
                   np.uint8(1), stride)


def _check_stride(stride):
    s = float(stride)
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"stride must be a positive number, got {stride!r}")
    return s


def _check_ignore(ignore, n):
    if ignore is None:
        return np.zeros(n, np.bool_)
    ig = np.asarray(ignore)
    if ig.shape != (n,) or ig.dtype.kind not in "biu":
        raise ValueError(f"ignore must be a bool ({n},) array, got {ig.dtype} {ig.shape}")
    return np.ascontiguousarray(ig, np.bool_)


def semantic_mask(points, part_offsets, inst_parts, labels, ignore, out_h: int, out_w: int,
                  stride: float = 1.0, out=None) -> np.ndarray:
    """(out_h, out_w) uint8 semantic map: class id + 1, 0 background, 255 ignore.

    ``points`` (P, 2) in input pixels (continuous convention), flat layout of
    fastload.record; ``labels`` int (n,) in [0, 254); ``ignore`` bool (n,) or None;
    mask pixel (i, j) samples the input at ((j + .5) * stride, (i + .5) * stride).
    ``out``: optional preallocated uint8 (out_h, out_w) (e.g. ``batch["semantic"][b]``).
    Overlaps: later instances over earlier; ignore regions painted last.
    """
    pts, po, ip = check_polygons(points, part_offsets, inst_parts)
    n = ip.shape[0] - 1
    lab = check_labels(labels, n, 254)
    ig = _check_ignore(ignore, n)
    s = _check_stride(stride)
    if out is None:
        out = np.empty((check_size("out_h", out_h), check_size("out_w", out_w)), np.uint8)
    elif out.shape != (out_h, out_w) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 ({out_h}, {out_w}), got {out.dtype} {out.shape}")
    _semantic_kernel(out, pts, po, ip, lab, ig, s)
    return out


def instance_masks(points, part_offsets, inst_parts, out_h: int, out_w: int, stride: float = 1.0,
                   max_instances: int | None = None, out=None) -> np.ndarray:
    """(M, out_h, out_w) uint8 binary masks, one per instance in order (1 inside).

    ``M = max_instances`` (default: the number of instances); instances beyond M are
    dropped, missing ones are all-zero. Ignore instances are included (the batch's
    ``ignore`` flag says which they are). ``out``: optional preallocated (M, h, w) uint8.
    """
    pts, po, ip = check_polygons(points, part_offsets, inst_parts)
    n = ip.shape[0] - 1
    s = _check_stride(stride)
    if out is None:
        M = n if max_instances is None else check_size("max_instances", max_instances, 0)
        out = np.empty((M, check_size("out_h", out_h), check_size("out_w", out_w)), np.uint8)
    elif out.ndim != 3 or out.shape[1:] != (out_h, out_w) or out.dtype != np.uint8 or \
            (max_instances is not None and out.shape[0] != max_instances):
        raise ValueError(f"out must be uint8 (M, {out_h}, {out_w}), got {out.dtype} {out.shape}")
    _instance_kernel(out, pts, po, ip, s)
    return out
