"""Where the time goes per image: the stages of the albumentations baseline and of fastload's CPU
path timed one by one, in one thread, in this process, on the same images
(``fastload bench --stages``; method in docs/bench.md).

Each stage runs over the same ``n`` records in turn, feeding the next stage with its outputs,
``repeats`` times; a stage's time is the CPU time of this process (``time.process_time``: time
spent waiting for a core on a shared machine does not count) of the fastest repeat / ``n``, in
milliseconds per image. torch and OpenCV run with one thread meanwhile, as in a DataLoader
worker, so every stage runs in the calling thread.

albumentations (:mod:`fastload.bench.albumentations_baseline`, its transforms split by stage,
each stage one ``A.Compose``): read (the LMDB record), decode (OpenCV), letterbox
(LongestMaxSize + PadIfNeeded, with the vertices), warp (flips + Affine, with the vertices),
photometric (hue, shadow, noise), normalize (Normalize + ToTensorV2), targets (boxes from the
moved vertices + NumPy CenterNet), collate (one batch / its size); and the whole
``Dataset.__getitem__`` for comparison with the sum.

fastload-cpu, through the public API: read (``Dataset[i]``), params (``sample_params``),
decode (``decode_image``, full size), warp + normalize (``CpuAugmenter`` with every pixel op
off, on the decoded array), photometric = the full augmentation on the decoded array minus
warp + normalize, targets (``transform_instances`` + ``centernet_targets``); as a check,
``CpuAugmenter.run`` on the encoded bytes, the backend's own decode + augmentation (a backend
that decodes at a reduced size shows it there, below decode + warp + photometric); and
``fastload.DataLoader(num_threads=1)``'s CPU time per image (all its threads) for comparison
with the sum (its difference is the loader's own work: batching, the producer thread,
tensors).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, List, Sequence


def _timed(fn: Callable, items: Sequence, repeats: int):
    """``(CPU ms per item of the fastest repeat, outputs of the last repeat)``; one warm-up call."""
    fn(items[0])
    best, outs = float("inf"), []
    for _ in range(repeats):
        t0 = time.process_time()
        outs = [fn(x) for x in items]
        best = min(best, time.process_time() - t0)
    return best / len(items) * 1000.0, outs


def albumentations_stages_ms(packed, cfg, n_images: int = 32, batch_size: int = 32,
                             repeats: int = 3) -> dict:
    """Stage times of the albumentations baseline (module docstring)."""
    import albumentations as A

    from fastload.bench.albumentations_baseline import (AlbumentationsDataset,
                                                        albumentations_stages, decode_opencv,
                                                        instance_vertices, keypoint_params,
                                                        moved_vertices)
    from fastload.bench.torch_data import collate
    ds = AlbumentationsDataset(packed, cfg=cfg, seed=0)
    idx = list(range(min(n_images, len(ds))))
    kp = keypoint_params()
    geometric = ("letterbox", "warp")  # the stages that move the vertices
    comp = {name: A.Compose(ts, keypoint_params=kp if name in geometric else None, seed=0)
            for name, ts in albumentations_stages(cfg).items()}
    rows: List[tuple] = []
    ms, recs = _timed(lambda i: ds.ds[i], idx, repeats)
    rows.append(("read record (LMDB)", ms))
    ms, imgs = _timed(lambda r: decode_opencv(r.image_bytes), recs, repeats)
    rows.append(("decode (cv2.imdecode + cvtColor)", ms))
    verts = [instance_vertices(r) for r in recs]
    data = [{"image": im, "keypoints": v[0] - 0.5} for im, v in zip(imgs, verts)]
    for name in ("letterbox", "warp", "photometric", "normalize"):
        if name in geometric:
            def step(d, c=comp[name]):
                return c(image=d["image"], keypoints=d["keypoints"])
        else:
            def step(d, c=comp[name]):
                return {"image": c(image=d["image"])["image"], "keypoints": d["keypoints"]}
        ms, data = _timed(step, data, repeats)
        rows.append((name + {"letterbox": " (LongestMaxSize + PadIfNeeded)",
                             "warp": " (flip + Affine, vertices too)",
                             "photometric": " (hue, shadow, noise)",
                             "normalize": " (Normalize + ToTensorV2)"}[name], ms))
    items = [(d["image"], i, moved_vertices(d["keypoints"], len(v[0])), v[1], v[2])
             for d, i, v in zip(data, idx, verts)]
    ms, samples = _timed(lambda it: ds.item(*it), items, repeats)
    rows.append(("targets (boxes + NumPy CenterNet)", ms))
    batch = (samples * (batch_size // len(samples) + 1))[:batch_size]
    ms, _ = _timed(lambda b: collate(b), [batch], repeats)
    rows.append(("collate (per image)", ms / batch_size))
    total, _ = _timed(ds.__getitem__, idx, repeats)
    return {"stages": rows, "sum_ms": sum(v for _, v in rows),
            "whole_ms": total + ms / batch_size,
            "whole": "Dataset.__getitem__ + collate, per image"}


def fastload_cpu_stages_ms(packed, cfg, n_images: int = 32, batch_size: int = 32,
                           repeats: int = 3) -> dict:
    """Stage times of fastload's CPU path (module docstring)."""
    import numpy as np

    from fastload.augment.config import AugmentConfig
    from fastload.augment.cpu import CpuAugmenter
    from fastload.augment.decode import decode_image
    from fastload.augment.geometry import transform_instances
    from fastload.augment.ops import PIXEL_OPS
    from fastload.augment.params import sample_params
    from fastload.dtypes import output_numpy_dtype
    from fastload.loader import DataLoader
    from fastload.store import Dataset
    from fastload.targets.centernet import centernet_targets
    ds = Dataset(packed)
    idx = list(range(min(n_images, len(ds))))
    rows: List[tuple] = []
    ms_read, recs = _timed(lambda i: ds[i], idx, repeats)
    ms_par, params = _timed(lambda i: sample_params(cfg, 0, 0, i, recs[i].height, recs[i].width),
                            idx, repeats)
    identity = {k: v for op in PIXEL_OPS for k, v in op.values.items()}
    geo_params = [dataclasses.replace(p, **identity) for p in params]
    off = AugmentConfig.off(out_size=cfg.out_size, keep_aspect=cfg.keep_aspect,
                            pad_value=cfg.pad_value, mean=cfg.mean, std=cfg.std, dtype=cfg.dtype)
    H, W = cfg.out_size
    buf = np.empty((1, 3, H, W), output_numpy_dtype(cfg.dtype))
    decoded = [decode_image(r.image_bytes) for r in recs]
    with CpuAugmenter(cfg, num_threads=1) as full, CpuAugmenter(off, num_threads=1) as geo:
        ms_enc, _ = _timed(lambda i: full.run([recs[i].image_bytes], [params[i]], buf), idx,
                           repeats)
        ms_arr, _ = _timed(lambda i: full.run([decoded[i]], [params[i]], buf), idx, repeats)
        ms_geo, _ = _timed(lambda i: geo.run([decoded[i]], [geo_params[i]], buf), idx, repeats)
    ms_full_decode, _ = _timed(lambda r: decode_image(r.image_bytes), recs, repeats)
    C = len(ds.classes)

    def targets(i):
        ti = transform_instances(recs[i], params[i], cfg.out_size, cfg.min_visible)
        keep = ~np.asarray(ti.ignore, bool)
        return centernet_targets(np.ascontiguousarray(ti.boxes[keep] / np.float32(4)),
                                 np.asarray(ti.labels[keep], np.int64), C, H // 4, W // 4)
    ms_tg, _ = _timed(targets, idx, repeats)
    rows += [("read record (LMDB)", ms_read), ("params (sample_params)", ms_par),
             ("decode (decode_image, full size)", ms_full_decode),
             ("warp + normalize (fused kernel, pixel ops off)", ms_geo),
             ("photometric (hue, shadow, noise in the kernel)", ms_arr - ms_geo),
             ("targets (transform_instances + Numba CenterNet)", ms_tg)]
    loader = DataLoader(ds, batch_size=min(batch_size, len(ds)), shuffle=False, drop_last=False,
                        augment=cfg, targets=["centernet"], device="cpu", num_threads=1)
    try:
        for _ in loader:  # warm
            pass
        best = float("inf")
        for _ in range(repeats):
            t0, n = time.process_time(), 0
            for b in loader:
                n += b["image"].shape[0]
            best = min(best, (time.process_time() - t0) / n)
    finally:
        loader.close()
    return {"stages": rows, "sum_ms": sum(v for _, v in rows), "whole_ms": best * 1000.0,
            "whole": "fastload.DataLoader(num_threads=1), CPU per image (all its threads)",
            "checks": {
                "check: CpuAugmenter.run on the encoded bytes (the backend's own decode + "
                "augmentation)": ms_enc,
                "check: decode + warp + photometric above": ms_full_decode + ms_arr}}


def profile(packed, settings, n_images: int = 32) -> dict:
    """Both profiles at ``settings.size`` (what ``fastload bench --stages`` adds to the report);
    a pipeline whose library is missing says so instead."""
    import torch

    from fastload.augment.config import AugmentConfig
    cfg = AugmentConfig(out_size=(settings.size, settings.size))
    out = {"n_images": n_images,
           "method": "CPU time, one thread, in-process; fastest of 3 repeats"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a DataLoader worker runs with (collate's torch.stack)
    try:
        import cv2
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(0)  # what the albumentations workers run with
    except ImportError:
        cv2 = None
    try:
        for name, fn in (("albumentations", albumentations_stages_ms),
                         ("fastload-cpu", fastload_cpu_stages_ms)):
            try:
                out[name] = fn(packed, cfg, n_images, settings.batch_size)
            except ImportError as e:
                out[name] = {"error": f"not available: {e}"}
    finally:
        torch.set_num_threads(threads)
        if cv2 is not None:
            cv2.setNumThreads(cv_threads)
    return out
