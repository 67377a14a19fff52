"""labelme reader: a folder (searched recursively) of labelme ``*.json`` files.

Layout: ``SRC/**/*.json``, one per image, each with ``imagePath`` (relative to the JSON
file, as labelme writes it; Windows ``\\`` separators accepted), optionally
``imageData`` (the base64-embedded image) and ``shapes``.

Policies (see docs/formats.md):

- ``shape_type`` ``polygon`` (also when absent or null) is used as is; ``rectangle``
  (two corner points, or more: their bounding box) becomes a 4-point polygon; every
  other type (circle, line, linestrip, point, points, mask...) is skipped with a
  Problem ``unsupported_shape`` naming the file and shape index.
- ``group_id``: shapes with the same (label, group_id) form one instance with several
  parts, in shape order; shapes with ``group_id: null`` are one instance each.
- ``__ignore__`` and the names in ``ignore_labels`` mark ignore regions. They never
  create a class; an ignore region whose label is in the class list keeps its id,
  others get label 0 (check the ignore flag before the label). ``_background_`` shapes
  are skipped with a Problem ``background_shape``.
- Classes: ``classes=`` (list, comma string or file), else a ``labels.txt`` at the root
  (labelme's convention; its ``__ignore__`` / ``_background_`` lines are dropped),
  else the sorted set of labels seen. With a fixed list an unknown label is a Problem.
- Image: the file named by ``imagePath`` when it exists (the original bytes; labelme's
  ``imageData`` is a re-encoded copy: labelme re-saves the picture after applying the
  EXIF orientation), else ``imageData`` decoded from base64 and stored as-is
  (``image_data="fallback"``, the default). ``image_data="always"`` prefers the
  embedded bytes (what labelme itself shows when both exist), ``"never"`` ignores them.
  When ``imagePath`` names no file but a file of that base name lies beside the JSON
  (a stale absolute or Windows path), that file is used. An ``imagePath`` that resolves
  outside the image root gets a fatal Problem ``path_escapes_root`` (``image_path`` is
  still set to the resolved path).
- A file that is not valid JSON or has no ``shapes`` list is a dataset-level fatal
  Problem (``malformed_json`` / ``not_labelme``); that file yields no sample. So is a JSON
  that is not a regular file (``special_file``) or a symlink leading out of SRC
  (``path_escapes_root``).
- A shape with a ``label`` that is not a string, a ``group_id`` that is not an integer or
  null (a list, an object), a ``shape_type`` that is not a string, or malformed ``points``
  is skipped (``malformed_shape``).

Coordinates: labelme draws on the Qt canvas in continuous image coordinates (the
top-left corner of the image is (0, 0)), which is fastload's convention (DESIGN.md):
points are taken as they are, no half-pixel shift.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from ._shared import LabelTable, as_points, load_class_list, read_names_file, rect_polygon
from .base import Problem, SourceDataset, SourceInstance, SourceSample
from .files import SpecialFileError, inside_root, read_regular

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"
SPECIAL_LABELS = (IGNORE_LABEL, BACKGROUND_LABEL)


def _image_suffix(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"BM":
        return ".bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ""


def read(src: Union[str, Path], *, classes=None, ignore_labels: Iterable[str] = (),
         image_data: str = "fallback", image_root: Optional[Union[str, Path]] = None
         ) -> SourceDataset:
    """Read a labelme dataset.

    ``src``: a folder (all ``*.json`` below it, sorted by relative path) or one JSON file.
    ``classes``: fixed class list (list, comma-separated string, or a names file).
    ``ignore_labels``: labels that mark ignore regions (besides ``__ignore__``).
    ``image_data``: ``"fallback"`` | ``"always"`` | ``"never"`` (see the module docstring).
    ``image_root``: the folder images must stay inside and that ``file_name`` is relative
    to (default: ``src``, or the JSON's folder when ``src`` is a file).

    Returns a :class:`SourceDataset` whose polygons are float64 (N, 2) (x, y) in labelme's
    continuous pixel coordinates (no shift). Geometry is not validated here.
    """
    src = Path(src)
    if image_data not in ("fallback", "always", "never"):
        raise ValueError(f"labelme: image_data must be 'fallback', 'always' or 'never', got {image_data!r}")
    if isinstance(ignore_labels, str):
        ignore_labels = [s for s in ignore_labels.split(",") if s]
    ignore_set = {IGNORE_LABEL, *map(str, ignore_labels)}
    if src.is_dir():
        root = src
        files = sorted(src.rglob("*.json"), key=lambda p: p.relative_to(src).as_posix())
    elif src.is_file():
        root = src.parent
        files = [src]
    else:
        raise ValueError(f"labelme: {src} is neither a folder nor a JSON file")
    img_root = Path(image_root) if image_root is not None else root

    fixed = load_class_list(classes, "labelme classes")
    if fixed is None and (root / "labels.txt").is_file():
        fixed = read_names_file(root / "labels.txt")
    if fixed is not None:
        fixed = [c for c in fixed if c not in SPECIAL_LABELS]

    table = LabelTable(fixed)
    samples: List[SourceSample] = []
    ds_problems: List[Problem] = []
    for jf in files:
        jrel = jf.relative_to(root).as_posix()
        if src.is_dir() and inside_root(jf, root) is None:
            ds_problems.append(Problem(jrel, f"resolves outside {str(root)!r} (a symlink); refused",
                                       fatal=True, reason="path_escapes_root"))
            continue
        try:
            d = json.loads(read_regular(jf))
        except SpecialFileError as e:
            ds_problems.append(Problem(jrel, e.strerror, fatal=True, reason="special_file"))
            continue
        except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            ds_problems.append(Problem(jrel, f"malformed JSON: {e}", fatal=True, reason="malformed_json"))
            continue
        if not isinstance(d, dict) or not isinstance(d.get("shapes"), list):
            ds_problems.append(Problem(jrel, "not a labelme file (no 'shapes' list)", fatal=True,
                                       reason="not_labelme"))
            continue
        sample = _read_image(d, jf, jrel, img_root, image_data)
        if sample is None:
            ds_problems.append(Problem(jrel, "no imagePath and no imageData", fatal=True,
                                       reason="missing_image"))
            continue
        _read_shapes(d["shapes"], jrel, sample, table, ignore_set)
        samples.append(sample)
    class_names = table.finish()
    ds = SourceDataset(format="labelme", classes=class_names, samples=samples, problems=ds_problems)
    ds.root = img_root  # the folder images must stay inside (read by fastload.pack)
    ds.searched = (f"labelme JSON files (*.json with a 'shapes' list) under {src}"
                   if src.is_dir() else f"a labelme JSON file (with a 'shapes' list): {src}")
    return ds


def _read_image(d: dict, jf: Path, jrel: str, img_root: Path, policy: str) -> Optional[SourceSample]:
    ipath = d.get("imagePath")
    ipath = ipath.replace("\\", "/") if isinstance(ipath, str) and ipath.strip() else None
    idata = d.get("imageData") if policy != "never" else None
    idata = idata if isinstance(idata, str) and idata else None
    declared = None
    h, w = d.get("imageHeight"), d.get("imageWidth")
    if isinstance(h, int) and isinstance(w, int) and not isinstance(h, bool) \
            and not isinstance(w, bool):
        declared = (h, w)

    img_file = Path(os.path.normpath(jf.parent / ipath)) if ipath else None
    if img_file is not None and not img_file.is_file():
        # a stale path (absolute, or from another machine: "C:\\data\\x.jpg") with the
        # image beside the JSON, as labelme users often move folders
        alt = jf.parent / ipath.rsplit("/", 1)[-1]
        if alt.is_file():
            img_file = alt
    rel = inside_root(img_file, img_root) if img_file is not None else None
    use_data = idata is not None and (policy == "always" or img_file is None or not img_file.is_file())
    if use_data:
        try:
            data = base64.b64decode(idata, validate=False)
        except (binascii.Error, ValueError) as e:
            s = SourceSample(file_name=rel or jrel, image_bytes=b"", declared_size=declared)
            s.problems.append(Problem(jrel, f"imageData is not valid base64: {e}", fatal=True,
                                      reason="corrupt_image"))
            return s
        if rel is None:  # no usable imagePath: name it after the JSON file
            rel = str(Path(jrel).with_suffix(_image_suffix(data) or ".img").as_posix())
        return SourceSample(file_name=rel, image_bytes=data, declared_size=declared)
    if img_file is None:
        return None
    s = SourceSample(file_name=rel if rel is not None else os.path.relpath(img_file, img_root).replace(os.sep, "/"),
                     image_path=img_file, declared_size=declared)
    if rel is None:
        s.problems.append(Problem(jrel, f"imagePath {ipath!r} escapes the dataset root {str(img_root)!r}",
                                  fatal=True, reason="path_escapes_root"))
    return s


def _read_shapes(shapes: list, jrel: str, sample: SourceSample, table: LabelTable,
                 ignore_set: set) -> None:
    groups: Dict[Tuple[str, object], SourceInstance] = {}
    group_idx: Dict[Tuple[str, object], List[int]] = {}
    order: List[Tuple[SourceInstance, str]] = []
    for k, sh in enumerate(shapes):
        if not isinstance(sh, dict):
            sample.problems.append(Problem(jrel, "shape is not an object", f"shape {k}", reason="malformed_shape"))
            continue
        raw = sh.get("label")
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, (str, int))):
            sample.problems.append(Problem(jrel, f"label {_short(raw)} is not a string",
                                           f"shape {k}", reason="malformed_shape"))
            continue
        label = str(raw).strip() if raw is not None else ""
        where = f"shape {k} (label {label!r})"
        stype = sh.get("shape_type") or "polygon"
        gid = sh.get("group_id")
        if gid is not None and (isinstance(gid, bool) or not isinstance(gid, (int, str))):
            sample.problems.append(Problem(jrel, f"group_id {_short(gid)} is not an integer or "
                                                 f"null", where, reason="malformed_shape"))
            continue
        if not isinstance(stype, str):
            sample.problems.append(Problem(jrel, f"shape_type {_short(stype)} is not a string",
                                           where, reason="malformed_shape"))
            continue
        if not label:
            sample.problems.append(Problem(jrel, "shape has no label", where, reason="missing_label"))
            continue
        if label == BACKGROUND_LABEL:
            sample.problems.append(Problem(jrel, "_background_ shape skipped", where, reason="background_shape"))
            continue
        if stype not in ("polygon", "rectangle"):
            sample.problems.append(Problem(jrel, f"unsupported shape_type {stype!r} (skipped)", where,
                                           reason="unsupported_shape"))
            continue
        try:
            pts = as_points(sh.get("points"))
        except (ValueError, TypeError) as e:
            sample.problems.append(Problem(jrel, f"malformed points: {e}", where, reason="malformed_shape"))
            continue
        if stype == "rectangle":
            if len(pts) < 2:
                sample.problems.append(Problem(jrel, f"rectangle needs 2 points, has {len(pts)}", where,
                                               reason="malformed_shape"))
                continue
            lo, hi = pts.min(0), pts.max(0)
            pts = rect_polygon(lo[0], lo[1], hi[0], hi[1])
        ignore = label in ignore_set
        if gid is not None:
            key = (label, gid)
            if key in groups:
                groups[key].polygons.append(pts)
                group_idx[key].append(k)
                continue
            inst = SourceInstance(label=-1, polygons=[pts], ignore=ignore)
            groups[key] = inst
            group_idx[key] = [k]
        else:
            inst = SourceInstance(label=-1, polygons=[pts], ignore=ignore, name=where)
        order.append((inst, label))
    for key, idx in group_idx.items():
        s = "shape" if len(idx) == 1 else "shapes"
        groups[key].name = f"{s} {','.join(map(str, idx))} (label {key[0]!r}, group_id {key[1]!r})"
    for inst, label in order:
        table.add(sample, inst, label, jrel, inst.name)


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."
