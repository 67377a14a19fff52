"""Image decoding for the CPU backend and ``fastload verify``: encoded bytes -> HWC uint8 RGB.

**Decoders** (measured, ``benchmarks/bench_decode.py``, ``docs/cpu_backend.md``): JPEG goes to
simplejpeg (libjpeg-turbo, accurate integer IDCT, RGB out, releases the GIL); PNG and every
other format to OpenCV's ``imdecode`` when OpenCV is installed (an optional dependency), else
to PIL.

**Policy** (DESIGN.md: a fallback decoder is for formats the primary one cannot read, never
for data it reports corrupt):

- The header is read first, before anything is decoded: its size is checked against the pixel
  cap (:func:`fastload.limits.check_image_size`, a decompression bomb never allocates) and,
  when the caller knows it, against the record's size.
- JPEG: simplejpeg in strict mode: any libjpeg warning is an error, a ``ValueError`` naming
  the sample (never a grey fill, never a retry with a more lenient decoder). That includes
  warnings that are sometimes harmless, like junk bytes before the end-of-image marker ("N
  extraneous bytes before marker 0xd9"): garbage inside a scan gives exactly that warning and
  no other (tested), so it cannot be told from corruption. Bytes after the end-of-image
  marker are never read (no warning, the same pixels). Only JPEGs simplejpeg cannot read at
  all go to the fallbacks, OpenCV then PIL, at full size: a precision or process libjpeg-turbo
  does not support, or chroma subsampling its TurboJPEG API cannot classify. Both fallbacks
  refuse a truncated file (OpenCV returns nothing, PIL raises).
- PNG: OpenCV reads every PNG, so its refusal means corrupt data: no fallback. Other formats:
  OpenCV, then PIL for codecs OpenCV was built without.
- EXIF orientation is ignored everywhere: annotations are in stored pixel order. simplejpeg and
  PIL never rotate; every OpenCV call passes ``IMREAD_IGNORE_ORIENTATION`` or
  ``IMREAD_UNCHANGED`` (which does not rotate either). No ``exif_transpose``.
- PIL never fills a truncated image: fastload leaves ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``
  False and refuses to decode with PIL while something else has set it.
- The decoded size must equal the header's (and so the record's).

**Reduced-size decode** (:func:`decode_for_warp`): when the sample's matrix shrinks the image
by 2x or more in every direction, a JPEG is decoded at 1/2, 1/4 or 1/8 of its size by
libjpeg-turbo's scaled IDCT (:func:`dct_scale` picks the factor; simplejpeg's ``min_height`` /
``min_width`` select it). Geometry, derived from the scaled IDCT and checked by
``tests/augment/test_decode_scaled.py``: decoded pixel (i, j) at scale 1/k is the (lowpass)
average of source pixels [jk, (j+1)k) x [ik, (i+1)k) (within a level of the box average,
measured), so source point (x, y) is decoded point (x / k, y / k) and the warp uses
``M @ diag(k, k, 1)``. libjpeg rounds the scaled size up: when k does not divide the width, the
last decoded column covers [(n-1)k, nk) with only [(n-1)k, W) inside the image (the encoder
padded the block by repeating the edge), so its value is blended with the warp's ``pad_value``
by the inside fraction ``(W - (n-1)k) / k`` (likewise the last row): every decoded pixel is
then the average of the source extended by ``pad_value`` over its footprint, and the image
ends at W, not at nk. The scaled IDCT also anti-aliases: better than a bilinear warp from full
size, and a per-backend difference (the DALI backend decodes at full size).

Every failure is a ``ValueError`` naming the sample (``name``) and the reason.
"""
from __future__ import annotations

import io
import math
import re
from typing import NamedTuple, Optional, Tuple

import numpy as np
import simplejpeg

from fastload.limits import check_image_size

try:  # OpenCV is optional (not in install_requires)
    import cv2
    cv2.setNumThreads(1)  # we parallelize across images ourselves
    _CV2_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10
except ImportError:  # pragma: no cover
    cv2 = None

__all__ = ["decode_image", "decode_for_warp", "Decoded", "DecodeBuffer", "read_header",
           "ImageHeader", "dct_scale", "sniff_format", "DECODERS", "decode_with", "DCT_SCALES",
           "MIN_SIDE_FOR_DCT_SCALE"]

_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: the reduced sizes (1/k) libjpeg-turbo's scaled IDCT gives, largest reduction first
DCT_SCALES = (8, 4, 2)
#: no reduced decode below this side: from 16 pixels on, the sizes libjpeg-turbo gives for its
#: factors n/8 differ by 2 or more, so the decoded size tells which factor simplejpeg picked
MIN_SIDE_FOR_DCT_SCALE = 16
# k * (largest stretch of the matrix) may exceed 1 by this much (float32 matrices)
_SCALE_TOLERANCE = 1e-5
# libjpeg / TurboJPEG messages for JPEGs simplejpeg cannot read (not corrupt data)
_UNSUPPORTED = re.compile(r"unsupported|not implemented|not supported|"
                          r"could not determine subsampling", re.IGNORECASE)


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
    """OpenCV, RGB (directly when the build has IMREAD_COLOR_RGB), EXIF orientation ignored."""
    if _CV2_RGB is None:
        return decode_cv2_bgr(data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise ValueError("cv2.imdecode failed")
    return img


def decode_cv2_bgr(data) -> np.ndarray:
    """OpenCV classic path: BGR decode + cvtColor (for the benchmark), orientation ignored."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8),
                       cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise ValueError("cv2.imdecode failed")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_simplejpeg(data) -> np.ndarray:
    """libjpeg-turbo via simplejpeg (JPEG only), strict: any libjpeg warning raises."""
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def decode_pil(data) -> np.ndarray:
    """PIL: the most permissive (CMYK, palettes, 16-bit PNG, ...); never rotates by EXIF and
    never fills a truncated file."""
    from PIL import Image, ImageFile
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ValueError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set (by code outside "
                         "fastload): PIL would fill a truncated image with grey, so fastload "
                         "does not decode with PIL while it is set")
    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("RGB", "L", "RGBA", "I;16"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    if arr.dtype != np.uint8 and arr.dtype != np.uint16:
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    return _to_rgb(arr)


def decode_cv2_any(data) -> np.ndarray:
    """OpenCV for PNG/other formats, keeping 16-bit / alpha / gray (handled by _to_rgb);
    IMREAD_UNCHANGED never applies EXIF orientation."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("cv2.imdecode failed")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return _to_rgb(img)


DECODERS = {"simplejpeg": decode_simplejpeg, "pil": decode_pil}
if cv2 is not None:
    DECODERS["cv2"] = decode_cv2
    DECODERS["cv2_bgr"] = decode_cv2_bgr

# JPEGs simplejpeg cannot read; formats other than JPEG and PNG
_JPEG_FALLBACKS = ([decode_cv2] if cv2 is not None else []) + [decode_pil]
_PNG_DECODERS = [decode_cv2_any] if cv2 is not None else [decode_pil]
_OTHER_DECODERS = ([decode_cv2_any] if cv2 is not None else []) + [decode_pil]


def decode_with(name: str, data) -> np.ndarray:
    """Decode with one named decoder from :data:`DECODERS` (benchmarks, tests)."""
    return DECODERS[name](data)


# ------------------------------------------------------------------ headers
class ImageHeader(NamedTuple):
    format: str           # "jpeg", "png" or "other"
    height: int
    width: int
    jpeg_fallback: bool   # a JPEG simplejpeg cannot read (unsupported): OpenCV / PIL decode it


def _buffer(data, name: str):
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError(f"{name}: encoded image must be bytes or a 1-D uint8 array, "
                             f"got {data.dtype} {data.shape}")
        data = memoryview(data) if data.flags.c_contiguous else data.tobytes()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{name}: encoded image must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name}: empty image data")
    return data


def _pil_size(data) -> Tuple[int, int]:
    """(height, width) from PIL's lazy header parse; PIL's own exception when it cannot."""
    from PIL import Image
    with Image.open(io.BytesIO(bytes(data))) as im:  # lazy: parses the header only
        w, h = im.size
    return int(h), int(w)


def _jpeg_header(data, name: str) -> Tuple[int, int, bool]:
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        return int(h), int(w), False
    except ValueError as e:
        why = f"libjpeg-turbo: {e}"
    if _UNSUPPORTED.search(why):
        try:  # still an error when warnings are allowed: a layout TurboJPEG does not handle
            simplejpeg.decode_jpeg_header(data, strict=False)
        except ValueError:
            try:  # ... or garbage: PIL's header reader tells
                return _pil_size(data) + (True,)
            except Exception as e:  # noqa: BLE001 - PIL raises many types on bad data
                why += f"; PIL: {type(e).__name__}: {e}"
        except Exception:  # noqa: BLE001 - a cut header (simplejpeg raises a KeyError)
            pass
    raise ValueError(f"{name}: corrupt JPEG, not decoded: its header does not read cleanly "
                     f"({why})")


def _png_header(data, name: str) -> Tuple[int, int]:
    head = bytes(data[:24])
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise ValueError(f"{name}: corrupt PNG: no IHDR chunk at the start")
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if h < 1 or w < 1:
        raise ValueError(f"{name}: corrupt PNG: IHDR says {w}x{h}")
    return h, w


def read_header(data, name: str = "<image>") -> ImageHeader:
    """Format and size from the header alone (nothing is decoded), checked against the pixel
    cap (:func:`fastload.limits.check_image_size`, ``ValueError`` naming ``name``)."""
    data = _buffer(data, name)
    fmt = sniff_format(data)
    fallback = False
    if fmt == "jpeg":
        h, w, fallback = _jpeg_header(data, name)
    elif fmt == "png":
        h, w = _png_header(data, name)
    else:
        try:
            h, w = _pil_size(data)
        except Exception as e:  # noqa: BLE001 - PIL raises many types on bad data
            raise ValueError(f"{name}: cannot read the image header: {type(e).__name__}: "
                             f"{e}") from None
    check_image_size(h, w, name)
    return ImageHeader(fmt, h, w, fallback)


# ------------------------------------------------------------------ reduced size
def dct_scale(matrix, height: int, width: int) -> int:
    """The reduction k (1, 2, 4 or 8) for decoding a ``height`` x ``width`` JPEG that
    ``matrix`` (3x3 affine, source -> output pixels) warps: the largest k of
    :data:`DCT_SCALES` with ``k * smax <= 1``, ``smax`` the largest singular value of the
    matrix's 2x2 part (its largest stretch), so the decoded image is never below the output
    resolution in any direction; 1 when the matrix enlarges or shrinks less than 2x, is not
    affine, or the image is smaller than :data:`MIN_SIDE_FOR_DCT_SCALE`. A pure function."""
    m = np.asarray(matrix, np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)) or m[2, 0] != 0 or m[2, 1] != 0 \
            or m[2, 2] != 1 or min(height, width) < MIN_SIDE_FOR_DCT_SCALE:
        return 1
    a, b, c, d = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
    ssq = a * a + b * b + c * c + d * d
    det = a * d - b * c
    smax = math.sqrt(0.5 * (ssq + math.sqrt(max(ssq * ssq - 4.0 * det * det, 0.0))))
    for k in DCT_SCALES:
        if k * smax <= 1.0 + _SCALE_TOLERANCE:
            return k
    return 1


def _blend_partial_blocks(img: np.ndarray, height: int, width: int, k: int,
                          pad_value: float) -> None:
    """In place: the last column / row of a 1/k decode covers [(n-1)k, nk) of which only
    [(n-1)k, W) is inside the image; blend it with ``pad_value`` by the inside fraction."""
    for axis, size in ((1, width), (0, height)):
        inside = size - (img.shape[axis] - 1) * k  # in (0, k]
        if inside < k:
            f = inside / k
            edge = img[:, -1] if axis == 1 else img[-1]
            blended = edge * np.float32(f) + np.float32((1.0 - f) * pad_value)
            edge[...] = np.clip(np.rint(blended), 0, 255)


# ------------------------------------------------------------------ decode
class DecodeBuffer:
    """A reusable output array for the JPEG decodes of ONE thread
    (``decode_for_warp(..., buffer=)``): an image decoded into it is a view of it, valid until
    the next decode into the same buffer. It grows to the largest decoded image up to
    ``max_bytes`` (default 16 MiB: a full-size 1920x1080 or a 1/2-size 4000x3000 decode);
    a larger image is decoded into its own array, as without a buffer.

    Why: a fresh multi-megabyte array is page-faulted in (and zeroed by the kernel) on every
    decode; writing the same memory again skips that (measured with simplejpeg on photo-like
    JPEGs, one thread: 1920x1080 at 1/2, 10.6 -> 8.8 ms; full size 15.0 -> 12.5 ms)."""

    def __init__(self, max_bytes: int = 16 << 20):
        self.max_bytes = int(max_bytes)
        self._array = np.empty(0, np.uint8)

    def get(self, nbytes: int) -> Optional[np.ndarray]:
        """A writable 1-D uint8 array of exactly ``nbytes`` (a view of the buffer), or None
        when ``nbytes`` is over ``max_bytes``."""
        if nbytes > self.max_bytes:
            return None
        if self._array.size < nbytes:
            self._array = np.empty(nbytes, np.uint8)
        return self._array[:nbytes]


class Decoded(NamedTuple):
    image: np.ndarray  # HWC uint8 RGB, C-contiguous
    scale: int         # decoded at 1/scale of the header's size (1: full size)


def _first_success(decoders, data, name: str, what: str) -> np.ndarray:
    errors = []
    for dec in decoders:
        try:
            return dec(data)
        except Exception as e:  # noqa: BLE001 - every decoder raises its own types
            errors.append(f"{dec.__name__}: {e}")
    raise ValueError(f"{name}: cannot decode {what} ({len(data)} bytes): " + "; ".join(errors))


def _decode_jpeg(data, head: ImageHeader, name: str, k: int,
                 buffer: Optional[DecodeBuffer] = None) -> Tuple[np.ndarray, int]:
    if head.jpeg_fallback:
        why = "simplejpeg cannot read its header"
    else:
        size_kw = {}
        if k > 1:
            size_kw = dict(min_height=-(-head.height // k), min_width=-(-head.width // k))
        out = None if buffer is None else \
            buffer.get(-(-head.height // k) * -(-head.width // k) * 3)
        try:
            if out is not None:
                try:
                    return simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out,
                                                  **size_kw), k
                except ValueError as e:
                    if "too small" not in str(e):  # not the size the header says: the
                        raise                      # decode without it reports that
            return simplejpeg.decode_jpeg(data, colorspace="RGB", **size_kw), k
        except ValueError as e:
            if not _UNSUPPORTED.search(str(e)):
                raise ValueError(f"{name}: corrupt JPEG, not decoded (libjpeg-turbo: {e})") \
                    from None
            why = f"simplejpeg cannot read it: {e}"
    return _first_success(_JPEG_FALLBACKS, data, name, f"the JPEG ({why})"), 1


def _decode(data, name: str, size, matrix, pad_value: float,
            buffer: Optional[DecodeBuffer] = None) -> Decoded:
    data = _buffer(data, name)
    head = read_header(data, name)
    if size is not None and (head.height, head.width) != (int(size[0]), int(size[1])):
        raise ValueError(f"{name}: image is {head.height}x{head.width} (HxW) but its record "
                         f"says {int(size[0])}x{int(size[1])}")
    k = 1
    if head.format == "jpeg":
        if matrix is not None and not head.jpeg_fallback:
            k = dct_scale(matrix, head.height, head.width)
        img, k = _decode_jpeg(data, head, name, k, buffer)
    elif head.format == "png":
        img = _first_success(_PNG_DECODERS, data, name, "the PNG")
    else:
        img = _first_success(_OTHER_DECODERS, data, name, "the image")
    want = (-(-head.height // k), -(-head.width // k), 3)
    if not isinstance(img, np.ndarray) or img.shape != want or img.dtype != np.uint8:
        got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{name}: decoded to {got}, but its header says "
                         f"{head.height}x{head.width}" + (f" (1/{k}: {want})" if k > 1 else ""))
    img = np.ascontiguousarray(img)
    if k > 1:
        _blend_partial_blocks(img, head.height, head.width, k, pad_value)
    return Decoded(img, k)


def decode_image(data, name: str = "<image>", size: Optional[Tuple[int, int]] = None) \
        -> np.ndarray:
    """Decode JPEG / PNG / anything PIL reads, at full size, to a C-contiguous HWC uint8 RGB
    array in stored pixel order (module docstring: policy).

    ``data``: ``bytes``, ``bytearray``, ``memoryview`` or a 1-D uint8 array. ``name``: the
    sample's name (file or record key) for error messages. ``size``: the ``(height, width)``
    the record says; the header must agree (checked before decoding). Raises ``ValueError``
    naming ``name``.
    """
    return _decode(data, name, size, None, 0.0).image


def decode_for_warp(data, matrix, name: str = "<image>",
                    size: Optional[Tuple[int, int]] = None, pad_value: float = 0.0,
                    buffer: Optional[DecodeBuffer] = None) -> Decoded:
    """:func:`decode_image` for an image about to be warped by ``matrix``: a JPEG is decoded
    at 1/k of its size, k = :func:`dct_scale` (``matrix``, header size), with the partial last
    column / row blended with ``pad_value`` (module docstring). Returns
    ``Decoded(image, scale=k)``; warp it with ``matrix @ diag(k, k, 1)``
    (:func:`fastload.augment.cpu.augment_image`'s ``source_scale``). Annotations still move
    by ``matrix``. ``buffer``: the calling thread's :class:`DecodeBuffer`; a JPEG decoded by
    simplejpeg is then written into it (the same pixels), so the image is valid only until
    that thread's next decode into it."""
    return _decode(data, name, size, matrix, pad_value, buffer)
