"""Brightness and contrast, albumentations' RandomBrightnessContrast convention.

Per sample ``contrast`` and ``brightness`` are drawn uniformly from their ranges; every
value becomes ``v' = alpha * v + beta * 255`` with ``alpha = 1 + contrast`` and
``beta = brightness``, clamped to [0, 255]. Applied after hue, before shadow. A sample
with both draws 0 is left untouched. Off by default (both ranges (0, 0)).

DALI: ``fn.brightness_contrast(contrast=alpha, brightness_shift=beta, contrast_center=0)``,
which computes ``brightness_shift * 255 + contrast * v`` in float32 and rounds to uint8;
the fused kernel and the reference compute in float64, so DALI's uint8 output may differ
by 1 level on rounding ties.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from fastload.augment.ops.base import DaliInput, Op, lerp, value_range


@njit(inline="always")
def pixel(r, g, b, i, j, on, alpha, beta):
    if on:
        r = min(max(alpha * r + beta, 0.0), 255.0)
        g = min(max(alpha * g + beta, 0.0), 255.0)
        b = min(max(alpha * b + beta, 0.0), 255.0)
    return r, g, b


class BrightnessContrast(Op):
    name = "brightness_contrast"
    order = 20  # after hue (10), before shadow (30)
    fields = (
        value_range("brightness", (0.0, 0.0), "brightness shift range as a fraction of 255 "
                    "(beta)", off=(0.0, 0.0), shorthand="symmetric"),
        value_range("contrast", (0.0, 0.0), "contrast change range (alpha = 1 + contrast)",
                    off=(0.0, 0.0), shorthand="symmetric", minimum=-1.0),
    )
    values = {"brightness": 0.0, "contrast": 0.0}
    kernel_args = ("on", "alpha", "beta")
    pixel = pixel
    dali_inputs = (
        DaliInput("alpha", "float32", 0, lambda p, cfg: np.float32(1.0 + p.contrast)),
        DaliInput("beta", "float32", 0, lambda p, cfg: np.float32(p.brightness)),
    )

    def draw(self, cfg, draws, frame):
        u = draws.gen.random(2)
        return {"contrast": lerp(cfg.contrast, u[0]), "brightness": lerp(cfg.brightness, u[1])}

    def kernel_values(self, params, cfg, scratch):
        c, b = float(params.contrast), float(params.brightness)
        return (c != 0.0 or b != 0.0, 1.0 + c, b * 255.0)

    def dali_fragment(self, img, inputs, ctx):
        return ctx.fn.brightness_contrast(img, contrast=inputs["alpha"],
                                          brightness_shift=inputs["beta"], contrast_center=0.0)

    def reference(self, v, params, cfg):
        c, b = float(params.contrast), float(params.brightness)
        if c == 0.0 and b == 0.0:
            return v
        return np.clip((1.0 + c) * v + b * 255.0, 0, 255)


OP = BrightnessContrast()
