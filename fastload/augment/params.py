"""Per-sample augmentation parameters, drawn from (seed, epoch, index) by a counter-based generator.

The parameter sampler is the single source of randomness for geometry and photometry:
backends (DALI GPU, DALI CPU, fused Numba CPU) take these parameters as inputs and draw
nothing of their own, so image and annotations always agree.

Generator
---------
Each sample gets its own ``numpy.random.Generator(numpy.random.Philox(key=K))`` with the
128-bit Philox-4x64 key ``K = [seed mod 2**64, (epoch << 32) | index]`` (two uint64 words;
``epoch`` and ``index`` must be in ``[0, 2**32)``), counter starting at 0. No SeedSequence,
no global state: the same (seed, epoch, index) gives the same stream on any machine, in
any thread, in any order. Draw order (fixed, so that turning one augmentation off does
not change the others):

1. ``u = gen.random(10)``: hflip, vflip, rotation, scale, translate x, translate y,
   hue, noise sigma, shadow-on, shadow darkness;
2. ``noise_seed = gen.integers(0, 2**64, dtype=uint64)``;
3. shadow polygons (only when a shadow is drawn): count, then per polygon the vertex
   count, center, radius and vertex angles/radii.

The matrix is composed in float64 with ``math`` functions and rounded to float32 once.

Matrix (all in continuous pixel coordinates, DESIGN.md: pixel (i, j) covers
[j, j+1) x [i, i+1), a horizontal flip is x' = W - x)
-------------------------------------------------------------------------------------
``M = T(c + t) @ R(theta) @ S(s) @ V @ H @ Fit`` where, with output size (H, W) and
``c = (W/2, H/2)``:

- ``Fit`` maps the source frame [0, src_w] x [0, src_h] onto the output: with
  ``keep_aspect`` a uniform scale ``min(W/src_w, H/src_h)`` and centering (letterbox,
  padded with ``pad_value``); otherwise per-axis scales ``W/src_w``, ``H/src_h``
  (stretch);
- ``H`` = ``[[-1, 0, W], [0, 1, 0], [0, 0, 1]]`` when hflip (x' = W - x in output
  coordinates), ``V`` = ``[[1, 0, 0], [0, -1, H], [0, 0, 1]]`` when vflip;
- ``S(s)``, ``R(theta)`` scale and rotate about the output center ``c``; positive
  ``theta`` turns the picture counter-clockwise as seen on screen (y points down):
  ``x' = cx + cos*dx + sin*dy``, ``y' = cy - sin*dx + cos*dy``;
- ``t = (tx * W, ty * H)``, ``tx``, ``ty`` drawn independently from ``cfg.translate``.

Shadows
-------
``k`` in ``cfg.shadow_count`` (inclusive) star-shaped (hence simple) polygons of 3 to 6
vertices, in OUTPUT pixel coordinates, center uniform in the frame, radius 0.15 to 0.45
of ``min(H, W)`` (like albumentations' RandomShadow: random polygons spanning parts of
the image). One darkness factor per sample. A pixel is shadowed when its center lies in
any polygon (:func:`shadow_mask`, ``fastload.targets.raster`` rule, full resolution).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import numpy as np

from fastload.augment.config import AugmentConfig

_U64 = (1 << 64) - 1


@dataclass
class SampleParams:
    """One sample's augmentation.

    ``matrix``: float32 (3, 3) mapping source image pixel coords to output pixel coords
    (continuous convention). ``shadow_polygons``: float32 (N, 2) polygons in OUTPUT pixel
    coords. ``noise_sigma`` in 0..255 units; ``shadow_darkness`` 1.0 means no shadow.
    """

    matrix: np.ndarray
    hflip: bool
    vflip: bool
    hue_deg: float
    noise_sigma: float
    noise_seed: int
    shadow_polygons: list = field(default_factory=list)
    shadow_darkness: float = 1.0

    def __eq__(self, other):  # arrays make the generated __eq__ ambiguous
        if not isinstance(other, SampleParams):
            return NotImplemented
        return (np.array_equal(self.matrix, other.matrix) and self.hflip == other.hflip
                and self.vflip == other.vflip and self.hue_deg == other.hue_deg
                and self.noise_sigma == other.noise_sigma and self.noise_seed == other.noise_seed
                and self.shadow_darkness == other.shadow_darkness
                and len(self.shadow_polygons) == len(other.shadow_polygons)
                and all(np.array_equal(a, b) for a, b in zip(self.shadow_polygons,
                                                             other.shadow_polygons)))


def make_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The per-sample counter-based generator (see module docstring for the key)."""
    seed, epoch, index = int(seed), int(epoch), int(index)
    if not 0 <= epoch < (1 << 32):
        raise ValueError(f"epoch must be in [0, 2**32), got {epoch}")
    if not 0 <= index < (1 << 32):
        raise ValueError(f"index must be in [0, 2**32), got {index}")
    key = np.array([seed & _U64, (epoch << 32) | index], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key))


def _lerp(rng: Tuple[float, float], u: float) -> float:
    lo, hi = float(rng[0]), float(rng[1])
    return lo + (hi - lo) * u if hi > lo else lo


def fit_matrix(src_h: int, src_w: int, out_h: int, out_w: int, keep_aspect: bool) -> np.ndarray:
    """float64 (3, 3): source frame -> output frame (letterbox centered, or stretch)."""
    if keep_aspect:
        s = min(out_w / src_w, out_h / src_h)
        return np.array([[s, 0.0, (out_w - s * src_w) / 2.0],
                         [0.0, s, (out_h - s * src_h) / 2.0],
                         [0.0, 0.0, 1.0]])
    return np.array([[out_w / src_w, 0.0, 0.0], [0.0, out_h / src_h, 0.0], [0.0, 0.0, 1.0]])


def compose_matrix(src_h: int, src_w: int, out_h: int, out_w: int, keep_aspect: bool = True,
                   hflip: bool = False, vflip: bool = False, rotate_deg: float = 0.0,
                   scale: float = 1.0, translate: Tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The float32 (3, 3) source->output matrix for explicit parameters (module docstring)."""
    m = fit_matrix(src_h, src_w, out_h, out_w, keep_aspect)
    if hflip:
        m = np.array([[-1.0, 0.0, out_w], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    if vflip:
        m = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, out_h], [0.0, 0.0, 1.0]]) @ m
    cx, cy = out_w / 2.0, out_h / 2.0
    th = math.radians(rotate_deg)
    c, s = math.cos(th) * scale, math.sin(th) * scale
    tx, ty = translate[0] * out_w, translate[1] * out_h
    # T(c + t) @ [[c, s], [-s, c]] @ T(-c)
    a = np.array([[c, s, cx + tx - (c * cx + s * cy)],
                  [-s, c, cy + ty - (-s * cx + c * cy)],
                  [0.0, 0.0, 1.0]])
    return (a @ m).astype(np.float32)


def _shadow_polygons(gen: np.random.Generator, cfg: AugmentConfig, out_h: int,
                     out_w: int) -> List[np.ndarray]:
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


def sample_params(cfg: AugmentConfig, seed: int, epoch: int, index: int,
                  src_h: int, src_w: int) -> SampleParams:
    """Draw one sample's parameters from (seed, epoch, index); see the module docstring.

    Same inputs -> bit-identical outputs on any machine/thread/order. ``src_h``/``src_w``
    are the decoded source image size in pixels.
    """
    src_h, src_w = int(src_h), int(src_w)
    if src_h <= 0 or src_w <= 0:
        raise ValueError(f"sample {index}: source size must be positive, got {src_h}x{src_w}")
    out_h, out_w = cfg.out_size
    gen = make_generator(seed, epoch, index)
    u = gen.random(10).tolist()
    noise_seed = int(gen.integers(0, 1 << 64, dtype=np.uint64, endpoint=False))
    hflip = u[0] < cfg.hflip_prob
    vflip = u[1] < cfg.vflip_prob
    rot = _lerp(cfg.rotate_deg, u[2])
    scl = _lerp(cfg.scale, u[3])
    tx = _lerp(cfg.translate, u[4])
    ty = _lerp(cfg.translate, u[5])
    matrix = compose_matrix(src_h, src_w, out_h, out_w, cfg.keep_aspect, hflip, vflip, rot,
                            scl, (tx, ty))
    hue = _lerp(cfg.hue_deg, u[6])
    sigma = _lerp(cfg.noise_sigma, u[7])
    polys: List[np.ndarray] = []
    dark = 1.0
    if u[8] < cfg.shadow_prob:
        polys = _shadow_polygons(gen, cfg, out_h, out_w)
        if polys:
            dark = _lerp(cfg.shadow_darkness, u[9])
    return SampleParams(matrix=matrix, hflip=bool(hflip), vflip=bool(vflip), hue_deg=float(hue),
                        noise_sigma=float(sigma), noise_seed=noise_seed,
                        shadow_polygons=polys, shadow_darkness=float(dark))


def sample_params_batch(cfg: AugmentConfig, seed: int, epoch: int, indices: Sequence[int],
                        sizes: Sequence[Tuple[int, int]]) -> List[SampleParams]:
    """:func:`sample_params` for each ``index`` with its source ``(height, width)`` in ``sizes``."""
    if len(indices) != len(sizes):
        raise ValueError(f"indices ({len(indices)}) and sizes ({len(sizes)}) differ in length")
    return [sample_params(cfg, seed, epoch, int(i), int(h), int(w))
            for i, (h, w) in zip(indices, sizes)]


def shadow_mask(params: SampleParams, out_h: int, out_w: int) -> np.ndarray:
    """uint8 (out_h, out_w): 1 where the pixel center lies in any shadow polygon, else 0.

    Full resolution (stride 1), ``fastload.targets.raster.fill_polygon`` rule (each polygon
    even-odd, union over polygons). All zeros when the sample has no shadow.
    """
    mask = np.zeros((int(out_h), int(out_w)), np.uint8)
    if params.shadow_polygons:
        from fastload.targets.raster import fill_polygon
        for poly in params.shadow_polygons:
            fill_polygon(mask, np.ascontiguousarray(poly, np.float32), 1, 1.0)
    return mask


_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])


def hue_matrix(hue_deg: float) -> np.ndarray:
    """float64 (3, 3) RGB -> RGB matrix of DALI's ``fn.hue(hue=hue_deg)``.

    RGB -> YIQ, rotate (I, Q) so that the angle atan2(Q, I) decreases by ``hue_deg``
    (the HSV hue rises by about ``hue_deg``), YIQ -> RGB (the exact inverse). DALI 2.4's
    CPU uint8 output equals ``clip(round(hue_matrix(h) @ rgb), 0, 255)`` (tested).
    """
    th = math.radians(float(hue_deg))
    c, s = math.cos(th), math.sin(th)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    return np.linalg.inv(_RGB2YIQ) @ rot @ _RGB2YIQ


def batch_matrices(params_list: Sequence[SampleParams]) -> np.ndarray:
    """float32 (B, 2, 3): the 2x3 parts of the matrices (DALI ``warp_affine`` layout)."""
    return np.ascontiguousarray(np.stack([p.matrix[:2] for p in params_list]), np.float32)
