"""The baselines: the input pipeline of the problem in DESIGN.md, written the way a user
would write it with ``torch.utils.data``.

:func:`pil_numpy_augment` is THE PIL/NumPy augmentation baseline: ``fastload bench``'s torch
rows and every micro-benchmark under ``benchmarks/`` use it. With the SAME per-sample
parameters fastload uses (``sample_params(cfg, seed, epoch, index, h, w)``, so the work is
identical), it does:

1. warp: one ``Image.transform(AFFINE, M^-1 2x3, BILINEAR, fillcolor=pad)``. PIL maps each
   output pixel center (j+0.5, i+0.5) through the coefficients and samples its input with
   pixel centers at +0.5 too, i.e. DESIGN.md's continuous coordinates, like DALI
   ``warp_affine``: the inverse matrix is passed as it is, with no half-pixel shift
   (tests/bench/test_baseline.py checks it against fastload's reference);
2. hue: DALI's ``fn.hue`` as one 3x3 RGB matrix product per pixel (float32), the matrix of
   :func:`fastload.augment.params.hue_matrix` (the one definition: RGB -> YIQ, rotate
   (I, Q), back), clipped to [0, 255];
3. shadow: a PIL ``ImageDraw.polygon`` mask ('L' image, full output resolution) of the
   shadow polygons, then a NumPy multiply by ``shadow_darkness`` inside the mask;
4. gaussian noise: ``np.random.default_rng(noise_seed).normal(0, sigma, shape)`` (float64,
   as users write it; fastload's counter-based noise differs pixel by pixel, not in law),
   add, clip to [0, 255];
5. normalize ``(v - mean) / std``, HWC -> CHW.

``BaselineDataset`` is a map-style ``torch.utils.data.Dataset`` over the ORIGINAL image
files and the COCO annotation JSON (the same files ``fastload pack`` packs). Per sample,
``__getitem__`` decodes with PIL (``Image.open(...).convert("RGB")``), augments with
:func:`pil_numpy_augment` and builds the targets:
the COCO polygons become ``(n, 1, 2)`` float32 arrays (the OpenCV contour layout of the
original code), moved by the matrix in NumPy, clipped to the frame; the box of an instance
is the min/max of its clipped points; instances whose clipped box keeps less than
``cfg.min_visible`` of the unclipped box area are dropped. CenterNet targets at stride 4
come from ``centernet_python`` (row "torch-seed": Python loops) or ``centernet_numpy``
(row "torch-numpy").

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
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

from fastload.augment.config import AugmentConfig
from fastload.augment.params import hue_matrix, sample_params
from fastload.bench.data import BaselineError, find_coco
from fastload.dtypes import output_torch_dtype

STRIDE = 4
MAX_OBJS = 128


def pil_numpy_augment(image: Union[Image.Image, np.ndarray], params, cfg: AugmentConfig
                      ) -> np.ndarray:
    """The PIL/NumPy augmentation baseline (module docstring, steps 1-5) of one image.

    ``image``: a PIL RGB image (as ``Image.open(...).convert("RGB")`` gives it) or an HWC
    uint8 RGB array; ``params``: its ``SampleParams`` (source -> output matrix in continuous
    coordinates, hue, shadow, noise). Returns a C-contiguous (3, H, W) array: float32
    normalized by ``cfg.mean``/``cfg.std``, or uint8 (rounded, not normalized) when
    ``cfg.dtype`` is ``"uint8"``; float16/bfloat16 are the caller's conversion (torch).
    """
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.ascontiguousarray(image, np.uint8), "RGB")
    H, W = cfg.out_size
    inv = np.linalg.inv(np.asarray(params.matrix, np.float64))
    pad = int(round(cfg.pad_value))
    # 1. one affine warp (flip + rotate + scale + translate + fit), output -> input map
    warped = image.transform((W, H), Image.AFFINE, data=tuple(inv[:2].reshape(-1)),
                             resample=Image.BILINEAR, fillcolor=(pad, pad, pad))
    a = np.asarray(warped, np.float32)
    # 2. hue (DALI's matrix), clipped like DALI's uint8 output
    if params.hue_deg != 0.0:
        a = np.clip(a @ hue_matrix(params.hue_deg).astype(np.float32).T, 0, 255)
    # 3. shadow: a PIL-drawn mask, multiplied in NumPy
    if params.shadow_polygons and params.shadow_darkness != 1.0:
        mask_image = Image.new("L", (W, H), 0)
        draw = ImageDraw.Draw(mask_image)
        for poly in params.shadow_polygons:
            draw.polygon([tuple(map(float, v)) for v in np.asarray(poly)], fill=1)
        a[np.asarray(mask_image, bool)] *= params.shadow_darkness
    # 4. noise
    if params.noise_sigma > 0:
        a = a + np.random.default_rng(params.noise_seed).normal(0.0, params.noise_sigma, a.shape)
    a = np.clip(a, 0, 255)
    # 5. normalize, CHW
    if cfg.dtype == "uint8":
        return np.ascontiguousarray(np.rint(a).astype(np.uint8).transpose(2, 0, 1))
    a = (a - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1), np.float32)


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
        p = sample_params(cfg, self.seed, epoch, index, h0, w0)
        image = torch.from_numpy(pil_numpy_augment(img, p, cfg)).to(output_torch_dtype(cfg.dtype))
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
