"""Measure rows in alternating windows: every row is a live process (:mod:`fastload.bench.runner`),
paused (``SIGSTOP`` on its process group) while the others measure.

    rows = [RowSpec("albumentations", packed), RowSpec("fastload-cpu", packed)]
    results = run_alternating(rows, settings, logdir)

Schedule, one row at a time, never two at once:

1. start each row in turn and wait until it has built its loader and paused;
2. warm-up: each row in turn (``warmup`` seconds and at least ``max(2, workers)`` batches);
3. ``windows`` rounds; in each round every row measures one window of ``seconds / windows``
   seconds, in the order given (A B C A B C ...): slow drifts of a shared machine (another
   job starting, thermal throttling) then hit every row alike instead of the rows that
   happened to run last;
4. data wait (rows that have a loader, when a step is known): each row in turn;
5. finish: each row closes and reports.

A paused row does nothing (its DataLoader workers and threads are paused with it, so nothing is
prefetched while another row measures): the windows of a row are pieces of one uninterrupted
run. A row that fails or is not available does not stop the others; one that does not answer
within its phase's time limit is killed and reported as failed. The driver kills every row on
its way out (Ctrl-C included); killed itself, its rows and their workers die with it
(``fastload.bench.runner.die_with_parent``).
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from fastload.bench.proctree import tree_stopped
from fastload.bench.runner import LABELS


@dataclass
class RowSpec:
    """One row to run: the row name, its packed dataset, a key naming it in logs and results
    (the row name unless one dataset has several rows of the same name, as in the megapixel
    mode), and extra result fields."""
    row: str
    packed: Path
    key: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.key = self.key or self.row


@dataclass
class Settings:
    batch_size: int = 32
    size: int = 512
    workers: int = 2
    seed: int = 0
    seconds: float = 6.0
    windows: int = 4
    warmup: float = 1.0


class RowProcess:
    """One row's process (``python -m fastload.bench.runner``), paused between commands; its
    output goes to ``LOGDIR/KEY.log``, its final result to :attr:`result`."""

    def __init__(self, spec: RowSpec, settings: Settings, logdir: Path, env: dict):
        self.spec = spec
        self.result = None
        cmd_r, self.cmd_w = os.pipe()
        self.res_r, res_w = os.pipe()
        argv = [sys.executable, "-m", "fastload.bench.runner", "--row", spec.row,
                "--packed", str(spec.packed), "--batch-size", str(settings.batch_size),
                "--size", str(settings.size), "--workers", str(settings.workers),
                "--seed", str(settings.seed), "--cmd-fd", str(cmd_r), "--res-fd", str(res_w)]
        self.log = open(logdir / f"{spec.key}.log", "w")
        self.logpath = logdir / f"{spec.key}.log"
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, pass_fds=(cmd_r, res_w))
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""

    @property
    def alive(self):
        return self.result is None

    def _fail(self, reason):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.flush()
        tail = self.logpath.read_text(errors="replace")[-600:].strip().splitlines()
        self.result = {"row": self.spec.row, "label": LABELS.get(self.spec.row, self.spec.row),
                       "status": "failed",
                       "reason": f"failed: {reason}" + (f": {tail[-1]}" if tail else "")}

    def receive(self, limit_s: float, phase: str):
        """The row's next answer; None when it ended (its result is then set)."""
        t0 = time.monotonic()
        while b"\n" not in self._buf:
            left = limit_s - (time.monotonic() - t0)
            if left <= 0:
                self._fail(f"timed out after {limit_s:.0f} s in {phase}")
                return None
            ready, _, _ = select.select([self.res_r], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.res_r, 65536)
                if not chunk:
                    self._fail(f"exit {self.proc.wait()} in {phase}")
                    return None
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if msg["phase"] == "final":
            self.result = msg["result"]
            self.proc.wait()
            return None
        deadline = time.monotonic() + 30  # the answer comes just before the row pauses itself
        while not tree_stopped(self.proc.pid):
            if time.monotonic() > deadline:
                self._fail(f"did not pause after {phase}")
                return None
            time.sleep(0.002)
        return msg

    def run(self, cmd: dict, limit_s: float):
        """Send a command, continue the paused row, return its answer (None if it ended)."""
        os.write(self.cmd_w, (json.dumps(cmd) + "\n").encode())
        os.killpg(self.proc.pid, signal.SIGCONT)
        return self.receive(limit_s, cmd["cmd"])

    def close(self):
        for fd in (self.cmd_w, self.res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.log.close()


def run_alternating(specs: List[RowSpec], settings: Settings, logdir, env: dict,
                    step_ms: Optional[Callable[[dict], Optional[float]]] = None,
                    progress: Callable[[str], None] = lambda msg: None) -> dict:
    """Run ``specs`` in alternating windows (module docstring); returns ``{key: result}``.

    ``step_ms(results_so_far)``: the simulated training step for the data-wait phase, computed
    after the windows from the rows' window answers (``{key: [answers]}``); None: no data wait.
    ``env``: the rows' environment (``fastload.bench.suite.row_environment``)."""
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    win = settings.seconds / settings.windows
    rows: List[RowProcess] = []
    try:
        for spec in specs:  # 1. start, one at a time
            r = RowProcess(spec, settings, logdir, env)
            rows.append(r)
            if r.receive(600, "setup") is not None:
                progress(f"{spec.key}: ready")
        live = lambda: [r for r in rows if r.alive]  # noqa: E731
        for r in live():  # 2. warm-up
            ans = r.run({"cmd": "warmup", "seconds": settings.warmup,
                         "min_batches": max(2, settings.workers)}, settings.warmup + 600)
            if ans:
                progress(f"{r.spec.key}: warm ({ans['batches']} batches, {ans['seconds']:.1f} s)")
        answers = {r.spec.key: [] for r in rows}
        for w in range(settings.windows):  # 3. the windows, round robin
            for r in live():
                ans = r.run({"cmd": "window", "seconds": win}, 20 * win + 300)
                if ans:
                    answers[r.spec.key].append(ans)
            progress(f"window {w + 1}/{settings.windows}: " + ", ".join(
                f"{k} {a[-1]['rate']:.1f}/s" for k, a in answers.items() if len(a) > w))
        step = step_ms(answers) if step_ms else None
        if step is not None:  # 4. data wait
            for r in live():
                if r.spec.row.startswith("bound-"):
                    continue
                ans = r.run({"cmd": "sim", "step_ms": step, "seconds": settings.seconds / 4},
                            settings.seconds + 600)
                if ans:
                    progress(f"{r.spec.key}: data wait {100 * ans['data_wait']:.0f}%")
        for r in live():  # 5. finish
            r.run({"cmd": "finish"}, 120)
        out = {}
        for r in rows:
            res = dict(r.result or {})
            res.update(r.spec.extra)
            res.setdefault("row", r.spec.row)
            res.setdefault("label", LABELS.get(r.spec.row, r.spec.row))
            out[r.spec.key] = res
        return out
    finally:
        for r in rows:
            r.close()
