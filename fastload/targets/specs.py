"""Target specifications: which loss targets the loader builds, and their batch layout.

A spec turns one sample's :class:`~fastload.augment.geometry.TransformedInstances`
(polygons, boxes and keypoints already in OUTPUT pixel coordinates, continuous
convention of DESIGN.md) into arrays. Each spec declares its fixed per-sample shapes
(:meth:`TargetSpec.fixed_shapes`): the loader allocates ``(B, ...)`` arrays once per batch
and each sample fills its slot (:meth:`TargetSpec.fill`) on a CPU thread with the Numba
kernels of :mod:`fastload.targets` (GIL released). Per-instance outputs whose size varies
(``inst_masks`` without ``max_instances``) are returned by ``fill`` and padded by the loader.

Names accepted by ``DataLoader(targets=[...])``: ``"centernet"``, ``"masks"``, ``"fcos"``,
``"keypoints"``; or spec objects: :class:`CenterNetTarget`, :class:`MaskTarget`,
:class:`FCOSTarget`, :class:`KeypointTarget`, :class:`FunctionTarget`.

Maps at ``stride`` s have size ``(H // s, W // s)`` for an output image ``(H, W)``; a map
pixel (i, j) covers output pixels [j*s, (j+1)*s) x [i*s, (i+1)*s).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from fastload.targets import centernet as _centernet
from fastload.targets import fcos as _fcos
from fastload.targets import keypoints as _keypoints
from fastload.targets import masks as _masks

__all__ = ["DatasetInfo", "TargetSpec", "CenterNetTarget", "MaskTarget", "FCOSTarget",
           "KeypointTarget", "FunctionTarget", "resolve_targets"]


@dataclass
class DatasetInfo:
    """What specs need to know about the dataset (from its manifest)."""
    num_classes: int = 0
    classes: List[str] = field(default_factory=list)
    num_keypoints: int = 0
    flip_pairs: List[Tuple[int, int]] = field(default_factory=list)


def _map_size(out_size, stride) -> Tuple[int, int]:
    h, w = out_size
    if stride <= 0 or h % stride or w % stride:
        raise ValueError(f"output size {tuple(out_size)} is not a multiple of stride {stride}")
    return h // stride, w // stride


class TargetSpec:
    """Base class. Subclasses set ``name`` and implement the three methods."""
    name = "target"

    def bind(self, info: DatasetInfo) -> "TargetSpec":
        """Return a copy with dataset-dependent fields (num_classes...) resolved and checked."""
        return dataclasses.replace(self) if dataclasses.is_dataclass(self) else self

    def fixed_shapes(self, out_size) -> Dict[str, Tuple[tuple, str]]:
        """key -> (per-sample shape, dtype) of the fixed-size outputs."""
        return {}

    def fill(self, out: Dict[str, np.ndarray], inst, out_size) -> Optional[Dict[str, np.ndarray]]:
        """Fill this sample's slots: ``out[key]`` is a zeroed view of the batch array with a
        leading dimension of 1 (``batch[key][b:b+1]``), so the kernels' ``*_into(out, 0, ...)``
        forms write straight into the batch. Return variable-size arrays (first dim = number
        of instances), if any."""
        raise NotImplementedError


def _kept(inst, include_ignore=False):
    """Boolean mask of instances that produce targets (ignore regions excluded)."""
    ign = np.asarray(inst.ignore, bool)
    return np.ones_like(ign) if include_ignore else ~ign


@dataclass
class CenterNetTarget(TargetSpec):
    """CenterNet ("Objects as Points") targets: ``hm`` (C,h,w) float32, ``wh`` (max_objs,2),
    ``reg`` (max_objs,2), ``ind`` (max_objs,) int64, ``reg_mask`` (max_objs,) uint8.

    Boxes are the transformed instances' tight boxes divided by ``stride``; ignore
    regions produce no center. ``radius``: "centernet" (the original code's formula) or
    "corrected" (mmdetection's). ``num_classes``: from the dataset when None.
    """
    stride: int = 4
    max_objs: int = 128
    radius: str = "centernet"
    num_classes: Optional[int] = None
    name = "centernet"

    def bind(self, info):
        nc = self.num_classes if self.num_classes is not None else info.num_classes
        if not nc or nc < 1:
            raise ValueError("CenterNetTarget: num_classes unknown (the dataset has no class "
                             "list); pass CenterNetTarget(num_classes=N)")
        if self.radius not in ("centernet", "corrected"):
            raise ValueError(f"CenterNetTarget: radius must be 'centernet' or 'corrected', got {self.radius!r}")
        return dataclasses.replace(self, num_classes=int(nc))

    def fixed_shapes(self, out_size):
        h, w = _map_size(out_size, self.stride)
        m = self.max_objs
        return {"hm": ((self.num_classes, h, w), "float32"), "wh": ((m, 2), "float32"),
                "reg": ((m, 2), "float32"), "ind": ((m,), "int64"), "reg_mask": ((m,), "uint8")}

    def fill(self, out, inst, out_size):
        T = _centernet
        keep = _kept(inst)
        boxes = np.ascontiguousarray(np.asarray(inst.boxes, np.float32)[keep] / np.float32(self.stride))
        labels = np.ascontiguousarray(np.asarray(inst.labels)[keep]).astype(np.int64)
        T.centernet_into(out, 0, boxes, labels, radius=self.radius, coords="continuous")
        return None


@dataclass
class MaskTarget(TargetSpec):
    """Polygon masks at ``stride`` (:func:`fastload.targets.semantic_mask` /
    :func:`~fastload.targets.instance_masks`): ``semantic`` (h,w) uint8 (class id + 1,
    0 background, 255 ignore regions; later instances over earlier) and ``inst_masks``
    (M,h,w) uint8 (1 inside instance m, aligned with ``boxes[m]``, ignore instances
    included; the batch's ``ignore`` says which they are).

    A map pixel is inside when its center is (even-odd rule per part, union of parts,
    DESIGN.md convention). ``max_instances``: None pads ``inst_masks`` to the batch's
    largest instance count (the same M as ``boxes``); an int fixes M (instances beyond
    it get no mask).
    """
    stride: int = 4
    instance: bool = True
    semantic: bool = True
    max_instances: Optional[int] = None
    name = "masks"

    def bind(self, info):
        if not (self.instance or self.semantic):
            raise ValueError("MaskTarget: enable instance and/or semantic")
        if self.semantic and info.num_classes > 254:
            raise ValueError(f"MaskTarget: a uint8 semantic map holds at most 254 classes, "
                             f"the dataset has {info.num_classes}; use semantic=False")
        return dataclasses.replace(self)

    def fixed_shapes(self, out_size):
        h, w = _map_size(out_size, self.stride)
        d = {}
        if self.semantic:
            d["semantic"] = ((h, w), "uint8")
        if self.instance and self.max_instances is not None:
            d["inst_masks"] = ((int(self.max_instances), h, w), "uint8")
        return d

    def fill(self, out, inst, out_size):
        T = _masks
        h, w = _map_size(out_size, self.stride)
        pts, po, ip = inst.points, inst.part_offsets, inst.inst_parts
        if self.semantic:
            T.semantic_mask(pts, po, ip, inst.labels, np.asarray(inst.ignore, bool), h, w,
                            float(self.stride), out=out["semantic"][0])
        if not self.instance:
            return None
        if self.max_instances is not None:
            T.instance_masks(pts, po, ip, h, w, float(self.stride), int(self.max_instances),
                             out=out["inst_masks"][0])
            return None
        return {"inst_masks": T.instance_masks(pts, po, ip, h, w, float(self.stride))}


@dataclass
class FCOSTarget(TargetSpec):
    """FCOS targets (:func:`fastload.targets.fcos_targets`): ``fcos_labels`` (L,) int64 (class + 1,
    0 background), ``fcos_ltrb`` (L,4) float32, ``fcos_centerness`` (L,) float32, over the
    locations of all FPN levels concatenated (L = ``fcos_num_locations(H, W, strides)``).
    Boxes are the transformed instances' boxes in output-image pixels; ignore regions
    produce no positives."""
    strides: Tuple[int, ...] = (8, 16, 32, 64, 128)
    size_ranges: Optional[Tuple[Tuple[float, float], ...]] = None  # None: FCOS's defaults
    center_sampling_radius: float = 0.0
    norm_reg: bool = False
    num_classes: Optional[int] = None
    name = "fcos"

    def bind(self, info):
        nc = self.num_classes if self.num_classes is not None else (info.num_classes or None)
        if self.size_ranges is None and tuple(self.strides) != (8, 16, 32, 64, 128):
            raise ValueError("FCOSTarget: with non-default strides give size_ranges too "
                             "(one (lo, hi) pair per stride)")
        return dataclasses.replace(self, num_classes=nc)

    def _kw(self):
        T = _fcos
        return dict(strides=tuple(self.strides),
                    size_ranges=T.SIZE_RANGES if self.size_ranges is None else tuple(self.size_ranges))

    def fixed_shapes(self, out_size):
        T = _fcos
        a = T.alloc_fcos(1, out_size[0], out_size[1], strides=tuple(self.strides))
        return {k: (v.shape[1:], v.dtype.str) for k, v in a.items()}

    def fill(self, out, inst, out_size):
        T = _fcos
        keep = _kept(inst)
        T.fcos_into(out, 0, np.ascontiguousarray(inst.boxes[keep]), inst.labels[keep],
                    out_size[0], out_size[1], self.num_classes,
                    center_sampling_radius=self.center_sampling_radius, norm_reg=self.norm_reg,
                    **self._kw())
        return None


@dataclass
class KeypointTarget(TargetSpec):
    """CenterNet multi_pose keypoint targets at ``stride``
    (:func:`fastload.targets.keypoint_targets`): ``hp_hm`` (K,h,w), ``hp_offset``
    (max_objs*K,2), ``hp_ind``, ``hp_mask``, ``hp_kps`` (max_objs,2K), ``hp_kps_mask``.
    Objects are the non-ignore instances in order, like :class:`CenterNetTarget` (use the
    same ``max_objs`` so object k is the same in both). Needs a dataset with keypoints."""
    stride: int = 4
    max_objs: int = 128
    radius: str = "centernet"
    num_keypoints: Optional[int] = None
    name = "keypoints"

    def bind(self, info):
        k = self.num_keypoints if self.num_keypoints is not None else info.num_keypoints
        if not k:
            raise ValueError("KeypointTarget: the dataset has no keypoints "
                             "(manifest keypoint_names is empty); pass num_keypoints=K")
        return dataclasses.replace(self, num_keypoints=int(k))

    def fixed_shapes(self, out_size):
        T = _keypoints
        h, w = _map_size(out_size, self.stride)
        a = T.alloc_keypoints(1, self.num_keypoints, h, w, self.max_objs)
        return {k: (v.shape[1:], v.dtype.str) for k, v in a.items()}

    def fill(self, out, inst, out_size):
        T = _keypoints
        keep = _kept(inst)
        n = int(keep.sum())
        K = self.num_keypoints
        kps = np.zeros((n, K, 3), np.float32)
        if inst.keypoints is not None:
            src = np.asarray(inst.keypoints, np.float32)[keep]
            kps[:, :src.shape[1]] = src[:, :K]
        kps[..., :2] /= np.float32(self.stride)
        boxes = np.asarray(inst.boxes, np.float32)[keep] / np.float32(self.stride)
        T.keypoint_targets_into(out, 0, boxes, kps, radius=self.radius)
        return None


class FunctionTarget(TargetSpec):
    """A user target: ``fn(inst: TransformedInstances, out_size: (H, W)) -> dict`` of numpy
    arrays, the same shapes for every sample; the loader stacks them into ``(B, ...)``.
    ``fn`` runs on the loader's CPU threads: make it thread-safe (Numba ``nogil`` kernels
    scale; plain Python holds the GIL)."""
    name = "function"

    def __init__(self, fn: Callable):
        if not callable(fn):
            raise TypeError(f"FunctionTarget needs a callable, got {type(fn).__name__}")
        self.fn = fn

    def bind(self, info):
        return self

    def fill(self, out, inst, out_size):
        r = self.fn(inst, tuple(out_size))
        if not isinstance(r, dict):
            raise TypeError(f"FunctionTarget {getattr(self.fn, '__name__', self.fn)!r} must return "
                            f"a dict of numpy arrays, got {type(r).__name__}")
        return {k: np.asarray(v) for k, v in r.items()}


_NAMES = {"centernet": CenterNetTarget, "masks": MaskTarget, "fcos": FCOSTarget,
          "keypoints": KeypointTarget}


def resolve_targets(targets, info: DatasetInfo) -> List[TargetSpec]:
    """Names / spec objects / callables -> bound specs. Raises ValueError on unknown names."""
    if targets is None:
        targets = ()
    if isinstance(targets, (str, TargetSpec)) or callable(targets):
        targets = [targets]
    specs = []
    for t in targets:
        if isinstance(t, str):
            if t not in _NAMES:
                raise ValueError(f"unknown target {t!r}; known: {sorted(_NAMES)} or a spec object "
                                 "(fastload.targets.specs)")
            t = _NAMES[t]()
        elif not isinstance(t, TargetSpec):
            if callable(t):
                t = FunctionTarget(t)
            else:
                raise TypeError(f"targets entries must be names or TargetSpec objects, got {t!r}")
        specs.append(t.bind(info))
    names = [type(s).__name__ for s in specs if not isinstance(s, FunctionTarget)]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"target given twice: {sorted(dup)} (their keys would collide)")
    return specs
