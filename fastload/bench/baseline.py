"""The baselines: the input pipeline of the problem in DESIGN.md, written the way a user
would write it with ``torch.utils.data``.

``BaselineDataset`` is a map-style ``torch.utils.data.Dataset`` over the ORIGINAL image
files and the COCO annotation JSON (the same files ``fastload pack`` packs). Per sample,
``__getitem__`` does, with the SAME per-sample parameters fastload uses
(``sample_params(cfg, seed, epoch, index, h, w)``, so the work is identical):

1. PIL decode (``Image.open(...).convert("RGB")``);
2. warp: one ``Image.transform(AFFINE, M^-1 2x3, BILINEAR, fillcolor=pad)``. PIL maps output
   pixel centers (j+0.5, i+0.5) through the inverse matrix, i.e. DESIGN.md's continuous
   coordinates, like DALI ``warp_affine``;
3. hue: DALI's semantics done in NumPy, the way a user copies it: float32 RGB -> YIQ,
   rotate (I, Q) by ``hue_deg``, back to RGB, as one 3x3 matrix product per pixel;
4. shadow: a PIL ``ImageDraw.polygon`` mask ('L' image, full output resolution) per
   polygon, then a NumPy multiply by ``shadow_darkness`` inside the mask;
5. gaussian noise: ``np.random.default_rng(noise_seed).normal(0, sigma, shape)`` (float64,
   as users write it), add, clip to [0, 255];
6. normalize ``(v - mean) / std``, HWC -> CHW, ``torch.from_numpy``.

Annotations: the COCO polygons become ``(n, 1, 2)`` float32 arrays (the OpenCV contour
layout of the original code), moved by the matrix in NumPy, clipped to the frame; the
box of an instance is the min/max of its clipped points; instances whose clipped box
keeps less than ``cfg.min_visible`` of the unclipped box area are dropped. CenterNet
targets at stride 4 come from ``centernet_python`` (row "torch-seed": Python loops)
or ``centernet_numpy`` (row "torch-numpy").

Sample order = images sorted by COCO id, classes = categories sorted by id (what
``fastload pack`` stores), so index ``i`` gets the same ``sample_params`` as fastload's
record ``i``.

Epochs without restarting workers: :class:`EpochSampler` yields ``epoch * n + i``; the
dataset splits that back into (epoch, i), so ``persistent_workers`` is not needed to
draw epoch-dependent parameters.

Also usable from pytest-benchmark: ``ds = BaselineDataset(...); benchmark(ds.__getitem__, 0)``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

from fastload.augment.config import AugmentConfig
from fastload.augment.params import sample_params
from fastload.bench.data import BaselineError, find_coco  # noqa: F401 (re-exported)

STRIDE = 4
MAX_OBJS = 128


def _yiq_hue_matrix(hue_deg: float) -> np.ndarray:
    """3x3 RGB->RGB matrix: to YIQ, rotate (I, Q) by hue_deg, back (DALI ``fn.hue``'s
    matrices and sign, as a user copies them from DALI's documentation/source)."""
    rgb2yiq = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.321],
                        [0.211, -0.523, 0.311]], np.float32)
    yiq2rgb = np.linalg.inv(rgb2yiq).astype(np.float32)
    c, s = math.cos(math.radians(hue_deg)), math.sin(math.radians(hue_deg))
    rot = np.array([[1, 0, 0], [0, c, s], [0, -s, c]], np.float32)  # I' = cI + sQ, Q' = -sI + cQ
    return (yiq2rgb @ rot @ rgb2yiq).astype(np.float32)


def move_polygons(polys, matrix: np.ndarray, out_h: int, out_w: int):
    """Move ``(n, 1, 2)`` polygons by the 3x3 source->output matrix (continuous coords) and
    clip them to the output frame [0, W] x [0, H]. Returns the moved, clipped list and the
    unclipped tight box of all parts (x1, y1, x2, y2)."""
    a = matrix[:2, :2].astype(np.float32)
    t = matrix[:2, 2].astype(np.float32)
    moved, lo, hi = [], np.full(2, np.inf, np.float32), np.full(2, -np.inf, np.float32)
    for p in polys:
        q = p @ a.T + t  # (n, 1, 2)
        lo = np.minimum(lo, q.reshape(-1, 2).min(0))
        hi = np.maximum(hi, q.reshape(-1, 2).max(0))
        q[..., 0] = np.clip(q[..., 0], 0, out_w)
        q[..., 1] = np.clip(q[..., 1], 0, out_h)
        moved.append(q)
    return moved, np.concatenate([lo, hi])


class BaselineDataset(torch.utils.data.Dataset):
    """torch Dataset over the original COCO files; see the module docstring.

    ``targets``: ``"python"`` (``centernet_python``) or ``"numpy"`` (``centernet_numpy``).
    Output of ``ds[i]``: dict with "image" (3,H,W) float32 (uint8 when cfg.dtype is uint8),
    "index", "boxes" (n,4) float32 output pixels, "labels" (n,) int64, and the CenterNet
    arrays "hm" (C,H/4,W/4), "wh", "reg", "ind", "reg_mask" (max_objs 128).
    """

    def __init__(self, root, cfg: Optional[AugmentConfig] = None, seed: int = 0,
                 targets: str = "python", epoch: int = 0):
        self.cfg = cfg or AugmentConfig()
        self.seed = int(seed)
        self.epoch = int(epoch)
        if targets not in ("python", "numpy"):
            raise ValueError(f"targets must be 'python' or 'numpy', got {targets!r}")
        self.targets = targets
        self.json_path, self.image_dir = find_coco(root)
        d = json.loads(Path(self.json_path).read_text())
        cats = sorted(d["categories"], key=lambda c: c["id"])
        self.classes = [c["name"] for c in cats]
        cat_index = {c["id"]: k for k, c in enumerate(cats)}
        self.images = sorted(d["images"], key=lambda im: im["id"])
        by_image = {im["id"]: [] for im in self.images}
        for ann in sorted(d["annotations"], key=lambda a: a.get("id", 0)):
            seg = ann.get("segmentation")
            if ann.get("iscrowd") or not isinstance(seg, list) or ann["image_id"] not in by_image:
                continue
            polys = [np.asarray(s, np.float32).reshape(-1, 1, 2) for s in seg if len(s) >= 6]
            if polys and ann["category_id"] in cat_index:
                by_image[ann["image_id"]].append((cat_index[ann["category_id"]], polys))
        self.anns = [by_image[im["id"]] for im in self.images]
        from fastload.targets import reference
        self._params = sample_params
        self._centernet = (reference.centernet_python if targets == "python"
                           else reference.centernet_numpy)

    def __len__(self):
        return len(self.images)

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __getitem__(self, gindex):
        gindex = int(gindex)
        n = len(self.images)
        epoch, index = self.epoch + gindex // n, gindex % n
        cfg = self.cfg
        H, W = cfg.out_size
        path = Path(self.image_dir) / self.images[index]["file_name"]
        try:
            img = Image.open(path).convert("RGB")
        except OSError as e:
            raise BaselineError(f"sample {index}: cannot decode {path}: {e}") from None
        w0, h0 = img.size
        p = self._params(cfg, self.seed, epoch, index, h0, w0)
        m = np.asarray(p.matrix, np.float64)
        inv = np.linalg.inv(m)
        # 1. one affine warp (flip + rotate + scale + translate + fit)
        pad = int(round(cfg.pad_value))
        img = img.transform((W, H), Image.AFFINE, data=tuple(inv[:2].reshape(-1)),
                            resample=Image.BILINEAR, fillcolor=(pad, pad, pad))
        # 2. shadow mask drawn with PIL, applied after hue (below)
        shadow = None
        if p.shadow_polygons and p.shadow_darkness != 1.0:
            sm = Image.new("L", (W, H), 0)
            dr = ImageDraw.Draw(sm)
            for poly in p.shadow_polygons:
                dr.polygon([tuple(map(float, v)) for v in np.asarray(poly)], fill=1)
            shadow = np.asarray(sm, bool)
        a = np.asarray(img, np.float32)
        # 3. hue in YIQ
        if p.hue_deg != 0.0:
            a = a @ _yiq_hue_matrix(p.hue_deg).T
        # 4. shadow
        if shadow is not None:
            a[shadow] *= p.shadow_darkness
        # 5. noise
        if p.noise_sigma > 0:
            a = a + np.random.default_rng(p.noise_seed).normal(0.0, p.noise_sigma, a.shape)
        a = np.clip(a, 0, 255)
        # 6. normalize, CHW
        if cfg.dtype == "uint8":
            chw = np.ascontiguousarray(np.rint(a).astype(np.uint8).transpose(2, 0, 1))
            image = torch.from_numpy(chw)
        else:
            a = (a - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
            image = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), np.float32))
            if cfg.dtype != "float32":
                image = image.to(getattr(torch, cfg.dtype))
        # annotations: move (n,1,2) polygons by the matrix, clip, boxes
        boxes, labels = [], []
        for lab, polys in self.anns[index]:
            moved, full = move_polygons(polys, p.matrix, H, W)
            pts = np.concatenate([q.reshape(-1, 2) for q in moved])
            x1, y1 = pts.min(0)
            x2, y2 = pts.max(0)
            area_full = max(float((full[2] - full[0]) * (full[3] - full[1])), 1e-6)
            if (x2 - x1) * (y2 - y1) < cfg.min_visible * area_full:
                continue
            boxes.append((x1, y1, x2, y2))
            labels.append(lab)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        labels = np.asarray(labels, np.int64)
        t = self._centernet(boxes / STRIDE, labels, len(self.classes), H // STRIDE, W // STRIDE,
                            max_objs=MAX_OBJS)
        out = {"image": image, "index": index, "boxes": torch.from_numpy(boxes),
               "labels": torch.from_numpy(labels)}
        for k in ("hm", "wh", "reg", "ind", "reg_mask"):
            out[k] = torch.from_numpy(np.ascontiguousarray(t[k]))
        return out


def collate(samples):
    """Stack images and targets; pad boxes (0) and labels (-1) to the batch maximum."""
    out = {}
    for k in ("image", "hm", "wh", "reg", "ind", "reg_mask"):
        out[k] = torch.stack([s[k] for s in samples])
    out["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.int64)
    n = torch.tensor([len(s["labels"]) for s in samples], dtype=torch.int64)
    m = max(1, int(n.max())) if len(samples) else 1
    boxes = torch.zeros(len(samples), m, 4)
    labels = torch.full((len(samples), m), -1, dtype=torch.int64)
    for b, s in enumerate(samples):
        boxes[b, :len(s["labels"])] = s["boxes"]
        labels[b, :len(s["labels"])] = s["labels"]
    out.update(num_instances=n, boxes=boxes, labels=labels)
    return out


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``epoch * n + i`` for ``epochs`` shuffled epochs (seeded by (seed, epoch)),
    so one DataLoader iteration spans many epochs without restarting its workers."""

    def __init__(self, n: int, epochs: int = 1000, seed: int = 0, shuffle: bool = True):
        self.n, self.epochs, self.seed, self.shuffle = int(n), int(epochs), int(seed), shuffle

    def __len__(self):
        return self.n * self.epochs

    def __iter__(self):
        for e in range(self.epochs):
            order = (np.random.default_rng([self.seed, e]).permutation(self.n) if self.shuffle
                     else np.arange(self.n))
            yield from (e * self.n + order).tolist()


def make_baseline_loader(root, targets="python", batch_size=32, num_workers=2, cfg=None,
                         seed=0, epochs=1000):
    """``torch.utils.data.DataLoader`` over :class:`BaselineDataset` with worker processes,
    spanning ``epochs`` epochs in one iteration (see :class:`EpochSampler`)."""
    ds = BaselineDataset(root, cfg=cfg, seed=seed, targets=targets)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, sampler=EpochSampler(len(ds), epochs, seed),
        num_workers=num_workers, collate_fn=collate, drop_last=True,
        persistent_workers=False)
