"""VIA (VGG Image Annotator) reader: 1.x exports and 2.x projects / exports, balloon-style.

Accepted JSON (``SRC`` is the JSON file, or a folder holding exactly one ``*.json``):

- VIA 2.x project: ``{"_via_settings", "_via_img_metadata": {key: entry}, "_via_attributes", ...}``;
- VIA 1.x export or 2.x "export annotations as json": ``{key: entry}`` (key = filename + size);
- entry: ``{"filename", "size", "regions", "file_attributes"}``, ``regions`` a list (2.x)
  or a dict keyed "0", "1", ... (1.x, read in numeric key order).
VIA 3.x (``{"project", "file", "metadata", ...}``) is refused with a ValueError.

Policies (see docs/formats.md):

- ``shape_attributes.name`` ``polygon`` (``all_points_x`` / ``all_points_y``) is used as is;
  ``rect`` (x, y, width, height) becomes a 4-point polygon; other shapes (circle,
  ellipse, point, polyline) are skipped with a Problem ``unsupported_shape``.
- Each region is one instance (VIA has no grouping of regions).
- Class: ``region_attributes[class_attribute]``. Without ``class_attribute`` the reader
  uses the only region attribute key in the file when there is exactly one, else the
  first of "name", "class", "label", "type" present. A value may be a string or, for
  checkbox attributes, a dict ``{option: true}`` with exactly one true option. A region
  with no class value gets ``default_class`` ("object"): balloon-style files with no
  attributes at all give one class "object". ``default_class=None`` makes such a region
  a Problem ``missing_label`` instead.
- Classes: ``classes=`` if given (unknown names become Problems), else the sorted names seen.
- Images: ``images=`` folder (default: the JSON's folder); ``filename`` is relative to it.
  A filename that is a URL or escapes the folder gets a fatal Problem.
- Entries are sorted by filename; a second entry for the same filename is merged into
  the first (VIA 1.x keys entries by filename + size). An entry that is not an object or
  has no ``filename`` string is skipped (``malformed_entry``); a class value that is not a
  string, a number or a checkbox is ``malformed_region``.

Coordinates: VIA stores image-pixel coordinates of its canvas (continuous, top-left
corner (0, 0), often rounded to integers by VIA 2); taken as they are, no shift.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

from ._shared import LabelTable, as_points, is_number, load_class_list, rect_polygon
from .base import Problem, SourceDataset, SourceInstance, SourceSample
from .files import inside_root, read_regular

CLASS_ATTRIBUTE_CANDIDATES = ("name", "class", "label", "type")


def _find_json(src: Path) -> Path:
    if src.is_file():
        return src
    if src.is_dir():
        found = sorted(src.glob("*.json"))
        if len(found) == 1:
            return found[0]
        raise ValueError(f"via: {src} holds {len(found)} JSON files "
                         f"({', '.join(p.name for p in found[:5])}); pass the VIA JSON file itself")
    raise ValueError(f"via: {src} does not exist")


def _regions(entry) -> list:
    regs = entry.get("regions") if isinstance(entry, dict) else None
    if regs is None:
        return []
    if isinstance(regs, dict):  # VIA 1.x: {"0": region, "1": region, ...}
        def key(k):
            try:
                return (0, int(k), "")
            except ValueError:
                return (1, 0, str(k))
        return [regs[k] for k in sorted(regs, key=key)]
    if isinstance(regs, list):
        return regs
    return None  # malformed


#: _class_value's answers for a value that is no class name
MULTI, MALFORMED = "\0multi", "\0malformed"


def _class_value(ra, attr: Optional[str]) -> Optional[str]:
    """The class name in region attributes ``ra``: None when absent, :data:`MULTI` for a
    checkbox with several options checked, :data:`MALFORMED` for a value that is not a
    string, a number or a checkbox."""
    if not attr or not isinstance(ra, dict) or attr not in ra:
        return None
    v = ra[attr]
    if isinstance(v, dict):  # checkbox: {"option": true, ...}
        on = [k for k, b in v.items() if b]
        if not on:
            return None
        return str(on[0]) if len(on) == 1 else MULTI
    if v is None:
        return None
    if not isinstance(v, str) and not is_number(v):
        return MALFORMED
    v = str(v).strip()
    return v or None


def read(src: Union[str, Path], *, images: Optional[Union[str, Path]] = None,
         class_attribute: Optional[str] = None, classes=None,
         default_class: Optional[str] = "object") -> SourceDataset:
    """Read a VIA 1.x / 2.x JSON (see the module docstring for the accepted files).

    ``images``: image folder (default: the JSON's folder). ``class_attribute``: the region
    attribute holding the class (default: auto-detect). ``classes``: fixed class list.
    ``default_class``: class of regions without one (None: such regions are Problems).

    Polygons are float64 (N, 2) (x, y) as VIA stores them (continuous pixel coordinates).
    Raises ValueError for a file that is not VIA JSON at all.
    """
    jf = _find_json(Path(src))
    jname = jf.name
    try:
        doc = json.loads(read_regular(jf))
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"via: {jf}: malformed JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"via: {jf}: top level is not an object")
    if "_via_img_metadata" in doc:
        meta = doc["_via_img_metadata"]
    elif "project" in doc and "file" in doc and "metadata" in doc:
        raise ValueError(f"via: {jf}: VIA 3.x projects are not supported; export from VIA 2.x "
                         f"or convert to COCO")
    else:
        meta = doc
    if not isinstance(meta, dict) or (meta and not any(_entry_ok(e) for e in meta.values())):
        raise ValueError(f"via: {jf}: not a VIA 1.x/2.x file (expected entries with 'filename' and 'regions')")
    ds_problems: List[Problem] = []
    for key in [k for k, e in meta.items() if not _entry_ok(e)]:
        e = meta[key]
        ds_problems.append(Problem(jname, "entry has no 'filename' (a non-empty string)"
                                   if isinstance(e, dict) else
                                   f"entry is a {type(e).__name__}, not an object",
                                   f"entry {_short(key)}", fatal=True, reason="malformed_entry"))
    meta = {k: e for k, e in meta.items() if _entry_ok(e)}
    img_root = Path(images) if images is not None else jf.parent

    # which region attribute holds the class
    if class_attribute is None:
        keys = set()
        for e in meta.values():
            for r in _regions(e) or []:
                ra = r.get("region_attributes") if isinstance(r, dict) else None
                if isinstance(ra, dict):
                    keys.update(k for k, v in ra.items() if v not in (None, "", {}))
        if len(keys) == 1:
            class_attribute = next(iter(keys))
        else:
            class_attribute = next((c for c in CLASS_ATTRIBUTE_CANDIDATES if c in keys), None)
            if class_attribute is None and keys:
                raise ValueError(f"via: {jf}: region attributes {sorted(keys)} and none is named "
                                 f"{'/'.join(CLASS_ATTRIBUTE_CANDIDATES)}; pass class_attribute=")

    fixed = load_class_list(classes, "via classes")
    table = LabelTable(fixed)
    by_name: Dict[str, SourceSample] = {}
    counters: Dict[str, int] = {}
    for key in meta:
        e = meta[key]
        fname = str(e["filename"]).replace("\\", "/")
        regs = _regions(e)
        sample = by_name.get(fname)
        if sample is None:
            sample = _make_sample(fname, img_root, jname)
            by_name[fname] = sample
        if regs is None:
            sample.problems.append(Problem(jname, f"'regions' of {fname!r} is neither a list nor a dict",
                                           f"entry {key!r}", reason="malformed_region"))
            continue
        for r in regs:
            k = counters.get(fname, 0)
            counters[fname] = k + 1
            _read_region(r, k, fname, sample, table, class_attribute, default_class, jname)
    class_names = table.finish()
    samples = [by_name[n] for n in sorted(by_name)]
    ds = SourceDataset(format="via", classes=class_names, samples=samples, problems=ds_problems)
    ds.root = img_root  # the folder images must stay inside (read by fastload.pack)
    ds.searched = f"the VIA entries of {jf}, images in {img_root}"
    return ds


def _entry_ok(e) -> bool:
    return isinstance(e, dict) and isinstance(e.get("filename"), str) and bool(e["filename"].strip())


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _make_sample(fname: str, img_root: Path, jname: str) -> SourceSample:
    if "://" in fname:
        s = SourceSample(file_name=fname, image_path=Path(fname))
        s.problems.append(Problem(jname, f"image {fname!r} is a URL; download it into the image folder",
                                  fatal=True, reason="missing_image"))
        return s
    p = Path(os.path.normpath(img_root / fname))
    rel = inside_root(p, img_root)
    s = SourceSample(file_name=rel if rel is not None else fname, image_path=p)
    if rel is None:
        s.problems.append(Problem(jname, f"image {fname!r} escapes the image folder {str(img_root)!r}",
                                  fatal=True, reason="path_escapes_root"))
    return s


def _read_region(r, k: int, fname: str, sample: SourceSample, table: LabelTable,
                 attr: Optional[str], default_class: Optional[str], jname: str) -> None:
    where = f"{fname}, region {k}"
    if not isinstance(r, dict) or not isinstance(r.get("shape_attributes"), dict):
        sample.problems.append(Problem(jname, "region has no shape_attributes", where, reason="malformed_region"))
        return
    sa = r["shape_attributes"]
    ra = r.get("region_attributes")
    name = _class_value(ra, attr)
    if name == MULTI:
        sample.problems.append(Problem(jname, f"region attribute {attr!r} has several options checked",
                                       where, reason="ambiguous_label"))
        return
    if name == MALFORMED:
        sample.problems.append(Problem(jname, f"region attribute {attr!r} is "
                                              f"{_short(ra[attr])}, not a class name", where,
                                       reason="malformed_region"))
        return
    shape = sa.get("name")
    where = f"{where} ({shape}, " + (f"class {name!r})" if name is not None else "no class)")
    try:
        if shape == "polygon":
            pts = as_points(sa["all_points_x"], sa["all_points_y"])
        elif shape == "rect":
            x, y, w, h = (float(sa[c]) for c in ("x", "y", "width", "height"))
            pts = rect_polygon(x, y, x + w, y + h)
        else:
            sample.problems.append(Problem(jname, f"unsupported shape {shape!r} (skipped)", where,
                                           reason="unsupported_shape"))
            return
    except (KeyError, ValueError, TypeError) as e:
        sample.problems.append(Problem(jname, f"malformed {shape} shape_attributes: {e!r}", where,
                                       reason="malformed_region"))
        return
    if name is None:
        if default_class is None:
            sample.problems.append(Problem(jname, f"region has no {attr or 'class'} attribute", where,
                                           reason="missing_label"))
            return
        name = default_class
    table.add(sample, SourceInstance(label=-1, polygons=[pts], name=where), name, jname, where)
