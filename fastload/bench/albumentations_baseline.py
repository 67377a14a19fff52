"""The peer people use today (row "albumentations"): torch's DataLoader with the augmentation in
albumentations (OpenCV inside), polygon vertices moved as keypoints, CenterNet targets in NumPy.

Written the way an albumentations user writes it, over a packed dataset (the records' original
image bytes and polygons, :mod:`fastload.bench.torch_data`), with the augmentation of an
:class:`~fastload.augment.config.AugmentConfig` translated into albumentations' transforms
(:func:`albumentations_stages`; one ``A.Compose`` of them, ``keypoint_params`` for the
vertices):

- decode: ``cv2.imdecode(bytes, IMREAD_COLOR)`` + ``cv2.cvtColor(BGR2RGB)``;
- letterbox: ``A.LongestMaxSize(max_size_hw=out_size)`` (INTER_LINEAR) + ``A.PadIfNeeded``
  (centered, constant ``pad_value``); ``A.Resize`` when ``keep_aspect`` is off;
- geometry on the output canvas: ``A.HorizontalFlip(hflip_prob)``, ``A.VerticalFlip``,
  ``A.Affine(scale, rotate, translate_percent)`` (constant border ``pad_value``), the order
  fastload composes them (flip, then rotate/scale about the center, then translate);
- photometry: ``A.HueSaturationValue`` (hue only), ``A.RandomBrightnessContrast`` (when the
  config turns it on), ``A.RandomShadow``, ``A.GaussNoise``;
- ``A.Normalize(mean/255, std/255)`` and ``ToTensorV2`` (no Normalize for ``dtype="uint8"``).

Where albumentations cannot draw fastload's distribution (docs/bench.md): hue is OpenCV's HSV
hue shift (``hue_shift_limit`` in OpenCV's 2-degree units: +-18 degrees is 9), not fastload's
YIQ rotation; the shadow is ``shadow_dimension`` = 5-vertex random polygons anywhere in the
frame (fastload: 3-6-vertex star polygons of radius 0.15-0.45 of the short side) with intensity
``1 - shadow_darkness``; noise ``std_range`` is a fraction of 255; the letterbox is a resize
(rounded to whole pixels) then a warp, two resamplings where fastload does one.

Keypoint convention: albumentations puts pixel centers at integers (a flip is x' = W - 1 - x),
fastload's polygons use continuous coordinates (DESIGN.md), so vertices go in as ``x - 0.5``
and come back ``+ 0.5``. albumentations scales keypoints about the corner when resizing (the
continuous rule), so a resized vertex is off by at most half an output pixel.

Targets: the moved vertices of each instance, clipped to the frame, give its box
(:func:`~fastload.bench.torch_data.visible_box`, instances under ``min_visible`` dropped);
CenterNet at stride 4 with ``fastload.targets.reference.centernet_numpy`` (the original
CenterNet code, in NumPy).

Randomness: albumentations draws its own parameters (``Compose``'s generators). Worker
processes are forked with the same generator state, so :func:`albumentations_loader` reseeds
each worker's ``Compose`` from torch's per-worker seed (``worker_init_fn``), which torch derives
from the DataLoader's generator (seeded with ``seed``): different per worker and per epoch,
reproducible for a given ``seed``. ``cv2.setNumThreads(0)`` in each worker, as training code
does (OpenCV's own threads would oversubscribe the cores the workers already use).

Reused by training scripts (``tools/train_centernet.py --loader torch``):
``albumentations_loader(packed, cfg, batch_size=..., num_workers=...)`` yields the batch dicts
of ``fastload.DataLoader`` with CenterNet targets (``image``, ``hm``, ``wh``, ``reg``, ``ind``,
``reg_mask``, ``boxes``, ``labels``, ``num_instances``, ``index``); ``loader.sampler.set_epoch(e)``
before each epoch.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import numpy as np
import torch

from fastload.augment.config import AugmentConfig
from fastload.bench.torch_data import (EpochSampler, check_decoded, collate, instance_parts,
                                       open_packed, split_index, targets_item, visible_box)
from fastload.optional import require

HSV_HUE_UNIT_DEG = 2.0  # OpenCV's uint8 HSV hue: 0..179, two degrees per unit


def _albumentations():
    return require("albumentations", extra="bench", what="the albumentations baseline")


def decode_opencv(data: bytes):
    """``cv2.imdecode`` + ``cvtColor(BGR2RGB)``: HWC uint8 RGB, or None when OpenCV cannot."""
    import cv2
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def albumentations_stages(cfg: AugmentConfig) -> "OrderedDict[str, list]":
    """The albumentations transforms of ``cfg``, by stage, in order: ``letterbox``, ``warp``,
    ``photometric``, ``normalize`` (module docstring). Their concatenation is the pipeline;
    the stages apart are what the stage timings (:mod:`fastload.bench.stages`) run."""
    A = _albumentations()
    import cv2
    from albumentations.pytorch import ToTensorV2
    H, W = cfg.out_size
    pad = float(cfg.pad_value)
    stages: "OrderedDict[str, list]" = OrderedDict()
    if cfg.keep_aspect:
        stages["letterbox"] = [
            A.LongestMaxSize(max_size_hw=(H, W), interpolation=cv2.INTER_LINEAR),
            A.PadIfNeeded(min_height=H, min_width=W, position="center",
                          border_mode=cv2.BORDER_CONSTANT, fill=pad)]
    else:
        stages["letterbox"] = [A.Resize(H, W, interpolation=cv2.INTER_LINEAR)]
    warp = []
    if cfg.hflip_prob > 0:
        warp.append(A.HorizontalFlip(p=cfg.hflip_prob))
    if cfg.vflip_prob > 0:
        warp.append(A.VerticalFlip(p=cfg.vflip_prob))
    if tuple(cfg.scale) != (1.0, 1.0) or tuple(cfg.rotate_deg) != (0.0, 0.0) \
            or tuple(cfg.translate) != (0.0, 0.0):
        warp.append(A.Affine(scale=tuple(cfg.scale), rotate=tuple(cfg.rotate_deg),
                             translate_percent=tuple(cfg.translate),
                             interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT,
                             fill=pad, p=1.0))
    stages["warp"] = warp
    photo = []
    if tuple(cfg.hue_deg) != (0.0, 0.0):
        lo, hi = cfg.hue_deg
        photo.append(A.HueSaturationValue(
            hue_shift_limit=(lo / HSV_HUE_UNIT_DEG, hi / HSV_HUE_UNIT_DEG),
            sat_shift_limit=(0, 0), val_shift_limit=(0, 0), p=1.0))
    if tuple(cfg.brightness) != (0.0, 0.0) or tuple(cfg.contrast) != (0.0, 0.0):
        photo.append(A.RandomBrightnessContrast(brightness_limit=tuple(cfg.brightness),
                                                contrast_limit=tuple(cfg.contrast),
                                                brightness_by_max=True, p=1.0))
    if cfg.shadow_prob > 0:
        lo, hi = cfg.shadow_darkness
        photo.append(A.RandomShadow(shadow_roi=(0.0, 0.0, 1.0, 1.0),
                                    num_shadows_limit=tuple(int(v) for v in cfg.shadow_count),
                                    shadow_dimension=5,
                                    shadow_intensity_range=(1.0 - hi, 1.0 - lo),
                                    p=cfg.shadow_prob))
    if cfg.noise_sigma[1] > 0:
        photo.append(A.GaussNoise(std_range=(cfg.noise_sigma[0] / 255.0,
                                             cfg.noise_sigma[1] / 255.0),
                                  mean_range=(0.0, 0.0), per_channel=True, p=1.0))
    stages["photometric"] = photo
    norm = []
    if cfg.dtype != "uint8":
        norm.append(A.Normalize(mean=tuple(m / 255.0 for m in cfg.mean),
                                std=tuple(s / 255.0 for s in cfg.std), max_pixel_value=255.0))
    norm.append(ToTensorV2())
    stages["normalize"] = norm
    return stages


def keypoint_params():
    """Vertices as "xy" keypoints, kept when they leave the frame (the box clips them)."""
    A = _albumentations()
    return A.KeypointParams(format="xy", remove_invisible=False)


def albumentations_transform(cfg: AugmentConfig, seed: Optional[int] = None):
    """The whole pipeline: one ``A.Compose`` of :func:`albumentations_stages` with keypoints."""
    A = _albumentations()
    transforms = [t for stage in albumentations_stages(cfg).values() for t in stage]
    return A.Compose(transforms, keypoint_params=keypoint_params(), seed=seed)


def instance_vertices(rec):
    """``(vertices (N, 2) float32, per-instance slices, labels)`` of the record's target-making
    instances (:func:`~fastload.bench.torch_data.instance_parts`), every part's vertices in one
    array, in continuous coordinates."""
    parts = instance_parts(rec)
    labels = [lab for lab, _ in parts]
    arrays, spans, start = [], [], 0
    for _, ps in parts:
        n = sum(len(p) for p in ps)
        arrays.extend(np.asarray(p, np.float32).reshape(-1, 2) for p in ps)
        spans.append(slice(start, start + n))
        start += n
    pts = np.concatenate(arrays) if arrays else np.zeros((0, 2), np.float32)
    return pts, spans, labels


def moved_vertices(keypoints, n: int) -> np.ndarray:
    """The ``n`` keypoints albumentations gives back (x, y first) as float32 (n, 2) vertices in
    continuous coordinates (+0.5: module docstring)."""
    kp = np.asarray(keypoints, np.float32)
    return (kp.reshape(n, -1)[:, :2] if n else np.zeros((0, 2), np.float32)) + 0.5


class AlbumentationsDataset(torch.utils.data.Dataset):
    """torch Dataset over a packed dataset with the albumentations pipeline (module docstring).

    ``ds[epoch * len(ds) + i]``: the dict of :class:`fastload.bench.pil_baseline.PilNumpyDataset`
    ("image" (3,H,W), "index", "boxes", "labels", "hm", "wh", "reg", "ind", "reg_mask");
    the epoch part of the index does not change the draw (albumentations draws its own)."""

    def __init__(self, dataset, cfg: Optional[AugmentConfig] = None, seed: Optional[int] = 0):
        self.cfg = cfg or AugmentConfig()
        self.ds = open_packed(dataset)
        self.classes = list(self.ds.classes)
        self.transform = albumentations_transform(self.cfg, seed=seed)
        from fastload.targets.reference import centernet_numpy
        self._centernet = centernet_numpy

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, gindex):
        _, index = split_index(gindex, len(self.ds))
        rec = self.ds[index]
        img = check_decoded(decode_opencv(rec.image_bytes), rec, "OpenCV")
        pts, spans, labels = instance_vertices(rec)
        out = self.transform(image=img, keypoints=pts - 0.5)
        return self.item(out["image"], index, moved_vertices(out["keypoints"], len(pts)), spans,
                         labels)

    def item(self, image, index, moved, spans, labels):
        """Boxes and CenterNet targets from the moved vertices (the end of ``__getitem__``)."""
        H, W = self.cfg.out_size
        boxes, kept = [], []
        for span, lab in zip(spans, labels):
            box = visible_box(moved[span], H, W, self.cfg.min_visible)
            if box is not None:
                boxes.append(box)
                kept.append(lab)
        if self.cfg.dtype in ("float16", "bfloat16"):
            image = image.to(getattr(torch, self.cfg.dtype))
        return targets_item(image, index, boxes, kept, len(self.classes), H, W, self._centernet)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: OpenCV single-threaded, the worker's ``Compose`` reseeded from torch's
    per-worker seed (module docstring)."""
    import cv2
    cv2.setNumThreads(0)
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.set_random_seed(int(info.seed % (2 ** 32)))


def albumentations_loader(dataset, cfg: Optional[AugmentConfig] = None, batch_size: int = 32,
                          num_workers: int = 2, shuffle: bool = True, drop_last: bool = True,
                          seed: int = 0, epochs: int = 1, pin_memory: bool = False,
                          persistent_workers: bool = False):
    """``torch.utils.data.DataLoader`` over :class:`AlbumentationsDataset` of a packed
    ``dataset`` (path or :class:`fastload.store.Dataset`) with ``num_workers`` worker processes;
    one iteration spans ``epochs`` epochs (:class:`~fastload.bench.torch_data.EpochSampler`;
    ``loader.sampler.set_epoch(e)`` starts at epoch ``e``). Batches: the dict of
    :func:`~fastload.bench.torch_data.collate`. ``pin_memory``: torch's, for a training loop
    that copies the batches to a GPU (``.to(device, non_blocking=True)``).
    ``persistent_workers``: torch's (with ``num_workers > 0``), for a training loop that runs
    one iteration per epoch: the workers then start once, not at every epoch (the sampler
    stays in this process, so ``set_epoch`` still reaches it)."""
    ds = AlbumentationsDataset(dataset, cfg=cfg, seed=seed)
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, sampler=EpochSampler(len(ds), epochs, seed, shuffle),
        num_workers=num_workers, collate_fn=collate, drop_last=drop_last,
        worker_init_fn=seed_worker if num_workers > 0 else None, generator=gen,
        persistent_workers=bool(persistent_workers and num_workers > 0), pin_memory=pin_memory)
