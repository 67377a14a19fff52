"""The `fastload` command line. Each subcommand lives in its own module, which exposes
``add_parser(subparsers)``; the parser it adds sets ``func`` (called with the parsed
args, returning an exit code)."""
from __future__ import annotations

import argparse
import importlib
import sys

# (module, description) in the order `fastload --help` lists them
SUBCOMMANDS = [
    "fastload.pack",      # pack
    "fastload.store",     # info, verify
    "fastload.demo",      # demo
    "fastload.bench",     # bench
    "fastload.inspect",   # inspect
]


def build_parser() -> argparse.ArgumentParser:
    from fastload import __version__
    p = argparse.ArgumentParser(
        prog="fastload",
        description="Pack polygon datasets into LMDB shards and load them fast "
                    "(DALI augmentation, Numba targets, torch tensors on the device).")
    p.add_argument("--version", action="version", version=f"fastload {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for modname in SUBCOMMANDS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:  # subcommand not built yet
                continue
            raise
        if hasattr(mod, "add_parser"):
            mod.add_parser(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # fastload's errors are ValueErrors naming the file/sample
        print(f"fastload {args.command}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fastload info X | head`
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
