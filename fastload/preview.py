"""`fastload inspect`: look at what the loader feeds the model.

Renders a grid of samples exactly as :class:`fastload.DataLoader` produces them (same
seed, epoch and parameters). Each sample is two panels: the augmented image
(denormalized) with its transformed polygons, boxes and keypoints drawn over it, and the
same image dimmed under the CenterNet heatmap (max over classes) and, when configured,
the semantic mask. The title names the sample index and file. ``raw=True`` renders the
same samples with every augmentation off, for comparison.

    from fastload.preview import render
    img = render("data/packed", n=8, augment=AugmentConfig(out_size=(384, 384)))
    img.save("grid.png")

Drawing uses the continuous pixel convention of DESIGN.md: a vertex at (x, y) is drawn
at image position (x, y) scaled to the tile, so a polygon outline lies on its object's
boundary, not half a pixel off.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
], np.uint8)
TITLE_H = 16


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


def render_batch(batch: dict, cfg, titles: Sequence[str], tile: int = 256, cols: int = 4,
                 heat: bool = True) -> Image.Image:
    """Render every sample of a loader batch into one grid image."""
    images = batch["image"]
    B = len(titles)
    H, W = int(images.shape[2]), int(images.shape[3])
    scale = tile / max(H, W)
    tw, th = round(W * scale), round(H * scale)
    panels = 2 if heat else 1
    cols = max(1, min(cols, B))
    rows = (B + cols - 1) // cols
    grid = Image.new("RGB", (cols * panels * tw, rows * (th + TITLE_H)), (24, 24, 24))
    d = ImageDraw.Draw(grid)
    for b in range(B):
        img = denormalize(images[b], cfg)
        ov = sample_overlays(batch, b)
        left = draw_annotations(img, ov["polygons"], ov["boxes"], ov["labels"], ov["keypoints"],
                                ov["ignore"], scale=scale)
        x0 = (b % cols) * panels * tw
        y0 = (b // cols) * (th + TITLE_H)
        grid.paste(left, (x0, y0 + TITLE_H))
        if heat:
            grid.paste(heat_overlay(img, ov["heatmap"], ov["semantic"], (tw, th)), (x0 + tw, y0 + TITLE_H))
        d.text((x0 + 3, y0 + 2), titles[b][: (panels * tw) // 6], fill=(235, 235, 235))
    return grid


def render(source, n: int = 16, seed: Optional[int] = None, epoch: int = 0, augment=None,
           raw: bool = False, targets=("centernet",), tile: int = 256, cols: int = 4,
           shuffle: bool = False, heat: bool = True) -> Image.Image:
    """Render ``n`` samples as the loader produces them; returns a PIL image.

    ``source``: a packed dataset path, a :class:`fastload.Dataset`, or a
    :class:`fastload.DataLoader` (then its dataset, and its seed and augmentation unless given
    here; ``seed`` defaults to 0 otherwise). ``targets``: what to compute and overlay.
    ``raw``: the same samples with every augmentation off (same output size), for comparison.
    """
    from fastload.augment.config import AugmentConfig
    from fastload.loader import DataLoader
    from fastload.store import Dataset

    if isinstance(source, DataLoader):
        ds = source.dataset
        augment = augment or source.augment
        seed = source.seed if seed is None else seed
    elif isinstance(source, Dataset):
        ds = source
    else:
        ds = Dataset(source)
    seed = 0 if seed is None else seed
    cfg = augment or AugmentConfig()
    if raw:
        cfg = AugmentConfig.off(out_size=cfg.out_size, keep_aspect=cfg.keep_aspect, mean=cfg.mean,
                                std=cfg.std, dtype=cfg.dtype)
    n = max(1, min(int(n), len(ds)))
    loader = DataLoader(ds, batch_size=n, shuffle=shuffle, seed=seed, augment=cfg,
                        targets=list(targets), device="cpu")
    loader.set_epoch(epoch)
    batch = next(iter(loader))
    idx = _np(batch["index"]).tolist()
    titles = [f"#{i} {ds[i].file_name}" for i in idx]
    return render_batch(batch, cfg, titles, tile=tile, cols=cols, heat=heat)
