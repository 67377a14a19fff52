"""The atomic publish of ``fastload pack``: everything is written into a temp folder beside
OUT (``.OUT.fastload-tmp-PID``), the manifest last, then the folder is renamed to OUT. A pack
that dies leaves no OUT (or the previous OUT, untouched); the next pack to the same OUT
removes the temp folders whose process is gone."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

TMP_MARK = ".fastload-tmp-"
OLD_MARK = ".fastload-old-"


def temp_dir_for(out: Path) -> Path:
    """This process's temp folder for a pack to ``out`` (beside it: one file system)."""
    return out.parent / f".{out.name}{TMP_MARK}{os.getpid()}"


def cleanup_leftovers(out: Path) -> None:
    """Remove temp/old folders of earlier packs to ``out`` whose process is gone."""
    parent = out.parent
    if not parent.exists():
        return
    for prefix in (f".{out.name}{TMP_MARK}", f".{out.name}{OLD_MARK}"):
        for d in parent.glob(prefix + "*"):
            try:
                pid = int(d.name[len(prefix):])
            except ValueError:
                continue
            alive = pid != os.getpid()
            if alive:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    pass  # another user's live process
            if not alive:
                shutil.rmtree(d, ignore_errors=True)


def fsync_dir(d: Path) -> None:
    """Make the directory's entries durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def publish(tmp: Path, out: Path) -> None:
    """Rename the finished temp folder to OUT (an existing OUT is moved aside first and
    removed after)."""
    fsync_dir(tmp)
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}{OLD_MARK}{os.getpid()}"
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
