"""Gaussian noise: ``v += noise_sigma * z``, ``z`` standard normal per pixel and channel.

``z`` comes from the counter-based generator of ``fastload.augment.noise`` keyed by
(``noise_seed``, ``i*W + j``, channel) on every backend, so a sample's noise depends on
nothing else (threads, batches, workers, resume, backend):

- fused CPU kernel and reference: added in float64 to the unrounded pixel;
- DALI: the batch's field ``noise_sigma * z`` (float32, (B, H, W, 3)) is made where the
  graph runs (:func:`fastload.augment.noise.noise_field`: Numba on the CPU, torch on the
  GPU, bit-identical) and fed as the external input ``noise_field``; the fragment is
  ``cast(img + field, uint8)`` (round to nearest, saturate) on the uint8 image. The image
  it is added to was rounded to uint8 after the warp and each earlier op, so DALI's output
  is within 2 levels of the CPU kernel's (tested).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from fastload.augment.noise import (GOLDEN, MASK21, SHIFT0, SHIFT1, SHIFT2, icdf_table, mix64,
                                    noise_field, noise_key, noise_normals, normal21)
from fastload.augment.ops.base import DaliInput, Op, lerp, value_range

_U64 = 1 << 64


@njit(inline="always")
def pixel(r, g, b, i, j, on, sigma, key, table, width):
    if on:
        h = mix64(key + np.uint64(i * width + j) * GOLDEN)
        r += sigma * normal21(np.int64(h >> SHIFT0), table)
        g += sigma * normal21(np.int64((h >> SHIFT1) & MASK21), table)
        b += sigma * normal21(np.int64((h >> SHIFT2) & MASK21), table)
    return r, g, b


class Noise(Op):
    name = "noise"
    order = 40
    legacy_uniforms = slice(7, 8)  # sigma; then noise_seed, after the whole block
    fields = (value_range("noise_sigma", (0.0, 8.0), "gaussian noise standard deviation "
                          "range, in 0..255 intensity units", off=(0.0, 0.0), minimum=0.0),)
    values = {"noise_sigma": 0.0, "noise_seed": 0}
    kernel_args = ("on", "sigma", "key", "table", "width")
    pixel = pixel
    dali_inputs = (DaliInput("field", "float32", 3, None, layout="HWC",
                             batch_feed=lambda ps, cfg, device: noise_field(
                                 [p.noise_seed for p in ps], [p.noise_sigma for p in ps],
                                 *cfg.out_size, device=device)),)

    def draw(self, cfg, draws, frame):
        seed = int(draws.gen.integers(0, _U64, dtype=np.uint64, endpoint=False))
        return {"noise_sigma": lerp(cfg.noise_sigma, draws.uniforms[0]), "noise_seed": seed}

    def needed(self, params):
        return float(params.noise_sigma) != 0.0

    def kernel_values(self, params, cfg, scratch):
        sigma = float(params.noise_sigma)
        if not sigma >= 0.0:
            raise ValueError(f"noise_sigma must be >= 0, got {sigma}")
        return (sigma > 0.0, sigma, noise_key(params.noise_seed), icdf_table(),
                int(cfg.out_size[1]))

    def dali_fragment(self, img, inputs, ctx):
        return ctx.fn.cast(img + inputs["field"], dtype=ctx.types.UINT8)

    def reference(self, v, params, cfg):
        sigma = float(params.noise_sigma)
        if not sigma > 0:
            return v
        return v + sigma * noise_normals(params.noise_seed, v.shape[0], v.shape[1])


OP = Noise()
