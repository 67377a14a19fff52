"""Flip, rotation, scale and translation: the op that moves coordinates.

It composes the sample's one matrix (continuous pixel coordinates, DESIGN.md; a
horizontal flip is x' = W - x), applied by the pipeline's one warp to the image and by
``fastload.augment.geometry`` to the annotations. With output size (H, W) and
``c = (W/2, H/2)``, after the fit (``fastload.augment.params.fit_matrix``):

``M = T(c + t) @ R(theta) @ S(s) @ V @ H @ Fit``

- ``H`` = ``[[-1, 0, W], [0, 1, 0], [0, 0, 1]]`` when hflip, ``V`` =
  ``[[1, 0, 0], [0, -1, H], [0, 0, 1]]`` when vflip;
- ``S(s)``, ``R(theta)`` scale and rotate about ``c``; positive ``theta`` turns the picture
  counter-clockwise as seen on screen (y points down): ``x' = cx + cos*dx + sin*dy``,
  ``y' = cy - sin*dx + cos*dy``;
- ``t = (tx * W, ty * H)``, ``tx``, ``ty`` drawn independently from ``translate``.

In float64 with ``math`` functions; the sampler rounds to float32 once at the end.
"""
from __future__ import annotations

import math

import numpy as np

from fastload.augment.ops.base import Op, lerp, probability, value_range


class Affine(Op):
    name = "affine"
    order = 0
    moves_coordinates = True
    legacy_uniforms = slice(0, 6)  # hflip, vflip, rotation, scale, tx, ty
    fields = (
        probability("hflip_prob", 0.5, "horizontal flip probability (x' = W - x)", off=0.0),
        probability("vflip_prob", 0.0, "vertical flip probability (y' = H - y)", off=0.0),
        value_range("rotate_deg", (-15.0, 15.0), "rotation range in degrees about the output "
                    "center; positive = counter-clockwise on screen", off=(0.0, 0.0),
                    shorthand="symmetric"),
        value_range("scale", (0.8, 1.2), "extra zoom range about the output center; (1, 1) = "
                    "none", off=(1.0, 1.0), shorthand="around_one", positive=True),
        value_range("translate", (-0.1, 0.1), "shift range as a fraction of the output size, "
                    "x and y drawn independently", off=(0.0, 0.0), shorthand="symmetric"),
    )
    values = {"hflip": False, "vflip": False, "rotate_deg": 0.0, "scale": 1.0,
              "translate": (0.0, 0.0)}

    def draw(self, cfg, draws, frame):
        u = draws.uniforms
        return {"hflip": bool(u[0] < cfg.hflip_prob), "vflip": bool(u[1] < cfg.vflip_prob),
                "rotate_deg": lerp(cfg.rotate_deg, u[2]), "scale": lerp(cfg.scale, u[3]),
                "translate": (lerp(cfg.translate, u[4]), lerp(cfg.translate, u[5]))}

    def compose(self, m, params, frame):
        out_h, out_w = frame.out_h, frame.out_w
        if params["hflip"]:
            m = np.array([[-1.0, 0.0, out_w], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
        if params["vflip"]:
            m = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, out_h], [0.0, 0.0, 1.0]]) @ m
        cx, cy = out_w / 2.0, out_h / 2.0
        th = math.radians(params["rotate_deg"])
        scale = params["scale"]
        c, s = math.cos(th) * scale, math.sin(th) * scale
        tx, ty = params["translate"][0] * out_w, params["translate"][1] * out_h
        # T(c + t) @ [[c, s], [-s, c]] @ T(-c)
        a = np.array([[c, s, cx + tx - (c * cx + s * cy)],
                      [-s, c, cy + ty - (-s * cx + c * cy)],
                      [0.0, 0.0, 1.0]])
        return a @ m


OP = Affine()
