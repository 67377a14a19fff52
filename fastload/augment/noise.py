"""The counter-based gaussian noise generator, shared bit-for-bit by the fused CPU kernel
(Numba) and the reference (:func:`noise_normals`, NumPy).

``key = mix64(noise_seed)``; for output pixel ``p = i*W + j``, ``h = mix64(key + p * G)``
(``G = 0x9E3779B97F4A7C15``; ``mix64`` is the splitmix64 finalizer), so a pixel's noise
depends only on (seed, p), never on threads or the order of work. The three 21-bit fields
``h >> 43``, ``(h >> 22) & (2^21-1)``, ``(h >> 1) & (2^21-1)`` are channel 0, 1, 2's
uniforms ``u = (k + .5) / 2^21``, mapped to normals by the inverse normal CDF: linear
interpolation in a 4096-bin table of Acklam's rational approximation (relative error
< 1.2e-9) in the center, Acklam itself in the 16 outer bins per side (|z| > 2.66). Max
error about 2e-4 sigma; no trigonometry or logarithm on the common path; symmetric, so
the mean is exactly 0; tails reach +-5.0 sigma.
"""
from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit

__all__ = ["GOLDEN", "SHIFT0", "SHIFT1", "SHIFT2", "MASK21", "mix64", "normal21", "noise_key",
           "noise_normals", "icdf_table"]

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
# channel c's 21-bit field of h is (h >> SHIFTc) & MASK21 (SHIFT0 leaves exactly 21 bits)
SHIFT0 = np.uint64(43)
SHIFT1 = np.uint64(22)
SHIFT2 = np.uint64(1)
MASK21 = np.uint64((1 << 21) - 1)

_TABLE_BITS = 12
_TAIL_BINS = 16


@njit(nogil=True, cache=True, inline="always")
def mix64(z):
    """The splitmix64 finalizer on a uint64."""
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


@njit(nogil=True, cache=True, inline="always")
def normal21(k, table):
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


_TABLE = []
_TABLE_LOCK = threading.Lock()


def icdf_table() -> np.ndarray:
    """float64 (4097,): the inverse normal CDF at the knots k / 4096 (the end knots are
    never used); built once per process, on first use."""
    if not _TABLE:
        with _TABLE_LOCK:
            if not _TABLE:
                t = np.empty((1 << _TABLE_BITS) + 1, np.float64)
                _fill_table(t)
                t.flags.writeable = False
                _TABLE.append(t)
    return _TABLE[0]


def noise_key(noise_seed: int) -> np.uint64:
    """The per-image key: ``mix64(noise_seed)``."""
    with np.errstate(over="ignore"):
        z = np.uint64(int(noise_seed) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return z ^ (z >> _S31)


def noise_normals(noise_seed: int, height: int, width: int) -> np.ndarray:
    """The standard normals the kernel adds for ``noise_seed``: float64 (H, W, 3).

    Written in NumPy (uint64 wrap-around arithmetic) without Numba, so it checks the
    kernel's generator independently (the table is shared)."""
    table = icdf_table()
    key = noise_key(noise_seed)
    p = np.arange(height * width, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = key + p * GOLDEN
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        h = z ^ (z >> _S31)
    k = np.stack([h >> SHIFT0, (h >> SHIFT1) & MASK21, (h >> SHIFT2) & MASK21], -1).astype(np.int64)
    b = k >> 9
    tail = (b < _TAIL_BINS) | (b >= (1 << _TABLE_BITS) - _TAIL_BINS)
    bi = np.clip(b, 1, (1 << _TABLE_BITS) - 2)
    f = ((k & 511).astype(np.float64) + 0.5) / 512.0
    t0 = table[bi]
    interp = t0 + (table[bi + 1] - t0) * f
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
