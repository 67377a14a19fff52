"""Resource limits on what an input may make fastload allocate: the one place for them.

``MAX_IMAGE_PIXELS`` caps the pixels (height x width) of one image, like Pillow's
``Image.MAX_IMAGE_PIXELS``: a 275 KB JPEG may claim 60000 x 60000 pixels in its header and
cost 10.8 GB to decode, a 292-byte COCO RLE may claim a 20000 x 20000 mask. The default is
178,956,970 pixels, the size at which Pillow refuses to open an image (twice its warning
threshold): about a 13,000 x 13,000 photo, 512 MiB decoded as RGB.

Where it is set, last one wins:

- the default, :data:`DEFAULT_MAX_IMAGE_PIXELS`;
- the environment variable ``FASTLOAD_MAX_IMAGE_PIXELS`` (read when this module is first
  imported): a positive integer, or ``0`` / ``none`` for no limit;
- assigning ``fastload.limits.MAX_IMAGE_PIXELS`` (``None`` for no limit);
- for one call, the ``max_pixels`` argument of :func:`check_image_size` (``fastload pack
  --max-pixels N``, ``fastload.pack(..., max_pixels=N)``; 0: no limit).

:func:`check_image_size` is the check: ``fastload pack`` applies it to every image header
before anything is decoded and to every COCO RLE and mask PNG before it is decoded; the
image decoders apply it before decoding.
"""
from __future__ import annotations

import os
from typing import Optional

DEFAULT_MAX_IMAGE_PIXELS = 178_956_970
ENV_VAR = "FASTLOAD_MAX_IMAGE_PIXELS"


def parse_max_pixels(value, what: str = "max_pixels") -> Optional[int]:
    """A pixel limit from an option value: a positive integer, or ``0`` / ``None`` /
    ``"none"`` / ``"off"`` for no limit (``None``). ``ValueError`` naming ``what`` for
    anything else."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower().replace("_", "")
        if text in ("", "0", "none", "off"):
            return None
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{what}: expected a number of pixels or 'none', got {value!r}") \
                from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: expected a number of pixels or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{what}: must be >= 0 (0: no limit), got {value}")
    return value or None


def _from_environment() -> Optional[int]:
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    return parse_max_pixels(raw, f"environment variable {ENV_VAR}")


#: pixels (height x width) one image may have; ``None``: no limit
MAX_IMAGE_PIXELS: Optional[int] = _from_environment()


#: classes a dataset may have (class ids 0 .. MAX_CLASSES - 1): a YOLO label ``7e9`` without
#: a class list, or ``nc: 10**12`` in a data.yaml, must not make a list of billions of names
MAX_CLASSES = 1 << 20


class ImageTooLarge(ValueError):
    """An image (or mask) has more pixels than the limit allows; the message names it."""


def check_image_size(height, width, name, max_pixels=None) -> None:
    """Raise :class:`ImageTooLarge` (a ``ValueError``) naming ``name`` when an image of
    ``height`` x ``width`` has more pixels than the limit: ``max_pixels`` when given (0 or
    ``"none"``: no limit), else the module's :data:`MAX_IMAGE_PIXELS`, read at call time.
    Call it with the size from the header, before decoding anything."""
    limit = MAX_IMAGE_PIXELS if max_pixels is None else parse_max_pixels(max_pixels)
    h, w = int(height), int(width)
    if limit is not None and h * w > limit:
        raise ImageTooLarge(
            f"{name}: {w}x{h} is {h * w:,} pixels, over the limit of {limit:,} "
            f"(a decompression bomb, or raise the limit: fastload pack --max-pixels, "
            f"{ENV_VAR})")
