"""``fastload demo``: make a small synthetic dataset, pack it and load it (:mod:`fastload.demo`)."""
from __future__ import annotations


def _cmd_demo(args) -> int:
    from fastload.demo import run_demo
    return run_demo(args.dir, args.n, args.keypoints)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="generate a small synthetic dataset, pack it and load it")
    p.add_argument("--dir", default=None, help="working directory (default: a new temp dir)")
    p.add_argument("--n", type=int, default=64, help="number of images (64)")
    p.add_argument("--keypoints", action="store_true", help="add keypoints to the instances")
    p.set_defaults(func=_cmd_demo)
