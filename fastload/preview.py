"""`fastload inspect`: look at what the loader feeds the model.

Renders a grid of samples exactly as :class:`fastload.DataLoader` produces them. Given a
loader, ``render(loader)`` shows the first ``n`` samples of the epoch its next iteration
runs, in its order (shuffle, rank), with its seed, augmentation and targets, without
touching the loader's position; any of them can be overridden. The samples are built on the
CPU path (:class:`fastload.TorchDataset`, the fused Numba kernel), whatever the loader's
image backend: the backends draw no randomness of their own, so the grid is what the loader
yields on any of them. Each sample is two panels: the augmented image (denormalized) with
its transformed polygons, boxes and keypoints drawn over it, and the same image dimmed under
the CenterNet heatmap (max over classes) and, when configured, the semantic mask. The title
names the sample index and file. A sample that fails (unreadable record, corrupt image,
...) is drawn as a tile naming the error instead of aborting the grid. ``raw=True`` renders
the same samples with every augmentation off, for comparison.

    from fastload.preview import render
    img = render("data/packed", n=8, augment=AugmentConfig(out_size=(384, 384)))
    img = render(loader, n=8)           # exactly what `loader` yields next
    img.save("grid.png")

Drawing uses the continuous pixel convention of DESIGN.md: a vertex at (x, y) is drawn
at image position (x, y) scaled to the tile, so a polygon outline lies on its object's
boundary, not half a pixel off.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
], np.uint8)
TITLE_H = 16
ERROR_FILL = (90, 20, 24)


def denormalize(image, cfg) -> np.ndarray:
    """(3,H,W) loader output (tensor or array, any configured dtype) -> HWC uint8 RGB."""
    import torch
    if isinstance(image, torch.Tensor):  # float() first: NumPy has no bfloat16
        image = image.detach().float().cpu().numpy()
    a = np.asarray(image, np.float32)
    if cfg is not None and cfg.dtype != "uint8":
        a = a * np.asarray(cfg.std, np.float32)[:, None, None] + np.asarray(cfg.mean, np.float32)[:, None, None]
    return np.clip(np.rint(a), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _np(x):
    import torch
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def sample_overlays(batch: dict, b: int) -> dict:
    """Pull sample ``b``'s annotations out of a batch dict as plain NumPy (the batch layout:
    docs/loader.md, "The batch dict"): polygons as a list of (label, (N,2) array), boxes (n,4),
    labels (n,), keypoints (n,K,3) or None, heatmap (h,w) or None, semantic (h,w) or None."""
    n = int(_np(batch["num_instances"])[b]) if "num_instances" in batch else 0
    labels = _np(batch["labels"])[b, :n] if "labels" in batch else np.zeros(0, np.int64)
    boxes = _np(batch["boxes"])[b, :n] if "boxes" in batch else np.zeros((0, 4), np.float32)
    polys = []
    if "poly_points" in batch:
        pts = _np(batch["poly_points"])[b]
        lens = _np(batch["poly_lengths"])[b]
        owner = _np(batch["poly_instance"])[b]
        start = 0
        for ln, k in zip(lens, owner):
            ln = int(ln)
            if ln <= 0 or k < 0:
                continue
            lab = int(labels[k]) if k < len(labels) else 0
            polys.append((lab, pts[start:start + ln]))
            start += ln
    kps = _np(batch["keypoints"])[b, :n] if "keypoints" in batch else None
    hm = _np(batch["hm"])[b].max(0) if "hm" in batch else None
    sem = _np(batch["semantic"])[b] if "semantic" in batch else None
    ignore = _np(batch["ignore"])[b, :n] if "ignore" in batch else np.zeros(n, bool)
    return dict(polygons=polys, boxes=boxes, labels=labels, keypoints=kps, heatmap=hm,
                semantic=sem, ignore=ignore)


def draw_annotations(image: np.ndarray, polygons, boxes=None, labels=None, keypoints=None,
                     ignore=None, scale: float = 1.0, width: int = 2,
                     color=None) -> Image.Image:
    """Draw polygons (list of (label, (N,2))), boxes, keypoints over an HWC uint8 image,
    scaled by ``scale`` (image coords -> drawing coords). ``color`` forces one colour
    (the drawing test uses white on black)."""
    im = Image.fromarray(image)
    if scale != 1.0:
        im = im.resize((round(image.shape[1] * scale), round(image.shape[0] * scale)), Image.BILINEAR)
    d = ImageDraw.Draw(im)

    def col(lab):
        return tuple(int(c) for c in (color if color is not None else PALETTE[int(lab) % len(PALETTE)]))

    for lab, p in polygons:
        if len(p) >= 2:
            xy = [(float(x) * scale, float(y) * scale) for x, y in p]
            d.line(xy + [xy[0]], fill=col(lab), width=width)
    if boxes is not None:
        for k, bx in enumerate(boxes):
            lab = labels[k] if labels is not None and k < len(labels) else 0
            x1, y1, x2, y2 = (float(v) * scale for v in bx)
            dash = ignore is not None and k < len(ignore) and bool(ignore[k])
            d.rectangle([x1, y1, x2, y2], outline=(128, 128, 128) if dash else col(lab), width=1)
    if keypoints is not None:
        r = max(2, width + 1)
        for inst in keypoints:
            for x, y, v in inst:
                if v > 0:
                    fill = (255, 255, 255) if v >= 2 else (160, 160, 160)
                    d.ellipse([x * scale - r, y * scale - r, x * scale + r, y * scale + r],
                              fill=col(0) if color is not None else fill, outline=(0, 0, 0))
    return im


def heat_overlay(image: np.ndarray, heat: Optional[np.ndarray], semantic: Optional[np.ndarray],
                 size) -> Image.Image:
    """The image dimmed to 40 %, the semantic mask tinted by class, the heatmap in red/yellow."""
    base = image.astype(np.float32) * 0.4
    h, w = image.shape[:2]
    if semantic is not None:
        sem = np.asarray(Image.fromarray(semantic.astype(np.uint8)).resize((w, h), Image.NEAREST))
        fg = (sem > 0) & (sem < 255)
        base[fg] = base[fg] * 0.5 + PALETTE[(sem[fg].astype(np.int64) - 1) % len(PALETTE)] * 0.5
        base[sem == 255] = base[sem == 255] * 0.5 + 64
    if heat is not None:
        hm = np.asarray(Image.fromarray(np.clip(heat, 0, 1).astype(np.float32)).resize((w, h), Image.BILINEAR))
        hm = np.clip(hm, 0, 1)[..., None]
        red = np.stack([np.full_like(hm[..., 0], 255), 255 * hm[..., 0] ** 2, np.zeros_like(hm[..., 0])], -1)
        base = base * (1 - hm) + red * hm
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    return im.resize(size, Image.BILINEAR)


def _error_tile(size, message: str) -> Image.Image:
    """A panel naming a sample's error (wrapped to the panel's width)."""
    import textwrap
    w, h = size
    im = Image.new("RGB", (w, h), ERROR_FILL)
    d = ImageDraw.Draw(im)
    lines = textwrap.wrap(message, width=max(8, (w - 6) // 6))[: max(1, (h - 6) // 11)]
    for k, line in enumerate(lines):
        d.text((3, 3 + 11 * k), line, fill=(255, 225, 225))
    return im


def render_batch(batch: Optional[dict], cfg, titles: Sequence[str], tile: int = 256,
                 cols: int = 4, heat: bool = True,
                 errors: Optional[Dict[int, str]] = None) -> Image.Image:
    """Render a loader batch into one grid image, one tile per title.

    ``errors``: {grid position: message} for samples that failed, drawn as tiles naming the
    error; ``batch`` holds the other samples, in grid order (None when all failed)."""
    errors = errors or {}
    B = len(titles)
    H, W = (int(batch["image"].shape[2]), int(batch["image"].shape[3])) if batch is not None \
        else tuple(cfg.out_size)
    scale = tile / max(H, W)
    tw, th = round(W * scale), round(H * scale)
    panels = 2 if heat else 1
    cols = max(1, min(cols, B))
    rows = (B + cols - 1) // cols
    grid = Image.new("RGB", (cols * panels * tw, rows * (th + TITLE_H)), (24, 24, 24))
    d = ImageDraw.Draw(grid)
    b = 0  # row of the batch
    for pos in range(B):
        x0 = (pos % cols) * panels * tw
        y0 = (pos // cols) * (th + TITLE_H)
        if pos in errors:
            grid.paste(_error_tile((panels * tw, th), errors[pos]), (x0, y0 + TITLE_H))
        else:
            img = denormalize(batch["image"][b], cfg)
            ov = sample_overlays(batch, b)
            left = draw_annotations(img, ov["polygons"], ov["boxes"], ov["labels"],
                                    ov["keypoints"], ov["ignore"], scale=scale)
            grid.paste(left, (x0, y0 + TITLE_H))
            if heat:
                grid.paste(heat_overlay(img, ov["heatmap"], ov["semantic"], (tw, th)),
                           (x0 + tw, y0 + TITLE_H))
            b += 1
        d.text((x0 + 3, y0 + 2), titles[pos][: (panels * tw) // 6], fill=(235, 235, 235))
    return grid


@dataclass
class PreviewSamples:
    """The samples of a preview: ``indices`` (dataset indices, grid order), ``titles`` (one
    per index), ``errors`` ({grid position: the sample's exception}), ``batch`` (the batch
    dict of the samples that did not fail, in grid order, as the loader collates it; None if
    all failed) and ``cfg`` (the AugmentConfig they were made with)."""
    indices: List[int]
    titles: List[str]
    batch: Optional[dict]
    cfg: object
    errors: Dict[int, BaseException] = field(default_factory=dict)


def preview_samples(source, n: int = 16, seed: Optional[int] = None, epoch: Optional[int] = None,
                    augment=None, raw: bool = False, targets=None,
                    shuffle: Optional[bool] = None) -> PreviewSamples:
    """The first ``n`` samples of an epoch, as the loader yields them (see :func:`render`)."""
    from fastload.augment.config import AugmentConfig
    from fastload.loader import DataLoader, EpochPlan, SampleError, TorchDataset, collate
    from fastload.store import Dataset

    rank, world_size = 0, 1
    if isinstance(source, DataLoader):
        ds = source.dataset
        seed = source.seed if seed is None else seed
        epoch = source.epoch if epoch is None else epoch
        augment = source.augment if augment is None else augment
        targets = source.targets if targets is None else targets
        shuffle = source.shuffle if shuffle is None else shuffle
        rank, world_size = source.rank, source.world_size
    elif isinstance(source, Dataset):
        ds = source
    else:
        ds = Dataset(source)
    seed = 0 if seed is None else int(seed)
    epoch = 0 if epoch is None else int(epoch)
    targets = ("centernet",) if targets is None else targets
    cfg = augment if augment is not None else AugmentConfig()
    if raw:
        cfg = AugmentConfig.off(out_size=cfg.out_size, keep_aspect=cfg.keep_aspect, mean=cfg.mean,
                                std=cfg.std, dtype=cfg.dtype)
    plan = EpochPlan(len(ds), 1, seed=seed, epoch=epoch, shuffle=bool(shuffle), rank=rank,
                     world_size=world_size)
    indices = [int(i) for i in plan.indices()[:max(1, int(n))]]
    tds = TorchDataset(ds, augment=cfg, targets=targets, seed=seed)
    tds.set_epoch(epoch)
    titles, good, errors = [], [], {}
    for pos, i in enumerate(indices):
        try:
            good.append(tds[i])
            titles.append(f"#{i} {ds[i].file_name}")
        except SampleError as e:
            errors[pos] = e
            titles.append(f"#{i} {e.file_name} FAILED" if e.sample_id is not None
                          else f"#{i} unreadable record")
    batch = collate(good) if good else None
    return PreviewSamples(indices, titles, batch, cfg, errors)


def render_preview(p: PreviewSamples, tile: int = 256, cols: int = 4,
                   heat: bool = True) -> Image.Image:
    """Draw :func:`preview_samples`' result as a grid."""
    errors = {pos: str(e).removeprefix("fastload: ") for pos, e in p.errors.items()}
    return render_batch(p.batch, p.cfg, p.titles, tile=tile, cols=cols, heat=heat, errors=errors)


def render(source, n: int = 16, seed: Optional[int] = None, epoch: Optional[int] = None,
           augment=None, raw: bool = False, targets=None, tile: int = 256, cols: int = 4,
           shuffle: Optional[bool] = None, heat: bool = True) -> Image.Image:
    """Render ``n`` samples as the loader produces them; returns a PIL image.

    ``source``: a :class:`fastload.DataLoader` (its dataset, and unless given here its
    seed, the epoch its next iteration runs, its augmentation, targets, shuffle and rank:
    the grid is the first ``n`` samples that loader yields, on any image backend; the loader
    itself is not iterated), a :class:`fastload.Dataset` or a packed dataset path (then
    ``seed`` 0, ``epoch`` 0, ``AugmentConfig()``, ``targets=("centernet",)``, no shuffle
    unless given). ``targets``: what to compute and overlay. ``raw``: the same samples with
    every augmentation off (same output size), for comparison. A sample that fails is drawn
    as a tile naming its error (:func:`preview_samples` gives them as exceptions).
    """
    return render_preview(preview_samples(source, n=n, seed=seed, epoch=epoch, augment=augment,
                                          raw=raw, targets=targets, shuffle=shuffle),
                          tile=tile, cols=cols, heat=heat)
