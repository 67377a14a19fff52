"""Decoding into a reusable per-thread buffer (``decode_for_warp(..., buffer=DecodeBuffer())``)
gives the same pixels as decoding into a new array, at every reduced scale and on odd sizes,
and the CPU paths that use it (the loader's backend, CpuAugmenter) give the outputs of the
plain decode + kernel."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from fastload.augment.config import AugmentConfig
from fastload.augment.cpu import CpuAugmenter, augment_image
from fastload.augment.decode import DecodeBuffer, decode_for_warp
from fastload.augment.params import sample_params
from fastload.loader.backends import BackendContext, CpuBackend


def _photo(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                    rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
    return img


def _encode(img, fmt="JPEG"):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _shrink(factor):
    return np.diag([factor, factor, 1.0]).astype(np.float32)


@pytest.mark.parametrize("shrink, k", [(1.0, 1), (0.5, 2), (0.25, 4), (0.1, 8)])
def test_buffer_decode_equals_plain_decode(shrink, k):
    h, w = 757, 1001  # odd: every scale has a partial last block (blended in place)
    jpg = _encode(_photo(h, w, 0))
    m = _shrink(shrink)
    plain = decode_for_warp(jpg, m, "a.jpg", (h, w), pad_value=114.0)
    buf = DecodeBuffer()
    got = decode_for_warp(jpg, m, "a.jpg", (h, w), pad_value=114.0, buffer=buf)
    assert got.scale == plain.scale == k
    assert got.image.shape == plain.image.shape and got.image.flags.c_contiguous
    assert np.array_equal(got.image, plain.image)
    assert np.shares_memory(got.image, buf._array)  # decoded in place
    small = decode_for_warp(_encode(_photo(40, 64, 1)), np.eye(3, dtype=np.float32), "b.jpg",
                            buffer=buf)  # a smaller image next: the same memory, right pixels
    assert np.shares_memory(small.image, buf._array)
    assert np.array_equal(small.image, decode_for_warp(_encode(_photo(40, 64, 1)),
                                                       np.eye(3, dtype=np.float32)).image)


def test_images_over_the_limit_and_pngs_get_arrays_of_their_own():
    buf = DecodeBuffer(max_bytes=40 * 64 * 3 - 1)
    img = _photo(40, 64, 2)
    eye = np.eye(3, dtype=np.float32)
    jpg = decode_for_warp(_encode(img), eye, buffer=buf)
    assert not np.shares_memory(jpg.image, buf._array)
    assert np.array_equal(jpg.image, decode_for_warp(_encode(img), eye).image)
    png = decode_for_warp(_encode(img, "PNG"), eye, buffer=DecodeBuffer())
    assert np.array_equal(png.image, img)


def test_corrupt_jpeg_is_refused_the_same_way_with_a_buffer():
    jpg = _encode(_photo(40, 64, 3))
    bad = jpg[:len(jpg) // 2]
    with pytest.raises(ValueError, match=r"cut\.jpg: corrupt JPEG.*Premature end"):
        decode_for_warp(bad, np.eye(3, dtype=np.float32), "cut.jpg", buffer=DecodeBuffer())


def test_cpu_paths_with_the_buffer_equal_decode_plus_kernel():
    cfg = AugmentConfig(out_size=(96, 96))
    sizes = [(120, 160), (400, 300), (77, 143), (480, 640), (120, 160)]  # the buffer grows, shrinks
    imgs = [_encode(_photo(h, w, i)) for i, (h, w) in enumerate(sizes)]
    params = [sample_params(cfg, 0, 0, i, h, w) for i, (h, w) in enumerate(sizes)]
    want = np.empty((len(sizes), 3, 96, 96), np.float32)
    for j, (b, p) in enumerate(zip(imgs, params)):
        d = decode_for_warp(b, p.matrix, pad_value=cfg.pad_value)
        augment_image(d.image, p, cfg, want[j], source_scale=d.scale)
    assert {decode_for_warp(b, p.matrix).scale for b, p in zip(imgs, params)} > {1}
    with CpuAugmenter(cfg, num_threads=2) as aug:
        for _ in range(2):
            assert np.array_equal(aug.run(imgs, params), want)
    backend = CpuBackend(BackendContext(cfg, len(sizes), 1, torch.device("cpu")))
    for _ in range(2):
        out, errors = backend.submit(imgs, params, [f"{j}.jpg" for j in range(len(sizes))],
                                     sizes).result()
        assert not errors and np.array_equal(out, want)
