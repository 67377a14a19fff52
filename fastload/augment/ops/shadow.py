"""Shadows: darken the pixels inside a few random polygons.

``k`` in ``shadow_count`` (inclusive) star-shaped (hence simple) polygons of 3 to 6
vertices, in OUTPUT pixel coordinates, center uniform in the frame, radius 0.15 to 0.45
of ``min(H, W)`` (like albumentations' RandomShadow: random polygons spanning parts of the
image), and one darkness factor per sample. A pixel is shadowed when its center lies in
any polygon (:func:`shadow_mask`: ``fastload.targets.raster.fill_polygon`` rule, each
polygon even-odd, union over polygons, full resolution); shadowed values are multiplied
by ``shadow_darkness``. A sample without a shadow has no polygons and darkness 1.0.

DALI: ``img * (1 - mask * (1 - darkness))`` with the mask fed from the host as an
(H, W, 1) uint8 external input, cast back to uint8 (round to nearest, saturate).
"""
from __future__ import annotations

from typing import List

import numpy as np
from numba import njit

from fastload.augment.ops.base import (DaliInput, Op, count_range, lerp, probability,
                                       value_range)
from fastload.targets.raster import fill_polygon


def shadow_polygons(gen: np.random.Generator, cfg, out_h: int, out_w: int) -> List[np.ndarray]:
    """Draw the polygons of one shadow (module docstring) from ``gen``."""
    lo, hi = int(cfg.shadow_count[0]), int(cfg.shadow_count[1])
    k = int(gen.integers(lo, hi + 1)) if hi > lo else lo
    polys = []
    m = min(out_h, out_w)
    for _ in range(max(k, 0)):
        n = int(gen.integers(3, 7))
        cx, cy = gen.random(2) * np.array([out_w, out_h], np.float64)
        r = m * (0.15 + 0.30 * gen.random())
        ang = np.sort(gen.random(n)) * (2.0 * np.pi)
        rad = r * (0.5 + 0.5 * gen.random(n))
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        polys.append(pts.astype(np.float32))
    return polys


def shadow_mask(params, out_h: int, out_w: int) -> np.ndarray:
    """uint8 (out_h, out_w): 1 where the pixel center lies in any shadow polygon, else 0.

    Full resolution (stride 1), ``fastload.targets.raster.fill_polygon`` rule (each polygon
    even-odd, union over polygons). All zeros when the sample has no shadow.
    """
    mask = np.zeros((int(out_h), int(out_w)), np.uint8)
    for poly in params.shadow_polygons or []:
        fill_polygon(mask, np.ascontiguousarray(poly, np.float32), 1, 1.0)
    return mask


@njit(nogil=True, cache=True)
def _raster_shadows(mask, points, offsets):
    mask[:, :] = 0
    for k in range(offsets.shape[0] - 1):
        fill_polygon(mask, points[offsets[k]:offsets[k + 1]], 1, 1.0)


_EMPTY_MASK = np.zeros((1, 1), np.uint8)


@njit(inline="always")
def pixel(r, g, b, i, j, on, mask, darkness):
    if on and mask[i, j] != 0:
        r *= darkness
        g *= darkness
        b *= darkness
    return r, g, b


class Shadow(Op):
    name = "shadow"
    order = 30
    legacy_uniforms = slice(8, 10)  # shadow on/off, darkness
    fields = (
        probability("shadow_prob", 0.3, "probability of a shadow", off=0.0),
        count_range("shadow_count", (1, 2), "number of shadow polygons (inclusive range)"),
        value_range("shadow_darkness", (0.5, 0.8), "factor range applied inside a shadow "
                    "(0.5 = half as bright)", minimum=0.0),
    )
    values = {"shadow_polygons": [], "shadow_darkness": 1.0}
    kernel_args = ("on", "mask", "darkness")
    pixel = pixel
    dali_inputs = (
        DaliInput("mask", "uint8", 3, lambda p, cfg: shadow_mask(p, *cfg.out_size)[:, :, None],
                  layout="HWC"),
        DaliInput("dark", "float32", 0, lambda p, cfg: np.float32(p.shadow_darkness)),
    )

    def draw(self, cfg, draws, frame):
        polys: List[np.ndarray] = []
        dark = 1.0
        if draws.uniforms[0] < cfg.shadow_prob:
            polys = shadow_polygons(draws.gen, cfg, frame.out_h, frame.out_w)
            if polys:
                dark = lerp(cfg.shadow_darkness, draws.uniforms[1])
        return {"shadow_polygons": polys, "shadow_darkness": float(dark)}

    def needed(self, params):
        return bool(params.shadow_polygons) and float(params.shadow_darkness) != 1.0

    def kernel_values(self, params, cfg, scratch):
        polys = [np.asarray(p, np.float64).reshape(-1, 2) for p in (params.shadow_polygons or [])]
        polys = [p for p in polys if len(p) >= 3]
        if not polys or float(params.shadow_darkness) == 1.0:
            return (False, _EMPTY_MASK, 1.0)
        offsets = np.zeros(len(polys) + 1, np.int64)
        offsets[1:] = np.cumsum([len(p) for p in polys])
        H, W = cfg.out_size
        mask = scratch.get("mask")
        if mask is None or mask.shape != (H, W):
            mask = scratch["mask"] = np.empty((H, W), np.uint8)
        _raster_shadows(mask, np.ascontiguousarray(np.concatenate(polys)), offsets)
        return (True, mask, float(params.shadow_darkness))

    def dali_fragment(self, img, inputs, ctx):
        fn, types = ctx.fn, ctx.types
        mask, dark = ctx.on_device(inputs["mask"]), ctx.on_device(inputs["dark"])
        factor = 1.0 - fn.cast(mask, dtype=types.FLOAT) * (1.0 - dark)
        return fn.cast(img * factor, dtype=types.UINT8)

    def reference(self, v, params, cfg):
        if float(params.shadow_darkness) == 1.0:
            return v
        mask = np.zeros(v.shape[:2], np.uint8)
        for poly in params.shadow_polygons or []:
            fill_polygon(mask, np.asarray(poly, np.float64).reshape(-1, 2), 1, 1.0)
        return np.where(mask[..., None] != 0, v * float(params.shadow_darkness), v)


OP = Shadow()
