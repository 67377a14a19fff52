"""``fastload bench [DATASET]``: fastload side by side with torch's DataLoader on the same data
(:mod:`fastload.bench`)."""
from __future__ import annotations

import os

from fastload import bench


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench", help="benchmark fastload against torch's DataLoader on the same data",
        description="Run, on the same data, augmentations, targets, batch size and cores, one "
                    "after another: torch-seed (torch DataLoader, PIL/NumPy augmentations, "
                    "Python-loop CenterNet targets), torch-numpy (NumPy targets), fastload-cpu, "
                    "fastload-gpu (CUDA only) and the bounds (LMDB reads alone, JPEG decode "
                    "alone). Writes OUT/report.md, OUT/results.json and, with fastload[bench] "
                    "(matplotlib), the chart OUT/throughput.png.")
    p.add_argument("dataset", nargs="?", default=None, metavar="DATASET",
                   help="an ORIGINAL COCO dataset (folder with the JSON and images, or the JSON); "
                        "default: a synthetic one generated once into the cache")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=512, help="output height = width (default 512)")
    p.add_argument("--seconds", type=float, default=bench.DEFAULT_SECONDS,
                   help=f"measured seconds per row after warm-up (default {bench.DEFAULT_SECONDS:g})")
    p.add_argument("--windows", type=int, default=4, help="measurement windows per row (default 4)")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="minimum warm-up seconds per row (and at least max(2, workers) batches)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch worker processes / fastload threads / decode threads "
                        "(default: all cores)")
    p.add_argument("--rows", default=bench.DEFAULT_ROWS,
                   help="comma-separated rows: torch-seed, torch-numpy, fastload-cpu, fastload-gpu, "
                        "bounds (= bound-lmdb, bound-decode, bound-nvjpeg)")
    p.add_argument("--out", default="bench-out", help="output folder (default ./bench-out)")
    p.add_argument("--packed", default=None, help="an existing pack of DATASET (skip packing)")
    p.add_argument("--images", type=int, default=bench.DEFAULT_IMAGES,
                   help=f"images in the synthetic dataset (default {bench.DEFAULT_IMAGES})")
    p.add_argument("--step-ms", type=float, default=None,
                   help="simulated training step per batch, ms (default: half of torch-seed's "
                        "measured time per batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None,
                   help="cache folder for the synthetic dataset (default $FASTLOAD_CACHE/bench "
                        "or ~/.cache/fastload/bench)")
    p.set_defaults(func=_main)
    return p


def _main(args):
    from fastload.bench.suite import run
    # the command as it can be re-run (every setting explicit), shown in report.md
    args.argv = ([args.dataset] if args.dataset else []) + [
        "--batch-size", str(args.batch_size), "--size", str(args.size),
        "--seconds", f"{args.seconds:g}", "--windows", str(args.windows),
        "--workers", str(args.workers), "--rows", args.rows, "--out", str(args.out)]
    if args.dataset is None:
        args.argv += ["--images", str(args.images)]
    if args.step_ms is not None:
        args.argv += ["--step-ms", f"{args.step_ms:g}"]
    return run(args)
