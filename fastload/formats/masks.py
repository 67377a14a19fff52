"""Instance-mask PNG reader (Penn-Fudan layout), traced to polygons.

Layout: ``SRC/PNGImages/NAME.png`` (any image suffix) and ``SRC/PedMasks/NAME_mask.png``:
one integer value per instance, 0 = background (mode L / P / I / I;16; an RGB mask is
read as 24-bit values ``r << 16 | g << 8 | b``, one colour per instance). Folder names
and the mask suffix are options.

Tracing: :mod:`fastload.formats.tracing` (the tracer COCO RLE segmentations use too), with
this reader's defaults: ``tolerance`` 0.5 px (Douglas-Peucker; 0 keeps the exact outline),
``holes="bridge"``, ``min_area`` 0.

Policies (see docs/formats.md):

- Several connected components of one value become several parts of one instance;
  holes, simplification and ``min_area``: see :mod:`fastload.formats.tracing`.
- One class, ``class_name`` (default "object"; Penn-Fudan is pedestrians).
- An image without a mask file, an unreadable mask, or a mask whose size differs from the
  image's is a fatal Problem on that sample; a mask without an image is a dataset-level
  fatal Problem ``orphan_mask``.

Tracing decodes the mask PNGs (a few ms per image), so by default it is lazy: a sample
traces its mask when its ``instances`` / ``problems`` are first read, which under
``fastload pack`` happens in pack's workers, in parallel.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import List, Union

import numpy as np

from ._shared import IMAGE_SUFFIXES, as_bool
from fastload.limits import ImageTooLarge, check_image_size

from .base import Problem, SourceDataset, SourceInstance, SourceSample
from .files import SpecialFileError, inside_root, open_regular
from .tracing import HOLE_POLICIES, mask_to_polygons


def _pil_open(fp, name: str):
    """``PIL.Image.open`` (header only) with PIL's refusals as fastload's errors."""
    from PIL import Image, UnidentifiedImageError
    try:
        return Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"{name}: {e} (PIL's limit: PIL.Image.MAX_IMAGE_PIXELS)") from None
    except UnidentifiedImageError as e:
        raise ValueError(str(e)) from None


def _image_size(path: Path, max_pixels=None):
    """(width, height) from the header of the regular file ``path``, after the pixel cap."""
    with open_regular(path) as f, _pil_open(f, path.name) as im:
        check_image_size(im.size[1], im.size[0], path.name, max_pixels)
        return im.size


def _load_mask(path: Path, max_pixels=None) -> np.ndarray:
    """The mask's instance values as a 2-D array; the pixel cap is checked on the header,
    before decoding."""
    with open_regular(path) as f, _pil_open(f, path.name) as im:
        check_image_size(im.size[1], im.size[0], path.name, max_pixels)
        if im.mode in ("RGB", "RGBA"):
            a = np.asarray(im.convert("RGB")).astype(np.int64)
            return (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]
        if im.mode in ("LA", "PA"):
            return np.asarray(im)[..., 0]
        return np.asarray(im)  # L, P (palette indices), I, I;16, 1


class TracedMaskSample(SourceSample):
    """A :class:`SourceSample` whose mask is decoded and traced on first access of
    ``instances`` / ``problems`` (thread-safe; each process traces its own copy)."""

    def __init__(self, file_name: str, image_path: Path, mask_path: Path, mask_name: str,
                 tolerance: float, min_area: float, holes: str, max_pixels=None):
        self._lock = threading.Lock()
        self._traced = False
        self._opts = (mask_path, mask_name, tolerance, min_area, holes, max_pixels)
        super().__init__(file_name=file_name, image_path=image_path)

    # dataclass fields shadowed by properties: __init__'s assignments go to the setters
    def _get_instances(self):
        self.trace()
        return self._instances

    def _set_instances(self, v):
        self._instances = v

    def _get_problems(self):
        self.trace()
        return self._problems

    def _set_problems(self, v):
        self._problems = v

    instances = property(_get_instances, _set_instances)
    problems = property(_get_problems, _set_problems)

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("_lock", None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def trace(self) -> None:
        """Decode the mask and trace every instance (once)."""
        if self._traced:
            return
        with self._lock:
            if self._traced:
                return
            insts, probs = _trace_file(self.image_path, *self._opts)
            self._instances, self._problems = insts, probs
            self._traced = True


def _trace_file(ip: Path, mp: Path, mrel: str, tolerance: float, min_area: float, holes: str,
                max_pixels=None):
    insts: List[SourceInstance] = []
    try:
        w, h = _image_size(ip, max_pixels)
        mask = _load_mask(mp, max_pixels)
    except ImageTooLarge as e:
        return insts, [Problem(mrel, str(e), fatal=True, reason="too_many_pixels")]
    except SpecialFileError as e:
        return insts, [Problem(mrel, f"{e.filename} {e.strerror}", fatal=True,
                               reason="special_file")]
    except (OSError, ValueError) as e:
        return insts, [Problem(mrel, f"cannot read the mask or the image header: {e}", fatal=True,
                               reason="corrupt_mask")]
    if mask.shape != (h, w):
        return insts, [Problem(mrel, f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {w}x{h}",
                               fatal=True, reason="mask_size")]
    for v, (r0, r1, c0, c1) in _value_boxes(mask):
        if v == 0:
            continue
        parts, _ = mask_to_polygons(mask[r0:r1, c0:c1] == v, tolerance, min_area, holes)
        if parts:
            shift = np.array([c0, r0], np.float64)
            insts.append(SourceInstance(label=0, polygons=[p + shift for p in parts],
                                        name=f"mask value {int(v)}"))
    return insts, []


def _value_boxes(mask: np.ndarray):
    """``[(value, (r0, r1, c0, c1)), ...]``: each value of ``mask`` in increasing order with
    the bounding box of its pixels (rows r0:r1, cols c0:c1). One sort of the pixels, so a
    mask with very many values costs O(pixels log pixels), not values x pixels."""
    flat = mask.reshape(-1)
    order = np.argsort(flat, kind="stable")
    sorted_vals = flat[order]
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    rows, cols = np.divmod(order, mask.shape[1])
    r0, r1 = np.minimum.reduceat(rows, starts), np.maximum.reduceat(rows, starts) + 1
    c0, c1 = np.minimum.reduceat(cols, starts), np.maximum.reduceat(cols, starts) + 1
    return [(sorted_vals[s], (int(r0[k]), int(r1[k]), int(c0[k]), int(c1[k])))
            for k, s in enumerate(starts)]


def read(src: Union[str, Path], *, class_name: str = "object", tolerance: float = 0.5,
         min_area: float = 0.0, images: Union[str, Path] = "PNGImages",
         masks: Union[str, Path] = "PedMasks",
         mask_suffix: str = "_mask", holes: str = "bridge", lazy: bool = True,
         max_pixels=None) -> SourceDataset:
    """Read a Penn-Fudan style instance-mask dataset and trace every instance.

    ``images`` / ``masks``: folders under ``src`` (or paths); the mask of ``images/NAME.ext`` is
    ``masks/NAME{mask_suffix}.png``. ``class_name``: the single class. ``tolerance``,
    ``min_area``, ``holes``: see :mod:`fastload.formats.tracing`. Instances are ordered by mask value.
    Polygons are float64 (N, 2) (x, y) continuous pixel coordinates.

    ``lazy`` (default): a sample decodes and traces its mask the first time its
    ``instances`` or ``problems`` are read, i.e. in pack's workers, in parallel;
    ``read()`` itself only lists files. ``lazy=False`` traces everything here.

    ``max_pixels``: the pixel cap (:func:`fastload.limits.check_image_size`), checked on
    the headers of the image and the mask before the mask is decoded. A mask that is not a
    regular file inside the root is refused (``special_file`` / ``path_escapes_root``).
    """
    src = Path(src)
    tolerance, min_area = float(tolerance), float(min_area)
    lazy = as_bool(lazy, "masks lazy")
    if holes not in HOLE_POLICIES:
        raise ValueError(f"masks: holes must be one of {', '.join(HOLE_POLICIES)}, not {holes!r}")
    idir, mdir = src / images, src / masks
    if not idir.is_dir() and Path(images).is_dir():  # a path given from the working directory
        idir = Path(images)
    if not mdir.is_dir() and Path(masks).is_dir():
        mdir = Path(masks)
    if not idir.is_dir() or not mdir.is_dir():
        raise ValueError(f"masks: {src} must hold the folders {str(images)!r} and {str(masks)!r}")
    root = idir.parent
    img_files = sorted(p for p in idir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    samples: List[SourceSample] = []
    used = set()
    for ip in img_files:
        rel = ip.relative_to(root).as_posix()
        mp = mdir / f"{ip.stem}{mask_suffix}.png"
        used.add(mp.name)
        mrel = f"{mdir.name}/{mp.name}"
        if not os.path.lexists(mp):
            s = SourceSample(file_name=rel, image_path=ip)
            s.problems.append(Problem(rel, f"no mask file {mrel}", fatal=True, reason="missing_mask"))
        elif inside_root(mp, root) is None:
            s = SourceSample(file_name=rel, image_path=ip)
            s.problems.append(Problem(mrel, f"resolves outside the dataset root {str(root)!r} (a "
                                            f"symlink); refused", fatal=True,
                                      reason="path_escapes_root"))
        else:
            s = TracedMaskSample(rel, ip, mp, mrel, tolerance, min_area, holes, max_pixels)
            if not lazy:
                s.trace()
        samples.append(s)
    ds_problems = [Problem(f"{mdir.name}/{p.name}", "mask file has no image", fatal=True,
                           reason="orphan_mask")
                   for p in sorted(mdir.glob(f"*{mask_suffix}.png")) if p.name not in used]
    ds = SourceDataset(format="masks", classes=[class_name], samples=samples, problems=ds_problems)
    ds.root = root  # the folder images must stay inside (read by fastload.pack)
    ds.searched = f"images in {idir} with masks {mdir}/NAME{mask_suffix}.png"
    return ds
