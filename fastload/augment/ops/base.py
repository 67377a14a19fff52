"""What one augmentation op declares: :class:`Op`, its config fields, its DALI inputs.

An op is one module under ``fastload/augment/ops/`` holding a subclass of :class:`Op` and
one instance of it named ``OP``. Everything about the op is in that module:

- ``fields``: its :class:`ConfigField` s (name, default, docs, validation, the value that
  turns it off); ``AugmentConfig`` is generated from them;
- ``values``: the per-sample values it draws, each with its *identity* (the value that
  leaves the image unchanged); ``SampleParams`` is generated from them;
- :meth:`Op.draw`: the per-sample draw (see ``fastload.augment.params`` for the streams);
- ``moves_coordinates`` + :meth:`Op.compose`: ops that move pixels compose the sample's
  one matrix (the warp itself is the pipeline's, not an op's);
- ``pixel`` + ``kernel_args`` + :meth:`Op.kernel_values`: its piece of the fused CPU
  kernel, a function ``pixel(r, g, b, i, j, *args) -> (r, g, b)`` on one output pixel
  (float64 values in 0..255, row ``i``, column ``j``), pasted into the kernel's loop as
  source (``fastload.augment.splice`` says what it may contain); decorated
  ``@njit(inline="always")`` so that Numba code can call it too;
- ``dali_inputs`` + :meth:`Op.dali_fragment`: its piece of the DALI graph and the
  per-sample external inputs that feed it;
- :meth:`Op.reference`: the slow, obvious NumPy version on the whole (H, W, 3) float64 image.

``order`` places the op in the image pipeline (after the warp, before clamp + normalize).
``docs/extending.md`` walks through adding one.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

_NO_OFF = object()


# ------------------------------------------------------------------ config fields
@dataclass(frozen=True)
class ConfigField:
    """One ``AugmentConfig`` field: ``coerce(name, value)`` normalizes a value or raises
    ``ValueError`` naming the field; ``off`` is the value that turns its op off (if any)."""

    name: str
    default: Any
    doc: str
    coerce: Callable[[str, Any], Any]
    off: Any = _NO_OFF

    @property
    def has_off(self) -> bool:
        return self.off is not _NO_OFF


def bad_value(name, want, value) -> ValueError:
    """The error for a malformed ``AugmentConfig.<name>``."""
    return ValueError(f"AugmentConfig.{name} must be {want}, got {value!r}")


def is_number(v) -> bool:
    """A real number (not a bool)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def finite_number(name, v, want) -> float:
    """``v`` as a float, or :func:`bad_value`."""
    if not is_number(v) or not math.isfinite(float(v)):
        raise bad_value(name, want, v)
    return float(v)


def _coerce_probability(name, v):
    p = finite_number(name, v, "in [0, 1]")
    if not 0.0 <= p <= 1.0:
        raise bad_value(name, "in [0, 1]", v)
    return p


def _pair(name, v, want):
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) != 2:
        raise bad_value(name, want, v)
    return v[0], v[1]


def _range_coercer(shorthand: Optional[str], minimum: Optional[float], positive: bool):
    want = "a (low, high) pair with low <= high"
    if shorthand == "symmetric":
        want = "a number x >= 0 (the range (-x, x)) or " + want
    elif shorthand == "around_one":
        want = "a number 0 <= x < 1 (the range (1 - x, 1 + x)) or " + want

    def coerce(name, v):
        if shorthand and is_number(v):
            x = finite_number(name, v, want)
            if x < 0 or (shorthand == "around_one" and x >= 1):
                raise bad_value(name, want, v)
            v = (-x, x) if shorthand == "symmetric" else (1.0 - x, 1.0 + x)
        lo, hi = _pair(name, v, want)
        lo, hi = finite_number(name, lo, want), finite_number(name, hi, want)
        if lo > hi:
            raise bad_value(name, want, v)
        if minimum is not None and lo < minimum:
            raise ValueError(f"AugmentConfig.{name} must start at >= {minimum}, got {(lo, hi)}")
        if positive and lo <= 0:
            raise ValueError(f"AugmentConfig.{name} must be positive, got {(lo, hi)}")
        return (lo, hi)
    return coerce


def _count_range(name, v):
    want = "a (low, high) pair of integers with 0 <= low <= high"
    lo, hi = _pair(name, v, want)
    for x in (lo, hi):
        if not is_number(x) or float(x) != int(x):
            raise bad_value(name, want, v)
    lo, hi = int(lo), int(hi)
    if not 0 <= lo <= hi:
        raise bad_value(name, want, v)
    return (lo, hi)


def probability(name: str, default: float, doc: str, off: Any = _NO_OFF) -> ConfigField:
    """A probability in [0, 1]."""
    return ConfigField(name, float(default), doc, _coerce_probability, off)


def value_range(name: str, default: Tuple[float, float], doc: str, off: Any = _NO_OFF,
                shorthand: Optional[str] = None, minimum: Optional[float] = None,
                positive: bool = False) -> ConfigField:
    """A ``(low, high)`` float range, drawn uniformly per sample. ``shorthand``:
    ``"symmetric"`` accepts a number ``x`` for ``(-x, x)``, ``"around_one"`` a number ``x``
    for ``(1 - x, 1 + x)`` (albumentations' convention for limits and scale)."""
    coerce = _range_coercer(shorthand, minimum, positive)
    return ConfigField(name, coerce(name, default), doc, coerce,
                       off if off is _NO_OFF else coerce(name, off))


def count_range(name: str, default: Tuple[int, int], doc: str) -> ConfigField:
    """An inclusive ``(low, high)`` integer range."""
    return ConfigField(name, _count_range(name, default), doc, _count_range)


def plain_field(name: str, default: Any, doc: str, coerce: Callable[[str, Any], Any]) -> ConfigField:
    """Any other field: ``coerce(name, value)`` validates it."""
    return ConfigField(name, coerce(name, default), doc, coerce)


# ------------------------------------------------------------------ draws, frames, DALI
class Frame(NamedTuple):
    """Sizes a draw may depend on: the decoded source and the output, in pixels."""

    src_h: int
    src_w: int
    out_h: int
    out_w: int


class Draws(NamedTuple):
    """The randomness handed to :meth:`Op.draw`.

    ``uniforms``: the op's share of the legacy block (its ``legacy_uniforms`` slice; empty
    for other ops). ``gen``: for a legacy op the sample's shared generator, positioned
    after the block and the extra draws of the legacy ops before it; for any other op its
    own stream (``fastload.augment.params``)."""

    uniforms: Sequence[float]
    gen: np.random.Generator


@dataclass(frozen=True)
class DaliInput:
    """A per-sample external input of an op's DALI fragment: ``feed(params, cfg)`` returns
    one sample's host array (``dtype`` "float32" or "uint8", ``ndim`` dimensions). Its source
    in the graph is named ``"<op>_<name>"``.

    ``batch_feed(params_list, cfg, device)`` instead (``feed`` None) makes the whole batch's
    input at once where the graph runs: ``device`` is None for DALI's CPU operators (return a
    (B, ...) NumPy array) or the graph's CUDA ``torch.device`` (return a (B, ...) torch
    tensor on it, made on the current stream); the source is then on the GPU, so the input
    never crosses PCIe (e.g. the noise field)."""

    name: str
    dtype: str
    ndim: int
    feed: Optional[Callable[[Any, Any], np.ndarray]]
    layout: Optional[str] = None
    batch_feed: Optional[Callable[[Sequence[Any], Any, Any], Any]] = None

    def __post_init__(self):
        if (self.feed is None) == (self.batch_feed is None):
            raise ValueError(f"DaliInput {self.name!r}: give exactly one of feed and batch_feed")


class DaliContext(NamedTuple):
    """What a DALI fragment needs besides its inputs: DALI's ``fn`` and ``types``, whether
    the graph runs on a GPU, and the config."""

    fn: Any
    types: Any
    gpu: bool
    cfg: Any

    def on_device(self, node):
        """``node`` where the image is (GPU tensor inputs for arithmetic; named arguments
        of DALI operators stay on the CPU)."""
        return node.gpu() if self.gpu else node


def same_value(a, b) -> bool:
    """Equality of per-sample values: arrays by content, lists/tuples element-wise."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return bool(a == b)


def lerp(rng: Tuple[float, float], u: float) -> float:
    """``low + (high - low) * u``, exactly ``low`` for an empty range (the draw rule)."""
    lo, hi = float(rng[0]), float(rng[1])
    return lo + (hi - lo) * u if hi > lo else lo


# ------------------------------------------------------------------ the op
class Op:
    """Base class of an augmentation op; see the module docstring for each declaration."""

    name: str = ""
    order: int = 0
    fields: Tuple[ConfigField, ...] = ()
    values: Dict[str, Any] = {}
    legacy_uniforms: Optional[slice] = None  # the four original ops only: see params.py
    moves_coordinates = False
    pixel = None
    kernel_args: Tuple[str, ...] = ()
    dali_inputs: Tuple[DaliInput, ...] = ()

    # ---------------------------------------------------------------- config
    def check(self, cfg) -> None:
        """Checks across this op's fields (each field validates itself); raise ValueError."""

    def active(self, cfg) -> bool:
        """Whether ``cfg`` can draw a sample this op changes (its stage is in the kernel and
        the DALI graph). Default: any of its fields differs from its ``off`` value."""
        return any(getattr(cfg, f.name) != f.off for f in self.fields if f.has_off)

    def off_values(self) -> Dict[str, Any]:
        """Field values that turn the op off (``AugmentConfig.off``)."""
        return {f.name: f.off for f in self.fields if f.has_off}

    # ---------------------------------------------------------------- per sample
    @functools.cached_property
    def stream(self) -> Optional[int]:
        """The Philox counter word of this op's own stream (``None`` for legacy ops): a
        64-bit hash of the op's name with the top bit set, so it never meets the legacy
        stream's counters (which count up from 0)."""
        if self.legacy_uniforms is not None:
            return None
        h = hashlib.blake2b(self.name.encode(), digest_size=8).digest()
        return int.from_bytes(h, "little") | (1 << 63)

    def draw(self, cfg, draws: Draws, frame: Frame) -> Dict[str, Any]:
        """This sample's values (keys from ``values``) from ``draws``."""
        raise NotImplementedError

    def identity(self) -> Dict[str, Any]:
        """Values that leave the image unchanged (fresh copies)."""
        return {k: copy.copy(v) for k, v in self.values.items()}

    def needed(self, params) -> bool:
        """Whether this sample's values change the image. Default: not the identity."""
        return any(not same_value(getattr(params, k), v) for k, v in self.values.items())

    def compose(self, m: np.ndarray, params: Dict[str, Any], frame: Frame) -> np.ndarray:
        """``moves_coordinates`` ops: the float64 (3, 3) matrix after this op, from the
        matrix ``m`` before it and the sample's ``params`` values."""
        raise NotImplementedError

    # ---------------------------------------------------------------- fused CPU kernel
    def kernel_values(self, params, cfg, scratch: dict) -> tuple:
        """The arguments of ``pixel`` after (r, g, b, i, j), in ``kernel_args`` order.
        ``scratch``: a per-thread dict for reusable buffers. Types must not depend on the
        sample (one compiled kernel)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- DALI
    def dali_fragment(self, img, inputs: Dict[str, Any], ctx: DaliContext):
        """The uint8 HWC image node after this op; ``inputs`` maps each ``dali_inputs``
        name to its external source node."""
        raise NotImplementedError

    # ---------------------------------------------------------------- reference
    def reference(self, v: np.ndarray, params, cfg) -> np.ndarray:
        """The slow, obvious NumPy version: float64 (H, W, 3) in, float64 (H, W, 3) out."""
        raise NotImplementedError
