"""A test-only input format whose one sample makes the shard task holding it fail, inside the
Ray worker: the real task, the real retry, the real error path of ``pack --engine ray``.

Registered for a test with ``monkeypatch.setitem(fastload.formats.READERS, "faulty",
"tests.helpers.faults")``; it reads a COCO dataset and wraps sample ``index``. Every time a
task prepares that sample, the count in the ``counter`` file goes up by one; the first
``fail`` times the task fails: ``mode="raise"`` raises
:class:`fastload.optional.MissingDependency` (what a node without an extra does; a sample's
own errors are skipped and counted, this one is not the sample's fault and ends the task),
``mode="exit"`` kills the worker process (what the OOM killer does).
"""
from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

from fastload.formats import coco
from fastload.formats.base import SourceSample
from fastload.optional import MissingDependency


def attempts(counter) -> int:
    p = Path(counter)
    return int(p.read_text()) if p.exists() else 0


class FaultySample(SourceSample):
    """``base`` whose ``problems`` (the first thing ``prepare_sample`` reads) fails on the
    first ``fail`` attempts."""

    def __init__(self, base: SourceSample, counter: str, fail: int, mode: str):
        self._fault = (str(counter), int(fail), mode)
        super().__init__(**{f.name: getattr(base, f.name) for f in fields(SourceSample)})

    def _get_problems(self):
        counter, fail, mode = self._fault
        n = attempts(counter)
        Path(counter).write_text(str(n + 1))
        if n < fail:
            if mode == "exit":
                os._exit(1)
            raise MissingDependency(f"injected failure {n + 1} of {fail}")
        return self._problems

    def _set_problems(self, v):
        self._problems = v

    problems = property(_get_problems, _set_problems)


def read(src: Path, counter: str, fail: int = 1, mode: str = "raise", index: int = 0,
         images=None):
    ds = coco.read(src, images=images)
    ds.samples = list(ds.samples)
    ds.samples[index] = FaultySample(ds.samples[index], counter, fail, mode)
    return ds
