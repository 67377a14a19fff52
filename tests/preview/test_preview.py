"""`fastload inspect`: the grid shows what the loader produces, overlays on their objects."""
import json

import numpy as np
import pytest
from PIL import Image

from fastload.augment.config import AugmentConfig
from fastload.preview import TITLE_H, denormalize, draw_annotations, render, sample_overlays



@pytest.fixture
def packed_scenes(tmp_path):
    """Factory: a small synthetic COCO dataset, packed; returns the packed path."""
    from fastload.packing import pack
    from fastload.synth.datasets import write_dataset

    def make(n=4, unique_colors=False):
        src = tmp_path / f"src{n}{int(unique_colors)}"
        # unique colours: one instance per image, so no outline is hidden under another object
        extra = dict(n_instances=1) if unique_colors else {}
        write_dataset(src, "coco", n_images=n, seed=7, width=160, height=120,
                      unique_colors=unique_colors, multipart_prob=0.0, **extra)
        out = tmp_path / f"packed{n}{int(unique_colors)}"
        pack(src, out, format="coco", workers=1, progress=False)
        return out
    return make


def _dilate(m, r, outside=False):
    """Binary dilation by a (2r+1)^2 square; pixels beyond the frame count as ``outside``."""
    h, w = m.shape
    p = np.pad(m, r, constant_values=outside)
    out = np.zeros_like(m)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= p[dy:dy + h, dx:dx + w]
    return out


def test_grid_size_and_titles(packed_scenes):
    path = packed_scenes(n=6, unique_colors=False)
    img = render(path, n=6, tile=128, cols=3, augment=AugmentConfig(out_size=(96, 128)))
    # 3 columns x 2 panels x 128 wide; 2 rows x (tile height for 96x128 at scale 1 + title)
    assert img.size == (3 * 2 * 128, 2 * (96 + TITLE_H))


def test_polygon_overlay_falls_on_objects(packed_scenes):
    """White shapes on black: every outline pixel the overlay draws lies on an object's edge."""
    from fastload.loader import DataLoader

    path = packed_scenes(n=4, unique_colors=True)
    cfg = AugmentConfig(out_size=(160, 160), hflip_prob=0.5, rotate_deg=(-40, 40), hue_deg=(0, 0),
                        noise_sigma=(0, 0), shadow_prob=0.0)
    loader = DataLoader(path, batch_size=4, seed=3, augment=cfg, targets=[], device="cpu")
    batch = next(iter(loader))
    checked = 0
    for b in range(4):
        img = denormalize(batch["image"][b], cfg)
        obj = img.max(2) > 30
        ov = sample_overlays(batch, b)
        if not ov["polygons"]:
            continue
        canvas = np.zeros_like(img)
        drawn = np.asarray(draw_annotations(canvas, ov["polygons"], width=1, color=(255, 255, 255)))
        line = drawn.max(2) > 0
        edge = _dilate(obj, 2) & _dilate(~obj, 2, outside=True)  # within 2 px of an object's boundary
        frac = (line & edge).sum() / max(1, line.sum())
        assert frac > 0.95, f"sample {b}: only {frac:.2%} of the outline lies on object edges"
        checked += 1
    assert checked >= 2


def test_raw_and_augmented_differ_as_configured(packed_scenes):
    """Only a horizontal flip configured: the augmented grid is the raw grid mirrored."""
    path = packed_scenes(n=1, unique_colors=True)
    flip = AugmentConfig.off(out_size=(128, 128), hflip_prob=1.0)
    aug = np.asarray(render(path, n=1, tile=128, augment=flip, heat=False, targets=()), np.float32)
    raw = np.asarray(render(path, n=1, tile=128, augment=flip, raw=True, heat=False, targets=()), np.float32)
    a, r = aug[TITLE_H:], raw[TITLE_H:]
    changed = (np.abs(a - r).max(2) > 30).mean()
    assert changed > 0.02, f"a flip was configured but only {changed:.2%} of the grid changed"
    # mirrored raw matches the augmented one except along drawn lines
    close = (np.abs(a - r[:, ::-1]).max(2) <= 8).mean()
    assert close > 0.9, f"augmented is not the mirrored raw image ({close:.2%} pixels agree)"


def test_cli_writes_png(packed_scenes, tmp_path):
    from fastload.cli import main

    path = packed_scenes(n=2, unique_colors=False)
    cfgp = tmp_path / "aug.json"
    cfgp.write_text(json.dumps(AugmentConfig(out_size=(64, 64)).to_dict()))
    out = tmp_path / "grid.png"
    assert main(["inspect", str(path), "--augment", str(cfgp), "--n", "2", "--tile", "64",
                 "--out", str(out)]) == 0
    im = Image.open(out)
    assert im.size == (2 * 2 * 64, 64 + TITLE_H)


def test_cli_bad_input_is_one_clear_line(tmp_path, capsys):
    from fastload.cli import main

    assert main(["inspect", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "fastload inspect:" in err and "nope" in err and "Traceback" not in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"hflip_prob": 3}')
    assert main(["inspect", str(tmp_path), "--augment", str(bad)]) == 2
    assert "hflip_prob must be in [0, 1]" in capsys.readouterr().err


def _batch_equal(a, b):
    import torch
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


def test_render_of_a_loader_is_what_that_loader_yields(packed_scenes):
    """Its seed, the epoch its next iteration runs, its augmentation, targets and order: the
    grid of render(loader) is the grid of the loader's own first batch; the loader's
    position is left alone."""
    from fastload.loader import DataLoader
    from fastload.preview import preview_samples, render_batch

    path = packed_scenes(n=6, unique_colors=False)
    cfg = AugmentConfig(out_size=(96, 96), rotate_deg=(-30, 30), hflip_prob=0.5)
    kw = dict(batch_size=4, shuffle=True, seed=7, augment=cfg, targets=["masks"], device="cpu",
              num_threads=2)
    ld = DataLoader(path, **kw)
    ld.set_epoch(2)
    state = ld.state_dict()
    p = preview_samples(ld, n=4)
    img = render(ld, n=4, tile=64, cols=2)
    assert ld.state_dict() == state
    want = next(iter(ld))
    assert p.indices == want["index"].tolist() and not p.errors
    _batch_equal(p.batch, want)  # masks and no heatmap: the loader's targets, not centernet
    titles = [f"#{i} {ld.dataset[i].file_name}" for i in p.indices]
    grid = render_batch(want, cfg, titles, tile=64, cols=2)
    assert np.array_equal(np.asarray(img), np.asarray(grid))
    # what is given explicitly wins over the loader's
    q = preview_samples(ld, n=2, epoch=0, targets=["centernet"], shuffle=False)
    other = DataLoader(path, **dict(kw, shuffle=False, targets=["centernet"], batch_size=2))
    _batch_equal(q.batch, next(iter(other)))


def test_a_bad_sample_is_a_tile_naming_its_error(blobs_with_faults):
    """A corrupt image and an undecodable record: the grid is drawn, their tiles name the
    error, the other samples are those the loader yields (on_error='skip')."""
    from fastload.loader import DataLoader
    from fastload.preview import ERROR_FILL, preview_samples

    ds = blobs_with_faults
    cfg = AugmentConfig(out_size=(64, 64))
    ld = DataLoader(ds, batch_size=4, augment=cfg, device="cpu", num_threads=2)
    p = preview_samples(ld, n=4)
    assert sorted(p.errors) == [1, 2]
    assert p.errors[1].stage == "decoding / augmenting the image"
    assert p.errors[2].stage == "reading the record"
    assert p.titles[1] == "#1 img_0001.jpg FAILED" and p.titles[2] == "#2 unreadable record"
    skip = DataLoader(ds, batch_size=4, augment=cfg, device="cpu", num_threads=2,
                      on_error="skip")
    _batch_equal(p.batch, next(iter(skip)))
    img = np.asarray(render(ld, n=4, tile=64, cols=4, heat=False))
    tiles = [img[TITLE_H:, 64 * k:64 * (k + 1)] for k in range(4)]
    for k in (1, 2):  # the error colour, with text on it
        fill = (tiles[k] == ERROR_FILL).all(-1).mean()
        assert 0.5 < fill < 0.99, (k, fill)
    for k in (0, 3):
        assert (tiles[k] == ERROR_FILL).all(-1).mean() < 0.01


@pytest.fixture
def blobs_with_faults():
    from tests.helpers.data import blob_dataset, corrupt_image, corrupt_record
    ds = blob_dataset(6)
    corrupt_image(ds, 1)
    corrupt_record(ds, 2)
    return ds


def test_cli_draws_and_lists_a_corrupt_lmdb_record(packed_scenes, tmp_path, capsys):
    import lmdb

    from fastload.cli import main
    from fastload.store import Dataset, encode_key

    path = packed_scenes(n=3, unique_colors=False)
    ds = Dataset(path)
    shard, pos = ds.locate(1)
    shard_file = path / ds.manifest["shards"][shard]["file"]
    env = lmdb.open(str(shard_file), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(encode_key(pos), b"\xc1garbage")
    env.close()
    out = tmp_path / "grid.png"
    assert main(["inspect", str(path), "--n", "3", "--tile", "64", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    assert "sample index 1" in printed and "reading the record" in printed and str(shard_file) in printed
    assert Image.open(out).size == (3 * 2 * 64, 64 + TITLE_H)
