"""Small real datasets for the loader tests (real JPEGs, real records, real LMDB when packed).

- :func:`blob_dataset`: records encoded with ``Record.encode`` and decoded on every read
  (``ds[i] = Record.decode(blobs[i])``), so a test can corrupt one record's bytes or its
  image bytes and see the real decode fail.
- :func:`packed_dataset`: ``tools.synth_formats.write_dataset`` (COCO) packed by
  ``fastload.packing.pack`` into LMDB shards, opened as ``fastload.Dataset``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from fastload.record import Instance, Record
from fastload.synth.scenes import CLASSES, FLIP_PAIRS, KEYPOINT_NAMES, encode_jpeg, make_scene


class BlobDataset:
    """A dataset of encoded records in memory (the Dataset protocol the loader reads)."""

    def __init__(self, blobs: List[bytes], classes=CLASSES, keypoint_names=KEYPOINT_NAMES,
                 flip_pairs=FLIP_PAIRS):
        self.blobs = list(blobs)
        self.classes = list(classes)
        self.keypoint_names = list(keypoint_names) if keypoint_names else None
        self.flip_pairs = [tuple(p) for p in flip_pairs] if flip_pairs else None

    def __len__(self):
        return len(self.blobs)

    def __getitem__(self, i):
        return Record.decode(self.blobs[int(i)])


def make_record(i: int, rng: np.random.Generator, width=96, height=72, keypoints=True,
                n_instances=None) -> Record:
    scene = make_scene(rng, width, height, n_instances=n_instances, keypoints=keypoints)
    insts = []
    for s in scene.instances:
        pts = np.concatenate(s.polygons)
        bbox = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()],
                        np.float32)
        insts.append(Instance(label=s.label, polygons=s.polygons, bbox=bbox, keypoints=s.keypoints))
    return Record.from_instances(i, f"img_{i:04d}.jpg", encode_jpeg(scene.image), "jpeg",
                                 height, width, insts)


def blob_dataset(n: int = 10, seed: int = 0, width=96, height=72, keypoints=True) -> BlobDataset:
    rng = np.random.default_rng(seed)
    return BlobDataset([make_record(i, rng, width, height, keypoints).encode() for i in range(n)])


def corrupt_image(ds: BlobDataset, i: int) -> None:
    """Replace record i's image bytes by a truncated, garbled JPEG (the record itself decodes)."""
    rec = Record.decode(ds.blobs[i])
    rec.image_bytes = rec.image_bytes[:40] + b"\x00garbage" * 8
    ds.blobs[i] = rec.encode()


def corrupt_record(ds: BlobDataset, i: int) -> None:
    """Make record i undecodable (bad msgpack)."""
    ds.blobs[i] = b"\xc1\xc1not a record"


def packed_dataset(root: Path, n: int = 12, seed: int = 0, width=96, height=72, keypoints=True):
    """Write a synthetic COCO dataset and pack it; returns the packed directory."""
    from fastload.packing import pack
    from fastload.synth.datasets import write_dataset
    src, out = Path(root) / "src", Path(root) / "packed"
    if not (out / "manifest.json").exists():
        write_dataset(src, "coco", n_images=n, seed=seed, width=width, height=height,
                      keypoints=keypoints)
        pack(src, out, "coco", shard_size=5, workers=1, progress=False)
    return out
