"""Decode one 640x480 JPEG (a ``fastload.synth`` scene, quality 90) to HWC uint8 RGB, per decoder,
plus what fastload's policy adds (the header read before decoding) and libjpeg-turbo's reduced
sizes (1/2, 1/4, 1/8). Photo-sized sources: ``bench_decode_scaled.py``.

Run: python3 -m pytest benchmarks/bench_decode.py --benchmark-only
The fastest one is what fastload.augment.decode uses (see docs/cpu_backend.md).
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fastload.augment.decode import DECODERS, decode_image, read_header
from fastload.synth.scenes import encode_jpeg, encode_png, make_scene

_IMG = make_scene(np.random.default_rng(0), width=640, height=480).image
JPEG = encode_jpeg(_IMG, quality=90)
PNG = encode_png(_IMG)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decode_jpeg(benchmark, name):
    out = benchmark(DECODERS[name], JPEG)
    assert out.shape == (480, 640, 3)


def test_decode_jpeg_simplejpeg_fastdct(benchmark):
    import simplejpeg
    out = benchmark(lambda: simplejpeg.decode_jpeg(JPEG, colorspace="RGB", fastdct=True,
                                                   fastupsample=True))
    assert out.shape == (480, 640, 3)


def test_decode_jpeg_pyturbojpeg(benchmark):
    try:
        from turbojpeg import TJPF_RGB, TurboJPEG
        tj = TurboJPEG()
    except Exception as e:  # no system libturbojpeg here
        pytest.skip(f"pyturbojpeg unusable: {e}")
    out = benchmark(lambda: tj.decode(JPEG, pixel_format=TJPF_RGB))
    assert out.shape == (480, 640, 3)


def test_decode_jpeg_dali_cpu(benchmark):
    from nvidia.dali import fn, pipeline_def, types
    enc = np.frombuffer(JPEG, np.uint8)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def pipe():
        e = fn.external_source(source=lambda: [enc], batch=True, dtype=types.UINT8)
        return fn.decoders.image(e, device="cpu", output_type=types.RGB)

    p = pipe()
    p.build()
    out = benchmark(lambda: np.asarray(p.run()[0][0]))
    assert out.shape == (480, 640, 3)


def test_decode_image_with_policy(benchmark):
    """decode_image: header (pixel cap, size) + strict simplejpeg decode + size check."""
    out = benchmark(decode_image, JPEG, "bench.jpg", (480, 640))
    assert out.shape == (480, 640, 3)


def test_read_header(benchmark):
    assert benchmark(read_header, JPEG).width == 640


@pytest.mark.parametrize("k", [2, 4, 8])
def test_decode_jpeg_reduced(benchmark, k):
    import simplejpeg
    out = benchmark(lambda: simplejpeg.decode_jpeg(JPEG, colorspace="RGB", min_height=480 // k,
                                                   min_width=640 // k))
    assert out.shape == (480 // k, 640 // k, 3)


def test_decode_png_chosen(benchmark):
    out = benchmark(decode_image, PNG)
    assert out.shape == (480, 640, 3)


@pytest.mark.parametrize("threads", [1, 2])
def test_decode_8_jpegs_thread_pool(benchmark, threads):
    """GIL check: with 2 threads the time per 8 images should drop towards half."""
    with ThreadPoolExecutor(threads) as pool:
        out = benchmark(lambda: list(pool.map(decode_image, [JPEG] * 8)))
    assert len(out) == 8
