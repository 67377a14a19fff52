"""`AugmentConfig`: what augmentation to apply, shared by the loader, `bench` and `inspect`."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Tuple

DTYPES = ("float32", "float16", "bfloat16", "uint8")


@dataclass
class AugmentConfig:
    """Augmentation settings. All ranges are ``(low, high)``, drawn uniformly per sample.

    Geometry (flip, rotation, scale, translation and the fit to the output size) is
    composed into one 3x3 matrix per sample and applied in one warp.

    - ``out_size``: output ``(height, width)``.
    - ``keep_aspect``: letterbox (scale to fit, pad with ``pad_value``) instead of stretching.
    - ``hflip_prob`` / ``vflip_prob``: flip probabilities (x' = W - x, DESIGN.md convention).
    - ``rotate_deg``: rotation range in degrees about the output center.
    - ``scale``: extra scale factor range (1, 1) = none.
    - ``translate``: translation range as a fraction of the output size (per axis, symmetric).
    - ``hue_deg``: hue rotation range in degrees.
    - ``noise_sigma``: gaussian noise standard deviation range, in 0..255 intensity units.
    - ``shadow_prob`` / ``shadow_count`` / ``shadow_darkness``: probability of any shadow,
      number of shadow polygons (inclusive range), and the multiplicative factor range
      applied inside a shadow (0.5 = half as bright).
    - ``mean`` / ``std``: normalization in 0..255 units, applied per RGB channel.
    - ``dtype``: output dtype, one of float32, float16, bfloat16, uint8 (uint8 skips normalize).
    - ``min_visible``: instances whose visible (clipped) area falls under this fraction of
      their transformed area are dropped.
    """

    out_size: Tuple[int, int] = (512, 512)
    keep_aspect: bool = True
    pad_value: float = 0.0
    hflip_prob: float = 0.5
    vflip_prob: float = 0.0
    rotate_deg: Tuple[float, float] = (-15.0, 15.0)
    scale: Tuple[float, float] = (0.8, 1.2)
    translate: Tuple[float, float] = (-0.1, 0.1)
    hue_deg: Tuple[float, float] = (-18.0, 18.0)
    noise_sigma: Tuple[float, float] = (0.0, 8.0)
    shadow_prob: float = 0.3
    shadow_count: Tuple[int, int] = (1, 2)
    shadow_darkness: Tuple[float, float] = (0.5, 0.8)
    mean: Tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: Tuple[float, float, float] = (58.395, 57.12, 57.375)
    dtype: str = "float32"
    min_visible: float = 0.1

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                setattr(self, f.name, tuple(v))
        h, w = self.out_size
        if int(h) <= 0 or int(w) <= 0:
            raise ValueError(f"out_size must be positive, got {self.out_size}")
        self.out_size = (int(h), int(w))
        for name in ("hflip_prob", "vflip_prob", "shadow_prob", "min_visible"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        for name in ("rotate_deg", "scale", "translate", "hue_deg", "noise_sigma",
                     "shadow_count", "shadow_darkness"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} range must be (low, high) with low <= high, got {(lo, hi)}")
        if self.scale[0] <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if self.noise_sigma[0] < 0:
            raise ValueError(f"noise_sigma must be >= 0, got {self.noise_sigma}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std must be 3 values each, std positive")

    # ------------------------------------------------------------------ presets
    @classmethod
    def off(cls, out_size=(512, 512), **kw) -> "AugmentConfig":
        """Every augmentation off: the plain resized (letterboxed) and normalized image."""
        base = dict(out_size=out_size, hflip_prob=0.0, vflip_prob=0.0, rotate_deg=(0.0, 0.0),
                    scale=(1.0, 1.0), translate=(0.0, 0.0), hue_deg=(0.0, 0.0),
                    noise_sigma=(0.0, 0.0), shadow_prob=0.0)
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
        return cls.from_dict(d)

    def to_file(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
