"""Instance-mask PNG reader (Penn-Fudan layout), traced to polygons.

Layout: ``SRC/PNGImages/NAME.png`` (any image suffix) and ``SRC/PedMasks/NAME_mask.png``:
one integer value per instance, 0 = background (mode L / P / I / I;16; an RGB mask is
read as 24-bit values ``r << 16 | g << 8 | b``, one colour per instance). Folder names
and the mask suffix are options.

Tracing (:func:`mask_to_polygons`): each instance's pixels, cropped and zero-padded so
every contour closes, go to ``skimage.measure.find_contours`` at level 0.5
(4-connected foreground). find_contours works in (row, col) index space, where pixel
(i, j) sits at index (i, j); fastload's continuous coordinates put that pixel's center
at (x, y) = (j + 0.5, i + 0.5), so a contour point (r, c) becomes (c + 0.5, r + 0.5).
The level-0.5 contour between an inside and an outside pixel then lies on their shared
pixel border, and the traced polygon, filled with the pixel-center rule
(``fastload.targets.raster.fill_polygon``), gives the mask back exactly before
simplification (corners are cut diagonally but never past a pixel center).

Policies (see docs/formats.md):

- Several connected components of one value become several parts of one instance.
- Holes (``holes="bridge"``, the default): the record has no hole field, so each hole
  ring is spliced into the part that encloses it through a zero-width cut; the
  even-odd fill rule then leaves the hole empty. ``holes="drop"`` drops hole rings
  (the part then covers its holes). Consumers that compute areas with the shoelace
  formula get outer minus hole for a bridged part, which is right.
- ``tolerance`` (default 0.5 px) simplifies each part with
  ``skimage.measure.approximate_polygon`` (Douglas-Peucker); 0 keeps every traced vertex.
  A part that simplification would reduce below 3 vertices keeps its traced vertices.
  Parts with traced area below ``min_area`` px^2 are dropped (default 0: keep all).
- One class, ``class_name`` (default "object"; Penn-Fudan is pedestrians).
- An image without a mask file, an unreadable mask, or a mask whose size differs from the
  image's is a fatal Problem on that sample; a mask without an image is a dataset-level
  fatal Problem ``orphan_mask``.

Tracing decodes the mask PNGs (a few ms per image), so by default it is lazy: a sample
traces its mask when its ``instances`` / ``problems`` are first read, which under
``fastload pack`` happens in the worker processes.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import List, Tuple, Union

import numpy as np

from ._shared import IMAGE_SUFFIXES, as_bool
from .base import Problem, SourceDataset, SourceInstance, SourceSample


def _signed_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _inside(pt: np.ndarray, poly: np.ndarray) -> bool:
    """Even-odd point-in-polygon test (not a hot path: one test per hole)."""
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cross = (y0 <= pt[1]) != (y1 <= pt[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x0 + (pt[1] - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(cross & (xc > pt[0])) % 2)


def _bridge(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Splice ``hole`` into ``outer`` through a zero-width cut between their closest
    vertices: outer[..i], hole[j..], hole[..j], outer[i..]. The cut's two edges coincide,
    so under the even-odd rule they cancel and the result covers outer minus hole."""
    d = ((outer[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    ring = np.concatenate([hole[j:], hole[:j + 1]])
    return np.concatenate([outer[:i + 1], ring, outer[i:]])


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.5, min_area: float = 0.0,
                     holes: str = "bridge") -> Tuple[List[np.ndarray], int]:
    """Trace a boolean mask to polygons, one part per 4-connected component.

    Returns ``(parts, n_holes)``: ``parts`` a list of float64 (N, 2) (x, y) polygons in
    continuous pixel coordinates (pixel (i, j) covers [j, j+1) x [i, i+1)), open (the first
    vertex is not repeated); ``n_holes`` the number of hole contours found.
    ``holes="bridge"`` splices each hole into the part that encloses it through a
    zero-width cut, so the even-odd fill (``fastload.targets.raster``) leaves the hole
    empty; ``holes="drop"`` drops them (the part then covers its holes).
    See the module docstring for the coordinate conversion and the simplification.
    """
    from skimage.measure import approximate_polygon, find_contours

    if holes not in ("bridge", "drop"):
        raise ValueError(f"mask_to_polygons: holes must be 'bridge' or 'drop', got {holes!r}")
    m = np.asarray(mask).astype(bool, copy=False)
    if m.ndim != 2:
        raise ValueError(f"mask_to_polygons: mask must be 2-D, got shape {m.shape}")
    rows = np.flatnonzero(m.any(1))
    if rows.size == 0:
        return [], 0
    cols = np.flatnonzero(m.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.zeros((r1 - r0 + 2, c1 - c0 + 2), np.float32)
    crop[1:-1, 1:-1] = m[r0:r1, c0:c1]
    contours = find_contours(crop, 0.5, fully_connected="low", positive_orientation="high")
    # index (r, c) in the padded crop = pixel (r + r0 - 1, c + c0 - 1), center at +0.5
    offset = np.array([c0 - 0.5, r0 - 0.5])
    outers, outer_area, hole_rings = [], [], []
    for c in contours:
        xy = c[:, ::-1]  # (row, col) -> (x, y) index space, closed (first == last)
        area = _signed_area(xy[:-1])
        if tolerance > 0:
            simp = approximate_polygon(xy, tolerance)
            if len(simp) - 1 >= 3:
                xy = simp
        pts = (xy[:-1] if np.array_equal(xy[0], xy[-1]) else xy) + offset
        # with positive_orientation="high", outer boundaries have negative area here
        if area >= 0:
            hole_rings.append(pts)
        elif -area >= min_area:
            outers.append(pts)
            outer_area.append(-area)
    if holes == "bridge":
        for h in hole_rings:
            best = None
            for k, o in enumerate(outers):
                if (best is None or outer_area[k] < outer_area[best]) and _inside(h[0], o):
                    best = k
            if best is not None:
                outers[best] = _bridge(outers[best], h)
    return outers, len(hole_rings)


def _load_mask(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA"):
            a = np.asarray(im.convert("RGB")).astype(np.int64)
            return (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]
        if im.mode == "LA":
            return np.asarray(im)[..., 0]
        return np.asarray(im)  # L, P (palette indices), I, I;16, 1


class TracedMaskSample(SourceSample):
    """A :class:`SourceSample` whose mask is decoded and traced on first access of
    ``instances`` / ``problems`` (thread-safe; each process traces its own copy)."""

    def __init__(self, file_name: str, image_path: Path, mask_path: Path, mask_name: str,
                 tolerance: float, min_area: float, holes: str):
        self._lock = threading.Lock()
        self._traced = False
        self._opts = (mask_path, mask_name, tolerance, min_area, holes)
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


def _trace_file(ip: Path, mp: Path, mrel: str, tolerance: float, min_area: float, holes: str):
    from PIL import Image, UnidentifiedImageError
    insts: List[SourceInstance] = []
    try:
        mask = _load_mask(mp)
        with Image.open(ip) as im:
            w, h = im.size
    except (OSError, UnidentifiedImageError, ValueError) as e:
        return insts, [Problem(mrel, f"cannot read the mask or the image header: {e}", fatal=True,
                               reason="corrupt_mask")]
    if mask.shape != (h, w):
        return insts, [Problem(mrel, f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {w}x{h}",
                               fatal=True, reason="mask_size")]
    for v in np.unique(mask):
        if v == 0:
            continue
        parts, _ = mask_to_polygons(mask == v, tolerance, min_area, holes)
        if parts:
            insts.append(SourceInstance(label=0, polygons=parts, name=f"mask value {int(v)}"))
    return insts, []


def read(src: Union[str, Path], *, class_name: str = "object", tolerance: float = 0.5,
         min_area: float = 0.0, images: Union[str, Path] = "PNGImages",
         masks: Union[str, Path] = "PedMasks",
         mask_suffix: str = "_mask", holes: str = "bridge", lazy: bool = True) -> SourceDataset:
    """Read a Penn-Fudan style instance-mask dataset and trace every instance.

    ``images`` / ``masks``: folders under ``src`` (or paths); the mask of ``images/NAME.ext`` is
    ``masks/NAME{mask_suffix}.png``. ``class_name``: the single class. ``tolerance``,
    ``min_area``, ``holes``: see :func:`mask_to_polygons`. Instances are ordered by mask value.
    Polygons are float64 (N, 2) (x, y) continuous pixel coordinates.

    ``lazy`` (default): a sample decodes and traces its mask the first time its
    ``instances`` or ``problems`` are read, i.e. in pack's worker processes, in parallel;
    ``read()`` itself only lists files. ``lazy=False`` traces everything here.
    """
    src = Path(src)
    tolerance, min_area = float(tolerance), float(min_area)
    lazy = as_bool(lazy, "masks lazy")
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
        if not mp.is_file():
            s = SourceSample(file_name=rel, image_path=ip)
            s.problems.append(Problem(rel, f"no mask file {mrel}", fatal=True, reason="missing_mask"))
        else:
            s = TracedMaskSample(rel, ip, mp, mrel, tolerance, min_area, holes)
            if not lazy:
                s.trace()
        samples.append(s)
    ds_problems = [Problem(f"{mdir.name}/{p.name}", "mask file has no image", fatal=True,
                           reason="orphan_mask")
                   for p in sorted(mdir.glob(f"*{mask_suffix}.png")) if p.name not in used]
    ds = SourceDataset(format="masks", classes=[class_name], samples=samples, problems=ds_problems)
    ds.root = root  # the folder images must stay inside (read by fastload.pack)
    return ds
