"""Hue rotation, DALI's ``fn.hue``: rotate the chroma plane of YIQ.

``v' = YIQ2RGB @ R(hue) @ RGB2YIQ @ v``, clamped to [0, 255], with DALI's matrices
(``dali/operators/image/color/color_twist.h``: RGB2YIQ below, YIQ2RGB its exact inverse,
as DALI 2.4 computes it). ``R`` rotates (I, Q) by +hue: ``I' = cos I + sin Q``,
``Q' = -sin I + cos Q``, so the YIQ angle atan2(Q, I) decreases by ``hue_deg`` and the HSV
hue rises by about ``hue_deg``. DALI 2.4's CPU uint8 output equals
``clip(round(hue_matrix(h) @ rgb), 0, 255)`` bit for bit (tested). A sample with
``hue_deg == 0`` is left untouched (no clamp either).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from fastload.augment.ops.base import DaliInput, Op, lerp, value_range

RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])


def hue_matrix(hue_deg: float) -> np.ndarray:
    """float64 (3, 3) RGB -> RGB matrix of DALI's ``fn.hue(hue=hue_deg)`` (module docstring)."""
    th = math.radians(float(hue_deg))
    c, s = math.cos(th), math.sin(th)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    return np.linalg.inv(RGB2YIQ) @ rot @ RGB2YIQ


_IDENTITY = np.eye(3)


@njit(inline="always")
def pixel(r, g, b, i, j, on, hm):
    if on:
        r2 = hm[0, 0] * r + hm[0, 1] * g + hm[0, 2] * b
        g2 = hm[1, 0] * r + hm[1, 1] * g + hm[1, 2] * b
        b2 = hm[2, 0] * r + hm[2, 1] * g + hm[2, 2] * b
        r = min(max(r2, 0.0), 255.0)
        g = min(max(g2, 0.0), 255.0)
        b = min(max(b2, 0.0), 255.0)
    return r, g, b


class Hue(Op):
    name = "hue"
    order = 10
    legacy_uniforms = slice(6, 7)
    fields = (value_range("hue_deg", (-18.0, 18.0), "hue rotation range in degrees (DALI "
                          "fn.hue: YIQ rotation)", off=(0.0, 0.0), shorthand="symmetric"),)
    values = {"hue_deg": 0.0}
    kernel_args = ("on", "hm")
    pixel = pixel
    dali_inputs = (DaliInput("hue", "float32", 0, lambda p, cfg: np.float32(p.hue_deg)),)

    def draw(self, cfg, draws, frame):
        return {"hue_deg": lerp(cfg.hue_deg, draws.uniforms[0])}

    def kernel_values(self, params, cfg, scratch):
        hue = float(params.hue_deg)
        return (hue != 0.0, hue_matrix(hue) if hue != 0.0 else _IDENTITY)

    def dali_fragment(self, img, inputs, ctx):
        return ctx.fn.hue(img, hue=inputs["hue"])

    def reference(self, v, params, cfg):
        if float(params.hue_deg) == 0.0:
            return v
        return np.clip(v @ hue_matrix(params.hue_deg).T, 0, 255)


OP = Hue()
