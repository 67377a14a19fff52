"""Reduced-size JPEG decode (libjpeg-turbo's scaled IDCT) on the CPU path: the scale choice is
a pure function of the matrix, the decoded grid is where the derivation says (pixel (i, j) at
1/k covers source [jk, (j+1)k) x [ik, (i+1)k)), the partial last block is blended with the pad
value, and white shapes stay aligned with their moved polygons at 1/2, 1/4 and 1/8 on odd
sizes."""
import math

import numpy as np
import pytest
import simplejpeg
import torch

from fastload.augment.config import AugmentConfig
from fastload.augment.cpu import CpuAugmenter, augment_image, augment_image_reference
from fastload.augment.decode import (DCT_SCALES, MIN_SIDE_FOR_DCT_SCALE, dct_scale,
                                     decode_for_warp, decode_image)
from fastload.augment.geometry import transform_instances
from fastload.augment.params import SampleParams, compose_matrix, sample_params
from fastload.record import Record
from fastload.targets.raster import fill_polygon

H, W = 757, 1001  # odd: 1001 = 8*125 + 1 and 757 = 8*94 + 5, so every scale has a partial block


def _affine(scale, deg, src_hw, out_hw, sx=1.0):
    """float32 matrix: scale (x by ``sx`` more) and rotate about the centers."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    a = np.array([[c, s], [-s, c]]) @ np.diag([scale * sx, scale])
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = np.array(out_hw[::-1]) / 2 - a @ (np.array(src_hw[::-1]) / 2)
    return m.astype(np.float32)


# ------------------------------------------------------------------ the scale choice
@pytest.mark.parametrize("scale, deg, sx, want", [
    (1.0, 0, 1, 1), (2.0, 10, 1, 1),                   # enlarging
    (0.9, 0, 1, 1), (0.51, 33, 1, 1),                  # shrinking < 2x
    (0.5, 0, 1, 2), (0.5, 30, 1, 2), (0.26, -70, 1, 2),
    (0.25, 0, 1, 4), (0.13, 45, 1, 4), (0.125, 0, 1, 8), (0.01, 12, 1, 8),
    (0.1, 0, 6.0, 1), (0.1, 20, 3.0, 2),              # anisotropic: the largest stretch decides
])
def test_dct_scale_from_the_largest_stretch(scale, deg, sx, want):
    m = _affine(scale, deg, (H, W), (512, 512), sx)
    assert dct_scale(m, H, W) == want
    flipped = np.diag([-1.0, 1.0, 1.0]).astype(np.float32) @ m
    assert dct_scale(flipped, H, W) == want  # a flip does not change the stretch
    k = dct_scale(m, H, W)
    smax = np.linalg.svd(m[:2, :2].astype(np.float64), compute_uv=False).max()
    assert k == 1 or k * smax <= 1 + 1e-5  # decoded resolution never below the output's
    assert k == 8 or 2 * k * smax > 1 + 1e-5  # and the largest such k


def test_dct_scale_is_a_pure_function_of_the_matrix():
    m = _affine(0.2, 17, (H, W), (256, 256))
    moved = m.copy()
    moved[:2, 2] += (123.0, -45.0)  # translation does not matter
    got = {dct_scale(m.copy(), H, W) for _ in range(5)} | {dct_scale(moved, H, W)}
    assert got == {4}
    assert dct_scale(m.astype(np.float64), H, W) == 4
    projective = m.copy()
    projective[2, 0] = 1e-4
    assert dct_scale(projective, H, W) == 1
    assert dct_scale(np.full((3, 3), np.nan), H, W) == 1
    side = MIN_SIDE_FOR_DCT_SCALE
    assert dct_scale(_affine(0.1, 0, (side, 500), (8, 8)), side, 500) == 8
    assert dct_scale(_affine(0.1, 0, (side - 1, 500), (8, 8)), side - 1, 500) == 1


def test_default_config_on_640x480_never_reduces_and_4000x3000_does():
    cfg = AugmentConfig()
    for i in range(300):
        p = sample_params(cfg, 0, 0, i, 480, 640)
        assert dct_scale(p.matrix, 480, 640) == 1  # the pinned loader outputs stay unchanged
    ks = {dct_scale(sample_params(cfg, 0, 0, i, 3000, 4000).matrix, 3000, 4000)
          for i in range(300)}
    assert ks <= {4, 8} and 4 in ks


def _turbojpeg_pick(h, w, min_h, min_w):
    """simplejpeg's factor choice (``calc_height_width`` over TurboJPEG's factor list): the
    smallest n/8 with both scaled sides >= the minimum."""
    for num in range(1, 9):
        if -(-h * num // 8) >= min_h and -(-w * num // 8) >= min_w:
            return num
    return 8


def test_requested_min_sizes_select_exactly_1_over_k():
    for d in range(MIN_SIDE_FOR_DCT_SCALE, 700):
        for k in DCT_SCALES:
            n = -(-d // k)
            assert _turbojpeg_pick(d, d + 7, n, -(-(d + 7) // k)) == 8 // k, (d, k)
            # and that size is no other factor's: the decoded size identifies the factor
            assert all(-(-d * num // 8) != n for num in range(1, 9) if num != 8 // k), (d, k)
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    jpg = simplejpeg.encode_jpeg(img, 90)
    for k in DCT_SCALES:
        got = decode_for_warp(jpg, _affine(0.9 / k, 0, (37, 53), (32, 32)), "x").image
        assert got.shape == (-(-37 // k), -(-53 // k), 3)


# ------------------------------------------------------------------ the decoded grid
def test_scaled_pixel_is_the_average_of_its_source_footprint():
    """The derivation: pixel m at 1/k is the average of source [mk, (m+1)k) (the encoder
    repeats the edge into the partial block); a grid shifted by half a pixel is far off."""
    h, w = 77, 101
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    src = np.clip(30 + 1.7 * xx + 0.8 * yy + 12 * np.sin(xx / 6), 0, 255).astype(np.uint8)
    jpg = simplejpeg.encode_jpeg(np.ascontiguousarray(np.dstack([src] * 3)), 100,
                                 colorsubsampling="444")
    full = decode_image(jpg)[..., 0].astype(np.float64)
    for k in DCT_SCALES:
        nh, nw = -(-h // k), -(-w // k)
        got = simplejpeg.decode_jpeg(jpg, min_height=nh, min_width=nw)[..., 0].astype(float)
        padded = np.pad(full, ((0, nh * k - h), (0, nw * k - w)), mode="edge")
        box = padded.reshape(nh, k, nw, k).mean((1, 3))
        assert np.abs(got - box).max() <= 1.0, k
        shifted = np.pad(full, ((k // 2, nh * k - h), (k // 2, nw * k - w)), mode="edge")
        shifted = shifted[:nh * k, :nw * k].reshape(nh, k, nw, k).mean((1, 3))
        assert np.abs(got - shifted)[:-1, :-1].mean() > 3 * np.abs(got - box).mean(), k


@pytest.mark.parametrize("pad", [0.0, 114.0])
def test_partial_last_block_is_blended_with_the_pad_value(pad):
    img = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    jpg = simplejpeg.encode_jpeg(img, 90)
    for k in DCT_SCALES:
        m = _affine(0.99 / k, 0, (H, W), (64, 64))
        got, scale = decode_for_warp(jpg, m, "x", (H, W), pad_value=pad)
        assert scale == k
        raw = simplejpeg.decode_jpeg(jpg, min_height=-(-H // k), min_width=-(-W // k))
        fx = (W - (raw.shape[1] - 1) * k) / k  # inside fraction of the last column
        fy = (H - (raw.shape[0] - 1) * k) / k
        want = raw.astype(np.float64)
        if fx < 1:
            want[:, -1] = want[:, -1] * fx + pad * (1 - fx)
        if fy < 1:
            want[-1] = want[-1] * fy + pad * (1 - fy)
        assert np.abs(got - want).max() <= 0.5 + 1e-3, k
        np.testing.assert_array_equal(got[:-1, :-1], raw[:-1, :-1])


# ------------------------------------------------------------------ alignment
_POLYS = [np.array([[100, 80], [420, 140], [300, 470], [140, 400]], np.float32),
          np.array([[W - 260, 300], [W, 300], [W, H], [W - 200, H]], np.float32),  # at the edges
          np.array([[600, 40], [760, 60], [700, 230]], np.float32)]


def _shapes_record():
    src = np.zeros((H, W), np.uint8)
    for p in _POLYS:
        fill_polygon(src, p, 255)
    jpg = simplejpeg.encode_jpeg(np.ascontiguousarray(np.dstack([src] * 3)), 95)
    n = len(_POLYS)
    return Record(id=0, file_name="shapes.jpg", image_bytes=jpg, image_format="jpeg",
                  height=H, width=W, points=np.concatenate(_POLYS),
                  part_offsets=np.cumsum([0] + [len(p) for p in _POLYS]).astype(np.int32),
                  inst_parts=np.arange(n + 1, dtype=np.int32), labels=np.zeros(n, np.int32),
                  bboxes=np.array([[*p.min(0), *p.max(0)] for p in _POLYS], np.float32),
                  flags=np.zeros(n, np.uint8))


def _coverage(inst, out_hw, f=8):
    """Fraction of each output pixel inside the moved polygons (f x f supersampling)."""
    m = np.zeros((out_hw[0] * f, out_hw[1] * f), np.uint8)
    for i in range(len(inst.labels)):
        for p in range(inst.inst_parts[i], inst.inst_parts[i + 1]):
            fill_polygon(m, inst.points[inst.part_offsets[p]:inst.part_offsets[p + 1]], 1,
                         1.0 / f)
    return m.reshape(out_hw[0], f, out_hw[1], f).mean((1, 3))


def _centroid(a):
    ii, jj = np.mgrid[0:a.shape[0], 0:a.shape[1]] + 0.5
    return np.array([(a * jj).sum(), (a * ii).sum()]) / a.sum()


def _per_shape_errors(image, cov, inst):
    """(centroid error in output pixels, relative mass error) around each moved polygon."""
    errs = []
    for i in range(len(inst.labels)):
        x0, y0, x1, y1 = inst.boxes[i]
        sl = (slice(max(int(y0) - 3, 0), int(math.ceil(y1)) + 3),
              slice(max(int(x0) - 3, 0), int(math.ceil(x1)) + 3))
        c = np.abs(_centroid(image[sl]) - _centroid(cov[sl])).max()
        errs.append((c, abs(image[sl].sum() / cov[sl].sum() - 1)))
    return np.array(errs)


@pytest.mark.parametrize("k, scale, deg", [(2, 0.45, 0), (2, 0.3, 17), (4, 0.2, -8),
                                           (8, 0.12, 33), (8, 0.06, 5)])
def test_white_shapes_stay_on_their_polygons(k, scale, deg):
    rec = _shapes_record()
    out = (int(H * scale * 1.3) + 4, int(W * scale * 1.3) + 4)
    p = SampleParams(matrix=_affine(scale, deg, (H, W), out))
    assert dct_scale(p.matrix, H, W) == k
    cfg = AugmentConfig.off(out_size=out, dtype="uint8")
    inst = transform_instances(rec, p, out, min_visible=0.0)
    assert len(inst.labels) == 3
    cov = _coverage(inst, out)

    def warped(img, scale_k):
        return augment_image(img, p, cfg, np.empty((3,) + out, np.uint8),
                             source_scale=scale_k)[0] / 255.0

    dec = decode_for_warp(rec.image_bytes, p.matrix, rec.file_name, (H, W), cfg.pad_value)
    assert dec.scale == k
    errs = _per_shape_errors(warped(dec.image, k), cov, inst)
    assert errs[:, 0].max() < 0.06 and errs[:, 1].max() < 0.02, errs
    # a full-size decode is no better (it aliases)
    full = _per_shape_errors(warped(decode_image(rec.image_bytes), 1), cov, inst)
    assert errs[:, 0].max() <= full[:, 0].max() + 0.02
    # the checks have teeth: without the partial-block blend the edge shape spills over the
    # image's end; with the decoded grid half a decoded pixel off, every shape moves
    raw = simplejpeg.decode_jpeg(rec.image_bytes, min_height=-(-H // k), min_width=-(-W // k))
    no_blend = _per_shape_errors(warped(raw, k), cov, inst)
    assert no_blend[1, 0] > 0.15, no_blend
    off = p.matrix.astype(np.float64) @ np.array([[k, 0, k / 2], [0, k, k / 2], [0, 0, 1]])
    shifted = augment_image(dec.image, SampleParams(matrix=off.astype(np.float32)), cfg,
                            np.empty((3,) + out, np.uint8))[0] / 255.0
    assert _per_shape_errors(shifted, cov, inst)[:, 0].min() > 0.1


# ------------------------------------------------------------------ the CPU path
def test_shrinking_less_than_2x_decodes_at_full_size():
    img = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    jpg = simplejpeg.encode_jpeg(img, 90)
    for m in (_affine(0.51, 10, (H, W), (400, 520)), _affine(1.5, 0, (H, W), (600, 600))):
        got, k = decode_for_warp(jpg, m, "x", (H, W), pad_value=50.0)
        assert k == 1
        np.testing.assert_array_equal(got, decode_image(jpg))


def test_cpu_paths_decode_reduced_and_agree_with_the_reference():
    from fastload.loader.backends import BackendContext, create_backend
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([128 + 90 * np.sin(xx / 45.0) * np.cos(yy / 35.0), 60 + yy * 0.2,
                    200 - xx * 0.15], -1).astype(np.uint8)  # smooth: little aliasing at full size
    jpg = simplejpeg.encode_jpeg(np.ascontiguousarray(img), 90)
    cfg = AugmentConfig(out_size=(96, 128), pad_value=114.0, rotate_deg=30, hue_deg=20,
                        noise_sigma=(1.0, 3.0), shadow_prob=1.0)
    params = [sample_params(cfg, 5, 0, i, H, W) for i in range(3)]
    assert {dct_scale(p.matrix, H, W) for p in params} <= {4, 8}
    with CpuAugmenter(cfg, num_threads=2) as aug:
        batch = aug.run([jpg] * 3, params)
    be = create_backend("cpu", BackendContext(cfg, batch_size=3, num_threads=1,
                                              device=torch.device("cpu")))
    images, errors = be.submit([jpg] * 3, params, ["a.jpg"] * 3, [(H, W)] * 3).result()
    assert errors == []
    np.testing.assert_array_equal(images, batch)
    for b, p in enumerate(params):
        dec, k = decode_for_warp(jpg, p.matrix, "a.jpg", (H, W), cfg.pad_value)
        ref = augment_image_reference(dec, p, cfg, source_scale=k)
        assert np.abs(batch[b].astype(np.float64) - ref).max() < 1e-3
        # close to the full-size decode's result away from the borders (it aliases)
        full = augment_image(decode_image(jpg), p, cfg, np.empty((3, 96, 128), np.float32))
        assert np.abs(full - batch[b])[:, 10:-10, 10:-10].mean() < 1.0
    _, errors = be.submit([jpg], params[:1], ["a.jpg"], [(H + 1, W)]).result()
    assert "a.jpg" in str(errors[0][1]) and "record says" in str(errors[0][1])
