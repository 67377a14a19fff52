"""Write synthetic datasets on disk in each input format ``fastload pack`` reads.

    write_dataset(root, "coco", n_images=20, keypoints=True) -> list of Scene

Images are real JPEG files of realistic size and content (``fastload.synth.scenes.make_scene``);
polygons are written with full float32 precision, so a pack round trip must give back
exactly the scene's vertices. COCO is written here; labelme / VIA / YOLO / masks are
dispatched to ``fastload.synth.formats.write_<fmt>(root, scenes, **kw)``. Keypoints exist
in the COCO format only.

COCO layout: ``root/annotations/instances.json`` + ``root/images/NNNNNN.jpg``; image ids
are ``1000 + 7 * i`` (not contiguous, not equal to positions), annotation ids from 1.

CLI: ``python3 -m fastload.synth.datasets OUT --format coco --n 200 [--keypoints] [--photo]``
(in a checkout also ``python3 tools/synth_dataset.py ...``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np

from fastload.synth.scenes import CLASSES, KEYPOINT_NAMES, Scene, encode_jpeg, make_scene

FORMATS = ("coco", "labelme", "via", "yolo", "masks")


def make_scenes(n_images: int, seed: int = 0, width: int = 640, height: int = 480,
                keypoints: bool = False, photo: bool = False, **kw) -> List[Scene]:
    """``n_images`` scenes from one seeded generator: :func:`make_scene`, or with ``photo``
    :func:`fastload.synth.photos.make_photo` (photo-like statistics, no keypoints)."""
    rng = np.random.default_rng(seed)
    if photo:
        if keypoints:
            raise ValueError("photo-like scenes have no keypoints")
        from fastload.synth.photos import make_photo
        kw.pop("unique_colors", None)
        return [make_photo(rng, width=width, height=height, **kw) for _ in range(n_images)]
    return [make_scene(rng, width=width, height=height, keypoints=keypoints, **kw)
            for _ in range(n_images)]


def coco_image_id(i: int) -> int:
    return 1000 + 7 * i


def write_coco(root, scenes: List[Scene], keypoints: bool = False, crowd_every: int = 0,
               compressed_rle: bool = True, quality: int = 90) -> dict:
    """Write ``scenes`` as a COCO dataset under ``root`` (layout in the module docstring).

    Each instance becomes one annotation whose ``segmentation`` lists its parts.
    With ``crowd_every`` = k > 0, every k-th image also gets one ``iscrowd`` annotation:
    an RLE (compressed string when ``compressed_rle``, else a counts list) of a
    rectangle-with-a-notch region, label 0. Returns the JSON dict written.
    """
    from fastload.formats.coco import rle_counts_to_string, rle_encode
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    cats = []
    for k, name in enumerate(CLASSES):
        c = {"id": k + 1, "name": name, "supercategory": "thing"}
        if keypoints:
            c["keypoints"] = list(KEYPOINT_NAMES)
            c["skeleton"] = [[1, 2], [1, 3], [2, 4], [3, 5]]
        cats.append(c)
    images, anns = [], []
    aid = 1
    for i, sc in enumerate(scenes):
        iid = coco_image_id(i)
        fname = f"{i:06d}.jpg"
        (root / "images" / fname).write_bytes(encode_jpeg(sc.image, quality))
        images.append({"id": iid, "file_name": fname, "height": sc.height, "width": sc.width})
        for inst in sc.instances:
            parts = [np.asarray(p, np.float32) for p in inst.polygons]
            allp = np.concatenate(parts)
            x0, y0 = allp.min(0).tolist()
            x1, y1 = allp.max(0).tolist()
            a = {"id": aid, "image_id": iid, "category_id": inst.label + 1, "iscrowd": 0,
                 "segmentation": [[float(v) for v in p.reshape(-1)] for p in parts],
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0))}
            if keypoints and inst.keypoints is not None:
                a["keypoints"] = [float(v) for v in np.asarray(inst.keypoints).reshape(-1)]
                a["num_keypoints"] = int((np.asarray(inst.keypoints)[:, 2] > 0).sum())
            anns.append(a)
            aid += 1
        if crowd_every and i % crowd_every == 0:
            m = np.zeros((sc.height, sc.width), np.uint8)
            m[10:60, 20:120] = 1
            m[30:60, 60:80] = 0  # a notch: the traced outline is not a plain rectangle
            counts = rle_encode(m)
            rle = {"size": [sc.height, sc.width],
                   "counts": rle_counts_to_string(counts) if compressed_rle else counts}
            anns.append({"id": aid, "image_id": iid, "category_id": 1, "iscrowd": 1,
                         "segmentation": rle, "bbox": [20, 10, 100, 50], "area": float(m.sum())})
            aid += 1
    data = {"info": {"description": "fastload synthetic"}, "images": images,
            "annotations": anns, "categories": cats}
    with open(root / "annotations" / "instances.json", "w") as f:
        json.dump(data, f)
    return data


def write_dataset(root, fmt: str, n_images: int = 8, seed: int = 0, width: int = 640,
                  height: int = 480, keypoints: bool = False, photo: bool = False,
                  **kw) -> List[Scene]:
    """Generate ``n_images`` scenes (photo-like ones with ``photo``: :mod:`fastload.synth.photos`)
    and write them under ``root`` in format ``fmt`` (one of :data:`FORMATS`). Extra keywords go
    to the format's writer. Returns the scenes (ground truth for round-trip tests:
    ``scenes[i]`` is the i-th image in sorted order)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if keypoints and fmt != "coco":
        raise ValueError(f"keypoints are written in the COCO format only, not {fmt!r}")
    scene_kw = {k: kw.pop(k) for k in ("n_instances", "num_classes", "multipart_prob",
                                       "unique_colors") if k in kw}
    scenes = make_scenes(n_images, seed, width, height, keypoints, photo, **scene_kw)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "coco":
        write_coco(root, scenes, keypoints=keypoints, **kw)
    else:
        from fastload.synth import formats as more
        getattr(more, f"write_{fmt}")(root, scenes, **kw)
    return scenes


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="write a synthetic dataset in a given format")
    p.add_argument("out")
    p.add_argument("--format", default="coco", choices=FORMATS)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--keypoints", action="store_true")
    p.add_argument("--photo", action="store_true",
                   help="photo-like images (natural-image statistics, camera-like JPEG sizes)")
    a = p.parse_args(argv)
    try:
        scenes = write_dataset(a.out, a.format, a.n, a.seed, a.width, a.height, a.keypoints,
                               photo=a.photo)
    except ValueError as e:
        p.error(str(e))
    print(f"wrote {len(scenes)} images ({sum(len(s.instances) for s in scenes)} instances) "
          f"as {a.format} to {a.out}")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
