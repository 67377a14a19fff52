"""The fused Numba CPU backend: kernel vs NumPy reference, vs DALI's CPU operators, the
augmentation issue's photometric / alignment / determinism checks, decoding."""
import math

import numpy as np
import pytest
import torch

from fastload.augment.config import AugmentConfig
from numba import njit

from fastload.augment.cpu import CpuAugmenter, augment_image, augment_image_reference
from fastload.augment.decode import DECODERS, decode_image
from fastload.augment.geometry import transform_instances
from fastload.augment.noise import noise_normals
from fastload.augment.ops.hue import RGB2YIQ
from fastload.augment.output import f32bits_to_f16bits
from fastload.dtypes import output_numpy_dtype as output_dtype
from fastload.augment.params import SampleParams, sample_params, shadow_mask
from fastload.record import Instance, Record
from fastload.targets.raster import fill_polygon
from fastload.synth.scenes import encode_jpeg, encode_png, make_scene

ALL_ON = dict(hflip_prob=0.5, vflip_prob=0.3, rotate_deg=(-60.0, 60.0), scale=(0.6, 1.4),
              translate=(-0.2, 0.2), hue_deg=(-40.0, 40.0), noise_sigma=(2.0, 10.0),
              shadow_prob=1.0, shadow_count=(1, 3), shadow_darkness=(0.3, 0.8),
              brightness=0.15, contrast=0.2)


def _params(matrix, hue=0.0, sigma=0.0, seed=0, polys=(), dark=1.0):
    return SampleParams(matrix=np.asarray(matrix, np.float32), hflip=False, vflip=False,
                        hue_deg=float(hue), noise_sigma=float(sigma), noise_seed=int(seed),
                        shadow_polygons=list(polys), shadow_darkness=float(dark))


def _run(img, p, cfg):
    out = np.empty((3,) + tuple(cfg.out_size), output_dtype(cfg.dtype))
    return augment_image(img, p, cfg, out)


def _textured(rng, h, w):
    return make_scene(rng, width=w, height=h, n_instances=4).image


# --------------------------------------------------------------- kernel vs reference
@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8", "bfloat16"])
def test_kernel_matches_reference_random(dtype):
    rng = np.random.default_rng(7)
    for k in range(4):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        img = _textured(rng, h, w)
        cfg = AugmentConfig(out_size=(int(rng.integers(30, 70)), int(rng.integers(30, 70))),
                            keep_aspect=bool(k % 2), pad_value=float(rng.choice([0.0, 114.0])),
                            dtype=dtype, **ALL_ON)
        p = sample_params(cfg, seed=3, epoch=k, index=k, src_h=h, src_w=w)
        a = _run(img, p, cfg).astype(np.float64)
        b = augment_image_reference(img, p, cfg).astype(np.float64)
        assert a.shape == b.shape == (3,) + cfg.out_size
        if dtype == "uint8":
            # same float64 math; a rounding tie may fall either way
            assert np.abs(a - b).max() <= 1 and np.mean(a != b) < 1e-3
        elif dtype == "float16":
            assert np.abs(a - b).max() <= 4e-3  # 1 float16 ulp at |v| < 4
        else:
            assert np.abs(a - b).max() < 1e-4


@njit
def _f16_convert(vals, out_bits, f32buf):
    """float32 values -> float16 bits with the kernel's converter."""
    f32bits = f32buf.view(np.uint32)
    for k in range(vals.shape[0]):
        f32buf[0] = vals[k]
        out_bits[k] = f32bits_to_f16bits(np.int64(f32bits[0]), float(vals[k]))


def test_float16_conversion_matches_numpy():
    rng = np.random.default_rng(0)
    vals = np.concatenate([
        rng.normal(0, 3, 20000), rng.uniform(-1e-4, 1e-4, 5000),   # subnormals
        rng.uniform(-7e4, 7e4, 2000), [0.0, -0.0, 65504.0, 65520.0, 1e6, -1e6, 6.1e-5, 5.96e-8,
                                       2.98e-8, 2.99e-8, np.inf, -np.inf]]).astype(np.float32)
    # exact ties between float16 neighbours
    base = rng.normal(0, 2, 3000).astype(np.float16).astype(np.float32)
    vals = np.concatenate([vals, base + np.float32(2.0) ** (np.floor(np.log2(np.abs(base) + 1e-30)) - 11)])
    vals = vals.astype(np.float32)
    with np.errstate(over="ignore"):
        want = vals.astype(np.float16).view(np.uint16)
    bits = np.empty(vals.shape, np.uint16)
    _f16_convert(vals, bits, np.zeros(1, np.float32))
    np.testing.assert_array_equal(bits, want)


def test_noise_generator_statistics():
    z = noise_normals(12345, 256, 256)
    assert abs(z.mean()) < 0.01
    assert abs(z.std() - 1) < 0.01
    # no structure: neighbours (x, y, channel) uncorrelated; another seed is independent
    for a, b in [(z[:, 1:], z[:, :-1]), (z[1:], z[:-1]), (z[..., 1], z[..., 0]), (z[..., 2], z[..., 1])]:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01
    z2 = noise_normals(12346, 256, 256)
    assert abs(np.corrcoef(z.ravel(), z2.ravel())[0, 1]) < 0.01
    # gaussian shape: tail fractions
    assert abs(np.mean(np.abs(z) > 2) - 0.0455) < 0.003
    assert abs(np.mean(np.abs(z) > 3) - 0.0027) < 0.0007


# --------------------------------------------------------------- vs DALI CPU operators
def _dali_run(img, build):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def pipe():
        x = fn.external_source(source=lambda: [img], batch=True, layout="HWC", dtype=types.UINT8)
        return build(fn, types, x)

    p = pipe()
    p.build()
    (o,) = p.run()
    return np.array(o[0])


def test_warp_matches_dali_warp_affine():
    rng = np.random.default_rng(1)
    img = _textured(rng, 120, 160)
    cfg = AugmentConfig(out_size=(96, 112), pad_value=37.0, dtype="uint8",
                        **{**ALL_ON, "hue_deg": (0, 0), "noise_sigma": (0, 0), "shadow_prob": 0.0,
                           "brightness": 0.0, "contrast": 0.0,
                           "hflip_prob": 1.0})
    for idx in range(3):
        p = sample_params(cfg, 5, 0, idx, 120, 160)
        ours = _run(img, p, cfg).transpose(1, 2, 0).astype(np.int32)
        m = p.matrix[:2].reshape(-1).tolist()
        dali = _dali_run(img, lambda fn, types, x: fn.warp_affine(
            x, matrix=m, size=list(cfg.out_size), inverse_map=False, fill_value=37.0,
            interp_type=types.INTERP_LINEAR)).astype(np.int32)
        d = np.abs(ours - dali)
        assert d.mean() < 0.1, d.mean()
        assert np.mean(d > 1) < 1e-3


def test_hue_matches_dali_hue():
    rng = np.random.default_rng(2)
    img = np.concatenate([_textured(rng, 48, 64), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)])
    cfg = AugmentConfig.off(out_size=img.shape[:2], keep_aspect=False, dtype="uint8")
    for hue in (-35.0, 12.5, 90.0, 170.0):
        p = _params(np.eye(3), hue=hue)
        ours = _run(img, p, cfg).transpose(1, 2, 0).astype(np.int32)
        dali = _dali_run(img, lambda fn, types, x: fn.hue(x, hue=hue)).astype(np.int32)
        d = np.abs(ours - dali)
        assert d.max() <= 1 and d.mean() < 0.01  # bit-exact here with DALI 2.4


# --------------------------------------------------------------- photometric checks
def test_hue_moves_pure_colour_by_drawn_amount():
    cfg = AugmentConfig.off(out_size=(16, 16), keep_aspect=False, dtype="float32",
                            hue_deg=(-60.0, 60.0))
    mean = np.asarray(cfg.mean)[:, None, None]
    std = np.asarray(cfg.std)[:, None, None]
    for colour in [(170, 90, 80), (60, 150, 90), (80, 90, 170)]:
        img = np.empty((16, 16, 3), np.uint8)
        img[:] = colour
        for idx in range(4):
            p = sample_params(cfg, 11, 0, idx, 16, 16)
            assert p.hue_deg != 0
            out = _run(img, p, cfg) * std + mean
            v = out[:, 8, 8]
            yiq0 = RGB2YIQ @ np.asarray(colour, np.float64)
            yiq1 = RGB2YIQ @ v
            # DALI's hue rotates the chroma (I, Q) plane; Y (luma) is unchanged
            moved = math.degrees(math.atan2(yiq0[2], yiq0[1]) - math.atan2(yiq1[2], yiq1[1]))
            moved = (moved + 180) % 360 - 180
            assert abs(moved - p.hue_deg) < 0.01
            assert abs(yiq1[0] - yiq0[0]) < 1e-3
            assert np.allclose(np.hypot(yiq1[1], yiq1[2]), np.hypot(yiq0[1], yiq0[2]), atol=1e-3)
            np.testing.assert_allclose(out, out[:, :1, :1] + 0 * out, atol=1e-4)  # uniform


def test_noise_has_drawn_sigma_and_zero_mean():
    cfg = AugmentConfig.off(out_size=(128, 128), keep_aspect=False, dtype="float32",
                            noise_sigma=(3.0, 9.0))
    img = np.full((128, 128, 3), 128, np.uint8)
    mean = np.asarray(cfg.mean)[:, None, None]
    std = np.asarray(cfg.std)[:, None, None]
    outs = []
    for idx in range(3):
        p = sample_params(cfg, 2, 0, idx, 128, 128)
        n = _run(img, p, cfg) * std + mean - 128.0
        assert abs(n.mean()) < 0.1
        assert abs(n.std() / p.noise_sigma - 1) < 0.02, (n.std(), p.noise_sigma)
        assert abs(np.corrcoef(n[:, :, 1:].ravel(), n[:, :, :-1].ravel())[0, 1]) < 0.02
        outs.append(n)
    assert not np.allclose(outs[0], outs[1])


def test_shadow_darkens_exactly_its_region():
    cfg = AugmentConfig.off(out_size=(96, 128), keep_aspect=False, dtype="float32",
                            shadow_prob=1.0, shadow_count=(1, 3), shadow_darkness=(0.3, 0.8))
    rng = np.random.default_rng(3)
    img = _textured(rng, 96, 128)
    plain_cfg = AugmentConfig.off(out_size=(96, 128), keep_aspect=False, dtype="float32")
    mean = np.asarray(cfg.mean)[:, None, None]
    std = np.asarray(cfg.std)[:, None, None]
    for idx in range(3):
        p = sample_params(cfg, 4, 0, idx, 96, 128)
        assert p.shadow_polygons and p.shadow_darkness < 1
        out = _run(img, p, cfg) * std + mean
        base = img.transpose(2, 0, 1).astype(np.float64)  # identity warp: exact
        mask = shadow_mask(p, 96, 128).astype(bool)
        assert 0 < mask.sum() < mask.size
        np.testing.assert_allclose(out[:, ~mask], base[:, ~mask], atol=1e-3)
        np.testing.assert_allclose(out[:, mask], base[:, mask] * p.shadow_darkness, atol=1e-3)
        plain = _run(img, sample_params(plain_cfg, 4, 0, idx, 96, 128), plain_cfg) * std + mean
        np.testing.assert_allclose(plain, base, atol=1e-3)


@pytest.mark.parametrize("src", [(48, 64), (120, 160)])
def test_all_off_equals_plain_resize_normalize(src):
    h, w = src
    rng = np.random.default_rng(4)
    img = _textured(rng, h, w)
    cfg = AugmentConfig.off(out_size=(96, 128), keep_aspect=False, dtype="float32")
    p = sample_params(cfg, 0, 0, 0, h, w)
    out = _run(img, p, cfg)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].double()
    ref = torch.nn.functional.interpolate(t, size=(96, 128), mode="bilinear", align_corners=False,
                                          antialias=False)[0].numpy()
    mean = np.asarray(cfg.mean)[:, None, None]
    std = np.asarray(cfg.std)[:, None, None]
    ref = (ref - mean) / std
    # torch replicates the border where the warp blends in pad_value: compare the interior
    # (output pixels whose bilinear taps all lie inside the source)
    b = 1
    d = np.abs(out - ref)[:, b:-b, b:-b] * std
    assert d.max() < 1.0, d.max()
    assert d.mean() < 0.05


# --------------------------------------------------------------- alignment (IoU)
def _record(scene):
    insts = []
    for si in scene.instances:
        allp = np.concatenate(si.polygons)
        bbox = np.array([allp[:, 0].min(), allp[:, 1].min(), allp[:, 0].max(), allp[:, 1].max()],
                        np.float32)
        insts.append(Instance(label=si.label, polygons=si.polygons, bbox=bbox, ignore=False,
                              keypoints=None))
    return Record.from_instances(0, "s.png", b"", "png", scene.height, scene.width, insts)


def test_alignment_iou_painted_polygons():
    cfg = AugmentConfig(out_size=(192, 256), dtype="uint8", hflip_prob=0.5, vflip_prob=0.3,
                        rotate_deg=(-180.0, 180.0), scale=(0.7, 1.3), translate=(-0.15, 0.15),
                        hue_deg=(0, 0), noise_sigma=(0, 0), shadow_prob=0.0)
    checked = 0
    flips = set()
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        scene = make_scene(rng, width=320, height=240, n_instances=4, unique_colors=True)
        rec = _record(scene)
        p = sample_params(cfg, seed, 0, seed, 240, 320)
        flips.add((p.hflip, p.vflip))
        out = _run(scene.image, p, cfg).transpose(1, 2, 0).astype(np.float64)
        ti = transform_instances(rec, p, cfg.out_size, min_visible=0.3)
        cols = np.array([(0, 0, 0)] + [si.color for si in scene.instances], np.float64)
        dist = ((out[:, :, None, :] - cols[None, None]) ** 2).sum(-1)
        label = np.argmin(dist, axis=2) - 1
        # bilinear blends along edges (e.g. a colour fading into black passes near the dark
        # grey of instance 0) belong to no instance: compare on pure-colour pixels only
        pure = dist.min(axis=2) < 10.0 ** 2
        order = list(ti.src_index)
        for k, src in enumerate(order):
            want = np.zeros(cfg.out_size, np.uint8)
            for part in ti.parts(k):
                fill_polygon(want, part, 1, 1.0)
            # later instances are painted on top: remove what they cover (moved too)
            for kk, src2 in enumerate(order):
                if src2 > src:
                    for part in ti.parts(kk):
                        fill_polygon(want, part, 0, 1.0)
            want = want.astype(bool) & pure
            if want.sum() < 150:
                continue
            got = (label == src) & pure
            iou = (want & got).sum() / (want | got).sum()
            assert iou >= 0.9, (seed, src, iou)
            checked += 1
    assert checked >= 10


# --------------------------------------------------------------- determinism, batches
def test_determinism_and_thread_count_independence():
    cfg = AugmentConfig(out_size=(64, 80), **ALL_ON)
    rng = np.random.default_rng(9)
    imgs = [_textured(rng, 60 + 7 * i, 90 - 5 * i) for i in range(5)]
    enc = [encode_jpeg(im) if i % 2 else encode_png(im) for i, im in enumerate(imgs)]
    dec = [decode_image(e) for e in enc]
    params = [sample_params(cfg, 1, 2, i, d.shape[0], d.shape[1]) for i, d in enumerate(dec)]
    with CpuAugmenter(cfg, num_threads=1) as a1, CpuAugmenter(cfg, num_threads=2) as a2:
        r1 = a1.run(enc, params)
        r2 = a2.run(enc, params)
        r3 = a2.run(dec, params, out=np.zeros_like(r1))
    assert r1.shape == (5, 3, 64, 80) and r1.dtype == np.float32
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(r1, r3)
    params_e1 = [sample_params(cfg, 1, 3, i, d.shape[0], d.shape[1]) for i, d in enumerate(dec)]
    with CpuAugmenter(cfg, num_threads=2) as a:
        r4 = a.run(enc, params_e1)
    assert not np.array_equal(r1, r4)
    t = torch.from_numpy(r1)  # zero-copy
    assert t.data_ptr() == r1.ctypes.data
    cfg_bf = AugmentConfig(out_size=(64, 80), dtype="bfloat16", **ALL_ON)
    with CpuAugmenter(cfg_bf, num_threads=2) as a:
        tb = a.run_torch(enc, params)
    assert tb.dtype == torch.bfloat16 and tb.shape == (5, 3, 64, 80)
    torch.testing.assert_close(tb, torch.from_numpy(r1).to(torch.bfloat16))


def test_bad_inputs_raise_value_error():
    cfg = AugmentConfig(out_size=(32, 32))
    img = np.zeros((20, 20, 3), np.uint8)
    p = sample_params(cfg, 0, 0, 0, 20, 20)
    with pytest.raises(ValueError, match="out_chw"):
        augment_image(img, p, cfg, np.empty((3, 31, 32), np.float32))
    with pytest.raises(ValueError, match="HWC uint8"):
        augment_image(np.zeros((20, 20), np.uint8), p, cfg, np.empty((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="singular"):
        augment_image(img, _params(np.zeros((3, 3))), cfg, np.empty((3, 32, 32), np.float32))
    with CpuAugmenter(cfg, num_threads=2) as a:
        with pytest.raises(ValueError, match="cat.jpg"):
            a.run([b"\xff\xd8\xff garbage"], [p], names=["cat.jpg"])
        with pytest.raises(ValueError, match="sample 1"):
            a.run([encode_jpeg(img), b"not an image"], [p, p])
        with pytest.raises(ValueError, match="params"):
            a.run([img], [p, p])


# --------------------------------------------------------------- decoding
def test_decoders_agree_and_formats_fall_back():
    rng = np.random.default_rng(5)
    img = _textured(rng, 48, 64)
    jpg = encode_jpeg(img, quality=95)
    ref = decode_image(jpg)
    assert ref.shape == (48, 64, 3) and ref.dtype == np.uint8 and ref.flags.c_contiguous
    assert np.abs(ref.astype(int) - img).mean() < 8  # 4:2:0 chroma; BGR would be ~40
    for name in DECODERS:
        np.testing.assert_array_equal(DECODERS[name](jpg), ref)
    np.testing.assert_array_equal(decode_image(encode_png(img)), img)
    gray = img[:, :, 0]
    from io import BytesIO
    from PIL import Image
    for mode, arr in (("L", gray), ("RGBA", np.dstack([img, np.full((48, 64), 255, np.uint8)]))):
        buf = BytesIO()
        Image.fromarray(arr, mode).save(buf, "PNG")
        d = decode_image(buf.getvalue())
        assert d.shape == (48, 64, 3)
        np.testing.assert_array_equal(d, np.dstack([gray] * 3) if mode == "L" else img)
    buf = BytesIO()
    Image.fromarray(gray, "L").save(buf, "JPEG")
    assert decode_image(buf.getvalue()).shape == (48, 64, 3)
    with pytest.raises(ValueError, match="x.jpg"):
        decode_image(jpg[: len(jpg) // 3], name="x.jpg")
    with pytest.raises(ValueError, match="empty"):
        decode_image(b"")


def test_kernel_releases_the_gil():
    """While a worker thread runs the kernel, the main thread keeps running Python code."""
    import threading
    import time
    cfg = AugmentConfig(out_size=(512, 512), **ALL_ON)
    img = _textured(np.random.default_rng(6), 240, 320)
    p = sample_params(cfg, 0, 0, 0, 240, 320)
    out = np.empty((3, 512, 512), np.float32)
    augment_image(img, p, cfg, out)  # compiled already; warm
    t0 = time.perf_counter()
    augment_image(img, p, cfg, out)
    one = time.perf_counter() - t0
    done = threading.Event()

    def work():
        for _ in range(3):
            augment_image(img, p, cfg, out)
        done.set()

    ticks = 0
    th = threading.Thread(target=work)
    th.start()
    t0 = time.perf_counter()
    while not done.is_set():
        ticks += 1
        time.sleep(0)
    elapsed = time.perf_counter() - t0
    th.join()
    # with the GIL held for a whole kernel the loop could only tick between kernel calls
    assert ticks > 50, (ticks, elapsed, one)


# --------------------------------------------------------------- the DALI pipeline's checks, this backend
def _fused_run(cfg, device, encs, params, batch_size=8):
    with CpuAugmenter(cfg, num_threads=2) as aug:
        return aug.run_torch(encs, params)


BACKEND_CHECKS = [
    ("test_flip_convention_exact", dict(hflip=True, vflip=False)),
    ("test_flip_convention_exact", dict(hflip=False, vflip=True)),
    ("test_flip_convention_exact", dict(hflip=True, vflip=True)),
    ("test_all_off_equals_resize_normalize", dict(keep_aspect=True)),
    ("test_all_off_equals_resize_normalize", dict(keep_aspect=False)),
    ("test_alignment_polygons_iou", {}),
    ("test_alignment_keypoint_dots", {}),
    ("test_hue_moves_pure_colour", {}),
    ("test_noise_std_and_mean", {}),
    ("test_shadow_exact_region_and_factor", {}),
]


@pytest.mark.parametrize("name,kw", BACKEND_CHECKS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BACKEND_CHECKS)])
def test_augment_issue_checks_on_fused_backend(name, kw, monkeypatch):
    """The DALI pipeline's backend-parametrized tests (tests/augment/test_dali.py),
    unchanged, with their ``run`` pointed at this backend instead of DALI."""
    from tests.augment import test_dali as dt
    monkeypatch.setattr(dt, "run", _fused_run)
    getattr(dt, name)(device="fused", **kw)

