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

Whole noise fields for the DALI graph (``(B, H, W, 3)`` float32, ``sigma * z`` per sample,
fed to it as an external input, see ``fastload.augment.ops.noise``), from the same hash and
the same transform:

- :func:`noise_field_numba`: on the CPU, the kernel's own ``mix64`` and ``normal21``
  (multithreaded over samples by the caller if wanted; releases the GIL);
- :func:`noise_field_torch`: on any torch device (the GPU path), uint64 arithmetic as int64
  (wrap-around multiply, masked logical shifts), the same interpolation table, and the
  exact tails as a table computed by the NumPy reference: bit-identical to
  :func:`noise_normals` (tested on the CPU; no transcendental function runs on the device).
"""
from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit

__all__ = ["GOLDEN", "SHIFT0", "SHIFT1", "SHIFT2", "MASK21", "mix64", "normal21", "noise_key",
           "noise_normals", "icdf_table", "noise_field", "noise_field_numba", "noise_field_torch"]

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


# ------------------------------------------------------------------ whole fields (DALI's input)
@njit(nogil=True, cache=True)
def _fill_field(keys, sigmas, table, out):
    n, height, width = out.shape[0], out.shape[1], out.shape[2]
    for s in range(n):
        sigma = sigmas[s]
        key = keys[s]
        for i in range(height):
            for j in range(width):
                if sigma == 0.0:
                    out[s, i, j, 0] = 0.0
                    out[s, i, j, 1] = 0.0
                    out[s, i, j, 2] = 0.0
                    continue
                h = mix64(key + np.uint64(i * width + j) * GOLDEN)
                out[s, i, j, 0] = sigma * normal21(np.int64(h >> SHIFT0), table)
                out[s, i, j, 1] = sigma * normal21(np.int64((h >> SHIFT1) & MASK21), table)
                out[s, i, j, 2] = sigma * normal21(np.int64((h >> SHIFT2) & MASK21), table)


def _keys_and_sigmas(seeds, sigmas):
    keys = np.array([noise_key(s) for s in seeds], np.uint64).reshape(-1)
    sig = np.asarray(sigmas, np.float64).reshape(-1)
    if keys.shape != sig.shape:
        raise ValueError(f"{keys.size} noise seeds but {sig.size} sigmas")
    if not np.all(sig >= 0.0):
        raise ValueError(f"noise sigmas must be >= 0, got {sig.tolist()}")
    return keys, sig


def noise_field_numba(seeds, sigmas, height: int, width: int) -> np.ndarray:
    """``sigma_s * z_s`` for each sample ``s``: float32 (B, H, W, 3), ``z_s`` the kernel's
    normals for ``noise_seed = seeds[s]`` (zeros where ``sigma_s == 0``)."""
    keys, sig = _keys_and_sigmas(seeds, sigmas)
    out = np.empty((keys.size, int(height), int(width), 3), np.float32)
    _fill_field(keys, sig, icdf_table(), out)
    return out


_TAILS = []


def _tail_table() -> np.ndarray:
    """float64 (2 * 16 * 512,): the exact normals (NumPy reference) of the 21-bit integers
    of the 16 outer table bins per side, low tail first."""
    if not _TAILS:
        with _TABLE_LOCK:
            if not _TAILS:
                side = _TAIL_BINS << 9
                k = np.concatenate([np.arange(side), np.arange((1 << 21) - side, 1 << 21)])
                t = _inv_norm_cdf_np((k.astype(np.float64) + 0.5) / float(1 << 21))
                t.flags.writeable = False
                _TAILS.append(t)
    return _TAILS[0]


def _as_int64(u: int) -> int:
    """The int64 with the bits of the uint64 ``u``."""
    u &= 0xFFFFFFFFFFFFFFFF
    return u - (1 << 64) if u >= 1 << 63 else u


_GOLDEN_I = _as_int64(int(GOLDEN))
_M1_I, _M2_I = _as_int64(int(_M1)), _as_int64(int(_M2))


def _srl(x, s: int):
    """Logical right shift of an int64 tensor holding uint64 bits."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix64_torch(z):
    z = (z ^ _srl(z, 30)) * _M1_I
    z = (z ^ _srl(z, 27)) * _M2_I
    return z ^ _srl(z, 31)


#: samples per chunk of :func:`noise_field_torch` (bounds its temporaries to about
#: 60 bytes per pixel and channel of a chunk)
_CHUNK_PIXELS = 1 << 22


def noise_field_torch(seeds, sigmas, height: int, width: int, device="cpu"):
    """:func:`noise_field_numba` with torch on ``device`` (CUDA for the GPU path): float32
    tensor (B, H, W, 3), bit-identical to ``sigma * noise_normals(seed, H, W)`` rounded to
    float32. Runs on the current stream of ``device``."""
    import torch
    keys, sig = _keys_and_sigmas(seeds, sigmas)
    dev = torch.device(device)
    height, width = int(height), int(width)
    n, hw = keys.size, height * width
    out = torch.zeros((n, height, width, 3), dtype=torch.float32, device=dev)
    table = torch.from_numpy(np.array(icdf_table())).to(dev)
    tails = torch.from_numpy(np.array(_tail_table())).to(dev)
    side = _TAIL_BINS << 9
    hi_start = (1 << 21) - side
    nbins = 1 << _TABLE_BITS
    p = torch.arange(hw, dtype=torch.int64, device=dev) * _GOLDEN_I
    per_chunk = max(1, _CHUNK_PIXELS // max(hw, 1))
    on = [s for s in range(n) if sig[s] > 0.0]
    for c0 in range(0, len(on), per_chunk):
        idx = on[c0:c0 + per_chunk]
        key = torch.tensor([_as_int64(int(keys[s])) for s in idx], dtype=torch.int64, device=dev)
        h = _mix64_torch(p[None, :] + key[:, None])                      # (m, H*W)
        k = torch.stack([_srl(h, int(SHIFT0)), (h >> int(SHIFT1)) & int(MASK21),
                         (h >> int(SHIFT2)) & int(MASK21)], -1)           # (m, H*W, 3)
        del h
        b = k >> 9
        tail = (b < _TAIL_BINS) | (b >= nbins - _TAIL_BINS)
        bi = b.clamp_(1, nbins - 2)
        f = (k & 511).to(torch.float64).add_(0.5).div_(512.0)
        t0 = table[bi]
        z = (table[bi + 1] - t0).mul_(f).add_(t0)                        # t0 + (t1 - t0) * f
        del bi, f, t0
        ti = torch.where(k < side, k, (k - (hi_start - side)).clamp_(0, 2 * side - 1))
        z = torch.where(tail, tails[ti], z)
        del k, ti, tail
        s = torch.tensor(sig[idx], dtype=torch.float64, device=dev)
        z.mul_(s[:, None, None])
        out[torch.tensor(idx, device=dev)] = z.view(len(idx), height, width, 3).to(torch.float32)
    return out


def noise_field(seeds, sigmas, height: int, width: int, device=None):
    """The noise field of a batch where the DALI graph needs it: ``device`` None or a CPU
    torch device -> NumPy (:func:`noise_field_numba`); a CUDA device -> a torch tensor on it
    (:func:`noise_field_torch`, on its current stream)."""
    if device is None or getattr(device, "type", device) == "cpu":
        return noise_field_numba(seeds, sigmas, height, width)
    return noise_field_torch(seeds, sigmas, height, width, device)
