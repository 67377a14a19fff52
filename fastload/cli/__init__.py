"""The ``fastload`` command line: one module per command (``fastload/cli/cmd_<name>.py``),
one error policy (here).

Each command module exposes ``add_parser(subparsers)``; the parser it adds sets ``func``,
called with the parsed arguments and returning an exit code. Commands print their results
and raise on failure; :func:`main` turns failures into one line on stderr:

- fastload's own errors (``ValueError`` subclasses that name the file or sample:
  ``PackError``, ``StoreError``, ``SampleError``, bad arguments), ``OSError`` (a missing
  path, permissions) and a missing optional dependency (``MissingDependency``, naming the
  extra to install): ``fastload COMMAND: message``, exit 2; a full disk says so;
- a closed output pipe (``fastload info X | head -1``): silent, exit 0;
- Ctrl-C: ``interrupted``, exit 130.

Anything else is a bug in fastload and keeps its traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from fastload.optional import MissingDependency

#: command modules, in the order ``fastload --help`` lists them
COMMANDS = ["pack", "info", "verify", "inspect", "bench", "demo", "warmup"]


def build_parser() -> argparse.ArgumentParser:
    from fastload import __version__
    p = argparse.ArgumentParser(
        prog="fastload",
        description="Pack polygon datasets into LMDB shards and load them fast "
                    "(DALI augmentation, Numba targets, torch tensors on the device).")
    p.add_argument("--version", action="version", version=f"fastload {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"fastload.cli.cmd_{name}").add_parser(sub)
    return p


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush
    does not raise again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass


def error_message(e: BaseException) -> str:
    """The one line shown for a failed command."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return f"the disk is full ({e.filename or e}); free some space and run it again"
    return str(e)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # before OSError: `fastload info X | head -1`
        _quiet_stdout()
        return 0
    except (ValueError, OSError, MissingDependency) as e:
        print(f"fastload {args.command}: {error_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
