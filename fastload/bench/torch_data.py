"""What the torch baselines share: reading a packed dataset in DataLoader workers, the boxes of
moved polygon vertices, the epoch sampler and the collate function.

Both baselines (:mod:`fastload.bench.pil_baseline`, :mod:`fastload.bench.albumentations_baseline`)
are ``torch.utils.data.Dataset`` classes over a PACKED dataset (any source format): each item
reads its record (:class:`fastload.store.Dataset`, opened lazily once per process, so forked
workers each get their own LMDB environment), takes the ORIGINAL encoded image bytes and the
polygons, and decodes them with what a user of that pipeline would use (PIL, OpenCV). So the
baselines read exactly what fastload reads, in any format, with no original files needed.

Sample order and classes are the pack's: index ``i`` is record ``i``, labels index
``Dataset.classes``. Ignore regions (crowd) make no target, like fastload's CenterNet.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from fastload.record import FLAG_IGNORE

STRIDE = 4
MAX_OBJS = 128
TARGET_KEYS = ("hm", "wh", "reg", "ind", "reg_mask")


class BaselineError(ValueError):
    """A baseline could not read a sample (names the record and its file)."""


def open_packed(dataset):
    """A :class:`fastload.store.Dataset` from a path; a Dataset, or any object with ``len()``,
    ``[i] -> fastload.record.Record`` and ``.classes`` (what ``fastload.DataLoader`` reads),
    as it is."""
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "classes"):
        return dataset
    from fastload.store import Dataset
    return Dataset(dataset)


def check_decoded(image, rec, decoder: str):
    """The decoded image must be the record's size (DESIGN.md); a BaselineError naming the
    record otherwise."""
    if image is None:
        raise BaselineError(f"record {rec.id} ({rec.file_name}): {decoder} could not decode "
                            f"the image ({len(rec.image_bytes)} bytes)")
    h, w = image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1]
    if (h, w) != (rec.height, rec.width):
        raise BaselineError(f"record {rec.id} ({rec.file_name}): {decoder} decoded {w}x{h}, the "
                            f"record says {rec.width}x{rec.height}")
    return image


def instance_parts(rec):
    """The record's target-making instances: ``[(label, [part (n, 2) float32, ...]), ...]``
    (ignore regions left out; an instance without polygons, a box-only annotation, becomes its
    box's 4 corners)."""
    out = []
    for k in range(rec.num_instances):
        if int(rec.flags[k]) & FLAG_IGNORE:
            continue
        parts = [rec.points[rec.part_offsets[p]:rec.part_offsets[p + 1]]
                 for p in range(rec.inst_parts[k], rec.inst_parts[k + 1])]
        if not parts:
            x1, y1, x2, y2 = (float(v) for v in rec.bboxes[k])
            parts = [np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)]
        out.append((int(rec.labels[k]), parts))
    return out


def visible_box(moved: np.ndarray, out_h: int, out_w: int, min_visible: float
                ) -> Optional[np.ndarray]:
    """The box of an instance from its moved (unclipped) vertices ``(n, 2)``: every vertex
    clipped to the output frame [0, W] x [0, H], then their min/max. ``None`` (dropped) when
    that box keeps less than ``min_visible`` of the unclipped box's area (the rule of the
    seed's code; fastload clips the polygons themselves and compares polygon areas, so an
    instance at the border may get a slightly tighter box there)."""
    moved = np.asarray(moved, np.float32).reshape(-1, 2)
    lo, hi = moved.min(0), moved.max(0)
    clipped = np.clip(moved, 0, np.array([out_w, out_h], np.float32))
    c_lo, c_hi = clipped.min(0), clipped.max(0)
    area_full = max(float((hi[0] - lo[0]) * (hi[1] - lo[1])), 1e-6)
    if float((c_hi[0] - c_lo[0]) * (c_hi[1] - c_lo[1])) < min_visible * area_full:
        return None
    return np.concatenate([c_lo, c_hi])


def targets_item(image: torch.Tensor, index: int, boxes: list, labels: list, num_classes: int,
                 out_h: int, out_w: int, centernet) -> dict:
    """One sample's output: image, index, boxes (n, 4) float32, labels (n,) int64 and the
    CenterNet arrays of ``centernet`` (a reference of :mod:`fastload.targets.reference`) at
    stride :data:`STRIDE` with :data:`MAX_OBJS` objects."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    lab = np.asarray(labels, np.int64)
    t = centernet(b / STRIDE, lab, num_classes, out_h // STRIDE, out_w // STRIDE,
                  max_objs=MAX_OBJS)
    out = {"image": image, "index": int(index), "boxes": torch.from_numpy(b),
           "labels": torch.from_numpy(lab)}
    for k in TARGET_KEYS:
        out[k] = torch.from_numpy(np.ascontiguousarray(t[k]))
    return out


def collate(samples):
    """Stack images and targets; pad boxes (0) and labels (-1) to the batch maximum; the keys
    of ``fastload.DataLoader``'s CenterNet batches (``num_instances``, ``boxes``, ``labels``,
    ``index``, ``hm``, ``wh``, ``reg``, ``ind``, ``reg_mask``)."""
    out = {}
    for k in ("image",) + TARGET_KEYS:
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
    """Yields ``epoch * n + i`` for ``epochs`` epochs from ``start_epoch`` (shuffled per
    (seed, epoch) when ``shuffle``); the datasets split that back into (epoch, index), so
    epoch-dependent augmentation needs no persistent workers, and one DataLoader iteration
    can span many epochs (the bench) or exactly one (training: ``set_epoch(e)`` each epoch,
    like ``DistributedSampler``)."""

    def __init__(self, n: int, epochs: int = 1, seed: int = 0, shuffle: bool = True,
                 start_epoch: int = 0):
        self.n, self.epochs, self.seed, self.shuffle = int(n), int(epochs), int(seed), shuffle
        self.start_epoch = int(start_epoch)

    def set_epoch(self, epoch: int) -> None:
        self.start_epoch = int(epoch)

    def __len__(self):
        return self.n * self.epochs

    def __iter__(self):
        for e in range(self.start_epoch, self.start_epoch + self.epochs):
            order = (np.random.default_rng([self.seed, e]).permutation(self.n) if self.shuffle
                     else np.arange(self.n))
            yield from (e * self.n + order).tolist()


def split_index(gindex: int, n: int):
    """``epoch * n + i`` -> ``(epoch, i)``."""
    gindex = int(gindex)
    if n <= 0:
        raise IndexError("empty dataset")
    return gindex // n, gindex % n
