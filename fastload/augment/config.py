"""`AugmentConfig`: what augmentation to apply, shared by the loader, `bench` and `inspect`.

Generated from the common fields below plus every op's fields (``fastload.augment.ops``),
in that order: a dataclass with one validated field each (a malformed value raises
``ValueError`` naming the field; the fields after ``pad_value`` are keyword-only),
``off()`` built from the ops' "off" values, and JSON/YAML (de)serialization.
"""
from __future__ import annotations

import json
from dataclasses import asdict, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from fastload.augment.ops import OPS
from fastload.augment.ops.base import (ConfigField, bad_value, finite_number, is_number,
                                       plain_field, probability)
from fastload.dtypes import OUTPUT_DTYPES


def _out_size(name, v):
    want = "a (height, width) pair of positive integers"
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) != 2:
        raise bad_value(name, want, v)
    if not all(is_number(x) and float(x) == int(x) and int(x) > 0 for x in v):
        raise bad_value(name, want, v)
    return (int(v[0]), int(v[1]))


def _flag(name, v):
    if isinstance(v, (bool, np.bool_)) or (is_number(v) and v in (0, 1)):
        return bool(v)
    raise bad_value(name, "true or false", v)


def _number(name, v):
    return finite_number(name, v, "a number")


def _triple(positive):
    def coerce(name, v):
        want = "3 positive numbers (R, G, B)" if positive else "3 numbers (R, G, B)"
        if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) != 3:
            raise bad_value(name, want, v)
        out = tuple(finite_number(name, x, want) for x in v)
        if positive and min(out) <= 0:
            raise bad_value(name, want, v)
        return out
    return coerce


def _dtype(name, v):
    if v not in OUTPUT_DTYPES:
        raise bad_value(name, f"one of {OUTPUT_DTYPES}", v)
    return str(v)


COMMON_HEAD: Tuple[ConfigField, ...] = (
    plain_field("out_size", (512, 512), "output (height, width)", _out_size),
    plain_field("keep_aspect", True, "letterbox (uniform scale, centered, padded with "
                "pad_value) instead of stretching", _flag),
    plain_field("pad_value", 0.0, "value (0..255) of output pixels whose source position is "
                "outside the image", _number),
)
COMMON_TAIL: Tuple[ConfigField, ...] = (
    plain_field("mean", (123.675, 116.28, 103.53), "per-channel normalization mean, 0..255 "
                "units", _triple(False)),
    plain_field("std", (58.395, 57.12, 57.375), "per-channel normalization std, 0..255 units",
                _triple(True)),
    plain_field("dtype", "float32", "output dtype: float32, float16, bfloat16 (float32 in "
                "DALI, converted by torch) or uint8 (no normalize)", _dtype),
    probability("min_visible", 0.1, "instances whose visible (clipped) area falls under this "
                "fraction of their moved area are dropped"),
)
FIELDS: Tuple[ConfigField, ...] = COMMON_HEAD + tuple(f for op in OPS for f in op.fields) \
    + COMMON_TAIL
_BY_NAME: Dict[str, ConfigField] = {f.name: f for f in FIELDS}


def _doc() -> str:
    lines = ["Augmentation settings. Ranges are ``(low, high)``, drawn uniformly per sample; "
             "the ops' ranges accept",
             "a number ``x`` for ``(-x, x)`` where noted (``scale``: ``(1 - x, 1 + x)``).", "",
             "Geometry (flip, rotation, scale, translation and the fit to the output size) is",
             "composed into one 3x3 matrix per sample and applied in one warp.", ""]
    for f in FIELDS:
        lines.append(f"- ``{f.name}`` (default ``{f.default!r}``): {f.doc}.")
    return "\n".join(lines)


class _Methods:
    def __post_init__(self):
        for f in FIELDS:
            setattr(self, f.name, f.coerce(f.name, getattr(self, f.name)))
        for op in OPS:
            op.check(self)

    # ------------------------------------------------------------------ presets
    @classmethod
    def off(cls, out_size=(512, 512), **kw) -> "AugmentConfig":
        """Every augmentation off: the plain resized (letterboxed) and normalized image."""
        base: Dict[str, Any] = {"out_size": out_size}
        for op in OPS:
            base.update(op.off_values())
        base.update(kw)
        return cls(**base)

    # ------------------------------------------------------------- (de)serialize
    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown AugmentConfig keys: {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path) -> "AugmentConfig":
        """Load from a ``.json`` or ``.yaml``/``.yml`` file holding the keys of :meth:`to_dict`."""
        p = Path(path)
        text = p.read_text()
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml
            d = yaml.safe_load(text) or {}
        else:
            d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"{p}: expected a mapping of AugmentConfig keys")
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None

    def to_file(self, path) -> None:
        """Write :meth:`to_dict` as YAML for a ``.yaml``/``.yml`` path, else as JSON."""
        p = Path(path)
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml
            p.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


AugmentConfig = make_dataclass(
    "AugmentConfig",
    [(f.name, Any, field(default=f.default, kw_only=f not in COMMON_HEAD)) for f in FIELDS],
    bases=(_Methods,),
    namespace={"__module__": __name__, "__doc__": _doc()},
)
