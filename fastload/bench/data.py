"""The data ``fastload bench`` measures on: a packed dataset, given or made.

- a given DATASET that is packed (it has ``manifest.json``): used as it is, by every row;
- a given source dataset (``--format FMT``): packed into ``OUT/packed`` first;
- no DATASET: a synthetic COCO dataset (``fastload.synth``, 640x480 scenes) generated once
  into the cache folder and packed beside it; later runs reuse both;
- the megapixel mode: photo-like datasets (:mod:`fastload.synth.photos`) of each size, cached
  the same way.

Generation and packing write into a temporary folder renamed at the end, so an interrupted run
leaves nothing that a later run would take for complete.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


class BenchDataError(ValueError):
    """The bench cannot use the given dataset (names it)."""


def cache_dir(explicit=None) -> Path:
    if explicit:
        return Path(explicit)
    base = os.environ.get("FASTLOAD_CACHE") or Path.home() / ".cache" / "fastload"
    return Path(base) / "bench"


def is_packed(path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def _publish(tmp: Path, final: Path) -> Path:
    shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    return final


def _tmp(final: Path) -> Path:
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def pack_source(src, out, fmt: str, workers: int) -> Path:
    """Pack the ``fmt`` dataset ``src`` into ``out`` (replacing it); the pack's own errors
    (``PackError``, naming the file) propagate."""
    from fastload.packing import pack
    out = Path(out)
    tmp = _tmp(out)
    try:
        pack(src, tmp, format=fmt, workers=workers, progress=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, out)


def _generated(root: Path, write, workers: int, stamp: dict) -> Path:
    """``root`` (source) and ``root.packed``, made once by ``write(folder)`` then packed (COCO)."""
    packed = root.with_name(root.name + ".packed")
    done = root / ".complete"
    if not (done.exists() and json.loads(done.read_text()) == stamp):
        tmp = _tmp(root)
        try:
            write(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (tmp / ".complete").write_text(json.dumps(stamp))
        _publish(tmp, root)
        shutil.rmtree(packed, ignore_errors=True)
    if not is_packed(packed):
        pack_source(root, packed, "coco", workers)
    return packed


def synthetic_pack(cache: Path, n_images: int, seed: int, workers: int) -> Path:
    """The default data: ``n_images`` synthetic 640x480 scenes (COCO), packed; cached."""
    from fastload.synth import write_dataset
    root = Path(cache) / f"synth-coco-{n_images}-s{seed}"
    return _generated(root, lambda d: write_dataset(d, "coco", n_images, seed), workers,
                      {"n_images": n_images, "seed": seed})


def photo_pack(cache: Path, width: int, height: int, n_images: int, seed: int,
               workers: int) -> Path:
    """``n_images`` photo-like JPEGs of ``width`` x ``height`` (COCO), packed; cached."""
    from fastload.synth.photos import PHOTO_QUALITY, write_photo_dataset
    root = Path(cache) / f"photos-{width}x{height}-{n_images}-s{seed}"
    return _generated(root, lambda d: write_photo_dataset(d, n_images, width, height, seed),
                      workers, {"n_images": n_images, "seed": seed, "width": width,
                                "height": height, "quality": PHOTO_QUALITY})


def resolve_dataset(dataset, fmt, out_dir: Path, workers: int) -> Path:
    """The packed dataset for a given DATASET (module docstring)."""
    src = Path(dataset)
    if not src.exists():
        raise BenchDataError(f"DATASET {src}: no such file or directory")
    if is_packed(src):
        if fmt:
            raise BenchDataError(f"DATASET {src} is already packed: leave out --format")
        return src
    if not fmt:
        raise BenchDataError(
            f"DATASET {src} is not a packed dataset (no manifest.json). Pack it once with "
            f"`fastload pack {src} PACKED --format FMT` and bench PACKED, or pass --format FMT "
            f"to pack it into {Path(out_dir) / 'packed'} for this run")
    return pack_source(src, Path(out_dir) / "packed", fmt, workers)


def dataset_summary(packed) -> dict:
    """Records, source format, and the median source size of the first records (bench meta)."""
    from fastload.store import Dataset
    ds = Dataset(packed)
    n = len(ds)
    sizes = sorted((r.width, r.height) for r in ds.read_many(range(min(n, 64))))
    size = sizes[len(sizes) // 2] if sizes else None
    return {"num_images": n, "source_format": ds.source_format,
            "median_size": f"{size[0]}x{size[1]}" if size else None,
            "megapixels": size[0] * size[1] / 1e6 if size else None}


def jpeg_megabytes(packed, limit: int = 64) -> float:
    """Mean encoded image size in MB over the first ``limit`` records."""
    from fastload.store import Dataset
    ds = Dataset(packed)
    recs = ds.read_many(range(min(len(ds), limit)))
    return sum(len(r.image_bytes) for r in recs) / max(len(recs), 1) / 1e6
