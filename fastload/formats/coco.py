"""COCO instances / person-keypoints JSON plus an image folder.

Locating the files (:func:`locate`, the one COCO locator): ``src`` is either the annotation
JSON file, or a folder holding exactly one ``*.json`` (directly or in ``annotations/``;
``manifest.json`` of a packed dataset is not one). The image folder is ``images=DIR`` when
given (``fastload pack --images DIR``), otherwise the first of these that contains the
first image's (smallest id) ``file_name``: the JSON's folder, its parent, ``images/`` beside
either, and ``<parent>/<split>`` for a JSON named ``*_<split>.json``
(``annotations/instances_val2017.json`` -> ``val2017/``); when none does, the JSON's folder
(every image is then reported missing, naming it). ``file_name`` is resolved inside that
folder; a name escaping it is refused by ``pack``.

Mapping:
- categories sorted by id -> contiguous class indices 0..C-1 (``classes`` = names);
- images sorted by id; the record id is the COCO image id;
- ``segmentation`` polygon lists -> one instance with one part per list (multi-part);
  coordinates are used as written (COCO polygons are continuous pixel coordinates);
- RLE segmentations (counts list or compressed string) are decoded and traced to polygons
  by the one mask tracer (:mod:`fastload.formats.tracing`, the mask-PNG reader's) with
  ``tolerance=0``: the exact outlines, vertices on pixel edges, holes bridged into their
  part (so they stay holes); a non-crowd RLE is a plain instance.
- ``iscrowd`` regions: ``crowd="ignore"`` (default) keeps them, traced as above and flagged
  ignore + crowd; ``crowd="skip"`` drops them (counted as ``crowd_skipped``);
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
from fastload.formats.tracing import mask_to_polygons

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


def find_annotation_file(src) -> Path:
    """The COCO annotation JSON of ``src`` (the file itself, or the one ``*.json`` in the
    folder or its ``annotations/``); ``ValueError`` naming the folder when there is none or
    several."""
    src = Path(src)
    if src.is_file():
        return src
    if not src.is_dir():
        raise ValueError(f"{src}: no such COCO annotation file or folder")

    def jsons(d):
        return sorted(p for p in d.glob("*.json") if p.name != "manifest.json")

    cands = jsons(src) or jsons(src / "annotations")
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise ValueError(f"{src}: no COCO annotation JSON found (looked for *.json and "
                         f"annotations/*.json); pass the JSON file itself")
    raise ValueError(f"{src}: several annotation files ({', '.join(c.name for c in cands)}); "
                     f"pass the one to pack as SRC")


def find_image_dir(json_path: Path, first_file: Optional[str]) -> Path:
    """The folder holding ``first_file`` among the candidates beside ``json_path`` (see
    the module docstring); the JSON's folder when none holds it."""
    d, p = json_path.parent, json_path.parent.parent
    cands = [d, p, d / "images", p / "images"]
    if "_" in json_path.stem:
        cands.append(p / json_path.stem.rsplit("_", 1)[1])
    if first_file is not None:
        for c in cands:
            if (c / first_file).is_file():
                return c
    return d


def _load_json(json_path: Path) -> dict:
    try:
        with open(json_path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{json_path}: cannot read COCO JSON: {e}") from None
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise ValueError(f"{json_path}: not a COCO annotation file (needs 'images' and 'categories')")
    return data


def _first_file(images: list) -> Optional[str]:
    return str(min(images, key=lambda im: im["id"])["file_name"]) if images else None


def locate(src, images=None) -> Tuple[Path, Path]:
    """``(annotation JSON, image folder)`` of the COCO dataset at ``src`` (the JSON or a
    folder holding it), by the rules of the module docstring; ``images``: the image folder,
    when known. ``ValueError`` naming the path when no single annotation file is found or
    it is not COCO. Reads the JSON to find the first image unless ``images`` is given."""
    json_path = find_annotation_file(src)
    if images is not None:
        return json_path, Path(images)
    return json_path, find_image_dir(json_path, _first_file(_load_json(json_path)["images"]))


def read(src: Path, images=None, crowd: str = "ignore", **options) -> SourceDataset:
    """Read a COCO dataset (see the module docstring). ``crowd``: ``"ignore"`` or ``"skip"``."""
    if crowd not in CROWD_POLICIES:
        raise ValueError(f"crowd policy must be one of {CROWD_POLICIES}, not {crowd!r}")
    json_path = find_annotation_file(src)
    data = _load_json(json_path)  # parsed once: the locator's rules, without a second parse

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
    img_dir = Path(images) if images is not None else find_image_dir(json_path, _first_file(imgs))
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
            polys, _ = mask_to_polygons(rle_decode(seg), tolerance=0.0, holes="bridge")
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
