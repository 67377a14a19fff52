"""Photo-like synthetic images: natural-image statistics at any size, with polygon instances.

:func:`fastload.synth.scenes.make_scene` draws flat-coloured polygons on a smooth background:
right for tests, but its JPEGs are small and decode faster than photographs of the same size.
:func:`make_photo` draws what a camera sees, statistically:

- a luminance field with a ``1/f`` amplitude spectrum (power ``~1/f^2``, the slope measured in
  natural images), made in the frequency domain (complex white noise shaped by ``1/f``, one
  inverse FFT), plus a horizon: a brighter, bluer top part and a darker ground;
- low-frequency colour (chroma) fields, made at a quarter of the size and upsampled;
- 8 to 25 objects (about 17 on average, like COCO's polygons per image at 1-2 MP): smooth
  star-shaped polygons of 16 to 48 vertices, each filled with its own colour, its own ``1/f``
  texture, a shading gradient and, for some, an oriented grating (fabric, bricks), so every
  object boundary is an edge;
- a slight optical blur (Gaussian, sigma 0.6 px) and sensor noise (sigma 3 levels).

Encoded at JPEG quality 90 they take about 2.6-2.9 bits per pixel, like camera photos: about
0.11 MB at 640x480, 0.7 MB at 1920x1080 and 3.7-4 MB at 4000x3000 (``tests/synth/test_photos.py``
checks the ranges, and the spectrum slope). One 4000x3000 photo takes about 5 s to make.

    scene = make_photo(np.random.default_rng(0), width=1920, height=1080)
    write_photo_dataset("data/photos-1080p", n_images=16, width=1920, height=1080)

The instances' polygons are in continuous pixel coordinates (DESIGN.md), float32, inside the
frame; :func:`write_photo_dataset` writes COCO (``fastload.synth.datasets.write_coco``), one
image at a time (a 12 MP scene is 36 MB decoded: nothing is kept).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fastload.synth.scenes import CLASSES, Scene, SceneInstance

PHOTO_QUALITY = 90


def pink_field(rng: np.random.Generator, height: int, width: int, exponent: float = 1.0
               ) -> np.ndarray:
    """float32 (height, width) field with a ``1/f**exponent`` amplitude spectrum, zero mean and
    unit standard deviation (``exponent`` 1: natural images' power spectrum ``1/f^2``).

    Complex white noise in the rfft domain, shaped, one inverse FFT (the forward FFT of white
    noise is white noise, so it is drawn there directly)."""
    fy = np.fft.fftfreq(height).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(width).astype(np.float32)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** np.float32(-exponent)
    amp[0, 0] = 0.0  # zero mean
    spec = (rng.standard_normal(amp.shape, dtype=np.float32)
            + 1j * rng.standard_normal(amp.shape, dtype=np.float32)).astype(np.complex64)
    spec *= amp
    out = np.fft.irfft2(spec, s=(height, width)).astype(np.float32)
    out -= out.mean()
    out /= max(float(out.std()), 1e-12)
    return out


def _upsampled(field: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(field, "F").resize((width, height), Image.BILINEAR),
                      np.float32)


def smooth_polygon(rng: np.random.Generator, cx: float, cy: float, r: float, n: int
                   ) -> np.ndarray:
    """A smooth star-shaped polygon (an object outline): ``n`` vertices at evenly jittered
    angles, radius ``r`` modulated by a few low harmonics. float32 (n, 2)."""
    ang = np.sort((np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n))
    rad = np.ones(n)
    for k in range(1, 5):
        rad += rng.uniform(0.0, 0.35 / k) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
    rad = r * np.clip(rad / rad.max(), 0.3, 1.0)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.float32)


def make_photo(rng: np.random.Generator, width: int = 1920, height: int = 1080,
               n_instances: Optional[int] = None, num_classes: int = len(CLASSES),
               multipart_prob: float = 0.1) -> Scene:
    """One photo-like scene (module docstring): HWC uint8 RGB image and its polygon instances."""
    H, W = int(height), int(width)
    if H < 16 or W < 16:
        raise ValueError(f"make_photo: size must be at least 16x16, got {W}x{H}")
    m = min(H, W)
    yy = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None]
    # background: 1/f luminance, a horizon, low-frequency colour
    lum = pink_field(rng, H, W)
    horizon = float(rng.uniform(0.25, 0.6))
    sky = 1.0 / (1.0 + np.exp((yy - horizon) * 40.0, dtype=np.float32))  # 1 above the horizon
    small_h, small_w = max(4, H // 4), max(4, W // 4)
    chroma = [_upsampled(pink_field(rng, small_h, small_w, 1.3), H, W) for _ in range(2)]
    ground = rng.uniform(60, 150, 3).astype(np.float32)
    sky_col = np.array([rng.uniform(150, 200), rng.uniform(170, 215), rng.uniform(200, 245)],
                       np.float32)
    img = np.empty((H, W, 3), np.float32)
    contrast = float(rng.uniform(28, 42))
    for c in range(3):
        base = ground[c] + (sky_col[c] - ground[c]) * sky
        img[..., c] = base + contrast * lum * (1.0 - 0.6 * sky) \
            + 14.0 * chroma[0] * (c - 1) + 10.0 * chroma[1] * (1 if c == 1 else -0.5)
    # objects: textured, shaded polygons (each boundary an edge)
    n = int(n_instances if n_instances is not None else rng.integers(8, 26))
    texture = pink_field(rng, H, W, 0.9)
    insts = []
    for _ in range(n):
        r = float(rng.uniform(0.04, 0.25) * m)
        cx, cy = float(rng.uniform(r, W - r)), float(rng.uniform(r, H - r))
        parts = [smooth_polygon(rng, cx, cy, r, int(rng.integers(16, 49)))]
        if rng.random() < multipart_prob:
            r2 = 0.35 * r
            cx2 = float(np.clip(cx + rng.uniform(-1.8, 1.8) * r, r2, W - r2))
            cy2 = float(np.clip(cy + rng.uniform(-1.8, 1.8) * r, r2, H - r2))
            parts.append(smooth_polygon(rng, cx2, cy2, r2, int(rng.integers(12, 25))))
        grey = float(rng.uniform(40, 215))
        colour = (grey + 0.6 * (rng.uniform(20, 235, 3) - grey)).astype(np.float32)
        gain = float(rng.uniform(12, 40))
        grating = rng.random() < 0.35
        freq = float(rng.uniform(0.03, 0.25))
        theta = float(rng.uniform(0, np.pi))
        shade = rng.uniform(-0.6, 0.6, 2).astype(np.float32)
        for p in parts:
            x0, y0 = np.floor(p.min(0)).astype(int)
            x1, y1 = np.ceil(p.max(0)).astype(int)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            mask_im = Image.new("L", (x1 - x0, y1 - y0), 0)
            ImageDraw.Draw(mask_im).polygon([(float(x) - x0, float(y) - y0) for x, y in p],
                                            fill=1)
            mask = np.asarray(mask_im, bool)
            gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            lum_o = gain * texture[y0:y1, x0:x1] \
                + 30.0 * (shade[0] * (gx - cx) + shade[1] * (gy - cy)) / r
            if grating:
                lum_o += 25.0 * np.sin(freq * (np.cos(theta) * gx + np.sin(theta) * gy))
            region = img[y0:y1, x0:x1]
            region[mask] = (colour[None, None, :] + lum_o[..., None])[mask]
        insts.append(SceneInstance(label=int(rng.integers(0, num_classes)), polygons=parts,
                                   color=tuple(int(v) for v in colour)))
    # optics and sensor
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(0.6))
    a = np.asarray(out, np.float32)
    a += rng.standard_normal(a.shape, dtype=np.float32) * np.float32(3.0)
    return Scene(image=np.clip(a, 0, 255).astype(np.uint8), instances=insts)


def iter_photos(n_images: int, seed: int = 0, width: int = 1920, height: int = 1080,
                **kw) -> Iterator[Scene]:
    """``n_images`` photos from one seeded generator, one at a time."""
    rng = np.random.default_rng(seed)
    for _ in range(int(n_images)):
        yield make_photo(rng, width=width, height=height, **kw)


def write_photo_dataset(root, n_images: int = 16, width: int = 1920, height: int = 1080,
                        seed: int = 0, quality: int = PHOTO_QUALITY) -> Path:
    """Write ``n_images`` photo-like scenes as a COCO dataset under ``root`` (the layout of
    :func:`fastload.synth.datasets.write_coco`), generating and writing one at a time.
    Returns ``root``."""
    from fastload.synth.datasets import write_coco
    root = Path(root)
    write_coco(root, iter_photos(n_images, seed, width, height), quality=quality)
    return root
