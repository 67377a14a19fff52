"""COCO instances / person-keypoints JSON plus an image folder.

``src`` is either the annotation JSON file, or a folder holding exactly one ``*.json``
(directly or in ``annotations/``). The image folder is ``images=DIR`` when given
(``fastload pack --images DIR``), otherwise the first of these that contains the first
image's ``file_name``: the JSON's folder, its parent, ``images/`` beside either, and
``<parent>/<split>`` for a JSON named ``*_<split>.json`` (``annotations/instances_val2017.json``
-> ``val2017/``). ``file_name`` is resolved inside that folder; a name escaping it is
refused by ``pack``.

Mapping:
- categories sorted by id -> contiguous class indices 0..C-1 (``classes`` = names);
- images sorted by id; the record id is the COCO image id;
- ``segmentation`` polygon lists -> one instance with one part per list (multi-part);
  coordinates are used as written (COCO polygons are continuous pixel coordinates);
- RLE segmentations (counts list or compressed string) are decoded and traced to polygons;
  a non-crowd RLE is a plain instance.
- ``iscrowd`` regions: ``crowd="ignore"`` (default) decodes the RLE (counts
  list or compressed string) and traces it to polygons (``skimage.measure.find_contours``
  on the pixel grid: vertices lie on pixel edges, holes are not kept, so the ignore
  region covers its holes too), flagged ignore + crowd; ``crowd="skip"`` drops them
  (counted as ``crowd_skipped``);
- ``keypoints`` -> float32 (K, 3) as written (x, y, visibility 0/1/2); keypoint names
  and skeleton (made 0-based) from the first category that has them; flip pairs derived
  from ``left``/``right`` in the names;
- ``bbox``/``area`` of the JSON are not used: the record's bbox is recomputed from the
  polygons after validation.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from fastload.formats.base import Problem, SourceDataset, SourceInstance, SourceSample

CROWD_POLICIES = ("ignore", "skip")


# -------------------------------------------------------------------------- RLE helpers
def rle_string_to_counts(s: str) -> np.ndarray:
    """Decode COCO's compressed RLE string (``maskApi.c`` ``rleFrString``) to run lengths."""
    data = s.encode("ascii") if isinstance(s, str) else bytes(s)
    counts: List[int] = []
    p = 0
    n = len(data)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            if p >= n:
                raise ValueError("truncated compressed RLE string")
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return np.asarray(counts, np.int64)


def rle_counts_to_string(counts) -> str:
    """Encode run lengths as COCO's compressed RLE string (``rleToString``); the inverse of
    :func:`rle_string_to_counts` (used by the synthetic-data writer and tests)."""
    counts = [int(c) for c in counts]
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = not ((ch & 0x10) == 0 and x == 0 or (ch & 0x10) != 0 and x == -1)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE (``{"size": [h, w], "counts": list | str}``) -> uint8 (h, w) mask.
    Runs alternate 0/1 starting with 0, in column-major order."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = rle_string_to_counts(counts)
    counts = np.asarray(counts, np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("RLE counts must be non-negative run lengths")
    if int(counts.sum()) != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h}*{w}={h * w}")
    vals = (np.arange(counts.shape[0]) % 2).astype(np.uint8)
    flat = np.repeat(vals, counts)
    return flat.reshape(w, h).T.copy()


def rle_encode(mask: np.ndarray) -> List[int]:
    """uint8/bool (h, w) mask -> uncompressed COCO RLE counts (column-major, starting with 0)."""
    flat = np.asarray(mask, np.uint8).T.reshape(-1)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return [int(r) for r in runs]


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0, min_area: float = 1.0):
    """Trace a binary mask to polygons (float32 (N, 2), x, y continuous pixel coords).

    ``skimage.measure.find_contours`` at level 0.5 on the zero-padded mask gives closed
    outlines halfway between pixel centers, i.e. on pixel edges: a contour point at array
    position (r, c) is the continuous point (c + 0.5, r + 0.5). Outlines are simplified
    by dropping collinear vertices (exact: the polygons rasterize back to the mask under
    the pixel-center rule) and, with ``tolerance`` > 0, ``approximate_polygon`` (lossy);
    hole outlines (opposite orientation) and parts under ``min_area`` are dropped.
    """
    from skimage.measure import approximate_polygon, find_contours
    m = np.pad(np.asarray(mask, np.uint8), 1)
    out = []
    for c in find_contours(m, 0.5):
        if tolerance > 0:
            c = approximate_polygon(c, tolerance)
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        if len(c) >= 3:  # drop vertices in the middle of straight runs
            d1 = c - np.roll(c, 1, 0)
            d2 = np.roll(c, -1, 0) - c
            cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
            c = c[(np.abs(cross) > 1e-9) | ((d1 * d2).sum(1) <= 0)]
        if len(c) < 3:
            continue
        xy = np.stack([c[:, 1] - 1 + 0.5, c[:, 0] - 1 + 0.5], 1)
        x, y = xy[:, 0], xy[:, 1]
        signed = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
        # find_contours walks outer boundaries of high regions counter-clockwise in (row, col),
        # which is positive signed area in (x, y) with y down ... keep the larger orientation
        out.append((signed, xy.astype(np.float32)))
    if not out:
        return []
    # outer boundaries share the orientation of the largest outline; holes have the other
    main_sign = np.sign(max(out, key=lambda t: abs(t[0]))[0])
    return [p for a, p in out if np.sign(a) == main_sign and abs(a) >= min_area]


# ------------------------------------------------------------------------------ reader
def flip_pairs_from_names(names: List[str]) -> List[Tuple[int, int]]:
    """(left, right) index pairs from names containing ``left`` / ``right`` (any case)."""
    low = [n.lower() for n in names]
    pairs = []
    for i, n in enumerate(low):
        if "left" in n:
            partner = n.replace("left", "right")
            if partner in low:
                pairs.append((i, low.index(partner)))
    return pairs


def _find_json(src: Path) -> Path:
    if src.is_file():
        return src
    if not src.is_dir():
        raise ValueError(f"{src}: no such COCO annotation file or folder")
    cands = sorted(src.glob("*.json")) or sorted((src / "annotations").glob("*.json"))
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise ValueError(f"{src}: no COCO annotation JSON found (looked for *.json and "
                         f"annotations/*.json); pass the JSON file itself")
    raise ValueError(f"{src}: several annotation files ({', '.join(c.name for c in cands)}); "
                     f"pass the one to pack as SRC")


def _find_images(json_path: Path, first_file: Optional[str]) -> Path:
    d, p = json_path.parent, json_path.parent.parent
    cands = [d, p, d / "images", p / "images"]
    if "_" in json_path.stem:
        cands.append(p / json_path.stem.rsplit("_", 1)[1])
    if first_file is None:
        return d
    for c in cands:
        if (c / first_file).is_file():
            return c
    return d  # every image will be reported missing, naming this folder


def read(src: Path, images=None, crowd: str = "ignore", **options) -> SourceDataset:
    """Read a COCO dataset (see the module docstring). ``crowd``: ``"ignore"`` or ``"skip"``."""
    if crowd not in CROWD_POLICIES:
        raise ValueError(f"crowd policy must be one of {CROWD_POLICIES}, not {crowd!r}")
    json_path = _find_json(Path(src))
    try:
        with open(json_path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{json_path}: cannot read COCO JSON: {e}") from None
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise ValueError(f"{json_path}: not a COCO annotation file (needs 'images' and 'categories')")

    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: k for k, c in enumerate(cats)}
    classes = [str(c.get("name", c["id"])) for c in cats]
    kp_names = skeleton = flip_pairs = None
    for c in cats:
        if c.get("keypoints"):
            kp_names = [str(n) for n in c["keypoints"]]
            skeleton = [(int(a) - 1, int(b) - 1) for a, b in c.get("skeleton") or []]
            flip_pairs = flip_pairs_from_names(kp_names)
            break

    imgs = sorted(data["images"], key=lambda im: im["id"])
    img_dir = Path(images) if images is not None else _find_images(
        json_path, imgs[0]["file_name"] if imgs else None)
    by_image = defaultdict(list)
    ds_problems: List[Problem] = []
    known = {im["id"] for im in imgs}
    for a in data.get("annotations", []):
        if a.get("image_id") not in known:
            ds_problems.append(Problem(file=json_path.name, annotation=f"annotation {a.get('id')}",
                                       what=f"refers to unknown image id {a.get('image_id')}",
                                       reason="unknown_image"))
            continue
        by_image[a["image_id"]].append(a)

    samples = []
    for im in imgs:
        fname = str(im["file_name"])
        s = SourceSample(file_name=fname, image_path=img_dir / fname,
                         declared_size=(int(im["height"]), int(im["width"]))
                         if "height" in im and "width" in im else None)
        s.image_id = int(im["id"])  # record id (see fastload.pack)
        for a in sorted(by_image.get(im["id"], []), key=lambda a: a.get("id", 0)):
            inst = _instance(a, cat_index, crowd, fname, s.problems)
            if inst is not None:
                s.instances.append(inst)
        samples.append(s)

    ds = SourceDataset(format="coco", classes=classes, samples=samples, keypoint_names=kp_names,
                       flip_pairs=flip_pairs, skeleton=skeleton, problems=ds_problems)
    ds.root = img_dir  # pack refuses image paths that escape it
    return ds


def _instance(a: dict, cat_index: dict, crowd: str, fname: str, problems: list):
    name = f"annotation {a.get('id')}"
    cid = a.get("category_id")
    if cid not in cat_index:
        problems.append(Problem(file=fname, annotation=name, what=f"unknown category_id {cid!r}",
                                reason="unknown_category"))
        return None
    seg = a.get("segmentation")
    is_crowd = bool(a.get("iscrowd", 0))
    kps = None
    if a.get("keypoints") is not None and len(a["keypoints"]) > 0:
        try:
            kps = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)
        except ValueError:
            problems.append(Problem(file=fname, annotation=name, reason="bad_keypoints",
                                    what=f"keypoints has {len(a['keypoints'])} numbers, "
                                         f"not a multiple of 3"))
            return None
    if isinstance(seg, dict):  # RLE: crowd regions normally; a non-crowd RLE is a plain instance
        if is_crowd and crowd == "skip":
            problems.append(Problem(file=fname, annotation=name, reason="crowd_skipped",
                                    what="crowd/RLE region skipped (--crowd skip)"))
            return None
        try:
            polys = mask_to_polygons(rle_decode(seg))
        except (ValueError, KeyError, TypeError) as e:
            problems.append(Problem(file=fname, annotation=name, reason="bad_rle",
                                    what=f"cannot decode RLE segmentation: {e}"))
            return None
        if not polys:
            problems.append(Problem(file=fname, annotation=name, reason="empty_rle",
                                    what="RLE segmentation is empty"))
            return None
        return SourceInstance(label=cat_index[cid], polygons=polys, ignore=is_crowd,
                              crowd=is_crowd, keypoints=kps, name=name)
    if is_crowd and crowd == "skip":
        problems.append(Problem(file=fname, annotation=name, reason="crowd_skipped",
                                what="crowd region skipped (--crowd skip)"))
        return None
    if not isinstance(seg, list):
        problems.append(Problem(file=fname, annotation=name, reason="no_polygon",
                                what="has no segmentation"))
        return None
    polys = []
    for k, part in enumerate(seg):
        try:
            arr = np.asarray(part, np.float64)
        except (ValueError, TypeError):
            arr = None
        if arr is None or arr.ndim != 1 or arr.size % 2:
            n = len(part) if isinstance(part, list) else "?"
            problems.append(Problem(file=fname, annotation=f"{name} part {k}", reason="bad_polygon",
                                    what=f"polygon has {n} numbers (needs x, y pairs)"))
            return None
        polys.append(arr.reshape(-1, 2))
    return SourceInstance(label=cat_index[cid], polygons=polys, ignore=is_crowd, crowd=is_crowd,
                          keypoints=kps, name=name)
