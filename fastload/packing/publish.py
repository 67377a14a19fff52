"""Where ``fastload pack`` writes, and how it replaces OUT without losing anything.

- **Atomic publish**: everything is written into a temp folder beside OUT
  (``.OUT.fastload-tmp-PID``), the manifest last, then the folder is renamed to OUT. An
  existing OUT is first moved aside (``.OUT.fastload-old-PID``) and removed after. A pack
  that dies leaves no OUT (or the previous OUT, untouched).
- **Recovery** (:func:`cleanup_leftovers`, run by the next pack to OUT): temp and old folders
  of packs whose process is gone are removed, except that a pack killed between its two
  renames leaves OUT missing and the previous dataset in its old folder: that one is renamed
  back to OUT (restored), never deleted.
- **What may be replaced** (:func:`replace_refusal`): only an OUT that is empty or holds a
  fastload dataset and nothing else (``manifest.json`` plus the files a pack writes). A
  folder with anything else in it is the user's, and ``--overwrite`` refuses it.
- **One pack per OUT** (:class:`OutLock`): a lock file beside OUT (``.OUT.fastload-lock``,
  ``flock``), held from the checks to the publish; a second pack to the same OUT is refused
  while the first runs. The kernel releases the lock when its process dies, so a killed pack
  never blocks the next one.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from pathlib import Path
from typing import List, Optional

TMP_MARK = ".fastload-tmp-"
OLD_MARK = ".fastload-old-"
LOCK_MARK = ".fastload-lock"

#: the files a pack writes into OUT (anything else makes OUT the user's folder)
PACK_FILES = re.compile(r"manifest\.json|pack_report\.json|problems\.txt|"
                        r"shard-\d{5,}\.(lmdb|lmdb-lock|digests)|"
                        r"\.(manifest\.json|pack_report\.json)\.tmp-\d+")


class OutBusy(RuntimeError):
    """Another live process holds the lock of this OUT."""


def temp_dir_for(out: Path) -> Path:
    """This process's temp folder for a pack to ``out`` (beside it: one file system)."""
    return out.parent / f".{out.name}{TMP_MARK}{os.getpid()}"


def lock_path_for(out: Path) -> Path:
    return out.parent / f".{out.name}{LOCK_MARK}"


class OutLock:
    """An exclusive, non-blocking ``flock`` on ``.OUT.fastload-lock`` beside OUT (a context
    manager). :class:`OutBusy` when another process holds it. The file is removed on
    release; a lock file left by a killed process is simply taken over."""

    def __init__(self, out: Path):
        self.path = lock_path_for(Path(out))
        self.fd: Optional[int] = None

    def acquire(self) -> "OutLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutBusy(str(self.path)) from None
                raise
            # the holder before us may have removed the file after we opened it: then our
            # lock is on a file nobody else will ever lock; take the one at the path instead
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def out_refusal(out: Path, overwrite: bool) -> Optional[str]:
    """Why a pack must not write to ``out``, or None: OUT is absent, empty, or (``overwrite``)
    a fastload dataset holding nothing but what a pack writes (:func:`replace_refusal`)."""
    if not os.path.lexists(out):
        return None
    if not out.is_dir():
        return f"{out}: exists and is not a directory"
    if not any(out.iterdir()):
        return None
    if not overwrite:
        return f"{out}: exists and is not empty; pass --overwrite to replace it"
    why = replace_refusal(out)
    return None if why is None else f"--overwrite refused: {why}"


def prepare_out(out: Path, overwrite: bool) -> Optional[str]:
    """At the start of a pack (OUT's lock held): clean up after earlier packs
    (:func:`cleanup_leftovers`, which may restore a dataset a killed publish left aside),
    then say why the pack must not write to OUT (:func:`out_refusal`, naming a restore), or
    None."""
    restored = cleanup_leftovers(out)
    why = out_refusal(out, overwrite)
    if why is not None and restored:
        why += f" ({'; '.join(restored)}: a pack was killed while replacing it)"
    return why


def input_refusal(path: Path, out: Path, what: str) -> Optional[str]:
    """Why ``path``, an input of the pack, forbids OUT ``out`` (it is OUT or lies in it:
    replacing OUT would delete it), or None."""
    rp, ro = Path(path).resolve(), Path(out).resolve()
    if rp == ro or ro in rp.parents:
        return (f"{out}: OUT is or contains {what} {path}; choose another OUT (replacing OUT "
                f"would delete {what})")
    return None


def replace_refusal(out: Path) -> Optional[str]:
    """Why the existing folder ``out`` must not be replaced, or None when it may be: it is
    empty, or a fastload dataset (a ``manifest.json``) holding only what a pack writes."""
    try:
        names = sorted(os.listdir(out))
    except FileNotFoundError:
        return None
    if not names:
        return None
    if "manifest.json" not in names:
        return (f"{out} is not a fastload dataset (no manifest.json): --overwrite replaces only "
                f"an empty folder or a dataset fastload packed; remove it yourself or choose "
                f"another OUT")
    foreign = [n for n in names if not PACK_FILES.fullmatch(n)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        return (f"{out} holds files fastload did not write ({shown}): --overwrite would delete "
                f"them; move them out or choose another OUT")
    return None


def _pid_of(d: Path, prefix: str) -> Optional[int]:
    try:
        return int(d.name[len(prefix):])
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def cleanup_leftovers(out: Path) -> List[str]:
    """Clean up after earlier packs to ``out`` whose process is gone: restore a previous
    dataset that a pack killed between its two renames left aside (OUT missing), remove
    the other temp and old folders. Returns what was done, in words."""
    parent = out.parent
    done: List[str] = []
    if not parent.exists():
        return done
    old_prefix, tmp_prefix = f".{out.name}{OLD_MARK}", f".{out.name}{TMP_MARK}"
    olds = sorted((d for d in parent.glob(old_prefix + "*")
                   if (pid := _pid_of(d, old_prefix)) is not None and not _alive(pid)),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for d in olds:
        if not os.path.lexists(out) and (d / "manifest.json").exists():
            os.replace(d, out)  # the previous dataset, restored
            fsync_dir(parent)
            done.append(f"restored the previous dataset from {d.name}")
        else:
            shutil.rmtree(d, ignore_errors=True)
    for d in parent.glob(tmp_prefix + "*"):
        pid = _pid_of(d, tmp_prefix)
        if pid is not None and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
    return done


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
    removed after; a kill between the two renames is undone by the next pack's
    :func:`cleanup_leftovers`). The caller holds OUT's lock and has checked that OUT may be
    replaced (:func:`replace_refusal`)."""
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
