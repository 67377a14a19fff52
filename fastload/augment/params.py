"""Per-sample augmentation parameters, drawn from (seed, epoch, index) by counter-based
generators, and :class:`SampleParams`, the container both are built from the op table.

The parameter sampler is the single source of randomness for geometry and photometry:
backends (DALI GPU, DALI CPU, fused Numba CPU) take these parameters as inputs and draw
nothing of their own, so image and annotations always agree.

Streams (the draw rule)
-----------------------
The key of every stream of a sample is the 128-bit Philox-4x64 key
``K = [seed mod 2**64, (epoch << 32) | index]`` (``epoch`` and ``index`` in ``[0, 2**32)``);
no SeedSequence, no global state: the same (seed, epoch, index) gives the same streams on
any machine, in any thread, in any order.

1. The legacy stream (counter starting at 0) serves the four original ops, in a layout
   kept so that their draws stay bit-identical to fastload 0.1:
   ``u = gen.random(10)`` -- each legacy op owns a declared slice of it (``legacy_uniforms``:
   affine 0:6 = hflip, vflip, rotation, scale, tx, ty; hue 6; noise 7 = sigma; shadow
   8:10 = on, darkness) -- then each legacy op's extra draws in the order of its slice
   (noise: ``noise_seed = gen.integers(0, 2**64, dtype=uint64)``; shadow, only when a
   shadow is drawn: the polygons). This block is frozen: no op joins it.
2. Every other op draws from its own stream: the same key with the counter's top word set
   to the op's ``stream`` (a 64-bit hash of its name with the top bit set; the legacy
   counter counts up from 0 and never gets there). Adding, enabling or changing such an op
   never changes another op's draws. An op whose config is off draws nothing and gets its
   identity values.

The matrix: ``fit_matrix`` (source frame onto the output: letterbox or stretch), then each
op that moves coordinates composes onto it in table order (``fastload.augment.ops.affine``),
in float64, rounded to float32 once.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import field, fields, make_dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from fastload.augment.ops import GEOMETRIC_OPS, OPS, BY_NAME
from fastload.augment.ops.base import Draws, Frame, same_value
from fastload.augment.ops.hue import hue_matrix
from fastload.augment.ops.shadow import shadow_mask

__all__ = ["SampleParams", "make_generator", "stream_generator", "fit_matrix",
           "compose_matrix", "sample_params", "sample_params_batch", "shadow_mask",
           "hue_matrix", "batch_matrices"]

_U64 = (1 << 64) - 1
_LEGACY = tuple(sorted((op for op in OPS if op.legacy_uniforms is not None),
                       key=lambda op: op.legacy_uniforms.start))
_LEGACY_UNIFORMS = max((op.legacy_uniforms.stop for op in _LEGACY), default=0)
_STREAM_OPS = tuple(op for op in OPS if op.legacy_uniforms is None)


# ------------------------------------------------------------------ the container
class _ParamsMethods:
    def __eq__(self, other):  # arrays make the generated __eq__ ambiguous
        if not isinstance(other, SampleParams):
            return NotImplemented
        return all(same_value(getattr(self, f.name), getattr(other, f.name))
                   for f in fields(self))

    __hash__ = None

    def values_of(self, op_name: str) -> Dict[str, Any]:
        """The values of one op (``{name: value}``)."""
        return {k: getattr(self, k) for k in BY_NAME[op_name].values}


def _value_field(default):
    if isinstance(default, (list, dict, set)):
        return field(default_factory=functools.partial(copy.copy, default), kw_only=True)
    return field(default=default, kw_only=True)


def _params_doc() -> str:
    lines = ["One sample's augmentation: ``matrix`` plus every op's values.", "",
             "``matrix``: float32 (3, 3) mapping source image pixel coords to output pixel "
             "coords (continuous", "convention, DESIGN.md). Values (keyword arguments; a "
             "value left out is its op's identity):", ""]
    for op in OPS:
        lines.append(f"- {op.name}: " + ", ".join(f"``{k}`` (identity ``{v!r}``)"
                                                  for k, v in op.values.items()))
    lines += ["", "``shadow_polygons`` are float32 (N, 2) in OUTPUT pixel coords; "
              "``noise_sigma`` in 0..255 units."]
    return "\n".join(lines)


SampleParams = make_dataclass(
    "SampleParams",
    [("matrix", np.ndarray)]
    + [(k, Any, _value_field(v)) for op in OPS for k, v in op.values.items()],
    bases=(_ParamsMethods,), eq=False,
    namespace={"__module__": __name__, "__doc__": _params_doc()},
)


# ------------------------------------------------------------------ generators
def _key(seed: int, epoch: int, index: int) -> np.ndarray:
    seed, epoch, index = int(seed), int(epoch), int(index)
    if not 0 <= epoch < (1 << 32):
        raise ValueError(f"epoch must be in [0, 2**32), got {epoch}")
    if not 0 <= index < (1 << 32):
        raise ValueError(f"index must be in [0, 2**32), got {index}")
    return np.array([seed & _U64, (epoch << 32) | index], dtype=np.uint64)


def make_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The sample's legacy stream (see the module docstring for the key)."""
    return np.random.Generator(np.random.Philox(key=_key(seed, epoch, index)))


def stream_generator(seed: int, epoch: int, index: int, stream: int) -> np.random.Generator:
    """The sample's stream number ``stream`` (an op's ``Op.stream``): the same key, the
    counter starting at ``stream << 192``."""
    counter = np.array([0, 0, 0, int(stream) & _U64], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=_key(seed, epoch, index), counter=counter))


# ------------------------------------------------------------------ the matrix
def fit_matrix(src_h: int, src_w: int, out_h: int, out_w: int, keep_aspect: bool) -> np.ndarray:
    """float64 (3, 3): source frame -> output frame (letterbox centered, or stretch)."""
    if keep_aspect:
        s = min(out_w / src_w, out_h / src_h)
        return np.array([[s, 0.0, (out_w - s * src_w) / 2.0],
                         [0.0, s, (out_h - s * src_h) / 2.0],
                         [0.0, 0.0, 1.0]])
    return np.array([[out_w / src_w, 0.0, 0.0], [0.0, out_h / src_h, 0.0], [0.0, 0.0, 1.0]])


def compose_matrix(src_h: int, src_w: int, out_h: int, out_w: int, keep_aspect: bool = True,
                   hflip: bool = False, vflip: bool = False, rotate_deg: float = 0.0,
                   scale: float = 1.0, translate: Tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The float32 (3, 3) source->output matrix for explicit parameters
    (``fastload.augment.ops.affine``)."""
    frame = Frame(int(src_h), int(src_w), int(out_h), int(out_w))
    m = fit_matrix(src_h, src_w, out_h, out_w, keep_aspect)
    values = {"hflip": hflip, "vflip": vflip, "rotate_deg": rotate_deg, "scale": scale,
              "translate": translate}
    return BY_NAME["affine"].compose(m, values, frame).astype(np.float32)


# ------------------------------------------------------------------ the sampler
def sample_params(cfg, seed: int, epoch: int, index: int, src_h: int, src_w: int) -> SampleParams:
    """Draw one sample's parameters from (seed, epoch, index); see the module docstring.

    Same inputs -> bit-identical outputs on any machine/thread/order. ``src_h``/``src_w``
    are the decoded source image size in pixels.
    """
    src_h, src_w = int(src_h), int(src_w)
    if src_h <= 0 or src_w <= 0:
        raise ValueError(f"sample {index}: source size must be positive, got {src_h}x{src_w}")
    out_h, out_w = cfg.out_size
    frame = Frame(src_h, src_w, out_h, out_w)
    gen = make_generator(seed, epoch, index)
    u = gen.random(_LEGACY_UNIFORMS).tolist()
    values: Dict[str, Any] = {}
    for op in _LEGACY:
        values.update(op.draw(cfg, Draws(u[op.legacy_uniforms], gen), frame))
    for op in _STREAM_OPS:
        if op.active(cfg):
            values.update(op.draw(cfg, Draws((), stream_generator(seed, epoch, index, op.stream)),
                                  frame))
    m = fit_matrix(src_h, src_w, out_h, out_w, cfg.keep_aspect)
    for op in GEOMETRIC_OPS:
        m = op.compose(m, {k: values.get(k, v) for k, v in op.values.items()}, frame)
    return SampleParams(matrix=m.astype(np.float32), **values)


def sample_params_batch(cfg, seed: int, epoch: int, indices: Sequence[int],
                        sizes: Sequence[Tuple[int, int]]) -> List[SampleParams]:
    """:func:`sample_params` for each ``index`` with its source ``(height, width)`` in ``sizes``."""
    if len(indices) != len(sizes):
        raise ValueError(f"indices ({len(indices)}) and sizes ({len(sizes)}) differ in length")
    return [sample_params(cfg, seed, epoch, int(i), int(h), int(w))
            for i, (h, w) in zip(indices, sizes)]


def batch_matrices(params_list: Sequence[SampleParams]) -> np.ndarray:
    """float32 (B, 2, 3): the 2x3 parts of the matrices (DALI ``warp_affine`` layout)."""
    return np.ascontiguousarray(np.stack([p.matrix[:2] for p in params_list]), np.float32)
