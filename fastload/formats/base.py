"""What every input-format reader produces, before validation and packing.

A reader turns a source dataset into a :class:`SourceDataset`: class names, optional
keypoint names and flip pairs, and an iterator of :class:`SourceSample`. Readers do
no image decoding and no validation beyond parsing their own syntax; problems they
find while parsing (an annotation that references an unknown category, say) are
reported as :class:`Problem` objects in ``SourceSample.problems`` so that ``pack``
applies one policy (skip and count, or ``--strict``) to everything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np


@dataclass
class Problem:
    """One validation problem. ``fatal`` problems make the whole sample unusable;
    others drop just the annotation they name."""

    file: str
    what: str
    annotation: Optional[str] = None  # e.g. "annotation 1234" or "shape 3 (label 'cat')"
    fatal: bool = False
    reason: str = "invalid"  # short key used for counting in the summary

    def __str__(self) -> str:
        where = f"{self.file}" + (f", {self.annotation}" if self.annotation else "")
        return f"{where}: {self.what}"


@dataclass
class SourceInstance:
    """One instance as the source file describes it (not yet validated).

    ``polygons``: list of (N, 2) float arrays in (x, y) continuous pixel coordinates.
    ``ignore``: an ignore region (COCO crowd kept as ignore, labelme ``__ignore__``).
    """

    label: int
    polygons: List[np.ndarray]
    ignore: bool = False
    crowd: bool = False
    keypoints: Optional[np.ndarray] = None  # (K, 3) x, y, visibility
    name: str = ""  # how to refer to it in messages, e.g. "annotation 1234"


@dataclass
class SourceSample:
    """One image and its instances. Exactly one of ``image_path`` / ``image_bytes`` is set."""

    file_name: str  # relative name stored in the record and shown in messages
    image_path: Optional[Path] = None
    image_bytes: Optional[bytes] = None
    instances: List[SourceInstance] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)
    declared_size: Optional[Tuple[int, int]] = None  # (h, w) the annotation file claims, if any
    image_id: Optional[int] = None  # the record id to store (COCO image id); None: position in sorted order


@dataclass
class SourceDataset:
    format: str
    classes: List[str]
    samples: Sequence[SourceSample]  # a list (readers are cheap: JSON parsing only)
    keypoint_names: Optional[List[str]] = None
    flip_pairs: Optional[List[Tuple[int, int]]] = None
    skeleton: Optional[List[Tuple[int, int]]] = None
    problems: List[Problem] = field(default_factory=list)  # dataset-level problems
    root: Optional[Path] = None  # folder every image must stay inside (pack refuses paths escaping it)
    searched: str = ""  # what the reader looked for, in words (pack says it when nothing packs)
