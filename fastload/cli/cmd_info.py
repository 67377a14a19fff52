"""``fastload info DATASET``: a packed dataset's manifest summary."""
from __future__ import annotations


def _cmd_info(args) -> int:
    from fastload.store import format_info
    print(format_info(args.dataset))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="print a packed dataset's manifest summary")
    p.add_argument("dataset", help="packed dataset directory (with manifest.json)")
    p.set_defaults(func=_cmd_info)
