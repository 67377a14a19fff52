"""The albumentations baseline (``fastload.bench.albumentations_baseline``): its targets are
fastload's reference CenterNet of its boxes, the moved vertices land on the object in the
augmented image, the letterbox matches fastload's, the config translates into the transforms
it says, and its DataLoader reseeds each worker."""
import numpy as np
import pytest
import torch

from fastload.augment.config import AugmentConfig
from fastload.record import FLAG_IGNORE, Instance, Record
from fastload.synth.scenes import CLASSES, encode_jpeg, encode_png, random_polygon
from fastload.targets.raster import fill_polygon
from tests.helpers.data import BlobDataset, blob_dataset

A = pytest.importorskip("albumentations")
from fastload.bench.albumentations_baseline import (AlbumentationsDataset,  # noqa: E402
                                                    albumentations_loader, albumentations_stages,
                                                    instance_vertices)

GEOMETRY = dict(hflip_prob=0.5, rotate_deg=(-15.0, 15.0), scale=(0.8, 1.2),
                translate=(-0.1, 0.1))


def _one_object_dataset(width=320, height=200, seed=0, extra=()):
    """One record: a white convex polygon on black (PNG, lossless), rasterized with fastload's
    pixel-center rule, plus ``extra`` instances."""
    poly = random_polygon(np.random.default_rng(seed), 150, 100, 70, n=12, concave=False)
    mask = np.zeros((height, width), np.uint8)
    fill_polygon(mask, poly, 1, 1.0)
    img = np.repeat((mask * 255)[..., None], 3, 2)
    box = np.concatenate([poly.min(0), poly.max(0)]).astype(np.float32)
    insts = [Instance(label=1, polygons=[poly], bbox=box)] + list(extra)
    rec = Record.from_instances(0, "object.png", encode_png(img), "png", height, width, insts)
    return BlobDataset([rec.encode()], keypoint_names=None, flip_pairs=None), img


def _moved(ds, img, rec):
    pts, spans, labels = instance_vertices(rec)
    out = ds.transform(image=img, keypoints=pts - 0.5)
    moved = np.asarray(out["keypoints"], np.float32).reshape(len(pts), -1)[:, :2]
    return out["image"].numpy(), moved + 0.5, moved


def test_moved_vertices_land_on_the_object():
    """Geometry sanity: with flips, rotation, scale and translation on (photometry off), the
    polygon of the moved vertices covers the white object of the augmented image (IoU > 0.98)
    and their centroids agree within 0.3 px; without the half-pixel convention change (keypoints
    at integer pixel centers in albumentations) they would be about half a pixel apart."""
    ds_blob, img = _one_object_dataset()
    cfg = AugmentConfig.off(out_size=(256, 256), dtype="uint8", **GEOMETRY)
    err, err_unshifted, flips = [], [], 0
    for seed in range(8):
        ds = AlbumentationsDataset(ds_blob, cfg=cfg, seed=seed)
        image, moved, unshifted = _moved(ds, img, ds.ds[0])
        white = image[0] > 127
        poly = np.zeros((256, 256), np.uint8)
        fill_polygon(poly, np.ascontiguousarray(moved), 1, 1.0)
        iou = (white & (poly > 0)).sum() / (white | (poly > 0)).sum()
        assert iou > 0.98, (seed, iou)
        c_img = np.argwhere(white).mean(0)
        err.append(np.abs(c_img - np.argwhere(poly > 0).mean(0)).max())
        wrong = np.zeros((256, 256), np.uint8)
        fill_polygon(wrong, np.ascontiguousarray(unshifted), 1, 1.0)
        err_unshifted.append(np.abs(c_img - np.argwhere(wrong > 0).mean(0)).max())
        flips += int(moved[0, 0] > 128)  # the first vertex is right of center after a flip
    assert max(err) < 0.3, err
    assert np.mean(err_unshifted) > 0.3, err_unshifted
    assert 0 < flips < 8  # both flipped and unflipped samples were checked


def test_letterbox_matches_fastload():
    """Geometry off: a 320x200 source letterboxed into 128x128 is scaled by 0.4 and centered
    (24 px of pad above and below), like fastload's fit matrix; vertices follow."""
    ds_blob, img = _one_object_dataset()
    cfg = AugmentConfig.off(out_size=(128, 128), dtype="uint8", pad_value=0.0)
    ds = AlbumentationsDataset(ds_blob, cfg=cfg)
    rec = ds.ds[0]
    image, moved, _ = _moved(ds, img, rec)
    assert image.shape == (3, 128, 128) and image.dtype == np.uint8
    from fastload.augment.params import fit_matrix
    m = fit_matrix(200, 320, 128, 128, True)
    np.testing.assert_allclose(m[:2, :2], [[0.4, 0], [0, 0.4]])
    assert m[1, 2] == 24.0
    want = rec.points @ m[:2, :2].T + m[:2, 2]
    np.testing.assert_allclose(moved, want, atol=0.5)
    assert image[:, :24].max() == 0 and image[:, 104:].max() == 0  # the pad rows
    rows = np.flatnonzero(image[0].max(1) > 0)
    assert rows.min() >= 24 and rows.max() < 104


def test_targets_are_the_reference_centernet_of_the_boxes():
    """Each sample's CenterNet arrays are fastload's reference (``centernet_numpy``) and its Numba
    kernel (``centernet_targets``) of the sample's own boxes / 4 and labels; the boxes are the
    clipped vertex boxes, ignore regions make none."""
    from fastload.targets.centernet import centernet_targets
    from fastload.targets.reference import centernet_numpy
    ds_blob = blob_dataset(6, seed=3, width=160, height=120, keypoints=False)
    cfg = AugmentConfig(out_size=(128, 128))
    ds = AlbumentationsDataset(ds_blob, cfg=cfg, seed=1)
    n_boxes = 0
    for i in range(len(ds)):
        s = ds[i]
        boxes, labels = s["boxes"].numpy(), s["labels"].numpy()
        n_boxes += len(boxes)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 128).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        for fn in (centernet_numpy, centernet_targets):
            t = fn(boxes / 4, labels, len(CLASSES), 32, 32, max_objs=128)
            for k in ("hm", "wh", "reg"):
                np.testing.assert_allclose(s[k].numpy(), t[k], atol=1e-5, err_msg=(fn, k))
            for k in ("ind", "reg_mask"):
                np.testing.assert_array_equal(s[k].numpy(), t[k], err_msg=(fn, k))
        assert int(s["reg_mask"].sum()) == len(boxes) and s["hm"].shape == (len(CLASSES), 32, 32)
    assert n_boxes > 6
    # an ignore region makes no box
    ignore = Instance(label=0, polygons=[np.array([[10, 10], [60, 10], [60, 60]], np.float32)],
                      bbox=np.array([10, 10, 60, 60], np.float32), ignore=True)
    blob, img = _one_object_dataset(extra=[ignore])
    assert int(blob[0].flags[1]) & FLAG_IGNORE
    s = AlbumentationsDataset(blob, cfg=AugmentConfig.off(out_size=(128, 128)))[0]
    assert s["labels"].tolist() == [1]


def test_stages_follow_the_config():
    cfg = AugmentConfig(out_size=(256, 192), hue_deg=(-18.0, 18.0), noise_sigma=(0.0, 8.0),
                        shadow_prob=0.3, shadow_darkness=(0.5, 0.8), brightness=(0.0, 0.0))
    st = albumentations_stages(cfg)
    assert list(st) == ["letterbox", "warp", "photometric", "normalize"]
    names = {k: [type(t).__name__ for t in v] for k, v in st.items()}
    assert names["letterbox"] == ["LongestMaxSize", "PadIfNeeded"]
    assert names["warp"] == ["HorizontalFlip", "Affine"]
    assert names["photometric"] == ["HueSaturationValue", "RandomShadow", "GaussNoise"]
    assert names["normalize"] == ["Normalize", "ToTensorV2"]
    hsv, shadow, noise = st["photometric"]
    assert tuple(hsv.hue_shift_limit) == (-9.0, 9.0)  # OpenCV hue units: 2 degrees
    assert tuple(shadow.shadow_intensity_range) == pytest.approx((0.2, 0.5))
    assert shadow.p == 0.3
    assert tuple(noise.std_range) == pytest.approx((0.0, 8.0 / 255.0))
    off = albumentations_stages(AugmentConfig.off(out_size=(64, 64), keep_aspect=False,
                                                  dtype="uint8"))
    assert [type(t).__name__ for t in off["letterbox"]] == ["Resize"]
    assert off["warp"] == [] and off["photometric"] == []
    assert [type(t).__name__ for t in off["normalize"]] == ["ToTensorV2"]


def test_normalized_image_and_keys():
    ds = AlbumentationsDataset(blob_dataset(2, width=96, height=72, keypoints=False),
                               cfg=AugmentConfig.off(out_size=(64, 64)))
    s = ds[0]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 64, 64)
    assert set(s) == {"image", "index", "boxes", "labels", "hm", "wh", "reg", "ind", "reg_mask"}
    raw = AlbumentationsDataset(ds.ds, cfg=AugmentConfig.off(out_size=(64, 64), dtype="uint8"))[0]
    cfg = AugmentConfig.off(out_size=(64, 64))
    mean = torch.tensor(cfg.mean)[:, None, None]
    std = torch.tensor(cfg.std)[:, None, None]
    torch.testing.assert_close(s["image"], (raw["image"].float() - mean) / std, atol=1e-4,
                               rtol=0)


def test_loader_reseeds_workers_and_is_reproducible():
    """Forked workers start with the same albumentations generator: the loader reseeds each from
    torch's per-worker seed, so two workers augment the same record differently, and the same
    ``seed`` gives the same batches again."""
    one = blob_dataset(1, seed=0, width=96, height=72, keypoints=False)
    cfg = AugmentConfig(out_size=(64, 64), noise_sigma=(0.0, 0.0), shadow_prob=0.0)

    def images(seed):
        dl = albumentations_loader(one, cfg=cfg, batch_size=1, num_workers=2, seed=seed,
                                   epochs=4, drop_last=False)
        return [b["image"][0] for b in dl]
    a, b = images(5), images(5)
    assert len(a) == 4
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])  # batch 0 and 1 come from different workers
    assert len({x.sum().item() for x in a}) == 4
    assert not all(torch.equal(x, y) for x, y in zip(a, images(6)))


def test_decode_failure_names_the_record():
    from fastload.bench.torch_data import BaselineError
    rec = Record.from_instances(7, "broken.jpg", encode_jpeg(np.zeros((8, 8, 3), np.uint8))[:20],
                                "jpeg", 8, 8, [])
    ds = AlbumentationsDataset(BlobDataset([rec.encode()], keypoint_names=None, flip_pairs=None),
                               cfg=AugmentConfig.off(out_size=(16, 16)))
    with pytest.raises(BaselineError, match="broken.jpg"):
        ds[0]


def test_a_record_without_instances():
    """An image without annotations (coco128-seg has two) gives an image and empty targets."""
    rec = Record.from_instances(3, "empty.jpg", encode_jpeg(np.full((40, 60, 3), 90, np.uint8)),
                                "jpeg", 40, 60, [])
    ds = AlbumentationsDataset(BlobDataset([rec.encode()], keypoint_names=None, flip_pairs=None),
                               cfg=AugmentConfig(out_size=(32, 32)))
    s = ds[0]
    assert s["image"].shape == (3, 32, 32) and s["boxes"].shape == (0, 4)
    assert s["labels"].shape == (0,) and int(s["reg_mask"].sum()) == 0 and s["hm"].max() == 0


def test_loader_passes_pin_memory():
    """``pin_memory`` reaches torch's DataLoader (a GPU training loop asks for it); off by
    default, as the bench measures on the host."""
    one = blob_dataset(1, seed=0, width=96, height=72, keypoints=False)
    cfg = AugmentConfig.off(out_size=(32, 32))
    assert albumentations_loader(one, cfg=cfg, batch_size=1, num_workers=0,
                                 pin_memory=True).pin_memory is True
    assert albumentations_loader(one, cfg=cfg, batch_size=1, num_workers=0).pin_memory is False


def test_persistent_workers_follow_set_epoch():
    """With persistent workers, ``sampler.set_epoch`` between iterations still changes the epoch
    the workers see (the index carries it) and the same seed gives the same batches again."""
    ds = blob_dataset(4, seed=0, width=96, height=72, keypoints=False)
    cfg = AugmentConfig(out_size=(32, 32), noise_sigma=(0.0, 0.0), shadow_prob=0.0)

    def run():
        dl = albumentations_loader(ds, cfg=cfg, batch_size=2, num_workers=2, seed=3,
                                   persistent_workers=True)
        assert dl.persistent_workers
        out = []
        for e in range(2):
            dl.sampler.set_epoch(e)
            out.append([b for b in dl])
        return out
    a, b = run(), run()
    assert [len(ep) for ep in a] == [2, 2]
    orders = [[int(i) for x in ep for i in x["index"]] for ep in a]
    assert sorted(orders[0]) == sorted(orders[1]) == [0, 1, 2, 3]
    assert orders[0] != orders[1]  # the epoch reached the sampler (shuffled per epoch)
    assert all(torch.equal(x["image"], y["image"]) for ea, eb in zip(a, b)
               for x, y in zip(ea, eb))
    assert not albumentations_loader(ds, cfg=cfg, num_workers=0,
                                     persistent_workers=True).persistent_workers
