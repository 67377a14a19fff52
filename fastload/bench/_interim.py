"""Stand-ins used ONLY while a sibling part has not landed on this branch.

`fastload bench` is written against the interfaces fixed in BRIEF.md:
``fastload.augment.params.sample_params``, ``fastload.targets.reference.centernet_python``
/ ``centernet_numpy`` and ``tools.synth_formats.write_dataset``. When one of them cannot be
imported, :func:`resolve` returns the stand-in below instead and records the fact, so
``results.json`` and ``report.md`` say which implementation produced the numbers
(``"impl"`` field). Once the real modules are merged these are never used.

Coordinates: continuous pixel coordinates (DESIGN.md): pixel (i, j) covers
[j, j+1) x [i, i+1); a horizontal flip of the output frame is x' = W - x.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

USED: dict = {}  # name -> "real" | "interim: <why>"


# --------------------------------------------------------------------------- params
@dataclass
class InterimSampleParams:
    matrix: np.ndarray
    hflip: bool
    vflip: bool
    hue_deg: float
    noise_sigma: float
    noise_seed: int
    shadow_polygons: list = field(default_factory=list)
    shadow_darkness: float = 1.0


def interim_sample_params(cfg, seed, epoch, index, src_h, src_w):
    """Same contract as ``fastload.augment.params.sample_params`` (deterministic in
    (seed, epoch, index)); not bit-identical to it."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index), 0xB1])
    H, W = cfg.out_size
    if cfg.keep_aspect:
        s0 = min(H / src_h, W / src_w)
        sx = sy = s0
    else:
        sx, sy = W / src_w, H / src_h
    fit = np.array([[sx, 0, (W - sx * src_w) / 2], [0, sy, (H - sy * src_h) / 2], [0, 0, 1]])
    hflip = bool(rng.random() < cfg.hflip_prob)
    vflip = bool(rng.random() < cfg.vflip_prob)
    ang = math.radians(rng.uniform(*cfg.rotate_deg))
    sc = rng.uniform(*cfg.scale)
    tx, ty = rng.uniform(*cfg.translate) * W, rng.uniform(*cfg.translate) * H
    cx, cy = W / 2, H / 2
    c, s = math.cos(ang) * sc, math.sin(ang) * sc
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    flip = np.diag([-1.0 if hflip else 1.0, -1.0 if vflip else 1.0, 1.0])
    to_c = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    back = np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1]])
    m = (back @ rot @ flip @ to_c @ fit).astype(np.float32)
    shadows = []
    darkness = 1.0
    if rng.random() < cfg.shadow_prob:
        darkness = float(rng.uniform(*cfg.shadow_darkness))
        for _ in range(int(rng.integers(cfg.shadow_count[0], cfg.shadow_count[1] + 1))):
            px, py = rng.uniform(0, W), rng.uniform(0, H)
            r = rng.uniform(0.1, 0.4) * min(H, W)
            a = np.sort(rng.uniform(0, 2 * np.pi, 5))
            shadows.append(np.stack([px + r * np.cos(a), py + r * np.sin(a)], 1).astype(np.float32))
    return InterimSampleParams(
        matrix=m, hflip=hflip, vflip=vflip, hue_deg=float(rng.uniform(*cfg.hue_deg)),
        noise_sigma=float(rng.uniform(*cfg.noise_sigma)),
        noise_seed=int(rng.integers(0, 2 ** 63)), shadow_polygons=shadows,
        shadow_darkness=darkness)


# -------------------------------------------------------------------------- targets
def _radius_centernet(h, w, min_overlap=0.7):
    # the original CenterNet `gaussian_radius`, quirks included
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _centernet(boxes, labels, num_classes, out_h, out_w, max_objs, vectorized):
    hm = np.zeros((num_classes, out_h, out_w), np.float32)
    wh = np.zeros((max_objs, 2), np.float32)
    reg = np.zeros((max_objs, 2), np.float32)
    ind = np.zeros(max_objs, np.int64)
    mask = np.zeros(max_objs, np.uint8)
    k = 0
    for b, lab in zip(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels).reshape(-1)):
        if k >= max_objs:
            break
        x1, x2 = min(max(b[0], 0), out_w - 1), min(max(b[2], 0), out_w - 1)
        y1, y2 = min(max(b[1], 0), out_h - 1), min(max(b[3], 0), out_h - 1)
        h, w = y2 - y1, x2 - x1
        if h <= 0 or w <= 0:
            continue
        r = max(0, int(_radius_centernet(math.ceil(h), math.ceil(w))))
        ct = np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float32)
        cx, cy = int(ct[0]), int(ct[1])
        sigma = (2 * r + 1) / 6
        l, rr = min(cx, r), min(out_w - cx, r + 1)
        t, bb = min(cy, r), min(out_h - cy, r + 1)
        if vectorized:
            yy, xx = np.ogrid[-t:bb, -l:rr]
            g = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma)).astype(np.float32)
            sl = hm[int(lab), cy - t:cy + bb, cx - l:cx + rr]
            np.maximum(sl, g, out=sl)
        else:
            for dy in range(-t, bb):
                for dx in range(-l, rr):
                    v = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
                    if v > hm[int(lab), cy + dy, cx + dx]:
                        hm[int(lab), cy + dy, cx + dx] = v
        wh[k] = (w, h)
        ind[k] = cy * out_w + cx
        reg[k] = ct - np.array([cx, cy], np.float32)
        mask[k] = 1
        k += 1
    return {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "reg_mask": mask}


def interim_centernet_python(boxes, labels, num_classes, out_h, out_w, max_objs=128,
                             radius="centernet"):
    return _centernet(boxes, labels, num_classes, out_h, out_w, max_objs, False)


def interim_centernet_numpy(boxes, labels, num_classes, out_h, out_w, max_objs=128,
                            radius="centernet"):
    return _centernet(boxes, labels, num_classes, out_h, out_w, max_objs, True)


# -------------------------------------------------------------------------- dataset
def interim_write_coco(root, n_images, seed=0, width=640, height=480):
    """A COCO dataset from ``tools.synth.make_scene``: ``images/*.jpg`` + ``annotations.json``."""
    from tools.synth import CLASSES, encode_jpeg, make_scene
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n_images):
        sc = make_scene(rng, width, height)
        name = f"{i:06d}.jpg"
        (root / "images" / name).write_bytes(encode_jpeg(sc.image))
        images.append({"id": i + 1, "file_name": name, "height": height, "width": width})
        for inst in sc.instances:
            allp = np.concatenate(inst.polygons)
            x1, y1 = allp.min(0)
            x2, y2 = allp.max(0)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": inst.label + 1,
                         "iscrowd": 0, "area": float((x2 - x1) * (y2 - y1)),
                         "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                         "segmentation": [p.reshape(-1).astype(float).tolist() for p in inst.polygons]})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]
    (root / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": cats}))


# -------------------------------------------------------------------------- resolve
def resolve(name):
    """Return the real implementation of ``name`` or its stand-in (recorded in USED)."""
    try:
        if name == "sample_params":
            from fastload.augment.params import sample_params as f
        elif name == "centernet_python":
            from fastload.targets.reference import centernet_python as f
        elif name == "centernet_numpy":
            from fastload.targets.reference import centernet_numpy as f
        elif name == "write_dataset":
            from tools.synth_formats import write_dataset as f
        else:
            raise KeyError(name)
        USED[name] = "real"
        return f
    except ImportError as e:
        USED[name] = f"interim stand-in ({type(e).__name__}: {e})"
        return {"sample_params": interim_sample_params,
                "centernet_python": interim_centernet_python,
                "centernet_numpy": interim_centernet_numpy,
                "write_dataset": None}[name]
