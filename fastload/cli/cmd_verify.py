"""``fastload verify DATASET``: checksums, records and images of a packed dataset; exit 1 when
anything is wrong."""
from __future__ import annotations

import sys
import time


def _cmd_verify(args) -> int:
    from fastload.store import Manifest, verify
    from fastload.store.remote import fetch, is_url
    t0 = time.perf_counter()
    if is_url(args.dataset):  # the cached copy (fetched and checked file by file first)
        args.dataset = str(fetch(args.dataset, progress=not args.quiet))
    notes: list = []
    problems = verify(args.dataset, decode_images=not args.no_decode, progress=not args.quiet,
                      notes=notes)
    for note in notes:
        print(f"verify: note: {note}", file=sys.stderr)
    for p in problems:
        print(p)
    n = Manifest.load(args.dataset, check_files=False).num_records
    if problems:
        print(f"verify: {len(problems)} problem(s) in {n} records", file=sys.stderr)
        return 1
    print(f"verify: OK, {n} records ({time.perf_counter() - t0:.1f} s)")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="check checksums and decode every image; exit code 1 if anything is wrong",
        description="Check a packed dataset against its manifest: record counts and "
                    "checksums, each record against its digest (naming a changed record; "
                    "packs without digests files are checked shard by shard), every record "
                    "decodes, every image decodes to its recorded size. Each shard is read in "
                    "a child process, so damaged LMDB pages that crash the reader are "
                    "reported as a damaged shard. Exit code 1 if anything is wrong.")
    p.add_argument("dataset", help="packed dataset directory (with manifest.json), or its URL "
                                   "(checks the local cache's copy)")
    p.add_argument("--no-decode", action="store_true", help="checksums and records only")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_verify)
