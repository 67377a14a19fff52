"""The on-disk record: one image and its vector annotations, versioned and pickle-free.

A record is a msgpack map whose array fields are raw little-endian bytes with a
known dtype, so decoding executes no code that came with the data (DESIGN.md,
"On-disk format"). Annotations are stored *flat*, the layout the hot path uses:

- ``points``      float32 ``(P, 2)``: every polygon vertex of every part, (x, y),
                  continuous pixel coordinates (pixel (i, j) covers [j, j+1) x [i, i+1)).
- ``part_offsets`` int32 ``(n_parts + 1,)``: part ``p`` is ``points[part_offsets[p]:part_offsets[p+1]]``.
- ``inst_parts``  int32 ``(n_inst + 1,)``: instance ``k`` owns parts ``inst_parts[k]:inst_parts[k+1]``.
- ``labels``      int32 ``(n_inst,)``: class index into the manifest's ``classes``.
- ``bboxes``      float32 ``(n_inst, 4)``: tight x1, y1, x2, y2 of the instance's parts.
- ``flags``       uint8 ``(n_inst,)``: bit 0 = ignore region, bit 1 = crowd.
- ``keypoints``   float32 ``(n_inst, K, 3)`` (x, y, visibility 0/1/2) or absent.

``Record.instances`` gives the same data as a list of :class:`Instance` objects for
people; loaders read the flat arrays directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import msgpack
import numpy as np

#: Version of the record encoding. Readers refuse records with a newer version.
RECORD_VERSION = 1

FLAG_IGNORE = 1
FLAG_CROWD = 2


class RecordError(ValueError):
    """A record could not be decoded (corrupt bytes, unknown version, bad arrays)."""


@dataclass
class Instance:
    """One annotated object.

    ``polygons`` is a list of float32 ``(N, 2)`` arrays in (x, y) continuous pixel
    coordinates (several parts for COCO multi-polygons or labelme ``group_id``).
    ``bbox`` is the tight float32 ``(4,)`` box x1, y1, x2, y2 of all parts.
    ``keypoints`` is float32 ``(K, 3)`` (x, y, visibility) or ``None``.
    """

    label: int
    polygons: List[np.ndarray]
    bbox: np.ndarray
    ignore: bool = False
    crowd: bool = False
    keypoints: Optional[np.ndarray] = None


@dataclass
class Record:
    """One packed sample: the original encoded image bytes plus flat annotations."""

    id: int
    file_name: str
    image_bytes: bytes
    image_format: str  # "jpeg" or "png" (whatever the header says; never re-encoded)
    height: int
    width: int
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    part_offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int32))
    inst_parts: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    bboxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    keypoints: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ views
    @property
    def num_instances(self) -> int:
        return int(self.labels.shape[0])

    @property
    def instances(self) -> List[Instance]:
        """The annotations as :class:`Instance` objects (a convenience view, not the hot path)."""
        out = []
        for k in range(self.num_instances):
            parts = [
                self.points[self.part_offsets[p]: self.part_offsets[p + 1]]
                for p in range(self.inst_parts[k], self.inst_parts[k + 1])
            ]
            out.append(
                Instance(
                    label=int(self.labels[k]),
                    polygons=parts,
                    bbox=self.bboxes[k],
                    ignore=bool(self.flags[k] & FLAG_IGNORE),
                    crowd=bool(self.flags[k] & FLAG_CROWD),
                    keypoints=None if self.keypoints is None else self.keypoints[k],
                )
            )
        return out

    # ------------------------------------------------------------ construction
    @classmethod
    def from_instances(cls, id: int, file_name: str, image_bytes: bytes, image_format: str,
                       height: int, width: int, instances: List[Instance]) -> "Record":
        """Build a record from :class:`Instance` objects (flattening their parts)."""
        pts, part_off, inst_parts = [], [0], [0]
        for inst in instances:
            for poly in inst.polygons:
                poly = np.asarray(poly, np.float32).reshape(-1, 2)
                pts.append(poly)
                part_off.append(part_off[-1] + poly.shape[0])
            inst_parts.append(len(part_off) - 1)
        kps = None
        if instances and any(i.keypoints is not None for i in instances):
            k = max(np.asarray(i.keypoints).shape[0] for i in instances if i.keypoints is not None)
            kps = np.zeros((len(instances), k, 3), np.float32)
            for j, inst in enumerate(instances):
                if inst.keypoints is not None:
                    a = np.asarray(inst.keypoints, np.float32).reshape(-1, 3)
                    kps[j, : a.shape[0]] = a
        return cls(
            id=int(id), file_name=str(file_name), image_bytes=bytes(image_bytes),
            image_format=str(image_format), height=int(height), width=int(width),
            points=np.concatenate(pts).astype(np.float32) if pts else np.zeros((0, 2), np.float32),
            part_offsets=np.asarray(part_off, np.int32),
            inst_parts=np.asarray(inst_parts, np.int32),
            labels=np.asarray([i.label for i in instances], np.int32),
            bboxes=(np.stack([np.asarray(i.bbox, np.float32) for i in instances])
                    if instances else np.zeros((0, 4), np.float32)),
            flags=np.asarray([(FLAG_IGNORE if i.ignore else 0) | (FLAG_CROWD if i.crowd else 0)
                              for i in instances], np.uint8),
            keypoints=kps,
        )

    # ---------------------------------------------------------------- encoding
    def encode(self) -> bytes:
        """Serialize to the versioned msgpack layout described in the module docstring."""
        m = {
            "v": RECORD_VERSION,
            "id": int(self.id),
            "file": self.file_name,
            "fmt": self.image_format,
            "h": int(self.height),
            "w": int(self.width),
            "img": self.image_bytes,
            "pts": np.ascontiguousarray(self.points, "<f4").tobytes(),
            "poff": np.ascontiguousarray(self.part_offsets, "<i4").tobytes(),
            "iparts": np.ascontiguousarray(self.inst_parts, "<i4").tobytes(),
            "lab": np.ascontiguousarray(self.labels, "<i4").tobytes(),
            "box": np.ascontiguousarray(self.bboxes, "<f4").tobytes(),
            "flg": np.ascontiguousarray(self.flags, "u1").tobytes(),
        }
        if self.keypoints is not None:
            m["kps"] = np.ascontiguousarray(self.keypoints, "<f4").tobytes()
            m["nk"] = int(self.keypoints.shape[1])
        return msgpack.packb(m, use_bin_type=True)

    @classmethod
    def decode(cls, buf) -> "Record":
        """Parse bytes written by :meth:`encode`. Raises :class:`RecordError` on bad input."""
        try:
            m = msgpack.unpackb(buf, raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several types
            raise RecordError(f"record is not valid msgpack: {e}") from None
        if not isinstance(m, dict) or not isinstance(m.get("v"), int) or isinstance(m["v"], bool):
            raise RecordError("record has no version field (an integer)")
        if m["v"] > RECORD_VERSION:
            raise RecordError(f"record version {m['v']} is newer than this fastload supports "
                              f"({RECORD_VERSION}); upgrade fastload")
        why = _scalar_problem(m)
        if why is not None:
            raise RecordError(f"record fields are malformed: {why}")
        try:
            n_inst = len(m["lab"]) // 4
            kps = None
            if "kps" in m:
                kps = np.frombuffer(m["kps"], "<f4").reshape(n_inst, m["nk"], 3)
            rec = cls(
                id=m["id"], file_name=m["file"], image_bytes=m["img"], image_format=m["fmt"],
                height=m["h"], width=m["w"],
                points=np.frombuffer(m["pts"], "<f4").reshape(-1, 2),
                part_offsets=np.frombuffer(m["poff"], "<i4"),
                inst_parts=np.frombuffer(m["iparts"], "<i4"),
                labels=np.frombuffer(m["lab"], "<i4"),
                bboxes=np.frombuffer(m["box"], "<f4").reshape(-1, 4),
                flags=np.frombuffer(m["flg"], "u1"),
                keypoints=kps,
            )
        except (KeyError, ValueError, TypeError) as e:
            raise RecordError(f"record fields are malformed: {e}") from None
        why = _layout_problem(rec)
        if why is not None:
            raise RecordError(f"record {rec.id} ({rec.file_name}): {why}")
        return rec


#: the scalar fields of a record and the types they must have
_SCALARS = (("id", int), ("file", str), ("fmt", str), ("h", int), ("w", int), ("img", bytes))
_INT64 = 1 << 63


def _scalar_problem(m: dict) -> Optional[str]:
    """Why the record's scalar fields are not what :meth:`Record.encode` writes, or None:
    a record whose height is a string, or ``nk`` negative, must never reach a decoder."""
    for key, typ in _SCALARS:
        v = m.get(key)
        if not isinstance(v, typ) or isinstance(v, bool):
            return f"{key!r} is {type(v).__name__}, not {typ.__name__}"
    if not -_INT64 <= m["id"] < _INT64:
        return f"id {m['id']} is outside int64"
    if not (0 < m["h"] < 1 << 31 and 0 < m["w"] < 1 << 31):
        return f"image size {m['w']}x{m['h']} is not two positive int32"
    if "kps" in m and (not isinstance(m.get("nk"), int) or isinstance(m["nk"], bool)
                       or m["nk"] < 0):
        return f"keypoint count 'nk' {m.get('nk')!r} is not a non-negative integer"
    return None


def _layout_problem(rec: Record) -> Optional[str]:
    """Why the flat arrays do not describe polygons (offsets that would index past the
    arrays in the Numba kernels), or None. A few comparisons on small arrays."""
    po, ip = rec.part_offsets, rec.inst_parts
    n_inst = rec.labels.shape[0]
    if po.shape[0] < 1 or po[0] != 0 or po[-1] != rec.points.shape[0] or (np.diff(po) < 0).any():
        return (f"part_offsets do not split the {rec.points.shape[0]} points (they must rise "
                f"from 0 to the point count)")
    if ip.shape[0] != n_inst + 1 or ip[0] != 0 or ip[-1] != po.shape[0] - 1 or \
            (np.diff(ip) < 0).any():
        return (f"inst_parts do not split the {po.shape[0] - 1} parts among {n_inst} "
                f"instances")
    if rec.bboxes.shape[0] != n_inst or rec.flags.shape[0] != n_inst:
        return f"{rec.bboxes.shape[0]} boxes and {rec.flags.shape[0]} flags for {n_inst} instances"
    return None
