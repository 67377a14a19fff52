"""A generated fuzz corpus of malformed annotation files, one list per input format.

``mutations(fmt, seed, n)`` draws ``n`` :class:`Mutation` s with a seeded generator: each
picks a field (or a whole entry, or a file) of a valid synthetic dataset written by
``fastload.synth.datasets.write_dataset(root, fmt, n_images=3, width=64, height=48,
seed=0)`` and breaks it in a way pack must notice: a wrong type, a missing key, NaN or
infinity, a huge or negative value, a truncated or special file. Nothing is committed: the
corpus is this code and a seed.

Every mutation must make ``fastload pack`` either count at least one problem (skip and
count) or, for damage to the file as a whole, raise ``PackError`` naming it; never any other
exception. ``Mutation.mentions``: strings one of which the problem (or error) names.
"""
from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np

FORMATS = ("coco", "labelme", "via", "yolo", "masks")
N_IMAGES, WIDTH, HEIGHT = 3, 64, 48

# values that are the wrong type for every field they are put in
WRONG_TYPES = {"a string": "abc", "a list": [1, [2]], "an object": {"x": 1}, "null": None,
               "true": True}
BAD_NUMBERS = {"NaN": math.nan, "inf": math.inf, "-inf": -math.inf, "huge": 1e308,
               "2**70": 2 ** 70, "-2**70": -(2 ** 70), "1.5": 1.5}
MISSING = object()  # the key is deleted


@dataclass
class Mutation:
    name: str
    apply: Callable[[Path], None]
    mentions: Tuple[str, ...]


def write_valid(root: Path, fmt: str) -> None:
    from fastload.synth.datasets import write_dataset
    write_dataset(root, fmt, n_images=N_IMAGES, width=WIDTH, height=HEIGHT, seed=0)


# ----------------------------------------------------------------------- JSON helpers
def _edit_json(path_of: Callable[[Path], Path], edit: Callable[[object], None]):
    def apply(root: Path):
        p = path_of(root)
        doc = json.loads(p.read_text())
        edit(doc)
        p.write_text(json.dumps(doc))  # NaN / Infinity written as JSON's non-standard tokens
    return apply


def _set(container, key, value):
    if value is MISSING:
        container.pop(key, None)
    else:
        container[key] = value


def _pick(rng, table: dict):
    name = list(table)[int(rng.integers(len(table)))]
    return name, table[name]


def _values(*tables) -> dict:
    out = {}
    for t in tables:
        out.update(t)
    return out


# ------------------------------------------------------------------------------ COCO
def _coco(rng) -> Mutation:
    ann = lambda r: r / "annotations" / "instances.json"  # noqa: E731
    k = int(rng.integers(N_IMAGES))
    targets = {
        "image entry": ("images", None, _values(WRONG_TYPES, {"a number": 7})),
        "image id": ("images", "id", _values(WRONG_TYPES, BAD_NUMBERS, {"missing": MISSING})),
        "image file_name": ("images", "file_name",
                            _values({k: v for k, v in WRONG_TYPES.items() if k != "a string"},
                                    {"missing": MISSING, "empty": "", "a number": 5})),
        "image height": ("images", "height",
                         _values({k: v for k, v in WRONG_TYPES.items() if k != "null"},
                                 BAD_NUMBERS, {"zero": 0, "negative": -48, "10**9": 10 ** 9})),
        "category entry": ("categories", None, _values(WRONG_TYPES, {"a number": 7})),
        "category id": ("categories", "id", _values(WRONG_TYPES, BAD_NUMBERS,
                                                    {"missing": MISSING})),
        "category name": ("categories", "name", {"a list": [1], "an object": {"x": 1},
                                                 "true": True}),
        "annotation entry": ("annotations", None, _values(WRONG_TYPES, {"a number": 7})),
        "annotation image_id": ("annotations", "image_id",
                                _values(WRONG_TYPES, BAD_NUMBERS, {"missing": MISSING})),
        "annotation category_id": ("annotations", "category_id",
                                   _values(WRONG_TYPES, BAD_NUMBERS, {"missing": MISSING})),
        "annotation segmentation": ("annotations", "segmentation", _values(
            WRONG_TYPES, {"missing": MISSING, "a number": 5, "empty": [], "flat": [1, 2, 3],
                          "odd": [[1, 2, 3, 4, 5]], "NaN vertex": [[10, 10, math.nan, 12, 30, 40]],
                          "huge vertex": [[10, 10, 1e308, 12, 30, 40]],
                          "empty RLE": {}, "huge RLE": {"size": [2 ** 40, 5], "counts": [1]},
                          "RLE of another size": {"size": [4000, 4000], "counts": [16000000]},
                          "RLE NaN counts": {"size": [HEIGHT, WIDTH], "counts": [math.nan]},
                          "RLE endless string": {"size": [HEIGHT, WIDTH], "counts": "o" * 5000}})),
        "annotation iscrowd": ("annotations", "iscrowd",
                               {"a string": "x", "2": 2, "a list": [1], "NaN": math.nan}),
        "annotation keypoints": ("annotations", "keypoints", {
            "a number": 5, "a string": "abc", "an object": {"x": 1}, "two numbers": [1, 2],
            "NaN": [math.nan] * 3, "nested": [[1, 2, 3]]}),
    }
    tname, (section, key, table) = _pick(rng, targets)
    vname, value = _pick(rng, table)
    pick = int(rng.integers(1 << 30))  # every draw here, none when applied

    def edit(doc):
        entries = doc[section]
        j = pick % len(entries) if section != "images" else k
        if key is None:
            entries[j] = value
        else:
            _set(entries[j], key, value)
    return Mutation(f"coco {tname} = {vname}", _edit_json(ann, edit),
                    ("instances.json", ".jpg"))


# --------------------------------------------------------------------------- labelme
def _labelme(rng) -> Mutation:
    k = int(rng.integers(N_IMAGES))
    jname = f"img_{k:05d}.json"
    targets = {
        "shape entry": ("shape", None, _values(WRONG_TYPES, {"a number": 7})),
        "shape label": ("shape", "label", {"missing": MISSING, "null": None, "empty": "",
                                           "a list": [1], "an object": {"x": 1}}),
        "shape points": ("shape", "points", _values(WRONG_TYPES, {
            "missing": MISSING, "a number": 5, "one number per point": [1, 2, 3],
            "two points": [[1, 1], [1, 1]], "NaN vertex": [[1, 1], [math.nan, 5], [9, 9]],
            "huge vertex": [[1, 1], [1e308, 5], [9, 2]]})),
        "shape group_id": ("shape", "group_id", {"a list": [1], "an object": {"x": 1},
                                                 "1.5": 1.5, "true": True}),
        "shape shape_type": ("shape", "shape_type", {"circle": "circle", "a list": [1],
                                                     "a number": 5}),
        "imagePath": ("file", "imagePath", {"missing": MISSING, "a number": 5,
                                            "escaping": "../../../etc/hostname",
                                            "absent file": "nope.jpg"}),
        "imageHeight": ("file", "imageHeight", {"10**9": 10 ** 9, "1": 1}),
        "shapes": ("file", "shapes", {"a number": 5, "a string": "abc", "an object": {}}),
    }
    tname, (where, key, table) = _pick(rng, targets)
    vname, value = _pick(rng, table)
    pick = int(rng.integers(1 << 30))

    def edit(doc):
        if where == "file":
            _set(doc, key, value)
            return
        j = pick % len(doc["shapes"])
        if key is None:
            doc["shapes"][j] = value
        else:
            _set(doc["shapes"][j], key, value)
    return Mutation(f"labelme {tname} = {vname}", _edit_json(lambda r: r / jname, edit),
                    (jname, f"img_{k:05d}", "nope.jpg"))


# ------------------------------------------------------------------------------- VIA
def _via(rng) -> Mutation:
    jpath = lambda r: r / "via_region_data.json"  # noqa: E731
    k = int(rng.integers(N_IMAGES))
    targets = {
        "entry": ("entry", None, _values(WRONG_TYPES, {"a number": 7})),
        "entry filename": ("entry", "filename", {"missing": MISSING, "a number": 5,
                                                 "empty": "", "a list": [1]}),
        "entry regions": ("entry", "regions", {"a number": 5, "a string": "abc"}),
        "region": ("region", None, _values(WRONG_TYPES, {"a number": 7})),
        "shape_attributes": ("region", "shape_attributes", {"missing": MISSING, "a string": "x",
                                                            "a list": [1]}),
        "all_points_x": ("shape", "all_points_x", _values(WRONG_TYPES, {
            "missing": MISSING, "one point": [1], "NaN": [1, math.nan, 9],
            "huge": [1, 1e308, 9]})),
        "shape name": ("shape", "name", {"circle": "circle", "a number": 5, "missing": MISSING}),
        "class attribute": ("attrs", "name", {"a list": [1], "two options": {"a": True, "b": True}}),
    }
    tname, (where, key, table) = _pick(rng, targets)
    vname, value = _pick(rng, table)
    pick = int(rng.integers(1 << 30))

    def edit(doc):
        meta = doc["_via_img_metadata"]
        ekey = list(meta)[k]
        if where == "entry":
            if key is None:
                meta[ekey] = value
            else:
                _set(meta[ekey], key, value)
            return
        regions = meta[ekey]["regions"]
        j = pick % len(regions)
        if where == "region":
            if key is None:
                regions[j] = value
            else:
                _set(regions[j], key, value)
        elif where == "shape":
            sa = regions[j]["shape_attributes"]
            if key == "all_points_x":  # a polygon of 3 points, then its x list broken
                sa.update(name="polygon", all_points_y=[1, 5, 9])
            _set(sa, key, value)
        else:
            _set(regions[j]["region_attributes"], key, value)
    return Mutation(f"via {tname} = {vname}", _edit_json(jpath, edit),
                    ("via_region_data.json", f"{k:05d}.jpg"))


# ------------------------------------------------------------------------------ YOLO
YOLO_TOKENS = {"class nan": (0, "nan"), "class inf": (0, "inf"), "class -1": (0, "-1"),
               "class 1.5": (0, "1.5"), "class 1e30": (0, "1e30"), "class abc": (0, "abc"),
               "x nan": (1, "nan"), "y inf": (2, "inf"), "x 1e999": (1, "1e999"),
               "x -5": (1, "-5"), "y 1e30": (2, "1e30"), "x abc": (1, "abc"),
               "x removed": (1, None)}


def _yolo(rng) -> Mutation:
    k = int(rng.integers(N_IMAGES))
    lrel = f"labels/train/{k:05d}.txt"
    if rng.random() < 0.15:  # the data.yaml
        name, text = _pick(rng, {"names a number": "names: 5\n",
                                 "nc negative": "names: [a]\nnc: -1\n",
                                 "nc huge": "names: [a]\nnc: 1000000000000\n",
                                 "names huge id": "names: {1000000000000: a}\n",
                                 "path escapes": "path: ../..\nnames: [a]\n"})
        return Mutation(f"yolo data.yaml {name}",
                        lambda r: (r / "data.yaml").write_text(text), ("data.yaml", "labels/train"))
    tname, (col, token) = _pick(rng, YOLO_TOKENS)
    pick = int(rng.integers(1 << 30))

    def apply(root: Path):
        p = root / lrel
        lines = p.read_text().splitlines()
        j = pick % len(lines)
        tok = lines[j].split()
        if token is None:
            del tok[col]
        else:
            tok[col] = token
        lines[j] = " ".join(tok)
        p.write_text("\n".join(lines) + "\n")
    return Mutation(f"yolo {tname}", apply, (lrel,))


# ----------------------------------------------------------------------------- masks
def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its data is one small row)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 9))
            + chunk(b"IEND", b""))


def _masks(rng) -> Mutation:
    k = int(rng.integers(N_IMAGES))
    mname = f"FudanPed{k:05d}_mask.png"
    mpath = lambda r: r / "PedMasks" / mname  # noqa: E731

    def truncate(r):
        p = mpath(r)
        p.write_bytes(p.read_bytes()[:40])

    def resize(r):
        from PIL import Image
        Image.fromarray(np.ones((HEIGHT + 3, WIDTH), np.uint8)).save(mpath(r))

    def fifo(r):
        mpath(r).unlink()
        os.mkfifo(mpath(r))

    def directory(r):
        mpath(r).unlink()
        mpath(r).mkdir()

    table = {"truncated": truncate, "garbage": lambda r: mpath(r).write_bytes(os.urandom(500)),
             "other size": resize, "bomb header": lambda r: mpath(r).write_bytes(
                 _png_claiming(20000, 20000)),
             "a FIFO": fifo, "a directory": directory,
             "image garbage": lambda r: (r / "PNGImages" / f"FudanPed{k:05d}.png").write_bytes(
                 os.urandom(300))}
    name, apply = _pick(rng, table)
    return Mutation(f"masks {name}", apply, (mname, f"FudanPed{k:05d}"))


_MAKERS = {"coco": _coco, "labelme": _labelme, "via": _via, "yolo": _yolo, "masks": _masks}


def mutations(fmt: str, seed: int, n: int) -> List[Mutation]:
    """``n`` mutations of a valid ``fmt`` dataset, drawn with ``numpy.random.default_rng(
    seed)`` (the same list every run)."""
    rng = np.random.default_rng(seed)
    return [_MAKERS[fmt](rng) for _ in range(n)]
