"""The last stage of every image pipeline: clamp to [0, 255], normalize, store CHW.

``(v - mean) / std`` per RGB channel, written as ``v * (1/std) + (-mean/std)`` in float32
into the output slice in the output dtype (``fastload.dtypes.output_numpy_dtype``):
float32; float16 with round-to-nearest-even (an in-kernel float32 -> float16 bit
conversion into a uint16 view, because Numba has no float16; equal to NumPy's cast);
uint8: no normalize, rounded (``floor(v + .5)``). bfloat16 is not a NumPy dtype: the
kernel writes float32 and torch converts (``.to(torch.bfloat16)``).

:data:`STORES` holds the fused kernel's piece for each output kind (Numba functions
:func:`store_float32`, :func:`store_float16`, :func:`store_uint8`, pasted into the kernel);
:func:`output_reference` is the NumPy version. One store per kind, not one function that
branches on the kind: a kernel holds only the path its dtype takes (the float16 conversion
and the branches on the kind made a float32 kernel a third slower to compile and to run).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from fastload.dtypes import output_numpy_dtype

OUT_F32, OUT_F16, OUT_U8 = 0, 1, 2


@njit(nogil=True, cache=True, inline="always")
def f32bits_to_f16bits(f, v):
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


@njit(nogil=True, cache=True, inline="always")
def store_float32(out, i, j, r, g, b, s0, s1, s2, o0, o1, o2):
    """Clamp (r, g, b) to [0, 255], normalize, write pixel (i, j) of float32 CHW ``out``."""
    r = min(max(r, 0.0), 255.0)
    g = min(max(g, 0.0), 255.0)
    b = min(max(b, 0.0), 255.0)
    out[0, i, j] = np.float32(r) * s0 + o0
    out[1, i, j] = np.float32(g) * s1 + o1
    out[2, i, j] = np.float32(b) * s2 + o2


@njit(nogil=True, cache=True, inline="always")
def store_float16(out, i, j, r, g, b, s0, s1, s2, o0, o1, o2, f32buf, f32bits):
    """Clamp, normalize in float32, write pixel (i, j) as float16 bits into the uint16 view
    ``out``; ``f32buf`` is a (1,) float32 scratch and ``f32bits`` its uint32 view."""
    r = min(max(r, 0.0), 255.0)
    g = min(max(g, 0.0), 255.0)
    b = min(max(b, 0.0), 255.0)
    v = np.float32(r) * s0 + o0
    f32buf[0] = v
    out[0, i, j] = f32bits_to_f16bits(np.int64(f32bits[0]), float(v))
    v = np.float32(g) * s1 + o1
    f32buf[0] = v
    out[1, i, j] = f32bits_to_f16bits(np.int64(f32bits[0]), float(v))
    v = np.float32(b) * s2 + o2
    f32buf[0] = v
    out[2, i, j] = f32bits_to_f16bits(np.int64(f32bits[0]), float(v))


@njit(nogil=True, cache=True, inline="always")
def store_uint8(out, i, j, r, g, b):
    """Clamp (r, g, b) to [0, 255] and write pixel (i, j) of uint8 CHW ``out``, rounded."""
    r = min(max(r, 0.0), 255.0)
    g = min(max(g, 0.0), 255.0)
    b = min(max(b, 0.0), 255.0)
    out[0, i, j] = int(r + 0.5)
    out[1, i, j] = int(g + 0.5)
    out[2, i, j] = int(b + 0.5)


#: output kind -> (the store function, the fused kernel's variables it takes)
STORES = {
    OUT_F32: (store_float32, ("out", "i", "j", "r", "g", "b", "s0", "s1", "s2", "o0", "o1", "o2")),
    OUT_F16: (store_float16, ("out", "i", "j", "r", "g", "b", "s0", "s1", "s2", "o0", "o1", "o2",
                              "f32buf", "f32bits")),
    OUT_U8: (store_uint8, ("out", "i", "j", "r", "g", "b")),
}


def norm_consts(cfg):
    """float32 (3,) scale ``1/std`` and offset ``-mean/std``."""
    std = np.asarray(cfg.std, np.float64)
    mean = np.asarray(cfg.mean, np.float64)
    return (1.0 / std).astype(np.float32), (-mean / std).astype(np.float32)


def output_target(out_chw: np.ndarray, cfg):
    """(kind, array the kernel writes) for a preallocated output of ``cfg.dtype``."""
    want = output_numpy_dtype(cfg.dtype)
    if want == np.float16:
        return OUT_F16, out_chw.view(np.uint16)
    if want == np.uint8:
        return OUT_U8, out_chw
    return OUT_F32, out_chw


def output_reference(v: np.ndarray, cfg) -> np.ndarray:
    """float64 (H, W, 3) in 0..255 (any range: clamped here) -> (3, H, W) of
    ``output_numpy_dtype(cfg.dtype)``, normalized in float64 (uint8: rounded)."""
    chw = np.clip(v, 0, 255).transpose(2, 0, 1)
    dt = output_numpy_dtype(cfg.dtype)
    if dt == np.uint8:
        return np.floor(chw + 0.5).astype(np.uint8)
    mean = np.asarray(cfg.mean, np.float64)[:, None, None]
    std = np.asarray(cfg.std, np.float64)[:, None, None]
    return ((chw - mean) / std).astype(np.float32).astype(dt)
