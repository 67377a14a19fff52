"""``fastload pack SRC OUT --format F``: a source dataset into LMDB shards (:mod:`fastload.packing`)."""
from __future__ import annotations

from pathlib import Path

from fastload.formats import READERS


def _cmd_pack(args) -> int:
    from fastload.packing import pack
    s = pack(args.src, args.out, args.format, shard_size=args.shard_size,
             workers=args.workers, strict=args.strict, overwrite=args.overwrite,
             crowd=args.crowd, progress=not args.quiet, images=args.images,
             options=parse_options(args.option), engine=args.engine, address=args.address,
             max_pixels=args.max_pixels, allow_empty=args.allow_empty)
    print(s)
    if s.problems:
        print(f"  {s.problems} problem(s) listed in {Path(s.out) / 'problems.txt'}")
    return 0


def parse_options(items) -> dict:
    """``["split=train", "tolerance=0.5"]`` -> dict of strings (readers parse their own values)."""
    from fastload.packing import PackError
    out = {}
    for it in items or []:
        key, sep, value = it.partition("=")
        if not sep or not key:
            raise PackError(f"--option wants KEY=VALUE, got {it!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pack", help="pack a dataset (COCO, labelme, VIA, YOLO-seg, mask PNGs) into LMDB shards",
        description="Pack a dataset into LMDB shards plus manifest.json. Bad samples are "
                    "skipped, counted and listed in OUT/problems.txt (--strict: fail instead); "
                    "a pack where no image or not one annotation packs fails, saying what "
                    "was looked for (--allow-empty: write it anyway). See docs/bad_input.md.")
    p.add_argument("src", help="source dataset (COCO: the JSON file or a folder holding it)")
    p.add_argument("out", help="output directory (created; must be absent or empty, or a "
                               "fastload dataset with --overwrite; never one that holds SRC "
                               "or the images)")
    p.add_argument("--format", "-f", required=True, choices=list(READERS))
    p.add_argument("--shard-size", type=int, default=10000, help="records per shard (10000)")
    p.add_argument("--workers", "-j", type=int, default=None,
                   help="worker threads (default: all cores; --engine ray without --address: "
                        "the CPUs of the local Ray instance)")
    p.add_argument("--strict", action="store_true", help="fail on the first problem")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT when it is a dataset fastload packed (a folder with any "
                        "other file is refused); one pack per OUT at a time")
    p.add_argument("--crowd", choices=["ignore", "skip"], default="ignore",
                   help="COCO crowd/RLE regions: keep as ignore regions (default) or skip")
    p.add_argument("--images", default=None,
                   help="image folder (COCO: default found beside the JSON; VIA: default the "
                        "JSON's folder; masks: default PNGImages)")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", default=[],
                   help="a reader option, repeatable (e.g. -o split=train for yolo, "
                        "-o ignore_labels=crowd,blur for labelme, -o tolerance=0 for masks; "
                        "see docs/formats.md)")
    p.add_argument("--max-pixels", default=None, metavar="N",
                   help="pixels one image (or COCO RLE, mask) may have, checked on the header "
                        "before decoding; larger ones are skipped and counted as "
                        "too_many_pixels (default: 178956970, or FASTLOAD_MAX_IMAGE_PIXELS; "
                        "0: no limit)")
    p.add_argument("--allow-empty", action="store_true",
                   help="write the dataset even when no image or not one annotation packs "
                        "(default: fail, saying what the reader looked for)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this machine's cores (default); ray: one Ray task per shard, "
                        "on the cluster at --address or a local Ray instance (needs "
                        "fastload[ray]; see docs/scaling.md)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="the Ray cluster for --engine ray (auto, HOST:PORT or ray://HOST:PORT; "
                        "default: start a local Ray instance with --workers CPUs)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pack)
