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
        from fastload.targets import centernet as T
        keep = _kept(inst)
        boxes = np.ascontiguousarray(np.asarray(inst.boxes, np.float32)[keep] / np.float32(self.stride))
        labels = np.ascontiguousarray(np.asarray(inst.labels)[keep]).astype(np.int64)
        T.centernet_into(out, 0, boxes, labels, radius=self.radius, coords="continuous")
        return None


@dataclass
class MaskTarget(TargetSpec):
    """Polygon masks at ``stride``: ``semantic`` (h,w) uint8 (class id + 1, 0 background,
    255 ignore regions) and ``inst_masks`` (M,h,w) uint8 (1 inside instance m, aligned with
    ``boxes[m]``; ignore instances get an all-zero mask... see the targets module).

    A map pixel is inside when its center is (even-odd rule, DESIGN.md convention).
    ``max_instances``: None pads ``inst_masks`` to the batch's largest instance count
    (same M as ``boxes``); an int fixes M (later instances dropped from the masks).
    """
    stride: int = 4
    instance: bool = True
    semantic: bool = True
    max_instances: Optional[int] = None
    name = "masks"

    def bind(self, info):
        if not (self.instance or self.semantic):
            raise ValueError("MaskTarget: enable instance and/or semantic")
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
        from fastload import targets as T
        h, w = _map_size(out_size, self.stride)
        pts = np.ascontiguousarray(inst.points, np.float32)
        po = np.ascontiguousarray(inst.part_offsets, np.int32)
        ip = np.ascontiguousarray(inst.inst_parts, np.int32)
        if self.semantic:
            T.semantic_mask_into(out["semantic"][0], pts, po, ip, np.asarray(inst.labels, np.int32),
                                 np.asarray(inst.ignore, bool), float(self.stride))
        if not self.instance:
            return None
        n = int(np.asarray(inst.labels).shape[0])
        if self.max_instances is not None:
            m = min(n, int(self.max_instances))
            T.instance_masks_into(out["inst_masks"][0, :m], pts, po, ip[:m + 1], float(self.stride))
            return None
        masks = np.zeros((n, h, w), np.uint8)
        T.instance_masks_into(masks, pts, po, ip, float(self.stride))
        return {"inst_masks": masks}


class _GenericTarget(TargetSpec):
    """A spec whose kernel returns a dict of fixed-shape arrays; shapes found by one call
    on zero instances."""
    _shapes = None

    def _compute(self, inst, out_size) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def fixed_shapes(self, out_size):
        if self._shapes is None or self._shapes[0] != tuple(out_size):
            from fastload.augment.geometry import TransformedInstances
            empty = TransformedInstances(
                points=np.zeros((0, 2), np.float32), part_offsets=np.zeros(1, np.int32),
                inst_parts=np.zeros(1, np.int32), labels=np.zeros(0, np.int32),
                boxes=np.zeros((0, 4), np.float32), ignore=np.zeros(0, bool),
                keypoints=None, src_index=np.zeros(0, np.int32))
            r = self._compute(empty, out_size)
            self._shapes = (tuple(out_size), {k: (v.shape, v.dtype.str) for k, v in r.items()})
        return dict(self._shapes[1])

    def fill(self, out, inst, out_size):
        r = self._compute(inst, out_size)
        for k, v in r.items():
            out[k][0] = v
        return None


@dataclass
class FCOSTarget(_GenericTarget):
    """FCOS targets over the FPN levels (keys prefixed ``fcos_``, layout of
    :func:`fastload.targets.fcos`): per location the class, the l,t,r,b distances and the
    centerness; a location inside several boxes takes the smallest one."""
    strides: Tuple[int, ...] = (8, 16, 32, 64, 128)
    size_ranges: Tuple[float, ...] = (0, 64, 128, 256, 512, float("inf"))
    center_sampling: Optional[float] = None
    num_classes: Optional[int] = None
    name = "fcos"

    def bind(self, info):
        nc = self.num_classes if self.num_classes is not None else info.num_classes
        return dataclasses.replace(self, num_classes=int(nc or 0))

    def _compute(self, inst, out_size):
        from fastload import targets as T
        keep = _kept(inst)
        r = T.fcos(np.ascontiguousarray(np.asarray(inst.boxes, np.float32)[keep]),
                   np.ascontiguousarray(np.asarray(inst.labels)[keep]).astype(np.int64),
                   out_size[0], out_size[1], strides=tuple(self.strides),
                   size_ranges=tuple(self.size_ranges), center_sampling=self.center_sampling)
        return {(k if k.startswith("fcos_") else "fcos_" + k): v for k, v in r.items()}


@dataclass
class KeypointTarget(_GenericTarget):
    """Keypoint heatmaps at ``stride`` (keys prefixed ``hp_``, layout of
    :func:`fastload.targets.keypoint_heatmaps`): per-keypoint gaussians (visible
    keypoints only) and offsets. Needs a dataset with keypoints."""
    stride: int = 4
    max_objs: int = 32
    sigma: Optional[float] = None
    num_keypoints: Optional[int] = None
    name = "keypoints"

    def bind(self, info):
        k = self.num_keypoints if self.num_keypoints is not None else info.num_keypoints
        if not k:
            raise ValueError("KeypointTarget: the dataset has no keypoints "
                             "(manifest keypoint_names is empty); pass num_keypoints=K")
        return dataclasses.replace(self, num_keypoints=int(k))

    def _compute(self, inst, out_size):
        from fastload import targets as T
        h, w = _map_size(out_size, self.stride)
        keep = _kept(inst)
        n = int(keep.sum())
        kps = (np.zeros((n, self.num_keypoints, 3), np.float32) if inst.keypoints is None
               else np.asarray(inst.keypoints, np.float32)[keep])
        kps = kps.copy()
        kps[..., :2] /= np.float32(self.stride)
        boxes = np.asarray(inst.boxes, np.float32)[keep] / np.float32(self.stride)
        r = T.keypoint_heatmaps(np.ascontiguousarray(kps), np.ascontiguousarray(boxes), h, w,
                                max_objs=self.max_objs)
        return {(k if k.startswith("hp_") else "hp_" + k): v for k, v in r.items()}


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
