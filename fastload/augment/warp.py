"""The warp: the first stage of every image pipeline, one bilinear resampling by the
sample's matrix (which the ops that move coordinates composed).

Output pixel (row i, col j) of an ``(H, W)`` output samples the source at
``p = M^-1 @ (j + .5, i + .5, 1)`` (continuous coordinates, DESIGN.md: pixel (r, c)
covers [c, c+1) x [r, r+1)), bilinearly at index position ``(p.x - .5, p.y - .5)``; each
of the four taps that falls outside the source contributes ``pad_value``. That is what
DALI's ``warp_affine`` with a constant border (``fill_value``) does: checked against DALI
2.4 CPU to within 1 level.

:func:`bilinear_rgb` is the fused kernel's piece (Numba, inlined); :func:`warp_reference`
the slow, obvious NumPy version.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, inline="always")
def bilinear_rgb(img, h, w, sx, sy, pad):
    """The (r, g, b) float64 sample of uint8 HWC ``img`` (``h`` x ``w``) at index position
    (``sx``, ``sy``); taps outside the image read ``pad``."""
    fx0 = math.floor(sx)
    fy0 = math.floor(sy)
    fx = sx - fx0
    fy = sy - fy0
    x0 = int(fx0)
    y0 = int(fy0)
    if x0 >= 0 and y0 >= 0 and x0 + 1 < w and y0 + 1 < h:
        w00 = (1.0 - fx) * (1.0 - fy)
        w01 = fx * (1.0 - fy)
        w10 = (1.0 - fx) * fy
        w11 = fx * fy
        r = (w00 * img[y0, x0, 0] + w01 * img[y0, x0 + 1, 0]
             + w10 * img[y0 + 1, x0, 0] + w11 * img[y0 + 1, x0 + 1, 0])
        g = (w00 * img[y0, x0, 1] + w01 * img[y0, x0 + 1, 1]
             + w10 * img[y0 + 1, x0, 1] + w11 * img[y0 + 1, x0 + 1, 1])
        b = (w00 * img[y0, x0, 2] + w01 * img[y0, x0 + 1, 2]
             + w10 * img[y0 + 1, x0, 2] + w11 * img[y0 + 1, x0 + 1, 2])
    elif x0 < -1 or y0 < -1 or x0 >= w or y0 >= h:
        r = pad
        g = pad
        b = pad
    else:
        r = 0.0
        g = 0.0
        b = 0.0
        for dy in range(2):
            yy = y0 + dy
            wy = fy if dy == 1 else 1.0 - fy
            for dx in range(2):
                xx = x0 + dx
                wt = wy * (fx if dx == 1 else 1.0 - fx)
                if 0 <= xx < w and 0 <= yy < h:
                    r += wt * img[yy, xx, 0]
                    g += wt * img[yy, xx, 1]
                    b += wt * img[yy, xx, 2]
                else:
                    r += wt * pad
                    g += wt * pad
                    b += wt * pad
    return r, g, b


def inverse_2x3(matrix, name="params.matrix") -> np.ndarray:
    """float64 (2, 3): the output -> source part of the inverse of a (3, 3) matrix."""
    m = np.asarray(matrix, np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise ValueError(f"{name}: expected a finite (3, 3) matrix, got shape {m.shape}")
    if abs(np.linalg.det(m[:2, :2])) < 1e-12:
        raise ValueError(f"{name}: matrix is singular")
    return np.ascontiguousarray(np.linalg.inv(m)[:2])


def warp_reference(img: np.ndarray, matrix, out_size, pad_value: float) -> np.ndarray:
    """float64 (H, W, 3): ``img`` (HWC, any real dtype) warped by explicit inverse mapping
    and a bilinear gather (module docstring)."""
    img = np.asarray(img, np.float64)
    h, w = img.shape[:2]
    H, W = out_size
    pad = float(pad_value)
    minv = np.linalg.inv(np.asarray(matrix, np.float64))
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
    src = np.stack([jj + 0.5, ii + 0.5, np.ones_like(jj)], -1) @ minv.T
    x = src[..., 0] - 0.5
    y = src[..., 1] - 0.5
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]

    def tap(yy, xx):
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        v = img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
        return np.where(inside[..., None], v, pad)

    return (tap(y0, x0) * (1 - fx) * (1 - fy) + tap(y0, x0 + 1) * fx * (1 - fy)
            + tap(y0 + 1, x0) * (1 - fx) * fy + tap(y0 + 1, x0 + 1) * fx * fy)
