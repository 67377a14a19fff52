"""The seed's pipeline (rows torch-seed and torch-numpy): a ``torch.utils.data`` Dataset with the
augmentation written in PIL and NumPy and the targets written the slow way (DESIGN.md).

:func:`pil_numpy_augment` is THE PIL/NumPy augmentation baseline: ``fastload bench``'s seed
rows and every micro-benchmark under ``benchmarks/`` use it. With the SAME per-sample
parameters fastload uses (``sample_params(cfg, seed, epoch, index, h, w)``, so the work is
identical), it does:

1. warp: one ``Image.transform(AFFINE, M^-1 2x3, BILINEAR, fillcolor=pad)``. PIL maps each
   output pixel center (j+0.5, i+0.5) through the coefficients and samples its input with
   pixel centers at +0.5 too, i.e. DESIGN.md's continuous coordinates, like DALI
   ``warp_affine``: the inverse matrix is passed as it is, with no half-pixel shift
   (tests/bench/test_pil_baseline.py checks it against fastload's reference);
2. hue: DALI's ``fn.hue`` as one 3x3 RGB matrix product per pixel (float32), the matrix of
   :func:`fastload.augment.params.hue_matrix` (the one definition: RGB -> YIQ, rotate
   (I, Q), back), clipped to [0, 255];
3. shadow: a PIL ``ImageDraw.polygon`` mask ('L' image, full output resolution) of the
   shadow polygons, then a NumPy multiply by ``shadow_darkness`` inside the mask;
4. gaussian noise: ``np.random.default_rng(noise_seed).normal(0, sigma, shape)`` (float64,
   as users write it; fastload's counter-based noise differs pixel by pixel, not in law),
   add, clip to [0, 255];
5. normalize ``(v - mean) / std``, HWC -> CHW.

:class:`PilNumpyDataset` is a map-style ``torch.utils.data.Dataset`` over a packed dataset
(:mod:`fastload.bench.torch_data`: each record's original image bytes and polygons, read in
the worker). Per sample, ``__getitem__`` decodes with PIL
(``Image.open(BytesIO(bytes)).convert("RGB")``), augments with :func:`pil_numpy_augment`
and builds the targets: each polygon part becomes an ``(n, 1, 2)`` float32 array (the
OpenCV contour layout of the original code), moved by the matrix in NumPy; the box of an
instance is the min/max of its vertices clipped to the frame, dropped when it keeps less than
``cfg.min_visible`` of the unclipped box area (:func:`~fastload.bench.torch_data.visible_box`).
CenterNet targets at stride 4 come from ``centernet_python`` (row "torch-seed": Python
loops) or ``centernet_numpy`` (row "torch-numpy").

Index ``i`` is record ``i`` and gets the same ``sample_params`` as fastload's sample ``i``.
Epochs without restarting workers: :class:`~fastload.bench.torch_data.EpochSampler` yields
``epoch * n + i``; the dataset splits that back into (epoch, i).

Also usable from pytest-benchmark: ``ds = PilNumpyDataset(packed); benchmark(ds.__getitem__, 0)``.
"""
from __future__ import annotations

import io
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

from fastload.augment.config import AugmentConfig
from fastload.augment.params import hue_matrix, sample_params
from fastload.bench.torch_data import (BaselineError, EpochSampler, check_decoded, collate,
                                       instance_parts, open_packed, split_index, targets_item,
                                       visible_box)
from fastload.dtypes import output_torch_dtype


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


class PilNumpyDataset(torch.utils.data.Dataset):
    """torch Dataset over a packed dataset, the seed's pipeline; see the module docstring.

    ``dataset``: a packed directory or a :class:`fastload.store.Dataset`.
    ``targets``: ``"python"`` (``centernet_python``) or ``"numpy"`` (``centernet_numpy``).
    ``ds[epoch * len(ds) + i]``: dict with "image" (3,H,W) float32 (uint8 when cfg.dtype is
    uint8), "index", "boxes" (n,4) float32 output pixels, "labels" (n,) int64, and the
    CenterNet arrays "hm" (C,H/4,W/4), "wh", "reg", "ind", "reg_mask" (max_objs 128).
    """

    def __init__(self, dataset, cfg: Optional[AugmentConfig] = None, seed: int = 0,
                 targets: str = "python"):
        self.cfg = cfg or AugmentConfig()
        self.seed = int(seed)
        if targets not in ("python", "numpy"):
            raise ValueError(f"targets must be 'python' or 'numpy', got {targets!r}")
        self.targets = targets
        self.ds = open_packed(dataset)
        self.classes = list(self.ds.classes)
        from fastload.targets import reference
        self._centernet = (reference.centernet_python if targets == "python"
                           else reference.centernet_numpy)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, gindex):
        epoch, index = split_index(gindex, len(self.ds))
        cfg = self.cfg
        H, W = cfg.out_size
        rec = self.ds[index]
        try:
            img = Image.open(io.BytesIO(rec.image_bytes)).convert("RGB")
        except OSError as e:
            raise BaselineError(f"record {rec.id} ({rec.file_name}): PIL cannot decode the "
                                f"image: {e}") from None
        check_decoded(img, rec, "PIL")
        p = sample_params(cfg, self.seed, epoch, index, rec.height, rec.width)
        image = torch.from_numpy(pil_numpy_augment(img, p, cfg)).to(output_torch_dtype(cfg.dtype))
        # annotations: (n,1,2) parts moved by the matrix, one box per instance
        a = p.matrix[:2, :2].astype(np.float32)
        t = p.matrix[:2, 2].astype(np.float32)
        boxes, labels = [], []
        for lab, parts in instance_parts(rec):
            moved = [np.asarray(q, np.float32).reshape(-1, 1, 2) @ a.T + t for q in parts]
            box = visible_box(np.concatenate(moved).reshape(-1, 2), H, W, cfg.min_visible)
            if box is not None:
                boxes.append(box)
                labels.append(lab)
        return targets_item(image, index, boxes, labels, len(self.classes), H, W, self._centernet)


def pil_numpy_loader(dataset, targets: str = "python", batch_size: int = 32,
                     num_workers: int = 2, cfg: Optional[AugmentConfig] = None, seed: int = 0,
                     epochs: int = 1, shuffle: bool = True, drop_last: bool = True):
    """``torch.utils.data.DataLoader`` over :class:`PilNumpyDataset` with ``num_workers``
    worker processes, spanning ``epochs`` epochs in one iteration
    (:class:`~fastload.bench.torch_data.EpochSampler`)."""
    ds = PilNumpyDataset(dataset, cfg=cfg, seed=seed, targets=targets)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, sampler=EpochSampler(len(ds), epochs, seed, shuffle),
        num_workers=num_workers, collate_fn=collate, drop_last=drop_last,
        persistent_workers=False)
