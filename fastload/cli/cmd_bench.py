"""``fastload bench [DATASET]``: fastload side by side with torch's DataLoader on the same data
(:mod:`fastload.bench`)."""
from __future__ import annotations

import argparse
import os
import sys

from fastload import bench


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench", help="benchmark fastload against torch's DataLoader on the same data",
        description="Measure, on the same packed dataset, augmentations, targets, batch size and "
                    "cores, in alternating windows: torch-seed (torch DataLoader, PIL/NumPy "
                    "augmentation, Python-loop CenterNet targets), torch-numpy (NumPy targets), "
                    "albumentations (torch DataLoader, albumentations/OpenCV augmentation, NumPy "
                    "targets), fastload-cpu, fastload-gpu (CUDA only) and the bounds (LMDB reads "
                    "alone, image decode alone). Writes OUT/report.md, OUT/results.json and, with "
                    "fastload[bench] (matplotlib), the chart OUT/throughput.png. --megapixels: "
                    "images/s against the source image size instead (OUT/megapixels.png).")
    p.add_argument("dataset", nargs="?", default=None, metavar="DATASET",
                   help="a packed dataset (fastload pack's output), or a source dataset with "
                        "--format; default: synthetic 640x480 JPEGs generated and packed once "
                        "into the cache")
    p.add_argument("--format", "-f", default=None,
                   help="DATASET is a source dataset of this format (coco, labelme, via, yolo, "
                        "masks): pack it into OUT/packed first")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"default {bench.DEFAULT_BATCH} ({bench.MEGAPIXEL_BATCH} with --megapixels)")
    p.add_argument("--size", type=int, default=512, help="output height = width (default 512)")
    p.add_argument("--seconds", type=float, default=bench.DEFAULT_SECONDS,
                   help=f"measured seconds per row, over all its windows (default "
                        f"{bench.DEFAULT_SECONDS:g})")
    p.add_argument("--windows", type=int, default=bench.DEFAULT_WINDOWS,
                   help=f"alternating measurement windows per row (default {bench.DEFAULT_WINDOWS})")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="minimum warm-up seconds per row (and at least max(2, workers) batches)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch worker processes / fastload threads / decode threads "
                        "(default: all cores)")
    p.add_argument("--rows", default=None,
                   help="comma-separated rows: torch-seed, torch-numpy, albumentations, "
                        "fastload-cpu, fastload-gpu, bounds (= bound-lmdb, bound-decode, "
                        f"bound-nvjpeg); default {bench.DEFAULT_ROWS} "
                        f"({bench.MEGAPIXEL_ROWS} with --megapixels)")
    p.add_argument("--out", default="bench-out", help="output folder (default ./bench-out)")
    p.add_argument("--num-images", type=int, default=None,
                   help=f"images in each generated dataset (default {bench.DEFAULT_IMAGES}; "
                        f"{bench.MEGAPIXEL_IMAGES} per size with --megapixels)")
    p.add_argument("--images", type=int, dest="legacy_images", default=None,
                   help=argparse.SUPPRESS)  # the old name of --num-images
    p.add_argument("--step-ms", type=float, default=None,
                   help="simulated training step per batch, ms (default: half of torch-seed's "
                        "measured time per batch)")
    p.add_argument("--stages", action="store_true",
                   help="also time the stages of one image (decode, warp, photometric, targets, "
                        "collate) for albumentations and fastload-cpu, one thread, in-process")
    p.add_argument("--megapixels", nargs="?", const=bench.MEGAPIXEL_SIZES, default=None,
                   metavar="WxH,...",
                   help="megapixel mode: photo-like JPEGs of these sizes (default "
                        f"{bench.MEGAPIXEL_SIZES}), every row on every size, one run, "
                        "alternating windows; writes OUT/megapixels.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None,
                   help="cache folder for the generated datasets (default $FASTLOAD_CACHE/bench "
                        "or ~/.cache/fastload/bench)")
    p.set_defaults(func=_main)
    return p


def _main(args):
    from fastload.bench.suite import run
    if args.legacy_images is not None:
        if args.num_images is not None:
            raise ValueError("--images is the old name of --num-images: give only --num-images")
        print("fastload bench: --images is now --num-images (a count; pack's --images is a "
              "folder)", file=sys.stderr)
        args.num_images = args.legacy_images
    mp = args.megapixels is not None
    if args.batch_size is None:
        args.batch_size = bench.MEGAPIXEL_BATCH if mp else bench.DEFAULT_BATCH
    if args.num_images is None:
        args.num_images = bench.MEGAPIXEL_IMAGES if mp else bench.DEFAULT_IMAGES
    if args.rows is None:
        args.rows = bench.MEGAPIXEL_ROWS if mp else bench.DEFAULT_ROWS
    # the command as it can be re-run (every setting explicit), shown in report.md
    args.argv = ([args.dataset] if args.dataset else []) + (
        ["--format", args.format] if args.format else []) + (
        ["--megapixels", args.megapixels] if mp else []) + [
        "--batch-size", str(args.batch_size), "--size", str(args.size),
        "--seconds", f"{args.seconds:g}", "--windows", str(args.windows),
        "--workers", str(args.workers), "--rows", args.rows, "--out", str(args.out)]
    if args.dataset is None:
        args.argv += ["--num-images", str(args.num_images)]
    if args.step_ms is not None:
        args.argv += ["--step-ms", f"{args.step_ms:g}"]
    if args.stages:
        args.argv += ["--stages"]
    return run(args)
