"""``fastload.synth.photos``: photo-like images have the size asked, camera-like JPEG sizes, a
natural-image power spectrum (slope about -2) and polygons that pack into targets."""
import numpy as np
import pytest

from fastload.synth.photos import make_photo, pink_field, write_photo_dataset
from fastload.synth.scenes import encode_jpeg, make_scene


def spectrum_slope(image: np.ndarray) -> float:
    """Slope of the radially averaged power spectrum of the luminance, log-log, over
    0.01-0.25 cycles per pixel (a centered square crop, Hann window)."""
    g = image.astype(np.float64).mean(2)
    h, w = g.shape
    s = min(h, w)
    g = g[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    g = (g - g.mean()) * np.outer(np.hanning(s), np.hanning(s))
    p = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    yy, xx = np.indices(p.shape)
    r = np.hypot(yy - s / 2, xx - s / 2) / s
    edges = np.logspace(np.log10(0.01), np.log10(0.25), 16)
    f, pw = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (r >= lo) & (r < hi)
        if sel.any():
            f.append(np.sqrt(lo * hi))
            pw.append(p[sel].mean())
    return float(np.polyfit(np.log(f), np.log(pw), 1)[0])


def test_pink_field():
    rng = np.random.default_rng(0)
    assert pink_field(rng, 48, 64).shape == (48, 64)
    f = pink_field(rng, 512, 512)
    assert f.shape == (512, 512) and f.dtype == np.float32
    assert abs(f.mean()) < 1e-4 and abs(f.std() - 1) < 1e-3
    img = np.repeat(((f - f.min()) / np.ptp(f) * 255)[..., None], 3, 2)
    assert spectrum_slope(img) == pytest.approx(-2.0, abs=0.25)  # amplitude 1/f: power 1/f^2


@pytest.mark.parametrize("size,mb", [((640, 480), (0.06, 0.25)), ((1920, 1080), (0.4, 1.6)),
                                     ((4000, 3000), (3.0, 6.0))])
def test_photo_size_file_size_and_spectrum(size, mb):
    w, h = size
    scene = make_photo(np.random.default_rng(1), width=w, height=h)
    assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
    n = len(encode_jpeg(scene.image, 90)) / 1e6
    assert mb[0] <= n <= mb[1], n  # camera-like: a 12 MP photo at quality 90 is 3-6 MB
    slope = spectrum_slope(scene.image)
    assert -3.0 < slope < -1.6, slope  # natural images: about -2
    assert 8 <= len(scene.instances) <= 25
    for inst in scene.instances:
        for p in inst.polygons:
            assert p.dtype == np.float32 and p.shape[1] == 2 and len(p) >= 12
            assert (p >= 0).all() and (p[:, 0] <= w).all() and (p[:, 1] <= h).all()


def test_photos_are_harder_to_compress_than_scenes():
    """What the photo generator is for: at the same size its JPEGs are clearly larger than the
    synthetic scenes' (more detail to decode; about 1.7x at 640x480), textured everywhere."""
    rng = np.random.default_rng(2)
    photo = make_photo(rng, 640, 480).image
    scene = make_scene(rng, 640, 480).image
    assert len(encode_jpeg(photo)) > 1.4 * len(encode_jpeg(scene))
    local = np.abs(np.diff(photo.astype(np.int16), axis=1)).mean(2)
    assert np.percentile(local, 10) > 0.5  # no flat regions


def test_photo_dataset_packs_and_makes_targets(tmp_path):
    from fastload import Dataset
    from fastload.augment.config import AugmentConfig
    from fastload.loader import TorchDataset
    from fastload.packing import pack
    write_photo_dataset(tmp_path / "src", n_images=2, width=320, height=240, seed=3)
    again = tmp_path / "again"
    write_photo_dataset(again, n_images=2, width=320, height=240, seed=3)
    for f in ("annotations/instances.json", "images/000000.jpg"):
        assert (tmp_path / "src" / f).read_bytes() == (again / f).read_bytes()  # deterministic
    summary = pack(tmp_path / "src", tmp_path / "packed", format="coco", workers=1,
                   strict=True, progress=False)
    assert summary.images == 2 and summary.problems == 0
    ds = Dataset(tmp_path / "packed")
    assert (ds[0].width, ds[0].height) == (320, 240) and ds[0].num_instances >= 8
    s = TorchDataset(tmp_path / "packed", augment=AugmentConfig(out_size=(128, 128)),
                     targets=["centernet"])[0]
    assert int(s["reg_mask"].sum()) >= 4
