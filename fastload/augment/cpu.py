"""Fast CPU augmentation backend: one fused Numba kernel per image.

Semantics (BRIEF.md "Fixed cross-part definitions", identical to the DALI pipeline), in
this order, for every output pixel (row i, col j) of an ``(H, W)`` output:

1. warp: the source point ``p = M^-1 @ (j + .5, i + .5, 1)`` (continuous coordinates,
   DESIGN.md: pixel (r, c) covers [c, c+1) x [r, r+1)) is sampled bilinearly at index
   position ``(p.x - .5, p.y - .5)``; each of the four taps that falls outside the source
   contributes ``cfg.pad_value`` (that is what DALI's ``warp_affine`` with a constant
   border / ``fill_value`` does: checked against DALI 2.4 CPU to within 1 level).
2. hue: ``v' = YIQ2RGB @ R(hue) @ RGB2YIQ @ v``, clamped to [0, 255], with DALI's
   matrices (``fn.hue``: RGB2YIQ = [[.299,.587,.114],[.596,-.274,-.321],[.211,-.523,.311]],
   YIQ2RGB its exact inverse, R rotating (I, Q) by +hue: I' = cos I + sin Q,
   Q' = -sin I + cos Q). Checked against DALI 2.4's CPU ``fn.hue``: bit-identical after
   rounding on uint8.
3. shadow: pixels whose center is inside any shadow polygon (even-odd per polygon,
   union over polygons; ``fastload.targets.raster.fill_polygon`` rule) are multiplied by
   ``shadow_darkness``.
4. noise: ``v += noise_sigma * z`` with ``z`` a standard normal from the counter-based
   generator :func:`noise_normals` keyed by ``(noise_seed, i*W + j, channel)``; clamp to
   [0, 255] (always, also without noise).
5. normalize: ``(v - mean) / std`` per RGB channel, written CHW into the output slice in
   the output dtype (float32, float16 with round-to-nearest-even; uint8: no normalize,
   rounded). bfloat16 is not a NumPy dtype: the kernel writes float32 and the loader
   converts with torch (``.to(torch.bfloat16)``).

Noise generator (shared bit-for-bit by the kernel and the reference):
``key = mix64(noise_seed)``; for output pixel ``p = i*W + j``, ``h = mix64(key + p * G)``
(``G = 0x9E3779B97F4A7C15``; ``mix64`` is the splitmix64 finalizer), so a pixel's noise
depends only on (seed, p), never on threads or the order of work. The three 21-bit fields
``h >> 43``, ``(h >> 22) & (2^21-1)``, ``(h >> 1) & (2^21-1)`` are channel 0, 1, 2's
uniforms ``u = (k + .5) / 2^21``, mapped to normals by the inverse normal CDF: linear
interpolation in a 4096-bin table of Acklam's rational approximation (relative error
< 1.2e-9) in the center, Acklam itself in the 16 outer bins per side (|z| > 2.66). Max
error about 2e-4 sigma; no trigonometry or logarithm on the common path; symmetric, so
the mean is exactly 0; tails reach +-5.0 sigma.

Public API: :class:`CpuAugmenter` (batches on a thread pool; kernels release the GIL),
:func:`augment_image` (one image into a preallocated ``(3, H, W)`` slice) and
:func:`augment_image_reference` (slow, obvious NumPy passes, for the tests).
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np
from numba import njit

from fastload.augment.config import AugmentConfig
from fastload.augment.decode import decode_image
from fastload.targets.raster import fill_polygon
from fastload.augment.params import hue_matrix  # DALI fn.hue as a 3x3 RGB matrix (one definition)

__all__ = ["CpuAugmenter", "augment_image", "augment_image_reference", "hue_matrix",
           "noise_normals", "output_dtype", "RGB2YIQ", "YIQ2RGB"]

RGB2YIQ = np.array([[.299, .587, .114],
                    [.596, -.274, -.321],
                    [.211, -.523, .311]], np.float64)
YIQ2RGB = np.linalg.inv(RGB2YIQ)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S43 = np.uint64(43)
_S22 = np.uint64(22)
_S1 = np.uint64(1)
_MASK21 = np.uint64((1 << 21) - 1)

_OUT_F32, _OUT_F16, _OUT_U8 = 0, 1, 2


def output_dtype(cfg_dtype: str) -> np.dtype:
    """NumPy dtype the CPU backend writes for ``cfg.dtype`` (bfloat16 -> float32, see module doc)."""
    return {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
            "bfloat16": np.dtype(np.float32), "uint8": np.dtype(np.uint8)}[cfg_dtype]


# ------------------------------------------------------------------ noise generator
@njit(nogil=True, cache=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(nogil=True, cache=True, inline="always")
def _inv_norm_cdf(p):
    """Acklam's inverse standard normal CDF, p in (0, 1)."""
    if p < 0.02425:
        q = math.sqrt(-2.0 * math.log(p))
        return ((((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q
                    - 2.400758277161838e+00) * q - 2.549732539343734e+00) * q
                  + 4.374664141464968e+00) * q + 2.938163982698783e+00)
                / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q
                     + 2.445134137142996e+00) * q + 3.754408661907416e+00) * q + 1.0))
    if p > 0.97575:
        q = math.sqrt(-2.0 * math.log(1.0 - p))
        return -((((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q
                     - 2.400758277161838e+00) * q - 2.549732539343734e+00) * q
                   + 4.374664141464968e+00) * q + 2.938163982698783e+00)
                 / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q
                      + 2.445134137142996e+00) * q + 3.754408661907416e+00) * q + 1.0))
    q = p - 0.5
    r = q * q
    return ((((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r
                - 2.759285104469687e+02) * r + 1.383577518672690e+02) * r
              - 3.066479806614716e+01) * r + 2.506628277459239e+00) * q
            / (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r
                  - 1.556989798598866e+02) * r + 6.680131188771972e+01) * r
                - 1.328068155288572e+01) * r + 1.0))


# Inverse CDF at the knots k / 4096 (k = 0..4096; the end knots are never used).
_TABLE_BITS = 12
_ICDF_TABLE = np.empty((1 << _TABLE_BITS) + 1, np.float64)
_TAIL_BINS = 16


@njit(nogil=True, cache=True, inline="always")
def _normal21(k, table):
    """Standard normal for the 21-bit integer ``k``: inverse CDF at u = (k + .5) / 2^21,
    linear interpolation in a 4096-bin table, exact (Acklam) in the 16 outer bins per side
    (|z| > 2.66, where interpolation would be coarse). Max error ~2e-4 sigma."""
    b = k >> 9
    if b < 16 or b >= 4080:
        return _inv_norm_cdf((float(k) + 0.5) * 4.76837158203125e-07)
    f = (float(k & 511) + 0.5) * 0.001953125
    t0 = table[b]
    return t0 + (table[b + 1] - t0) * f


@njit(nogil=True, cache=True)
def _fill_table(table):
    n = table.shape[0] - 1
    for k in range(1, n):
        table[k] = _inv_norm_cdf(k / n)
    table[0] = -np.inf
    table[n] = np.inf


_fill_table(_ICDF_TABLE)


def _noise_key(noise_seed: int) -> np.uint64:
    with np.errstate(over="ignore"):
        z = np.uint64(int(noise_seed) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return z ^ (z >> _S31)


def noise_normals(noise_seed: int, height: int, width: int) -> np.ndarray:
    """The standard normals the kernel adds for ``noise_seed``: float64 (H, W, 3).

    Written in NumPy (uint64 wrap-around arithmetic) without Numba, so it checks the
    kernel's generator independently."""
    key = _noise_key(noise_seed)
    p = np.arange(height * width, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = key + p * _GOLDEN
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        h = z ^ (z >> _S31)
    k = np.stack([h >> _S43, (h >> _S22) & _MASK21, (h >> _S1) & _MASK21], -1).astype(np.int64)
    b = k >> 9
    tail = (b < _TAIL_BINS) | (b >= (1 << _TABLE_BITS) - _TAIL_BINS)
    bi = np.clip(b, 1, (1 << _TABLE_BITS) - 2)
    f = ((k & 511).astype(np.float64) + 0.5) / 512.0
    t0 = _ICDF_TABLE[bi]
    interp = t0 + (_ICDF_TABLE[bi + 1] - t0) * f
    exact = _inv_norm_cdf_np((k.astype(np.float64) + 0.5) / float(1 << 21))
    return np.where(tail, exact, interp).reshape(height, width, 3)


def _inv_norm_cdf_np(p):
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
         1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
         6.680131188771972e+01, -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
         -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
         3.754408661907416e+00)

    def tail(pp):
        q = np.sqrt(-2.0 * np.log(pp))
        return ((((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5])
                / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0))

    q = p - 0.5
    r = q * q
    mid = ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
           / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = tail(np.where(p < 0.02425, p, 0.5))
        hi = -tail(np.where(p > 0.97575, 1.0 - p, 0.5))
    return np.where(p < 0.02425, lo, np.where(p > 0.97575, hi, mid))


# ------------------------------------------------------------------ float16 bits
@njit(nogil=True, cache=True, inline="always")
def _f32bits_to_f16bits(f, v):
    """IEEE float32 bits ``f`` (uint32 as int64) of value ``v`` -> float16 bits, round to
    nearest even (same as NumPy's float32 -> float16 cast)."""
    sign = (f >> 16) & 0x8000
    fe = f & 0x7F800000
    if fe >= 0x47800000:
        if (f & 0x7FFFFFFF) > 0x7F800000:
            return sign | 0x7E00
        return sign | 0x7C00
    if fe < 0x38800000:  # half subnormal or zero: exact float64 arithmetic, half-even
        x = abs(v) * 16777216.0  # 2^24
        r = math.floor(x)
        d = x - r
        if d > 0.5 or (d == 0.5 and (int(r) & 1) == 1):
            r += 1.0
        return sign | int(r)
    fm = f & 0x007FFFFF
    if (fm & 0x3FFF) != 0x1000:
        fm += 0x1000
    return sign + ((fe - 0x38000000) >> 13) + (fm >> 13)


# ------------------------------------------------------------------ the fused kernel
@njit(nogil=True, cache=True)
def _augment_kernel(img, minv, pad, do_hue, hm, mask, do_shadow, darkness,
                    sigma, key, table, scale, offset, kind, out, f32buf):
    """img (h,w,3) uint8; minv (2,3) float64 output->source; hm (3,3) float64;
    mask (H,W) uint8; scale/offset (3,) float32; out (3,H,W) float32/uint16(f16 bits)/uint8;
    f32buf (1,) float32 scratch for float16 bit conversion."""
    h = img.shape[0]
    w = img.shape[1]
    H = out.shape[1]
    W = out.shape[2]
    a00 = minv[0, 0]
    a01 = minv[0, 1]
    a02 = minv[0, 2]
    a10 = minv[1, 0]
    a11 = minv[1, 1]
    a12 = minv[1, 2]
    do_noise = sigma > 0.0
    f32bits = f32buf.view(np.uint32)
    s0 = scale[0]
    s1 = scale[1]
    s2 = scale[2]
    o0 = offset[0]
    o1 = offset[1]
    o2 = offset[2]
    for i in range(H):
        yc = i + 0.5
        # source index-space position of pixel (i, 0): M^-1 (0.5, yc) - 0.5
        bx = a00 * 0.5 + a01 * yc + a02 - 0.5
        by = a10 * 0.5 + a11 * yc + a12 - 0.5
        for j in range(W):
            sx = bx + a00 * j
            sy = by + a10 * j
            # ---- 1. warp: bilinear, constant border per tap
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
            # ---- 2. hue (DALI fn.hue), clamp like DALI's uint8 output
            if do_hue:
                r2 = hm[0, 0] * r + hm[0, 1] * g + hm[0, 2] * b
                g2 = hm[1, 0] * r + hm[1, 1] * g + hm[1, 2] * b
                b2 = hm[2, 0] * r + hm[2, 1] * g + hm[2, 2] * b
                r = min(max(r2, 0.0), 255.0)
                g = min(max(g2, 0.0), 255.0)
                b = min(max(b2, 0.0), 255.0)
            # ---- 3. shadow
            if do_shadow and mask[i, j] != 0:
                r *= darkness
                g *= darkness
                b *= darkness
            # ---- 4. noise
            if do_noise:
                hh = _mix64(key + np.uint64(i * W + j) * _GOLDEN)
                r += sigma * _normal21(np.int64(hh >> _S43), table)
                g += sigma * _normal21(np.int64((hh >> _S22) & _MASK21), table)
                b += sigma * _normal21(np.int64((hh >> _S1) & _MASK21), table)
            r = min(max(r, 0.0), 255.0)
            g = min(max(g, 0.0), 255.0)
            b = min(max(b, 0.0), 255.0)
            # ---- 5. normalize + store
            if kind == 2:
                out[0, i, j] = int(r + 0.5)
                out[1, i, j] = int(g + 0.5)
                out[2, i, j] = int(b + 0.5)
            elif kind == 0:
                out[0, i, j] = np.float32(r) * s0 + o0
                out[1, i, j] = np.float32(g) * s1 + o1
                out[2, i, j] = np.float32(b) * s2 + o2
            else:
                v = np.float32(r) * s0 + o0
                f32buf[0] = v
                out[0, i, j] = _f32bits_to_f16bits(np.int64(f32bits[0]), float(v))
                v = np.float32(g) * s1 + o1
                f32buf[0] = v
                out[1, i, j] = _f32bits_to_f16bits(np.int64(f32bits[0]), float(v))
                v = np.float32(b) * s2 + o2
                f32buf[0] = v
                out[2, i, j] = _f32bits_to_f16bits(np.int64(f32bits[0]), float(v))


@njit(nogil=True, cache=True)
def _f16_convert(vals, out_bits, f32buf):
    """Test hook: float32 values -> float16 bits with the kernel's converter."""
    f32bits = f32buf.view(np.uint32)
    for k in range(vals.shape[0]):
        f32buf[0] = vals[k]
        out_bits[k] = _f32bits_to_f16bits(np.int64(f32bits[0]), float(vals[k]))


@njit(nogil=True, cache=True)
def _raster_shadows(mask, points, offsets):
    mask[:, :] = 0
    for k in range(offsets.shape[0] - 1):
        fill_polygon(mask, points[offsets[k]:offsets[k + 1]], 1, 1.0)


# ------------------------------------------------------------------ per-image driver
def _check_image(image, name="image"):
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name}: expected an HWC uint8 RGB array, got {desc}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: empty image {image.shape}")
    return np.ascontiguousarray(image)


def _inverse_2x3(matrix, name="params.matrix") -> np.ndarray:
    m = np.asarray(matrix, np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise ValueError(f"{name}: expected a finite (3, 3) matrix, got shape {m.shape}")
    if abs(np.linalg.det(m[:2, :2])) < 1e-12:
        raise ValueError(f"{name}: matrix is singular")
    return np.ascontiguousarray(np.linalg.inv(m)[:2])


def _norm_consts(cfg):
    std = np.asarray(cfg.std, np.float64)
    mean = np.asarray(cfg.mean, np.float64)
    return (1.0 / std).astype(np.float32), (-mean / std).astype(np.float32)


def _shadow_flat(params):
    polys = [np.asarray(p, np.float64).reshape(-1, 2) for p in (params.shadow_polygons or [])]
    polys = [p for p in polys if len(p) >= 3]
    if not polys or float(params.shadow_darkness) == 1.0:
        return None, None
    offsets = np.zeros(len(polys) + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in polys])
    return np.ascontiguousarray(np.concatenate(polys)), offsets


_EMPTY_MASK = np.zeros((1, 1), np.uint8)


def augment_image(image_hwc_uint8: np.ndarray, params, cfg: AugmentConfig,
                  out_chw: np.ndarray, mask_buffer: Optional[np.ndarray] = None,
                  name: str = "image") -> np.ndarray:
    """Augment one HWC uint8 RGB image into the preallocated ``out_chw`` (3, H, W).

    ``params``: a SampleParams (matrix maps source pixel coords to output pixel coords,
    continuous convention of DESIGN.md). ``out_chw`` must be C-contiguous with
    ``(H, W) == cfg.out_size`` and dtype :func:`output_dtype` (cfg.dtype).
    ``mask_buffer``: optional reusable uint8 (H, W) scratch for the shadow mask.
    Releases the GIL for the whole kernel. Returns ``out_chw``.
    """
    img = _check_image(image_hwc_uint8, name)
    H, W = cfg.out_size
    want = output_dtype(cfg.dtype)
    if not isinstance(out_chw, np.ndarray) or out_chw.shape != (3, H, W) \
            or out_chw.dtype != want or not out_chw.flags.c_contiguous:
        raise ValueError(f"out_chw: expected a C-contiguous (3, {H}, {W}) {want} array, got "
                         f"{getattr(out_chw, 'dtype', type(out_chw))} {getattr(out_chw, 'shape', '')}")
    minv = _inverse_2x3(params.matrix, f"{name}: params.matrix")
    hue = float(params.hue_deg)
    do_hue = hue != 0.0
    hm = hue_matrix(hue) if do_hue else np.eye(3)
    pts, offs = _shadow_flat(params)
    if pts is not None:
        if mask_buffer is None or mask_buffer.shape != (H, W):
            mask_buffer = np.empty((H, W), np.uint8)
        _raster_shadows(mask_buffer, pts, offs)
        mask, do_shadow = mask_buffer, True
    else:
        mask, do_shadow = _EMPTY_MASK, False
    sigma = float(params.noise_sigma)
    if not sigma >= 0.0:
        raise ValueError(f"{name}: noise_sigma must be >= 0, got {sigma}")
    scale, offset = _norm_consts(cfg)
    if want == np.float16:
        kind, dst = _OUT_F16, out_chw.view(np.uint16)
    elif want == np.uint8:
        kind, dst = _OUT_U8, out_chw
    else:
        kind, dst = _OUT_F32, out_chw
    _augment_kernel(img, minv, float(cfg.pad_value), do_hue, hm, mask, do_shadow,
                    float(params.shadow_darkness), sigma, _noise_key(params.noise_seed),
                    _ICDF_TABLE, scale, offset, kind, dst, np.zeros(1, np.float32))
    return out_chw


# ------------------------------------------------------------------ reference
def augment_image_reference(image: np.ndarray, params, cfg: AugmentConfig) -> np.ndarray:
    """Slow, obvious NumPy version of :func:`augment_image`: separate passes in float64.

    Returns a (3, H, W) array in :func:`output_dtype` (cfg.dtype)."""
    img = _check_image(image).astype(np.float64)
    h, w = img.shape[:2]
    H, W = cfg.out_size
    pad = float(cfg.pad_value)
    # 1. warp by explicit inverse mapping
    minv = np.linalg.inv(np.asarray(params.matrix, np.float64))
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

    v = (tap(y0, x0) * (1 - fx) * (1 - fy) + tap(y0, x0 + 1) * fx * (1 - fy)
         + tap(y0 + 1, x0) * (1 - fx) * fy + tap(y0 + 1, x0 + 1) * fx * fy)
    # 2. hue
    if float(params.hue_deg) != 0.0:
        v = np.clip(v @ hue_matrix(params.hue_deg).T, 0, 255)
    # 3. shadow
    mask = np.zeros((H, W), np.uint8)
    for poly in params.shadow_polygons or []:
        fill_polygon(mask, np.asarray(poly, np.float64).reshape(-1, 2), 1, 1.0)
    if float(params.shadow_darkness) != 1.0:
        v = np.where(mask[..., None] != 0, v * float(params.shadow_darkness), v)
    # 4. noise
    if float(params.noise_sigma) > 0:
        v = v + float(params.noise_sigma) * noise_normals(params.noise_seed, H, W)
    v = np.clip(v, 0, 255)
    # 5. normalize
    chw = v.transpose(2, 0, 1)
    dt = output_dtype(cfg.dtype)
    if dt == np.uint8:
        return np.floor(chw + 0.5).astype(np.uint8)
    mean = np.asarray(cfg.mean, np.float64)[:, None, None]
    std = np.asarray(cfg.std, np.float64)[:, None, None]
    return ((chw - mean) / std).astype(np.float32).astype(dt)


# ------------------------------------------------------------------ batch driver
class CpuAugmenter:
    """Decode + augment batches on a thread pool (the kernels and decoders release the GIL).

    ``run(images_or_encoded, params_list, out=None)``: each item is either an HWC uint8
    RGB array or encoded bytes (JPEG/PNG/...); ``params_list[b]`` is that sample's
    SampleParams. Writes into ``out`` (B, 3, H, W) of :func:`output_dtype` (cfg.dtype)
    if given, else allocates it; returns it (NumPy: wrap with ``torch.from_numpy``;
    for bfloat16 convert the float32 result with torch). Outputs do not depend on the
    number of threads.
    """

    def __init__(self, cfg: AugmentConfig, num_threads: Optional[int] = None):
        self.cfg = cfg
        self.num_threads = int(num_threads or os.cpu_count() or 1)
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.dtype = output_dtype(cfg.dtype)
        self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="fastload-cpu") \
            if self.num_threads > 1 else None
        self._local = threading.local()

    def _mask(self):
        H, W = self.cfg.out_size
        m = getattr(self._local, "mask", None)
        if m is None or m.shape != (H, W):
            m = self._local.mask = np.empty((H, W), np.uint8)
        return m

    def _one(self, item, params, out_b, b, names):
        name = names[b] if names is not None else f"sample {b}"
        img = item if isinstance(item, np.ndarray) and item.ndim == 3 else decode_image(item, name)
        augment_image(img, params, self.cfg, out_b, self._mask(), name=name)

    def run(self, images_or_encoded: Sequence, params_list: Sequence, out: Optional[np.ndarray] = None,
            names: Optional[Sequence[str]] = None) -> np.ndarray:
        B = len(images_or_encoded)
        if len(params_list) != B:
            raise ValueError(f"got {B} images but {len(params_list)} params")
        H, W = self.cfg.out_size
        if out is None:
            out = np.empty((B, 3, H, W), self.dtype)
        elif out.shape != (B, 3, H, W) or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out: expected a C-contiguous ({B}, 3, {H}, {W}) {self.dtype} array, "
                             f"got {out.dtype} {out.shape}")
        if self._pool is None or B == 1:
            for b in range(B):
                self._one(images_or_encoded[b], params_list[b], out[b], b, names)
        else:
            futs = [self._pool.submit(self._one, images_or_encoded[b], params_list[b], out[b], b, names)
                    for b in range(B)]
            for f in futs:
                f.result()
        return out

    def run_torch(self, images_or_encoded: Sequence, params_list: Sequence,
                  out: Optional[np.ndarray] = None, names: Optional[Sequence[str]] = None):
        """:meth:`run` wrapped as a CPU torch tensor of ``cfg.dtype`` (zero-copy except
        bfloat16, which is converted from the float32 result), like ``DaliAugmenter.run``."""
        import torch
        t = torch.from_numpy(self.run(images_or_encoded, params_list, out, names))
        return t.to(torch.bfloat16) if self.cfg.dtype == "bfloat16" else t

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # pragma: no cover
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
        except Exception:
            pass
