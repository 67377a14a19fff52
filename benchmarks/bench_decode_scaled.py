"""Decode + augment per image on the CPU path for photo-sized JPEGs -> 512x512, and how it
scales from 1 to 2 threads: 640x480, 1920x1080 and 4000x3000 sources (photo-like: 1/f noise
with correlated channels, flat and shaded shapes, sensor noise; JPEG quality 90, 4:2:0).

The path measured is the public one, ``CpuAugmenter(cfg, num_threads).run(jpegs, params)``
with the default ``AugmentConfig(out_size=(512, 512))`` and ``sample_params`` per sample, so
the same script measures any checkout: run it with ``PYTHONPATH`` pointing at the tree to
measure (a JPEG the sample's matrix shrinks 2x or more is decoded at 1/2, 1/4 or 1/8 by
libjpeg-turbo where fastload does that, at full size where it does not). It also times the
decode alone, at full size and at the reduced size the samples get.

Run as a script (a table; ``--json`` for machine-readable numbers)::

    PYTHONPATH=$PWD python3 benchmarks/bench_decode_scaled.py [--rounds 5] [--sizes 640x480,...]

or as pytest-benchmark tests: ``python3 -m pytest benchmarks/bench_decode_scaled.py
--benchmark-only``. Results: docs/cpu_backend.md.
"""
import argparse
import io
import json
import statistics
import time

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from fastload.augment.config import AugmentConfig
from fastload.augment.cpu import CpuAugmenter
from fastload.augment.params import sample_params
from fastload.targets.raster import fill_polygon

SIZES = ((480, 640), (1080, 1920), (3000, 4000))
BATCH = 8
CFG = AugmentConfig(out_size=(512, 512))


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An HWC uint8 RGB image with natural-image statistics: a 1/f amplitude spectrum
    (shared luminance plus weaker per-channel fields), 40 shapes (flat or shaded polygons),
    a little sensor noise."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(width).astype(np.float32)[None, :]
    f = np.maximum(np.hypot(fx, fy), 1.0 / max(height, width))
    amp = np.exp(-(f / 0.15) ** 2) / f  # 1/f, softened by the lens as a camera would

    def field():
        spec = amp * (rng.standard_normal(amp.shape, np.float32)
                      + 1j * rng.standard_normal(amp.shape, np.float32))
        v = np.fft.irfft2(spec, s=(height, width)).astype(np.float32)
        return (v - v.mean()) / v.std()

    lum = field()
    img = np.stack([lum + 0.3 * field() for _ in range(3)], -1) * 45 + 115
    img += np.array([10, 0, -12], np.float32)  # a warm cast
    for _ in range(40):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.02, 0.15) * min(height, width)
        n = int(rng.integers(3, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        pts = np.stack([cx + r * rng.uniform(0.4, 1, n) * np.cos(ang),
                        cy + r * rng.uniform(0.4, 1, n) * np.sin(ang)], 1)
        mask = np.zeros((height, width), np.uint8)
        fill_polygon(mask, pts, 1)
        ys, xs = np.nonzero(mask)
        colour = rng.uniform(20, 235, 3).astype(np.float32)
        shade = 1 + 0.3 * ((xs - cx) / r)[:, None] if rng.random() < 0.5 else 1.0
        img[ys, xs] = colour * shade + 8 * lum[ys, xs, None]
    img += rng.normal(0, 1.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def inputs(h: int, w: int):
    jpg = encode(photo_like(h, w, seed=h))
    params = [sample_params(CFG, 0, 0, i, h, w) for i in range(BATCH)]
    return jpg, params


def _reduction(p, h, w) -> int:
    """The 1/k a fastload with reduced decode would use (1 elsewhere), for the decode-alone row."""
    try:
        from fastload.augment.decode import dct_scale
    except ImportError:
        return 1
    return dct_scale(p.matrix, h, w)


def _times(fn, rounds, clock=time.perf_counter):
    fn()  # warm-up (and the kernel's first compile or cache load)
    out = []
    for _ in range(rounds):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


def measure(sizes=SIZES, rounds=5):
    """{"WxH": {...}}: per image ms (min, median) of decode + augment on 1 thread (wall and
    CPU time of the thread), of the decode alone (full size, and at the samples' reduced
    size) and images/s on 1 and 2 threads for a batch of 8."""
    res = {}
    for h, w in sizes:
        jpg, params = inputs(h, w)
        ks = [_reduction(p, h, w) for p in params]
        row = {"jpeg_bytes": len(jpg), "reductions": ks}
        for threads in (1, 2):
            with CpuAugmenter(CFG, num_threads=threads) as aug:
                out = np.empty((BATCH, 3, 512, 512), np.float32)
                t = _times(lambda: aug.run([jpg] * BATCH, params, out=out), rounds)
            row[f"batch_ms_{threads}t"] = [x * 1e3 for x in t]
        per = [x / BATCH for x in row["batch_ms_1t"]]
        row["per_image_ms"] = (min(per), statistics.median(per))
        with CpuAugmenter(CFG, num_threads=1) as aug:  # runs on the calling thread
            out = np.empty((BATCH, 3, 512, 512), np.float32)
            cpu = _times(lambda: aug.run([jpg] * BATCH, params, out=out), rounds,
                         time.thread_time)
            row["per_image_cpu_ms"] = (min(cpu) * 1e3 / BATCH,
                                       statistics.median(cpu) * 1e3 / BATCH)

        full = _times(lambda: simplejpeg.decode_jpeg(jpg), rounds)
        row["decode_full_ms"] = (min(full) * 1e3, statistics.median(full) * 1e3)
        k = max(set(ks), key=ks.count)
        if k > 1:
            red = _times(lambda: simplejpeg.decode_jpeg(jpg, min_height=-(-h // k),
                                                        min_width=-(-w // k)), rounds)
            row[f"decode_1/{k}_ms"] = (min(red) * 1e3, statistics.median(red) * 1e3)
        b1, b2 = min(row["batch_ms_1t"]), min(row["batch_ms_2t"])
        row["images_per_s"] = {"1t": BATCH / b1 * 1e3, "2t": BATCH / b2 * 1e3}
        row["speedup_2t"] = b1 / b2
        res[f"{w}x{h}"] = row
    return res


def table(res) -> str:
    lines = ["| source | 1/k used | decode+augment ms/img (min / median) | CPU ms/img (min) | "
             "decode alone full (min) | decode alone 1/k (min) | img/s 1 thread | "
             "img/s 2 threads | 2t/1t |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        red = next((f"{v[0]:.1f} (1/{key.split('/')[1].split('_')[0]})"
                    for key, v in r.items() if key.startswith("decode_1/")), "-")
        ks = sorted(set(r["reductions"]))
        lines.append(f"| {name} | {ks} | {r['per_image_ms'][0]:.1f} / {r['per_image_ms'][1]:.1f}"
                     f" | {r['per_image_cpu_ms'][0]:.1f} | {r['decode_full_ms'][0]:.1f} | {red}"
                     f" | {r['images_per_s']['1t']:.1f} | {r['images_per_s']['2t']:.1f}"
                     f" | {r['speedup_2t']:.2f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ pytest-benchmark
@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def photo_inputs(request):
    return inputs(*request.param)


@pytest.mark.parametrize("threads", [1, 2])
def test_decode_augment_batch_of_8(benchmark, photo_inputs, threads):
    jpg, params = photo_inputs
    with CpuAugmenter(CFG, num_threads=threads) as aug:
        out = benchmark(aug.run, [jpg] * BATCH, params)
    assert out.shape == (BATCH, 3, 512, 512)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", default=",".join(f"{w}x{h}" for h, w in SIZES),
                    help="comma-separated WxH")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x"))[::-1] for s in a.sizes.split(",")]
    res = measure(sizes, a.rounds)
    print(json.dumps(res) if a.json else table(res))


if __name__ == "__main__":
    main()
