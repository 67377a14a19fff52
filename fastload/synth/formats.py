"""Write synthetic scenes (``fastload.synth.scenes.make_scene``) as labelme, VIA, YOLO-seg and
Penn-Fudan mask-PNG datasets: real files, laid out the way each tool writes them.

Every writer returns a :class:`Written`: the root, the class list a reader should find,
and per image the expected reading (file name relative to the root, the exact source
image bytes, and the instances with class *names*, polygon parts in continuous pixel
coordinates, ignore flags). Tests compare a reader's output against it.

Coordinates are written from the float32 scene vertices as exact decimal floats (JSON),
or normalized with ``decimals`` digits (YOLO), so a reader gets them back exactly
(YOLO: within 0.5 * 10**-decimals * size).
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from fastload.synth.scenes import CLASSES, Scene, encode_jpeg, encode_png


@dataclass
class ExpectedInstance:
    label: Optional[str]  # class name; None for an ignore region without a class
    polygons: List[np.ndarray]  # float64 (N, 2), what the reader should return
    ignore: bool = False


@dataclass
class ExpectedImage:
    file_name: str
    image_bytes: bytes
    width: int
    height: int
    instances: List[ExpectedInstance] = field(default_factory=list)
    mask: Optional[np.ndarray] = None  # masks layout: the instance-id mask written
    n_problems: int = 0  # parse problems a reader should report for this image


@dataclass
class Written:
    root: Path
    classes: List[str]
    images: List[ExpectedImage]
    extra: Dict = field(default_factory=dict)

    def by_name(self) -> Dict[str, ExpectedImage]:
        return {e.file_name: e for e in self.images}


def _f(a) -> List[float]:
    return [float(v) for v in np.asarray(a, np.float32).ravel()]


def _bbox_rect(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, np.float64)
    (x1, y1), (x2, y2) = p.min(0), p.max(0)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)


# --------------------------------------------------------------------------- labelme
def write_labelme(root, scenes: Sequence[Scene], classes: Sequence[str] = CLASSES, *,
                  embed_image_data: bool = False, image_files: bool = True,
                  group_multipart: bool = True, rect_every: int = 0, ignore_every: int = 0,
                  extra_shapes: bool = False, nested: bool = False,
                  quality: int = 90) -> Written:
    """labelme layout: ``root/[sub/]img_XXXXX.jpg`` + ``img_XXXXX.json`` beside it.

    ``embed_image_data``: put the JPEG (the same bytes as the file) in ``imageData``;
    ``image_files=False`` writes no image file (imageData only, needs embed_image_data).
    ``group_multipart``: multi-part instances share a ``group_id`` (else one instance per part).
    ``rect_every=n``: every n-th single-part instance is written as a ``rectangle`` (its bbox).
    ``ignore_every=n``: every n-th instance is labelled ``__ignore__``.
    ``extra_shapes``: add a ``circle`` and a ``point`` shape per image (unsupported: 2 problems).
    ``nested``: odd images go into ``root/sub/`` (recursive search).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out: List[ExpectedImage] = []
    gid = 0
    k_all = 0
    for i, sc in enumerate(scenes):
        folder = root / "sub" if nested and i % 2 else root
        folder.mkdir(parents=True, exist_ok=True)
        name = f"img_{i:05d}.jpg"
        data = encode_jpeg(sc.image, quality)
        if image_files:
            (folder / name).write_bytes(data)
        rel = (folder / name).relative_to(root).as_posix()
        shapes, exp = [], []
        for inst in sc.instances:
            k_all += 1
            ignore = bool(ignore_every) and k_all % ignore_every == 0
            label = "__ignore__" if ignore else classes[inst.label]
            exp_label = None if ignore else label
            if len(inst.polygons) == 1 and rect_every and k_all % rect_every == 0:
                r = _bbox_rect(inst.polygons[0]).astype(np.float32)
                shapes.append({"label": label, "points": [_f(r[0]), _f(r[2])], "group_id": None,
                               "description": "", "shape_type": "rectangle", "flags": {}, "mask": None})
                exp.append(ExpectedInstance(exp_label, [r.astype(np.float64)], ignore))
                continue
            if len(inst.polygons) > 1 and group_multipart:
                gid += 1
                g = gid
            else:
                g = None
            for p in inst.polygons:
                shapes.append({"label": label, "points": [_f(v) for v in p], "group_id": g,
                               "description": "", "shape_type": "polygon", "flags": {}, "mask": None})
                if g is None:
                    exp.append(ExpectedInstance(exp_label, [p.astype(np.float64)], ignore))
            if g is not None:
                exp.append(ExpectedInstance(exp_label, [p.astype(np.float64) for p in inst.polygons], ignore))
        n_prob = 0
        if extra_shapes:
            shapes.append({"label": classes[0], "points": [[10.0, 10.0], [20.0, 10.0]], "group_id": None,
                           "shape_type": "circle", "flags": {}})
            shapes.append({"label": classes[0], "points": [[5.0, 5.0]], "group_id": None,
                           "shape_type": "point", "flags": {}})
            n_prob = 2
        doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": name,
               "imageData": base64.b64encode(data).decode("ascii") if embed_image_data else None,
               "imageHeight": sc.height, "imageWidth": sc.width}
        (folder / name).with_suffix(".json").write_text(json.dumps(doc, indent=2))
        out.append(ExpectedImage(rel, data, sc.width, sc.height, exp, n_problems=n_prob))
    used = sorted({e.label for im in out for e in im.instances if e.label is not None})
    return Written(root, used, out)


# --------------------------------------------------------------------------- VIA
def write_via(root, scenes: Sequence[Scene], version: int = 2, classes: Sequence[str] = CLASSES, *,
              class_attribute: Optional[str] = "name", rect_every: int = 0, extra_shapes: bool = False,
              json_name: str = "via_region_data.json", quality: int = 90) -> Written:
    """VIA layout: images and one JSON in ``root``, balloon-style.

    ``version=1``: a VIA 1.x export (entries keyed ``filename + size``, ``regions`` a dict
    keyed "0", "1", ...). ``version=2``: a VIA 2.x project (``_via_img_metadata``,
    ``regions`` a list, ``_via_attributes``). ``class_attribute=None`` writes no region
    attributes (balloon: every region is class "object"). VIA has no grouping: each part
    is its own region and instance. ``rect_every=n``: every n-th region is a ``rect``.
    ``extra_shapes``: one ``circle`` region per image (unsupported: 1 problem).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out: List[ExpectedImage] = []
    entries = {}
    k_all = 0
    for i, sc in enumerate(scenes):
        name = f"{i:05d}.jpg"
        data = encode_jpeg(sc.image, quality)
        (root / name).write_bytes(data)
        regions, exp = [], []
        for inst in sc.instances:
            label = classes[inst.label] if class_attribute else "object"
            ra = {class_attribute: classes[inst.label]} if class_attribute else {}
            for p in inst.polygons:
                k_all += 1
                if rect_every and k_all % rect_every == 0:
                    r = _bbox_rect(p).astype(np.float32)
                    x, y = float(r[0, 0]), float(r[0, 1])
                    w, h = float(r[2, 0]) - x, float(r[2, 1]) - y
                    sa = {"name": "rect", "x": x, "y": y, "width": w, "height": h}
                    pe = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)
                else:
                    sa = {"name": "polygon", "all_points_x": _f(p[:, 0]), "all_points_y": _f(p[:, 1])}
                    pe = p.astype(np.float64)
                regions.append({"shape_attributes": sa, "region_attributes": dict(ra)})
                exp.append(ExpectedInstance(label, [pe]))
        n_prob = 0
        if extra_shapes:
            regions.append({"shape_attributes": {"name": "circle", "cx": 20, "cy": 20, "r": 5},
                            "region_attributes": {}})
            n_prob = 1
        if version == 1:
            regions = {str(j): r for j, r in enumerate(regions)}
        key = f"{name}{len(data)}"
        e = {"filename": name, "size": len(data), "regions": regions, "file_attributes": {}}
        if version == 1:
            e = {"fileref": "", "size": len(data), "filename": name, "base64_img_data": "",
                 "file_attributes": {}, "regions": regions}
        entries[key] = e
        out.append(ExpectedImage(name, data, sc.width, sc.height, exp, n_problems=n_prob))
    if version == 1:
        doc = entries
    elif version == 2:
        attrs = {}
        if class_attribute:
            attrs[class_attribute] = {"type": "dropdown", "description": "",
                                      "options": {c: "" for c in classes}, "default_options": {}}
        doc = {"_via_settings": {"ui": {}, "core": {"buffer_size": 18, "filepath": {},
                                                    "default_filepath": ""},
                                 "project": {"name": "synthetic"}},
               "_via_img_metadata": entries,
               "_via_attributes": {"region": attrs, "file": {}},
               "_via_data_format_version": "2.0.10",
               "_via_image_id_list": list(entries)}
    else:
        raise ValueError(f"write_via: version must be 1 or 2, got {version}")
    (root / json_name).write_text(json.dumps(doc))
    used = sorted({e.label for im in out for e in im.instances})
    return Written(root, used, out, extra={"json": root / json_name})


# --------------------------------------------------------------------------- YOLO
def write_yolo(root, scenes: Sequence[Scene], classes: Sequence[str] = CLASSES, *,
               split: Optional[str] = "train", names: str = "list", decimals: int = 6,
               empty_every: int = 0, quality: int = 90) -> Written:
    """Ultralytics YOLO-seg layout: ``images/<split>/*.jpg`` + ``labels/<split>/*.txt``
    (``split=None``: flat ``images/`` + ``labels/``), one line per polygon part:
    ``cls x1 y1 x2 y2 ...`` normalized by the image width/height with ``decimals`` digits.

    ``names``: ``"list"`` / ``"dict"`` (``data.yaml`` ``names:`` as a list or ``{id: name}``)
    or ``"txt"`` (a ``classes.txt``). ``empty_every=n``: every n-th image gets no label file.
    Expected polygons are the rounded normalized values times the size.
    """
    import yaml
    root = Path(root)
    sub = Path(split) if split else Path()
    (root / "images" / sub).mkdir(parents=True, exist_ok=True)
    (root / "labels" / sub).mkdir(parents=True, exist_ok=True)
    out: List[ExpectedImage] = []
    for i, sc in enumerate(scenes):
        name = f"{i:05d}.jpg"
        data = encode_jpeg(sc.image, quality)
        (root / "images" / sub / name).write_bytes(data)
        lines, exp = [], []
        size = np.array([sc.width, sc.height], np.float64)
        for inst in sc.instances:
            for p in inst.polygons:
                q = np.round(p.astype(np.float64) / size, decimals)
                lines.append(" ".join([str(inst.label)] + [f"{v:.{decimals}f}" for v in q.ravel()]))
                exp.append(ExpectedInstance(classes[inst.label], [q * size]))
        if empty_every and (i + 1) % empty_every == 0:
            exp = []
        else:
            (root / "labels" / sub / name).with_suffix(".txt").write_text("\n".join(lines) + "\n")
        out.append(ExpectedImage(("images" / sub / name).as_posix(), data, sc.width, sc.height, exp))
    if names == "txt":
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    else:
        nm = list(classes) if names == "list" else {i: c for i, c in enumerate(classes)}
        doc = {"path": ".", "names": nm}
        if split:
            doc[split] = f"images/{split}"
        (root / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return Written(root, list(classes), out)


# --------------------------------------------------------------------------- masks
def write_masks(root, scenes: Sequence[Scene], *, palette: bool = False, class_name: str = "object",
                image_format: str = "png") -> Written:
    """Penn-Fudan layout: ``PNGImages/FudanPedXXXXX.png`` + ``PedMasks/FudanPedXXXXX_mask.png``.

    The mask has value k+1 for instance k, rasterized from its parts with
    ``fastload.targets.raster.fill_polygon`` (pixel-center rule), later instances drawn
    over earlier ones; 0 is background. ``palette``: save the mask in mode "P" as
    Penn-Fudan does (else "L"). ``image_format``: "png" (as Penn-Fudan) or "jpeg".
    Expected instances carry no polygons (tracing is lossy): compare masks instead;
    ``ExpectedImage.mask`` holds the written mask.
    """
    from fastload.targets.raster import fill_polygon
    root = Path(root)
    (root / "PNGImages").mkdir(parents=True, exist_ok=True)
    (root / "PedMasks").mkdir(parents=True, exist_ok=True)
    out: List[ExpectedImage] = []
    for i, sc in enumerate(scenes):
        stem = f"FudanPed{i:05d}"
        data = encode_png(sc.image) if image_format == "png" else encode_jpeg(sc.image)
        name = f"{stem}.png" if image_format == "png" else f"{stem}.jpg"
        (root / "PNGImages" / name).write_bytes(data)
        mask = np.zeros((sc.height, sc.width), np.uint8)
        for k, inst in enumerate(sc.instances):
            for p in inst.polygons:
                fill_polygon(mask, np.ascontiguousarray(p, np.float64), k + 1, 1.0)
        if palette:
            im = Image.frombytes("P", (sc.width, sc.height), mask.tobytes())
            pal = [0, 0, 0] + [int(v) for v in np.random.default_rng(i).integers(0, 256, 255 * 3)]
            im.putpalette(pal)
        else:
            im = Image.fromarray(mask)
        im.save(root / "PedMasks" / f"{stem}_mask.png")
        exp = [ExpectedInstance(class_name, []) for v in np.unique(mask) if v]
        out.append(ExpectedImage(f"PNGImages/{name}", data, sc.width, sc.height, exp, mask=mask))
    return Written(root, [class_name], out)


# --------------------------------------------------------------------------- checking
def check_reading(ds, written: Written, atol: float = 0.0, check_problems: bool = True) -> None:
    """Assert that a reader's :class:`~fastload.formats.base.SourceDataset` matches what a
    writer wrote: same file names in sorted order, image bytes identical to the source
    files, same instances in order (class name, ignore flag) and every polygon vertex
    equal after float32 rounding (``atol`` > 0: within ``atol`` pixels instead), and the
    number of parse problems per image. Raises AssertionError naming the file."""
    exp = sorted(written.images, key=lambda e: e.file_name)
    got_names = [s.file_name for s in ds.samples]
    assert got_names == sorted(got_names), f"samples not sorted: {got_names}"
    assert got_names == [e.file_name for e in exp], (got_names, [e.file_name for e in exp])
    for s, e in zip(ds.samples, exp):
        data = s.image_bytes if s.image_bytes is not None else Path(s.image_path).read_bytes()
        assert data == e.image_bytes, f"{s.file_name}: image bytes differ"
        if check_problems:
            assert len(s.problems) == e.n_problems, f"{s.file_name}: problems {[str(p) for p in s.problems]}"
        assert len(s.instances) == len(e.instances), \
            f"{s.file_name}: {len(s.instances)} instances, expected {len(e.instances)}"
        for k, (a, b) in enumerate(zip(s.instances, e.instances)):
            assert a.ignore == b.ignore, f"{s.file_name} instance {k}: ignore {a.ignore} != {b.ignore}"
            if b.label is not None:
                assert ds.classes[a.label] == b.label, \
                    f"{s.file_name} instance {k}: class {ds.classes[a.label]!r} != {b.label!r}"
            assert len(a.polygons) == len(b.polygons), f"{s.file_name} instance {k}: part count"
            for pa, pb in zip(a.polygons, b.polygons):
                pa, pb = np.asarray(pa), np.asarray(pb)
                assert pa.shape == pb.shape, f"{s.file_name} instance {k}: {pa.shape} != {pb.shape}"
                if atol:
                    err = np.abs(pa - pb).max()
                    assert err <= atol, f"{s.file_name} instance {k}: vertex error {err} > {atol}"
                else:
                    np.testing.assert_array_equal(pa.astype(np.float32), pb.astype(np.float32),
                                                  err_msg=f"{s.file_name} instance {k}")
