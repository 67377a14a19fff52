"""Image decoding for the CPU backend: encoded bytes -> HWC uint8 RGB.

Decoder choice (measured, see ``benchmarks/bench_decode.py`` and ``docs/cpu_backend.md``):
JPEG goes to simplejpeg (libjpeg-turbo, accurate integer IDCT, RGB out; about 1.2 ms
per 640x480 JPEG here, ~10% ahead of OpenCV's ``cv2.imdecode(..., IMREAD_COLOR_RGB)``
and ~30% ahead of PIL and DALI's CPU decoder), with OpenCV then PIL as fallbacks; PNG
and everything else goes to ``cv2.imdecode`` (~25% ahead of PIL), with PIL as the last
resort (CMYK JPEGs, odd PNG modes, formats OpenCV was built without). simplejpeg and
OpenCV release the GIL while decoding, so a thread pool scales across cores.

The decoded image is in the source's own pixel grid: pixel (row i, col j) covers
[j, j+1) x [i, i+1) (DESIGN.md); no resampling happens here (no DCT-domain downscale,
so a sample's matrix applies unchanged; see docs/cpu_backend.md for why).

Every failure is a ``ValueError`` naming the sample (``name``) and the reason.
"""
from __future__ import annotations

import io

import numpy as np

try:  # pragma: no cover - import guard
    import cv2
    cv2.setNumThreads(1)  # we parallelize across images ourselves
    _HAS_CV2 = True
    _CV2_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
except Exception:  # pragma: no cover
    cv2 = None
    _HAS_CV2 = False
    _CV2_RGB = None

try:  # pragma: no cover
    import simplejpeg
except Exception:  # pragma: no cover
    simplejpeg = None

__all__ = ["decode_image", "sniff_format", "DECODERS", "decode_with"]

_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sniff_format(data) -> str:
    """'jpeg', 'png' or 'other' from the first bytes."""
    head = bytes(data[:8])
    if head[:2] == _JPEG_MAGIC:
        return "jpeg"
    if head == _PNG_MAGIC:
        return "png"
    return "other"


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """Any decoded array (H,W), (H,W,1), (H,W,3) RGB, (H,W,4) RGBA, 8 or 16 bit -> HWC uint8 RGB."""
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    c = arr.shape[2]
    if c == 1:
        return np.repeat(arr, 3, axis=2)
    if c == 4:  # drop alpha (composited on nothing, like DALI's decoder)
        return np.ascontiguousarray(arr[:, :, :3])
    if c == 3:
        return arr
    raise ValueError(f"unsupported channel count {c}")


# ------------------------------------------------------------------ individual decoders
def decode_cv2(data) -> np.ndarray:
    """OpenCV, RGB output directly when the build has IMREAD_COLOR_RGB."""
    buf = np.frombuffer(data, np.uint8)
    if _CV2_RGB is not None:
        img = cv2.imdecode(buf, _CV2_RGB)
        if img is None:
            raise ValueError("cv2.imdecode failed")
        return img
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("cv2.imdecode failed")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_cv2_bgr(data) -> np.ndarray:
    """OpenCV classic path: BGR decode + cvtColor (for the benchmark)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("cv2.imdecode failed")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_simplejpeg(data) -> np.ndarray:
    """libjpeg-turbo via simplejpeg (JPEG only)."""
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def decode_pil(data) -> np.ndarray:
    """PIL: the most permissive (CMYK, palettes, 16-bit PNG, ...)."""
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("RGB", "L", "RGBA", "I;16"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    if arr.dtype != np.uint8 and arr.dtype != np.uint16:
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    return _to_rgb(arr)


def decode_cv2_any(data) -> np.ndarray:
    """OpenCV for PNG/other formats, keeping 16-bit / alpha / gray handled by _to_rgb."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("cv2.imdecode failed")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return _to_rgb(img)


DECODERS = {}
if _HAS_CV2:
    DECODERS["cv2"] = decode_cv2
    DECODERS["cv2_bgr"] = decode_cv2_bgr
if simplejpeg is not None:
    DECODERS["simplejpeg"] = decode_simplejpeg
DECODERS["pil"] = decode_pil

# Measured order for JPEG (fastest first); see the module docstring.
_JPEG_CHAIN = [n for n in ("simplejpeg", "cv2", "pil") if n in DECODERS]
_OTHER_CHAIN = ([decode_cv2_any] if _HAS_CV2 else []) + [decode_pil]


def decode_with(name: str, data) -> np.ndarray:
    """Decode with one named decoder from :data:`DECODERS` (benchmarks, tests)."""
    return DECODERS[name](data)


def decode_image(data, name: str = "<image>") -> np.ndarray:
    """Decode JPEG / PNG / anything PIL reads to a C-contiguous HWC uint8 RGB array.

    ``data``: ``bytes``, ``bytearray``, ``memoryview`` or a 1-D uint8 array.
    ``name``: the sample's name (file or record key) used in error messages.
    Raises ``ValueError`` naming ``name`` if the bytes cannot be decoded.
    """
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError(f"{name}: encoded image must be bytes or a 1-D uint8 array, "
                             f"got {data.dtype} {data.shape}")
        data = data.tobytes() if not data.flags.c_contiguous else memoryview(data)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{name}: encoded image must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name}: empty image data")
    fmt = sniff_format(data)
    chain = [DECODERS[n] for n in _JPEG_CHAIN] if fmt == "jpeg" else _OTHER_CHAIN
    errors = []
    for dec in chain:
        try:
            img = dec(data)
        except Exception as e:  # try the next decoder
            errors.append(f"{getattr(dec, '__name__', dec)}: {e}")
            continue
        if img is None or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 \
                or img.shape[0] == 0 or img.shape[1] == 0:
            errors.append(f"{getattr(dec, '__name__', dec)}: bad result")
            continue
        return np.ascontiguousarray(img)
    raise ValueError(f"{name}: cannot decode image ({fmt}, {len(data)} bytes): "
                     + "; ".join(errors))
