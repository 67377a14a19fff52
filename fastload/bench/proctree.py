"""A process and its descendants, read from /proc (Linux): their pids, summed CPU time, RSS and
PSS, whether they are all stopped. ``fastload bench`` measures each row's whole process tree
(the row's process and its DataLoader worker children) with these."""
from __future__ import annotations

import os
import threading

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_pids(root: int | None = None) -> list:
    """``root`` (default: this process) and all its descendants, from /proc/*/stat."""
    root = os.getpid() if root is None else root
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _stat(pid):
    """(cpu seconds, rss bytes) of one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fs = s[s.rindex(")") + 2:].split()
    # fields after ")" start at field 3 (state): utime=14, stime=15, rss=24 (1-based)
    return (int(fs[11]) + int(fs[12])) / _TICK, int(fs[21]) * _PAGE


def _pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def tree_cpu_seconds(pids=None) -> float:
    return sum(s[0] for s in map(_stat, pids or tree_pids()) if s)


class TreeMonitor:
    """Background sampler of the process tree's summed RSS and PSS (peaks)."""

    def __init__(self, interval=0.1):
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="fastload-bench-monitor")

    def __enter__(self):
        self.sample()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.sample()

    def sample(self):
        pids = tree_pids()
        rss = sum(s[1] for s in map(_stat, pids) if s)
        pss = [_pss(p) for p in pids]
        self.peak_rss = max(self.peak_rss, rss)
        if all(v is not None for v in pss):
            self.peak_pss = max(self.peak_pss, sum(pss))

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a process vanished mid-read: next sample
                pass


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2]


def tree_stopped(root: int) -> bool:
    """Whether every process of ``root``'s tree is stopped (state T/t), a zombie or gone."""
    return all(_state(p) in (None, "T", "t", "Z", "X") for p in tree_pids(root))
