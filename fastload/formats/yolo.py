"""YOLO segmentation reader (Ultralytics YOLO-seg layout).

Layout (``SRC`` is the dataset root, or its ``data.yaml``):

- ``images/{train,val,...}/*.jpg`` + ``labels/{train,val,...}/*.txt`` (also flat ``images/`` +
  ``labels/``, and the Roboflow form ``train/images`` + ``train/labels``). As in Ultralytics,
  an image's label file is its path with the last ``images`` folder replaced by ``labels``
  and the suffix by ``.txt``.
- Each label line: ``cls x1 y1 x2 y2 ... xn yn``, coordinates normalized to [0, 1] by the
  image width / height; one line is one instance with one part. A line with exactly four
  numbers is a YOLO *detection* box ``cx cy w h`` and becomes a 4-point polygon
  (``boxes=False`` makes it a Problem instead).
- Class names: ``classes=`` option, else ``names:`` of ``data.yaml`` / ``dataset.yaml`` (or
  the only ``*.yaml`` in the root; a list or ``{id: name}``), else a ``classes.txt`` /
  ``obj.names`` / ``names`` file, else ``class_0 .. class_<max id>``.

Policies (see docs/formats.md):

- The image size (to undo the normalization) is read from the image header with PIL
  (``Image.open(path).size``, no decode). An unreadable header is a fatal Problem
  ``corrupt_image``. An image with an EXIF orientation other than 1 is a fatal Problem
  ``exif_orientation``: Ultralytics normalizes by the EXIF-rotated size and trains on the
  rotated picture, while fastload stores the bytes as they are.
- An image without a label file (or with an empty one) has no instances (normal in YOLO).
  A label file without an image is a dataset-level fatal Problem ``orphan_label``.
- Bad lines (not numbers, a class that is not a non-negative integer such as ``nan`` or
  ``inf``, odd coordinate count, fewer than 3 points, class id not in the names or, without
  names, over :data:`fastload.limits.MAX_CLASSES` - 1) are Problems naming the label file and
  line number; the line is dropped.
- Files stay inside the root (:mod:`fastload.formats.files`): an image or label file that is
  a symlink leading out of it is ``path_escapes_root``, a label file that is a FIFO or a
  device ``special_file``; a data.yaml ``path:`` leading out of the YAML's folder is a
  ``ValueError``.
- ``split=``: only images whose path (relative to the root) has that folder name.
- Samples are sorted by image path relative to the root (which is their ``file_name``).

Coordinates: x_px = x * width, y_px = y * height: continuous pixel coordinates, no shift
(Ultralytics normalizes continuous contour coordinates the same way).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from fastload.limits import MAX_CLASSES, ImageTooLarge, check_image_size

from ._shared import IMAGE_SUFFIXES, as_bool, load_class_list, read_names_file, rect_polygon, yaml_names
from .base import Problem, SourceDataset, SourceInstance, SourceSample
from .files import SpecialFileError, inside_root, open_regular, read_regular_text

NAMES_FILES = ("classes.txt", "obj.names", "names", "classes.names", "names.txt")
EXIF_ORIENTATION = 0x0112


def _label_rel(img_rel: Path) -> Optional[Path]:
    parts = list(img_rel.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return None


def _find_yaml(root: Path) -> Optional[Path]:
    for n in ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml"):
        if (root / n).is_file():
            return root / n
    found = sorted(list(root.glob("*.yaml")) + list(root.glob("*.yml")))
    return found[0] if len(found) == 1 else None


def _yaml_root(yaml_path: Path) -> Path:
    """The dataset root a data.yaml names with ``path:`` (a folder relative to the YAML's), or
    the YAML's folder; ``ValueError`` when ``path:`` leads outside the YAML's folder: the
    files of a dataset stay inside it (a ``path: ../../..`` would make pack scan ``/``)."""
    import yaml
    root = yaml_path.parent
    try:
        d = yaml.safe_load(read_regular_text(yaml_path))
    except Exception as e:  # yaml errors, decode errors, special files
        raise ValueError(f"yolo: {yaml_path}: cannot parse YAML: {e}") from None
    p = d.get("path") if isinstance(d, dict) else None
    if not isinstance(p, str) or not (root / p).is_dir():
        return root  # absent, or relative to Ultralytics' own datasets folder: not ours
    if os.path.realpath(root / p) != os.path.realpath(root) and inside_root(root / p, root) is None:
        raise ValueError(f"yolo: {yaml_path}: 'path: {p}' leads outside the dataset folder "
                         f"{root}; fastload reads only inside it (pass the dataset folder as "
                         f"SRC)")
    return root / p


def _header(path: Path, max_pixels):
    """``(width, height, EXIF orientation)`` from the image header (no decode), after the
    pixel cap; raises ``OSError`` / ``ValueError`` / :class:`ImageTooLarge`."""
    from PIL import Image, UnidentifiedImageError
    with open_regular(path) as f:
        try:
            with Image.open(f) as im:
                w, h = im.size
                check_image_size(h, w, "image", max_pixels)
                return w, h, im.getexif().get(EXIF_ORIENTATION, 1)
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(f"{e} (PIL's limit: PIL.Image.MAX_IMAGE_PIXELS)") from None
        except UnidentifiedImageError as e:
            raise ValueError(str(e)) from None


def read(src: Union[str, Path], *, split: Optional[str] = None, classes=None,
         boxes: bool = True, max_pixels=None) -> SourceDataset:
    """Read a YOLO-seg dataset (see the module docstring for layout and policies).

    ``src``: dataset root or its ``data.yaml``. ``split``: e.g. ``"train"`` (default: all
    images under every ``images`` folder). ``classes``: fixed class list (list, comma
    string, or a names / yaml file). ``boxes``: accept 4-number detection lines.
    ``max_pixels``: the pixel cap (:func:`fastload.limits.check_image_size`) applied to the
    header of every image whose size is read.

    Polygons are float64 (N, 2) (x, y) continuous pixel coordinates (normalized values
    times the header size).
    """
    src = Path(src)
    boxes = as_bool(boxes, "yolo boxes")
    yaml_path = None
    if src.is_file() and src.suffix.lower() in (".yaml", ".yml"):
        yaml_path = src
        root = _yaml_root(src)
    elif src.is_dir():
        root = src
        yaml_path = _find_yaml(root)
    else:
        raise ValueError(f"yolo: {src} is neither a dataset folder nor a data.yaml")

    names = load_class_list(classes, "yolo classes")
    if names is None and yaml_path is not None:
        names = yaml_names(yaml_path)
    if names is None:
        for n in NAMES_FILES:
            if (root / n).is_file():
                names = read_names_file(root / n)
                break

    def in_split(rel: Path) -> bool:
        return split is None or split in rel.parts[:-1]

    img_rels = sorted(
        (p.relative_to(root) for p in root.rglob("*")
         if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda r: r.as_posix())
    img_rels = [r for r in img_rels if "images" in r.parts[:-1] and in_split(r)]
    if not img_rels:
        raise ValueError(f"yolo: no images under an 'images' folder in {root}"
                         + (f" for split {split!r}" if split else ""))

    samples: List[SourceSample] = []
    used_labels = set()
    max_id = -1
    for rel in img_rels:
        path = root / rel
        s = SourceSample(file_name=rel.as_posix(), image_path=path)
        samples.append(s)
        lrel = _label_rel(rel)
        used_labels.add(lrel)
        lpath = root / lrel
        if not os.path.lexists(lpath):
            continue
        escaping = next((p for p in (path, lpath) if inside_root(p, root) is None), None)
        if escaping is not None:
            s.problems.append(Problem(escaping.relative_to(root).as_posix(),
                                      f"resolves outside the dataset root {str(root)!r} (a "
                                      f"symlink); refused", fatal=True, reason="path_escapes_root"))
            continue
        try:
            w, h, orient = _header(path, max_pixels)
        except ImageTooLarge as e:
            s.problems.append(Problem(rel.as_posix(), str(e), fatal=True, reason="too_many_pixels"))
            continue
        except SpecialFileError as e:
            s.problems.append(Problem(rel.as_posix(), e.strerror, fatal=True, reason="special_file"))
            continue
        except (OSError, ValueError) as e:
            s.problems.append(Problem(rel.as_posix(), f"cannot read the image header: {e}", fatal=True,
                                      reason="corrupt_image"))
            continue
        if orient not in (1, None):
            s.problems.append(Problem(rel.as_posix(), f"EXIF orientation {orient}: YOLO labels refer to "
                                      f"the rotated image; re-save it without the EXIF rotation",
                                      fatal=True, reason="exif_orientation"))
            continue
        try:
            text = read_regular_text(lpath)
        except SpecialFileError as e:
            s.problems.append(Problem(lrel.as_posix(), e.strerror, fatal=True, reason="special_file"))
            continue
        except (OSError, UnicodeDecodeError) as e:
            s.problems.append(Problem(lrel.as_posix(), f"cannot read the label file: {e}", fatal=True,
                                      reason="malformed_label"))
            continue
        size = np.array([w, h], np.float64)
        lname = lrel.as_posix()
        for ln, line in enumerate(text.splitlines(), 1):
            tok = line.split()
            if not tok:
                continue
            where = f"line {ln}"
            try:
                c = float(tok[0])
                vals = np.array([float(t) for t in tok[1:]], np.float64)
            except ValueError:
                s.problems.append(Problem(lname, f"not a number in {line.strip()[:60]!r}", where,
                                          reason="malformed_label"))
                continue
            if not math.isfinite(c) or c != int(c) or c < 0:
                s.problems.append(Problem(lname, f"class id {tok[0][:20]!r} is not a non-negative "
                                                 f"integer", where, reason="malformed_label"))
                continue
            c = int(c)
            where = f"line {ln} (class {c})"
            if names is not None and c >= len(names):
                s.problems.append(Problem(lname, f"class id {c} not in the {len(names)} class names",
                                          where, reason="unknown_label"))
                continue
            if c >= MAX_CLASSES:
                s.problems.append(Problem(lname, f"class id {c} is over {MAX_CLASSES - 1}, the "
                                                 f"largest fastload names without a class list "
                                                 f"(give classes=)", where, reason="unknown_label"))
                continue
            n = vals.size
            if n % 2:
                s.problems.append(Problem(lname, f"odd number of coordinates ({n})", where,
                                          reason="malformed_label"))
                continue
            if n == 4 and boxes:
                cx, cy, bw, bh = vals * np.array([w, h, w, h], np.float64)
                pts = rect_polygon(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
            elif n < 6:
                s.problems.append(Problem(lname, f"fewer than 3 points ({n // 2})", where,
                                          reason="too_few_points"))
                continue
            else:
                pts = vals.reshape(-1, 2) * size
            max_id = max(max_id, c)
            s.instances.append(SourceInstance(label=c, polygons=[pts], name=f"{lname} {where}"))

    ds_problems: List[Problem] = []
    for lf in sorted(root.rglob("*.txt"), key=lambda p: p.relative_to(root).as_posix()):
        lrel = lf.relative_to(root)
        if "labels" in lrel.parts[:-1] and in_split(lrel) and lrel not in used_labels:
            ds_problems.append(Problem(lrel.as_posix(), "label file has no image", fatal=True,
                                       reason="orphan_label"))
    if names is None:
        names = [f"class_{i}" for i in range(max_id + 1)]
    ds = SourceDataset(format="yolo", classes=list(names), samples=samples, problems=ds_problems)
    ds.root = root  # the folder images must stay inside (read by fastload.pack)
    ds.searched = (f"images under an 'images' folder in {root}"
                   + (f" for split {split!r}" if split else "") + " with labels/*.txt beside them")
    return ds
