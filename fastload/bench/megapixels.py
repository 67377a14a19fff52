"""``fastload bench --megapixels [WxH,...]``: images/s against the source image size.

For each size, ``--num-images`` photo-like JPEGs (:mod:`fastload.synth.photos`: 1/f spectrum,
textured objects with polygons, camera-like file sizes at quality 90) are generated and packed
once into the cache folder. Then every row runs on every size, all (row, size) pairs in ONE
alternating schedule (:mod:`fastload.bench.alternate`), so machine noise hits every point of
every curve alike. The output is the same 512x512 (``--size``) for every source size: what
changes is the decode and the resampling from a larger source.

Writes ``OUT/megapixels.md`` (table), ``OUT/results.json`` and ``OUT/megapixels.png`` (one
curve per row: images/s against source megapixels, log-log, bars = min-max of the windows).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from fastload.bench.alternate import RowSpec


class SizeError(ValueError):
    """A malformed ``--megapixels`` size list."""


def parse_sizes(spec: str) -> list:
    """``"640x480,1920x1080"`` -> ``[(640, 480), (1920, 1080)]`` (width x height)."""
    out = []
    for part in (s.strip() for s in spec.split(",")):
        if not part:
            continue
        try:
            w, h = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise SizeError(f"--megapixels: {part!r} is not WIDTHxHEIGHT") from None
        if w < 16 or h < 16:
            raise SizeError(f"--megapixels: {part!r} is too small (16x16 at least)")
        if (w, h) not in out:
            out.append((w, h))
    if not out:
        raise SizeError("--megapixels: no size given")
    return sorted(out, key=lambda s: s[0] * s[1])


def run(args) -> int:
    from fastload.bench import data, report
    from fastload.bench.suite import BenchError, measure, meta, parse_rows
    t_start = time.monotonic()
    if args.dataset is not None or args.format:
        raise BenchError("--megapixels generates its own data: leave out DATASET and --format")
    try:
        sizes = parse_sizes(args.megapixels)
    except SizeError as e:
        raise BenchError(str(e)) from None
    rows = parse_rows(args.rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = data.cache_dir(args.cache)
    specs, points = [], []
    for w, h in sizes:
        print(f"fastload bench: {args.num_images} photo-like {w}x{h} JPEGs, packed, in {cache} "
              f"(generated once)", file=sys.stderr, flush=True)
        packed = data.photo_pack(cache, w, h, args.num_images, args.seed, args.workers)
        summary = data.dataset_summary(packed)
        files = data.jpeg_megabytes(packed)
        points.append({"size": f"{w}x{h}", "megapixels": w * h / 1e6, "packed": str(packed),
                       "mean_jpeg_mb": files})
        for r in rows:
            specs.append(RowSpec(r, packed, key=f"{r}@{w}x{h}",
                                 extra={"source_size": f"{w}x{h}", "megapixels": w * h / 1e6,
                                        "num_images": summary["num_images"]}))
    print(f"fastload bench: {len(specs)} (row, size) pairs, {args.windows} alternating windows "
          f"each", file=sys.stderr, flush=True)
    by_key = measure(specs, args, out)
    results = {"meta": {**meta(args, rows), "mode": "megapixels", "sizes": points,
                        "num_images": args.num_images},
               "rows": [by_key[s.key] for s in specs]}
    results["meta"]["total_s"] = time.monotonic() - t_start
    md, written = report.write_megapixels(results, out)
    print(md)
    print(f"wrote {', '.join(map(str, written))} in {results['meta']['total_s']:.0f} s",
          file=sys.stderr)
    return 0
