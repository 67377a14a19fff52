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
