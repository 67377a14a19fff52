"""The decoder policy (fastload.augment.decode) on real crafted files: EXIF orientation is
ignored on every path, truncated / corrupt data fails naming the sample (never a grey fill,
never a lenient fallback), libjpeg warnings follow the documented strict policy, the header is
checked (pixel cap, record size) before anything is decoded."""
import io
import time

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image, ImageFile

import fastload.limits
from fastload.augment.config import AugmentConfig
from fastload.augment.decode import (DECODERS, decode_for_warp, decode_image, read_header,
                                     sniff_format)
from fastload.limits import ImageTooLarge

H, W = 40, 64  # stored size; an EXIF rotation by 90 degrees would give 64x40


def _stored_pixels():
    """A picture whose orientation shows: a bright block in the top-left corner."""
    img = np.full((H, W, 3), 40, np.uint8)
    img[:12, :20] = (250, 200, 30)
    return img


def _jpeg(img=None, exif_orientation=None, quality=95):
    img = _stored_pixels() if img is None else img
    kw = {}
    if exif_orientation is not None:
        ex = Image.Exif()
        ex[0x0112] = exif_orientation
        kw["exif"] = ex.tobytes()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def _png(img=None, exif_orientation=None):
    img = _stored_pixels() if img is None else img
    kw = {}
    if exif_orientation is not None:
        ex = Image.Exif()
        ex[0x0112] = exif_orientation
        kw["exif"] = ex.tobytes()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG", **kw)
    return buf.getvalue()


def _scan_start(jpg: bytes) -> int:
    sos = jpg.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(jpg[sos + 2:sos + 4], "big")


def _sof(jpg: bytes) -> int:
    return jpg.index(b"\xff\xc0")


# ------------------------------------------------------------------ EXIF orientation
def test_exif_rotated_jpeg_decodes_in_stored_pixel_order_on_every_path():
    jpg = _jpeg(exif_orientation=6)
    with Image.open(io.BytesIO(jpg)) as im:
        assert im.getexif()[0x0112] == 6  # the file really says "rotate 90 degrees"
    ref = simplejpeg.decode_jpeg(_jpeg())
    assert ref.shape == (H, W, 3)
    outs = {"decode_image": decode_image(jpg, "r.jpg", size=(H, W)),
            "decode_for_warp": decode_for_warp(jpg, np.eye(3, dtype=np.float32), "r.jpg",
                                               size=(H, W)).image}
    outs.update({f"DECODERS[{n}]": dec(jpg) for n, dec in DECODERS.items()})
    for where, out in outs.items():
        assert out.shape == (H, W, 3), where
        np.testing.assert_array_equal(out, ref, err_msg=where)
    assert read_header(jpg).height == H


def test_exif_rotated_png_decodes_in_stored_pixel_order():
    png = _png(exif_orientation=6)
    np.testing.assert_array_equal(decode_image(png, "r.png", size=(H, W)), _stored_pixels())


def test_exif_rotated_jpeg_through_the_cpu_backend_keeps_its_record_size():
    from fastload.loader.backends import BackendContext, create_backend
    from fastload.augment.params import compose_matrix, SampleParams
    cfg = AugmentConfig.off(out_size=(H, W), dtype="uint8")
    be = create_backend("cpu", BackendContext(cfg, batch_size=1, num_threads=1,
                                              device=torch.device("cpu")))
    p = SampleParams(matrix=compose_matrix(H, W, H, W))
    images, errors = be.submit([_jpeg(exif_orientation=6)], [p], ["r.jpg"], [(H, W)]).result()
    assert errors == []
    hwc = images[0].transpose(1, 2, 0)
    assert hwc[:10, :18].mean() > 150 and hwc[-10:, -18:].mean() < 60  # block stays top-left


# ------------------------------------------------------------------ truncated / corrupt
@pytest.mark.parametrize("cut", [0.5, 0.9, -2])
def test_truncated_jpeg_fails_naming_the_sample(cut):
    jpg = _jpeg(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8))
    bad = jpg[:cut] if cut < 0 else jpg[:int(len(jpg) * cut)]
    with pytest.raises(ValueError, match=r"cut\.jpg: corrupt JPEG.*Premature end"):
        decode_image(bad, "cut.jpg")
    big = np.eye(3, dtype=np.float32) * 0.2
    big[2, 2] = 1
    with pytest.raises(ValueError, match=r"cut\.jpg: corrupt JPEG"):
        decode_for_warp(bad, big, "cut.jpg")
    # what the lenient decoder would have done: a grey fill
    assert simplejpeg.decode_jpeg(bad, strict=False).shape == (H, W, 3)


def test_corrupt_scan_fails_and_is_not_decoded_by_a_fallback():
    jpg = _jpeg(np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8))
    mid = (_scan_start(jpg) + len(jpg)) // 2
    marker_inside = jpg[:mid] + b"\xff\xd0" + jpg[mid:]  # a restart marker in a scan without
    with pytest.raises(ValueError, match=r"bad\.jpg: corrupt JPEG, not decoded.*premature end "
                                         r"of data segment"):
        decode_image(marker_inside, "bad.jpg")


def test_truncated_png_fails_naming_the_sample():
    png = _png(np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"cut\.png: cannot decode the PNG"):
        decode_image(png[:len(png) * 2 // 3], "cut.png")


def test_pil_never_fills_a_truncated_image(monkeypatch):
    import fastload  # noqa: F401 - importing fastload must not change PIL's setting
    import fastload.loader  # noqa: F401
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    png = _png(np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8))
    cut = png[:len(png) * 2 // 3]
    with pytest.raises(OSError, match="truncated"):
        DECODERS["pil"](cut)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # set by someone else
    with pytest.raises(ValueError, match="LOAD_TRUNCATED_IMAGES"):
        DECODERS["pil"](cut)


# ------------------------------------------------------------------ warnings: strict policy
def test_bytes_after_the_end_marker_are_not_read():
    jpg = _jpeg()
    np.testing.assert_array_equal(decode_image(jpg + b"\x00trailing junk" * 20), decode_image(jpg))


def test_junk_before_the_end_marker_is_refused_because_corruption_looks_the_same():
    rng = np.random.default_rng(4)
    jpg = _jpeg(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    assert jpg.endswith(b"\xff\xd9")
    junk = jpg[:-2] + b"junk" * 4 + jpg[-2:]  # a camera quirk, harmless here
    with pytest.raises(ValueError, match=r"q\.jpg: corrupt JPEG.*\d+ extraneous bytes before "
                                         r"marker 0xd9"):
        decode_image(junk, "q.jpg")
    # garbage written over the middle of the scan: the very same (and only) warning
    mid = (_scan_start(jpg) + len(jpg)) // 2
    garbage = rng.integers(0, 255, 200, dtype=np.uint8).tobytes().replace(b"\xff", b"\x00")
    corrupt = jpg[:mid] + garbage + jpg[mid + 200:]
    with pytest.raises(ValueError) as e:
        simplejpeg.decode_jpeg(corrupt)
    assert "extraneous bytes before marker 0xd9" in str(e.value)
    assert not np.array_equal(simplejpeg.decode_jpeg(corrupt, strict=False),
                              simplejpeg.decode_jpeg(jpg))
    with pytest.raises(ValueError, match="corrupt JPEG"):
        decode_image(corrupt, "q.jpg")


def test_header_warnings_are_refused_too():
    jpg = _jpeg(exif_orientation=6)
    dqt = jpg.index(b"\xff\xdb")
    junk_in_header = jpg[:dqt] + b"xyz" + jpg[dqt:]  # OpenCV would decode this one
    with pytest.raises(ValueError, match=r"h\.jpg: corrupt JPEG.*extraneous bytes before "
                                         r"marker 0xdb"):
        decode_image(junk_in_header, "h.jpg")
    jfif = bytearray(_jpeg())
    jfif[jfif.index(b"JFIF\x00") + 5] = 9  # JFIF revision 9.01
    with pytest.raises(ValueError, match=r"unknown JFIF revision"):
        decode_image(bytes(jfif), "v.jpg")


def test_only_jpegs_simplejpeg_cannot_read_go_to_the_fallbacks():
    jpg = bytearray(_jpeg())
    jpg[_sof(jpg) + 4] = 12  # claims 12-bit samples: "Unsupported JPEG data precision 12"
    with pytest.raises(ValueError) as e:
        decode_image(bytes(jpg), "p12.jpg")
    msg = str(e.value)
    assert msg.startswith("p12.jpg: cannot decode the JPEG (simplejpeg cannot read it: "
                          "Unsupported JPEG data precision 12)")
    assert "decode_pil" in msg  # the fallbacks were tried (and refused it too)


# ------------------------------------------------------------------ header checks first
def _bomb_jpeg(h=60000, w=60000):
    jpg = bytearray(_jpeg())
    s = _sof(jpg)
    jpg[s + 5:s + 9] = h.to_bytes(2, "big") + w.to_bytes(2, "big")
    return bytes(jpg)


def test_decompression_bomb_fails_from_the_header_before_any_decode():
    bomb = _bomb_jpeg()
    assert simplejpeg.decode_jpeg_header(bomb)[:2] == (60000, 60000)
    t = time.perf_counter()
    for f in (lambda: decode_image(bomb, "bomb.jpg"),
              lambda: decode_for_warp(bomb, np.eye(3), "bomb.jpg", size=(60000, 60000)),
              lambda: read_header(bomb, "bomb.jpg")):
        with pytest.raises(ImageTooLarge, match=r"bomb\.jpg: 60000x60000 is 3,600,000,000 "
                                                r"pixels, over the limit"):
            f()
    assert time.perf_counter() - t < 1.0  # a decode would take ~20 s and 10.8 GB
    png = bytearray(_png())
    png[16:24] = (70000).to_bytes(4, "big") + (50000).to_bytes(4, "big")
    with pytest.raises(ImageTooLarge, match=r"bomb\.png: 70000x50000"):
        decode_image(bytes(png), "bomb.png")


def test_pixel_cap_is_read_at_call_time(monkeypatch):
    jpg = _jpeg()
    monkeypatch.setattr(fastload.limits, "MAX_IMAGE_PIXELS", H * W - 1)
    with pytest.raises(ImageTooLarge, match="small.jpg"):
        decode_image(jpg, "small.jpg")
    monkeypatch.setattr(fastload.limits, "MAX_IMAGE_PIXELS", None)  # no limit
    assert decode_image(jpg, "small.jpg").shape == (H, W, 3)
    assert read_header(_bomb_jpeg(), "bomb.jpg")[1:3] == (60000, 60000)


def test_record_size_is_checked_against_the_header_before_decoding():
    jpg = _jpeg()
    cut = jpg[:-40]  # the header is complete; the file would fail as corrupt if decoded
    with pytest.raises(ValueError, match=r"s\.jpg: image is 40x64 \(HxW\) but its record says "
                                         r"41x64"):
        decode_image(cut, "s.jpg", size=(41, 64))
    with pytest.raises(ValueError, match="record says"):
        decode_for_warp(_png(), np.eye(3), "s.png", size=(H, W + 1))
    assert decode_image(jpg, "s.jpg", size=(H, W)).shape == (H, W, 3)


def test_bad_inputs_name_the_sample():
    for data, match in ((b"", "empty"), (b"\xff\xd8\xff garbage", "corrupt JPEG"),
                        (b"\x89PNG\r\n\x1a\nxx", "corrupt PNG"),
                        (b"not an image", "cannot read the image header"),
                        (np.zeros((2, 2), np.uint8), "1-D uint8"), ("text", "must be bytes")):
        with pytest.raises(ValueError, match=f"x.img: .*{match}"):
            decode_image(data, "x.img")
    assert sniff_format(_png()) == "png" and sniff_format(_jpeg()) == "jpeg"


def test_verify_uses_the_same_decoder_policy():
    from fastload.record import Record
    from fastload.store.verify import _image_problem
    def rec(data, h=H, w=W):
        return Record(id=1, file_name="a.jpg", image_bytes=data, image_format="jpeg",
                      height=h, width=w)
    assert _image_problem(rec(_jpeg(exif_orientation=6))) is None  # stored order: no mismatch
    assert "record says 64x40" in _image_problem(rec(_jpeg(exif_orientation=6), W, H))
    assert "corrupt JPEG" in _image_problem(rec(_jpeg()[:-300]))
    jpg = _jpeg()
    assert "extraneous bytes" in _image_problem(rec(jpg[:-2] + b"junk" * 4 + jpg[-2:]))
    assert "over the limit" in _image_problem(rec(_bomb_jpeg(), 60000, 60000))


# ------------------------------------------------------------------ the DALI backend too
def test_dali_ignores_exif_orientation_and_refuses_a_bomb_before_decoding():
    """DALI's decoders apply EXIF orientation by default and have no pixel cap: fastload's DALI
    graph decodes in stored pixel order like every other path, and a bomb header is refused
    before DALI allocates anything (DALI's CPU operators; the GPU graph is built the same)."""
    pytest.importorskip("nvidia.dali")
    from fastload.augment.dali import DaliAugmenter, SampleErrors
    from fastload.augment.params import SampleParams, compose_matrix
    cfg = AugmentConfig.off(out_size=(H, W), dtype="uint8")
    aug = DaliAugmenter(cfg, batch_size=2, device_id=None, num_threads=1)
    p = SampleParams(matrix=compose_matrix(H, W, H, W))
    out = aug.run([_jpeg(exif_orientation=6), _jpeg(exif_orientation=3)], [p, p],
                  names=["r6.jpg", "r3.jpg"], sizes=[(H, W), (H, W)])
    ref = simplejpeg.decode_jpeg(_jpeg())
    for b in range(2):
        hwc = np.asarray(out[b]).transpose(1, 2, 0).astype(np.int16)
        assert hwc.shape == (H, W, 3)
        assert np.abs(hwc - ref).max() <= 2  # the warp by the identity, rounded
    t = time.perf_counter()
    with pytest.raises(SampleErrors, match=r"\(bomb\.jpg\): 60000x60000 is 3,600,000,000 pixels"):
        aug.run([_bomb_jpeg()], [p], names=["bomb.jpg"])
    assert time.perf_counter() - t < 2.0
    aug.close()
