"""Loader outputs pinned by hash: the CPU backend's batches must stay bit-identical across
refactors (the hashes below were made with fastload 0.1, before the loader was split into
stages). A change that is meant to alter outputs (a bug fix) updates a hash here and says
why in its commit.

The inputs are made here, not by a library generator, so that moving code cannot change
them: PNG images (lossless, so the decoded pixels do not depend on the encoder) and star
polygons from a seeded NumPy generator. ``INPUT_HASH`` pins those inputs; when they differ
(another NumPy stream or PNG decoder), the test skips instead of blaming the loader.
"""
import hashlib
import io

import numpy as np
import pytest
import torch
from PIL import Image
from tests.helpers.env import COCO_SAMPLE

from fastload.augment.config import AugmentConfig
from fastload.record import FLAG_IGNORE, Record

INPUT_HASH = "05d599c68406e90d129a7d8d"
CLASSES = ["a", "b", "c"]
KEYPOINTS = ["nose", "left_eye", "right_eye"]
FLIP_PAIRS = [(1, 2)]


class ListDataset:
    """Records in memory: the Dataset protocol the loader reads (len, [i] -> Record)."""

    def __init__(self, records, keypoints=True):
        self.records = records
        self.classes = list(CLASSES)
        self.keypoint_names = list(KEYPOINTS) if keypoints else None
        self.flip_pairs = list(FLIP_PAIRS) if keypoints else None

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]


def _star(rng, cx, cy, r):
    n = int(rng.integers(3, 10))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.3, 1.0, n)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.float32)


def make_records(n=11, seed=2024, keypoints=True):
    rng = np.random.default_rng(seed)
    sizes = [(120, 160), (150, 200), (131, 97), (96, 96), (77, 143)]
    recs = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                        rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        k = int(rng.integers(0, 6))
        pts, po, ip, labels, flags, kps = [], [0], [0], [], [], []
        for j in range(k):
            for _ in range(int(rng.integers(1, 3))):
                cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
                p = _star(rng, cx, cy, rng.uniform(5, 0.5 * max(h, w)))
                p[:, 0] = np.clip(p[:, 0], 0, w)
                p[:, 1] = np.clip(p[:, 1], 0, h)
                pts.append(p)
                po.append(po[-1] + len(p))
            ip.append(len(po) - 1)
            labels.append(int(rng.integers(0, len(CLASSES))))
            flags.append(FLAG_IGNORE if rng.random() < 0.15 else 0)
            kp = np.concatenate([rng.uniform(0, 1, (3, 2)) * [w, h],
                                 rng.integers(0, 3, (3, 1))], 1)
            kps.append(kp)
        points = np.concatenate(pts) if pts else np.zeros((0, 2), np.float32)
        po_a, ip_a = np.asarray(po, np.int32), np.asarray(ip, np.int32)
        bboxes = np.zeros((k, 4), np.float32)
        for j in range(k):
            v = points[po_a[ip_a[j]]:po_a[ip_a[j + 1]]]
            bboxes[j] = [v[:, 0].min(), v[:, 1].min(), v[:, 0].max(), v[:, 1].max()]
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        recs.append(Record(id=100 + i, file_name=f"img{i:03d}.png", image_bytes=buf.getvalue(),
                           image_format="png", height=h, width=w, points=points.astype(np.float32),
                           part_offsets=po_a, inst_parts=ip_a,
                           labels=np.asarray(labels, np.int32), bboxes=bboxes,
                           flags=np.asarray(flags, np.uint8),
                           keypoints=(np.asarray(kps, np.float32).reshape(k, 3, 3)
                                      if keypoints else None)))
    return recs


def input_hash(recs) -> str:
    h = hashlib.sha256()
    for r in recs:
        with Image.open(io.BytesIO(r.image_bytes)) as im:
            h.update(np.asarray(im.convert("RGB")).tobytes())
        for a in (r.points, r.part_offsets, r.inst_parts, r.labels, r.flags, r.keypoints):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:24]


def batches_hash(batches) -> str:
    h = hashlib.sha256()
    for b in batches:
        for k in sorted(b):
            t = b[k]
            if t.dtype == torch.bfloat16:
                t = t.view(torch.int16)
            a = t.detach().cpu().contiguous().numpy()
            h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:24]


def _loader_case(name):
    from fastload.loader import DataLoader
    from fastload.targets.specs import MaskTarget
    ds = ListDataset(make_records())
    kw = dict(num_threads=2, device="cpu", backend="cpu")
    if name == "all-targets-float32":
        ld = DataLoader(ds, batch_size=3, shuffle=True, seed=7, augment=AugmentConfig(
            out_size=(128, 128)), targets=["centernet", "masks", "fcos", "keypoints"], **kw)
        epochs = [0, 1]
    elif name == "float16-stretch-vflip":
        ld = DataLoader(ds, batch_size=4, shuffle=True, seed=11, augment=AugmentConfig(
            out_size=(96, 64), keep_aspect=False, vflip_prob=0.5, dtype="float16",
            pad_value=114.0), targets=[MaskTarget(stride=4, max_instances=4)], **kw)
        epochs = [3]
    elif name == "uint8-off":
        ld = DataLoader(ds, batch_size=5, augment=AugmentConfig.off(out_size=(64, 64),
                                                                     dtype="uint8"),
                        targets=["centernet"], **kw)
        epochs = [0]
    elif name == "bfloat16-rank1-of-2":
        ld = DataLoader(ds, batch_size=2, shuffle=True, drop_last=True, seed=5, rank=1,
                        world_size=2, augment=AugmentConfig(out_size=(64, 96), dtype="bfloat16",
                                                            shadow_prob=1.0,
                                                            shadow_count=(2, 3)), **kw)
        epochs = [2]
    else:
        raise KeyError(name)
    out = []
    for e in epochs:
        ld.set_epoch(e)
        out.extend(ld)
    ld.close()
    return out


def _coco_sample_case(tmp):
    import fastload
    from fastload.loader import DataLoader
    fastload.pack(COCO_SAMPLE / "test_coco.json", tmp / "coco", "coco", progress=False)
    ld = DataLoader(str(tmp / "coco"), batch_size=2, shuffle=True, seed=1, num_threads=2,
                    device="cpu", backend="cpu", augment=AugmentConfig(out_size=(512, 512)),
                    targets=["centernet", "keypoints"])
    out = list(ld)
    ld.close()
    return out


def _torch_dataset_case():
    from fastload.loader import TorchDataset
    tds = TorchDataset(ListDataset(make_records()), augment=AugmentConfig(out_size=(64, 64)),
                       targets=["centernet", "masks"], seed=3)
    tds.set_epoch(4)
    return [tds[i] for i in (0, 4, 10)]


# Changed on purpose: "uint8-off" and the real COCO sample, when clipping started cancelling the
# zero-width bridges and spikes Sutherland-Hodgman leaves along the frame border
# (fastload/augment/clip.py). Only poly_points / poly_lengths / poly_instance changed: in
# "uint8-off" (no augmentation: the image border lies on the frame border) one part loses the
# zero-width zigzag along y = 0 that make_records' np.clip left in it (9 -> 6 vertices) and one
# is split into its two visible pieces (6 -> 3 + 3); in the COCO sample one polygon poking into the frame from
# the left four times is split into those four pieces (34 -> 3 + 20 + 8 + 3). Images, boxes and
# every target are bit-identical (these bridges lay between the pieces, inside their box).
PINNED = {
    "all-targets-float32": "af37caebe9bf6f14272b9b63",
    "float16-stretch-vflip": "e1243fc748ebee2735cb8a3f",
    "uint8-off": "6c49220bd955b173a766c4ba",
    "bfloat16-rank1-of-2": "0ee68472dab34fc7d1e11804",
    "torch-dataset": "7ce1f4639e04156fcf211331",
}
PINNED_COCO_SAMPLE = "8320aa9afd3edb54d70a7c23"


@pytest.fixture(scope="module")
def inputs_ok():
    got = input_hash(make_records())
    if got != INPUT_HASH:
        pytest.skip(f"the generated inputs differ from those the hashes were made from "
                    f"({got} != {INPUT_HASH}: another NumPy or PNG decoder); nothing to compare")


@pytest.mark.parametrize("name", sorted(PINNED))
def test_outputs_match_pinned_hashes(inputs_ok, name):
    batches = _torch_dataset_case() if name == "torch-dataset" else _loader_case(name)
    assert batches_hash(batches) == PINNED[name]


def test_real_coco_sample_matches_pinned_hash(tmp_path):
    if not COCO_SAMPLE.exists():
        pytest.skip(f"{COCO_SAMPLE} absent (only in the project's CI)")
    assert batches_hash(_coco_sample_case(tmp_path)) == PINNED_COCO_SAMPLE
