"""``fastload inspect DATASET``: a grid of samples exactly as the loader yields them
(:mod:`fastload.preview`)."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="render a grid of samples as the loader produces them",
                       description="Render a grid of samples exactly as fastload.DataLoader produces "
                                   "them (same seed, epoch and augmentation), with transformed polygons, "
                                   "boxes, keypoints and the CenterNet heatmap drawn over them. A sample "
                                   "that fails is drawn as a tile naming its error (and listed).")
    p.add_argument("dataset", help="packed dataset directory")
    p.add_argument("--augment", metavar="CONFIG", help="AugmentConfig as .json or .yaml (default: AugmentConfig())")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--cols", type=int, default=4, help="samples per row (default 4)")
    p.add_argument("--tile", type=int, default=256, help="panel size in pixels (default 256)")
    p.add_argument("--shuffle", action="store_true", help="take the first N of the shuffled epoch order")
    p.add_argument("--raw", action="store_true", help="the same samples with every augmentation off")
    p.add_argument("--targets", default="centernet",
                   help="comma-separated targets to overlay (default: centernet; e.g. centernet,masks)")
    p.add_argument("--out", default="grid.png", help="output PNG (default grid.png)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from fastload.preview import preview_samples, render_preview
    from fastload.augment.config import AugmentConfig
    cfg = AugmentConfig.from_file(args.augment) if args.augment else AugmentConfig()
    targets = tuple(t for t in args.targets.split(",") if t)
    samples = preview_samples(args.dataset, n=args.n, seed=args.seed, epoch=args.epoch,
                              augment=cfg, raw=args.raw, targets=targets, shuffle=args.shuffle)
    img = render_preview(samples, tile=args.tile, cols=args.cols)
    img.save(args.out)
    print(f"wrote {args.out} ({img.width}x{img.height})")
    for pos in sorted(samples.errors):  # drawn as tiles; said here too
        print(f"  {samples.errors[pos]}")
    return 0
