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

Every entry is checked before it is used, and a malformed one is a Problem naming the JSON
and the entry (docs/bad_input.md has the table): an image that is not an object, has no
``file_name`` string, an id that is not an integer (ints, integral floats and digit strings
are ids; NaN, other strings, lists are not) or a non-positive size (``malformed_image``); an
id listed for two different images (every image of it is skipped: its annotations could
belong to either) or an image listed twice (the repeat is skipped): ``duplicate_image_id``;
a malformed category (``malformed_category``, its annotations then ``unknown_category``);
an annotation that is not an object or has an ``iscrowd`` other than 0/1
(``malformed_annotation``), ``keypoints`` that are not a list of numbers
(``bad_keypoints``); an RLE whose ``size`` is not its image's (``rle_size``) or over the
pixel cap of :mod:`fastload.limits` (``too_many_pixels``) is never decoded.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from fastload.formats._shared import as_int_id, is_number
from fastload.formats.base import Problem, SourceDataset, SourceInstance, SourceSample
from fastload.formats.files import read_regular
from fastload.formats.tracing import mask_to_polygons
from fastload.limits import ImageTooLarge, check_image_size

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
            if k > 12:  # 13 characters hold 65 bits: a longer count is damage, not data
                raise ValueError("compressed RLE string has a run of more than 64 bits")
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


def rle_size(rle) -> Tuple[int, int]:
    """``(h, w)`` of a COCO RLE; ``ValueError`` unless ``size`` is two positive integers."""
    size = rle.get("size") if isinstance(rle, dict) else None
    hw = [as_int_id(v) for v in size] if isinstance(size, list) and len(size) == 2 else None
    if hw is None or None in hw or min(hw) <= 0:
        raise ValueError(f"RLE size must be [height, width], two positive integers, "
                         f"not {size!r}")
    return hw[0], hw[1]


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE (``{"size": [h, w], "counts": list | str}``) -> uint8 (h, w) mask.
    Runs alternate 0/1 starting with 0, in column-major order. Check the size against the
    image and the pixel cap (:func:`fastload.limits.check_image_size`) before calling: this
    allocates h * w bytes."""
    h, w = rle_size(rle)
    counts = rle.get("counts")
    if isinstance(counts, (str, bytes)):
        counts = rle_string_to_counts(counts)
    elif not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                 for c in counts):
        raise ValueError("RLE counts must be a list of integers or a compressed string")
    try:
        counts = np.asarray(counts, np.int64).reshape(-1)
    except OverflowError:
        raise ValueError("RLE counts out of range") from None
    if (counts < 0).any() or (counts > h * w).any():
        raise ValueError("RLE counts must be run lengths from 0 to height * width")
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
        data = json.loads(read_regular(json_path))
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{json_path}: cannot read COCO JSON: {e}") from None
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise ValueError(f"{json_path}: not a COCO annotation file (needs 'images' and 'categories')")
    for key in ("images", "categories", "annotations"):
        if key in data and not isinstance(data[key], list):
            raise ValueError(f"{json_path}: not a COCO annotation file ('{key}' is a "
                             f"{type(data[key]).__name__}, not a list)")
    return data


def _first_file(images: list) -> Optional[str]:
    """The file_name of the image with the smallest id (entries that are not valid images
    are passed over: the reader reports them)."""
    valid = [(i, im["file_name"]) for im in images if isinstance(im, dict)
             and isinstance(im.get("file_name"), str) and (i := as_int_id(im.get("id"))) is not None]
    return min(valid)[1] if valid else None


def locate(src, images=None) -> Tuple[Path, Path]:
    """``(annotation JSON, image folder)`` of the COCO dataset at ``src`` (the JSON or a
    folder holding it), by the rules of the module docstring; ``images``: the image folder,
    when known. ``ValueError`` naming the path when no single annotation file is found or
    it is not COCO. Reads the JSON to find the first image unless ``images`` is given."""
    json_path = find_annotation_file(src)
    if images is not None:
        return json_path, Path(images)
    return json_path, find_image_dir(json_path, _first_file(_load_json(json_path)["images"]))


def read(src: Path, images=None, crowd: str = "ignore", max_pixels=None,
         **options) -> SourceDataset:
    """Read a COCO dataset (see the module docstring). ``crowd``: ``"ignore"`` or ``"skip"``.
    ``max_pixels``: the pixel cap an RLE's size is checked against before it is decoded
    (:func:`fastload.limits.check_image_size`; ``None``: the default).

    Every entry is checked before it is used; a malformed one is a :class:`Problem` naming
    the JSON and the entry (see the module docstring), never an exception."""
    if crowd not in CROWD_POLICIES:
        raise ValueError(f"crowd policy must be one of {CROWD_POLICIES}, not {crowd!r}")
    json_path = find_annotation_file(src)
    data = _load_json(json_path)  # parsed once: the locator's rules, without a second parse
    jname = json_path.name
    ds_problems: List[Problem] = []

    cats = _categories(data["categories"], jname, ds_problems)
    cat_index = {c["id"]: k for k, c in enumerate(cats)}
    classes = [c["name"] for c in cats]
    kp_names = skeleton = flip_pairs = None
    for c in cats:
        if c["keypoints"]:
            kp_names, skeleton = c["keypoints"], c["skeleton"]
            flip_pairs = flip_pairs_from_names(kp_names)
            break

    imgs, ambiguous = _images(data["images"], jname, ds_problems)
    img_dir = Path(images) if images is not None else find_image_dir(
        json_path, imgs[0]["file_name"] if imgs else None)
    by_image = defaultdict(list)
    known = {im["id"] for im in imgs}
    for k, a in enumerate(data.get("annotations") or []):
        if not isinstance(a, dict):
            ds_problems.append(Problem(jname, f"is a {type(a).__name__}, not an object",
                                       f"annotation entry {k}", reason="malformed_annotation"))
            continue
        iid = as_int_id(a.get("image_id"))
        if iid in ambiguous:
            continue  # its image was skipped, and counted, for its duplicated id
        if iid not in known:
            ds_problems.append(Problem(file=jname, annotation=f"annotation {_short(a.get('id'))}",
                                       what=f"refers to unknown image id "
                                            f"{_short(a.get('image_id'))}",
                                       reason="unknown_image"))
            continue
        by_image[iid].append(a)

    samples = []
    for im in imgs:
        fname = im["file_name"]
        s = SourceSample(file_name=fname, image_path=img_dir / fname,
                         declared_size=im["size"])
        s.image_id = im["id"]  # record id (see fastload.pack)
        for a in sorted(by_image.get(im["id"], []), key=_annotation_order):
            inst = _instance(a, cat_index, crowd, s, max_pixels)
            if inst is not None:
                s.instances.append(inst)
        samples.append(s)

    ds = SourceDataset(format="coco", classes=classes, samples=samples, keypoint_names=kp_names,
                       flip_pairs=flip_pairs, skeleton=skeleton, problems=ds_problems)
    ds.root = img_dir  # pack refuses image paths that escape it
    ds.searched = f"the images listed in {json_path}, in {img_dir}"
    return ds


def _annotation_order(a: dict) -> int:
    i = as_int_id(a.get("id"))
    return 0 if i is None else i


def _categories(entries: list, jname: str, problems: List[Problem]) -> List[dict]:
    """The valid categories sorted by id, as ``{"id", "name", "keypoints", "skeleton"}``;
    a malformed entry, or every entry of an id listed twice with different names, is a
    Problem (``malformed_category``; annotations of a dropped category are then
    ``unknown_category``)."""
    by_id = defaultdict(list)
    for k, c in enumerate(entries):
        where = f"category entry {k}"
        if not isinstance(c, dict):
            problems.append(Problem(jname, f"is a {type(c).__name__}, not an object", where,
                                    reason="malformed_category"))
            continue
        cid = as_int_id(c.get("id"))
        name = c.get("name", cid)
        if cid is None or isinstance(name, bool) or not isinstance(name, (str, int)):
            what = (f"id {c.get('id')!r} is not an integer" if cid is None
                    else f"name {name!r} is not a string")
            problems.append(Problem(jname, what, where, reason="malformed_category"))
            continue
        by_id[cid].append(dict(id=cid, name=str(name), **_keypoint_fields(c, jname, where,
                                                                            problems)))
    cats = []
    for cid, cs in sorted(by_id.items()):
        if len({c["name"] for c in cs}) > 1:
            problems.append(Problem(jname, f"category id {cid} names several classes "
                                           f"({', '.join(repr(c['name']) for c in cs)}); its "
                                           f"annotations cannot be told apart: dropped",
                                    f"category id {cid}", reason="duplicate_category_id"))
            continue
        cats.append(cs[0])
    return cats


def _keypoint_fields(c: dict, jname: str, where: str, problems: List[Problem]) -> dict:
    """``keypoints`` (names) and ``skeleton`` (0-based pairs) of a category, ``None`` when
    absent or malformed (a Problem)."""
    names, sk = c.get("keypoints"), c.get("skeleton")
    if not names:
        return {"keypoints": None, "skeleton": None}
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problems.append(Problem(jname, "keypoints must be a list of names; keypoints of this "
                                       "category ignored", where, reason="malformed_category"))
        return {"keypoints": None, "skeleton": None}
    pairs = []
    for pair in sk or []:
        ab = [as_int_id(v) for v in pair] if isinstance(pair, list) and len(pair) == 2 else None
        if ab is None or not all(v is not None and 1 <= v <= len(names) for v in ab):
            problems.append(Problem(jname, f"skeleton entry {pair!r} is not a pair of keypoint "
                                           f"numbers 1..{len(names)}; skeleton ignored", where,
                                    reason="malformed_category"))
            return {"keypoints": list(names), "skeleton": None}
        pairs.append((ab[0] - 1, ab[1] - 1))
    return {"keypoints": list(names), "skeleton": pairs}


def _images(entries: list, jname: str, problems: List[Problem]):
    """``(images, ambiguous_ids)``: the valid image entries sorted by id, as ``{"id",
    "file_name", "size"}`` (``size`` the declared (h, w) or None), and the ids listed for
    several different images (all of those are skipped: their annotations could belong to
    either). A malformed entry is a fatal Problem (``malformed_image``), a repeat of an entry
    a fatal Problem (``duplicate_image_id``) on the repeat."""
    by_id = defaultdict(list)
    for k, im in enumerate(entries):
        where = f"image entry {k}"
        if not isinstance(im, dict):
            problems.append(Problem(jname, f"is a {type(im).__name__}, not an object", where,
                                    fatal=True, reason="malformed_image"))
            continue
        fname, iid = im.get("file_name"), as_int_id(im.get("id"))
        h, w = im.get("height"), im.get("width")
        size = None if h is None or w is None else (as_int_id(h), as_int_id(w))
        what = None
        if not isinstance(fname, str) or not fname.strip():
            what = f"file_name {fname!r} is not a file name"
        elif iid is None:
            what = f"id {im.get('id')!r} is not an integer"
        elif size is not None and (None in size or min(size) <= 0):
            what = f"height/width {h!r}/{w!r} are not positive integers"
        if what is not None:
            problems.append(Problem(jname, what, where + (f" ({fname})" if isinstance(fname, str)
                                                          else ""),
                                    fatal=True, reason="malformed_image"))
            continue
        by_id[iid].append({"id": iid, "file_name": fname, "size": size, "entry": k})
    out, ambiguous = [], set()
    for iid, ims in sorted(by_id.items()):
        if len({(im["file_name"], im["size"]) for im in ims}) > 1:
            ambiguous.add(iid)
            names = ", ".join(im["file_name"] for im in ims)
            for im in ims:
                problems.append(Problem(jname, f"image id {iid} is used by {len(ims)} images "
                                               f"({names}); its annotations cannot be told "
                                               f"apart: all of them skipped",
                                        f"image entry {im['entry']} ({im['file_name']})",
                                        fatal=True, reason="duplicate_image_id"))
            continue
        for im in ims[1:]:
            problems.append(Problem(jname, f"image id {iid} is listed again for the same file; "
                                           f"the repeat is skipped",
                                    f"image entry {im['entry']} ({im['file_name']})",
                                    fatal=True, reason="duplicate_image_id"))
        out.append(ims[0])
    return out, ambiguous


def _instance(a: dict, cat_index: dict, crowd: str, sample: SourceSample, max_pixels):
    fname, problems = sample.file_name, sample.problems
    name = f"annotation {_short(a.get('id'))}"

    def bad(reason, what):
        problems.append(Problem(file=fname, annotation=name, what=what, reason=reason))

    cid = as_int_id(a.get("category_id"))
    if cid not in cat_index:
        return bad("unknown_category", f"unknown category_id {a.get('category_id')!r}")
    seg = a.get("segmentation")
    crowd_flag = a.get("iscrowd", 0)
    if crowd_flag is not None and not (is_number(crowd_flag) or isinstance(crowd_flag, bool)) \
            or crowd_flag not in (0, 1, None):
        return bad("malformed_annotation", f"iscrowd {_short(crowd_flag)} is not 0 or 1")
    is_crowd = bool(crowd_flag)
    kps = None
    raw_kps = a.get("keypoints")
    if raw_kps is not None and raw_kps != []:
        arr = _numbers(raw_kps)
        if arr is None:
            return bad("bad_keypoints", f"keypoints {_short(raw_kps)} is not a list of numbers")
        if arr.size % 3:
            return bad("bad_keypoints", f"keypoints has {arr.size} numbers, not a multiple of 3")
        kps = arr.reshape(-1, 3)
    if isinstance(seg, dict):  # RLE: crowd regions normally; a non-crowd RLE is a plain instance
        if is_crowd and crowd == "skip":
            return bad("crowd_skipped", "crowd/RLE region skipped (--crowd skip)")
        try:
            h, w = rle_size(seg)
            if sample.declared_size is not None and (h, w) != tuple(sample.declared_size):
                dh, dw = sample.declared_size
                return bad("rle_size", f"RLE size {w}x{h} differs from the image's {dw}x{dh}; "
                                       f"not decoded")
            check_image_size(h, w, "RLE segmentation", max_pixels)
            polys, _ = mask_to_polygons(rle_decode(seg), tolerance=0.0, holes="bridge")
        except ImageTooLarge as e:
            return bad("too_many_pixels", f"{e}; not decoded")
        except ValueError as e:
            return bad("bad_rle", f"cannot decode RLE segmentation: {e}")
        if not polys:
            return bad("empty_rle", "RLE segmentation is empty")
        return SourceInstance(label=cat_index[cid], polygons=polys, ignore=is_crowd,
                              crowd=is_crowd, keypoints=kps, name=name)
    if is_crowd and crowd == "skip":
        return bad("crowd_skipped", "crowd region skipped (--crowd skip)")
    if not isinstance(seg, list):
        return bad("no_polygon", "has no segmentation")
    polys = []
    for k, part in enumerate(seg):
        arr = _numbers(part)
        if arr is None or arr.size % 2:
            n = len(part) if isinstance(part, list) else "?"
            problems.append(Problem(file=fname, annotation=f"{name} part {k}", reason="bad_polygon",
                                    what=f"polygon has {n} numbers (needs x, y pairs)"))
            return None
        polys.append(arr.reshape(-1, 2))
    return SourceInstance(label=cat_index[cid], polygons=polys, ignore=is_crowd, crowd=is_crowd,
                          keypoints=kps, name=name)


def _numbers(v) -> Optional[np.ndarray]:
    """A JSON list of numbers as a float64 vector (a null becomes NaN, which pack counts);
    None for anything else."""
    if not isinstance(v, list):
        return None
    try:
        arr = np.asarray(v, np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    return arr if arr.ndim == 1 else None


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."
