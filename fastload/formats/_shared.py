"""Small helpers shared by the labelme / VIA / YOLO / mask-PNG readers (private).

Nothing here validates geometry: the pack pipeline does that centrally.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from fastload.limits import MAX_CLASSES

from .base import Problem, SourceInstance, SourceSample
from .files import read_regular_text

ClassesArg = Union[None, str, os.PathLike, Sequence[str]]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def load_class_list(classes: ClassesArg, what: str = "classes") -> Optional[List[str]]:
    """A fixed class list from an option value.

    ``None`` -> None (the reader derives the classes). A list/tuple of names is used as is.
    A string or path that names an existing file is read: ``*.yaml``/``*.yml`` by its
    ``names:`` key (list or ``{id: name}``), anything else as one name per line (blank
    lines and lines starting with ``#`` skipped). Any other string is split on commas
    (the CLI form ``--classes cat,dog``).
    """
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        p = Path(classes)
        if p.is_file():
            if p.suffix.lower() in (".yaml", ".yml"):
                return yaml_names(p)
            return read_names_file(p)
        if isinstance(classes, os.PathLike):
            raise ValueError(f"{what}: file {p} does not exist")
        names = [c.strip() for c in str(classes).split(",") if c.strip()]
    else:
        names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"{what}: duplicate class names {dup}")
    return names


def as_bool(v, what: str) -> bool:
    """A boolean option that may come from the command line as a string."""
    if isinstance(v, str):
        t = v.strip().lower()
        if t in ("1", "true", "yes", "on"):
            return True
        if t in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{what}: expected a boolean, got {v!r}")
    return bool(v)


def read_names_file(path: Path) -> List[str]:
    """One class name per line (``classes.txt``, darknet ``*.names``, labelme ``labels.txt``)."""
    try:
        text = read_regular_text(path)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read class names: {e}") from None
    names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{path}: {len(names)} class names, more than fastload takes "
                         f"({MAX_CLASSES})")
    return names


def yaml_names(path: Path) -> List[str]:
    """``names:`` of an Ultralytics ``data.yaml``: a list, or a dict ``{id: name}``.

    A dict with gaps gets ``class_<id>`` for the missing ids (``nc`` extends the list).
    """
    import yaml
    try:
        data = yaml.safe_load(read_regular_text(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot parse YAML: {e}") from None
    if not isinstance(data, dict) or "names" not in data:
        raise ValueError(f"{path}: no 'names:' key")
    names = data["names"]
    nc = data.get("nc")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int)
                           or not 0 <= nc <= MAX_CLASSES):
        raise ValueError(f"{path}: 'nc:' must be a class count from 0 to {MAX_CLASSES}, "
                         f"got {nc!r}")
    if isinstance(names, dict):
        ids = {as_int_id(k): v for k, v in names.items()}
        if None in ids or any(isinstance(v, (list, dict)) for v in ids.values()):
            raise ValueError(f"{path}: 'names:' must map integer class ids to names")
        if any(not 0 <= k < MAX_CLASSES for k in ids):
            raise ValueError(f"{path}: a class id in 'names:' is negative or over "
                             f"{MAX_CLASSES - 1}")
        n = max(max(ids, default=-1) + 1, nc or 0)
        out = [str(ids[i]) if i in ids else f"class_{i}" for i in range(n)]
    elif isinstance(names, (list, tuple)):
        if len(names) > MAX_CLASSES or any(isinstance(v, (list, dict)) for v in names):
            raise ValueError(f"{path}: 'names:' must be a list of at most {MAX_CLASSES} names")
        out = [str(v) for v in names]
        if nc is not None and nc > len(out):
            out += [f"class_{i}" for i in range(len(out), nc)]
    else:
        raise ValueError(f"{path}: 'names:' must be a list or a mapping, got {type(names).__name__}")
    return out


_DIGITS = re.compile(r"-?[0-9]{1,19}")
#: int64 range of ids (a record id is an int64)
_ID_MIN, _ID_MAX = -(1 << 63), (1 << 63) - 1


def as_int_id(v) -> Optional[int]:
    """An integer from a JSON field: an int (not a bool), a float with an integer value, or
    a string of decimal digits, within int64; ``None`` for anything else (NaN, inf, lists,
    objects, other strings)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, float):
        if not v.is_integer():  # False for NaN and inf too
            return None
        v = int(v)
    elif isinstance(v, str):
        if not _DIGITS.fullmatch(v.strip()):
            return None
        v = int(v)
    elif not isinstance(v, int):
        return None
    return v if _ID_MIN <= v <= _ID_MAX else None


def is_number(v) -> bool:
    """An int or float JSON value (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def as_points(xs, ys=None) -> np.ndarray:
    """(N, 2) float64 from ``[[x, y], ...]`` or from separate x / y lists.
    Raises ValueError/TypeError on malformed input (the caller turns it into a Problem)."""
    if ys is None:
        a = np.asarray(xs, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"points must be a list of [x, y] pairs, got shape {a.shape}")
        return a
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y lists differ in shape ({x.shape} vs {y.shape})")
    return np.stack([x, y], 1)


def rect_polygon(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """The 4-point polygon of an axis-aligned box (corners in any order), clockwise in
    image coordinates starting at the top-left: (x1,y1) (x2,y1) (x2,y2) (x1,y2)."""
    xa, xb = min(x1, x2), max(x1, x2)
    ya, yb = min(y1, y2), max(y1, y2)
    return np.array([[xa, ya], [xb, ya], [xb, yb], [xa, yb]], np.float64)


class LabelTable:
    """Collects instances with class *names* and assigns class ids at the end.

    With a fixed class list, a name not in it is a Problem on its sample (the instance
    is dropped). Without one, the classes are the sorted set of names seen (plus
    ``always`` names), so ids do not depend on file order.
    """

    def __init__(self, fixed: Optional[List[str]]):
        self.fixed = fixed
        self.pending: List[Tuple[SourceSample, SourceInstance, str, str, str]] = []

    def add(self, sample: SourceSample, inst: SourceInstance, name: Optional[str],
            problem_file: str, where: str) -> None:
        """Queue ``inst`` (appended to ``sample.instances`` by :meth:`finish`)."""
        self.pending.append((sample, inst, name, problem_file, where))

    def finish(self) -> List[str]:
        """Assign ids, append the instances to their samples, return the class list.

        Ignore regions never create a class: one whose name is in the class list keeps
        that id, any other gets label 0 (consumers must check the ignore flag first)."""
        if self.fixed is not None:
            classes = list(self.fixed)
        else:
            classes = sorted({n for _, inst, n, _, _ in self.pending
                              if n is not None and not inst.ignore})
        index: Dict[str, int] = {c: i for i, c in enumerate(classes)}
        for sample, inst, name, pfile, where in self.pending:
            if name is not None and name in index:
                inst.label = index[name]
            elif inst.ignore:
                inst.label = 0
            else:
                sample.problems.append(Problem(
                    pfile, f"unknown label {name!r} (not in the class list)", where,
                    reason="unknown_label"))
                continue
            sample.instances.append(inst)
        self.pending.clear()
        return classes
