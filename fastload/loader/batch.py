"""One batch from its indices, with the stages it is handed.

:class:`BatchMaker` holds the stages of the loader (the sample builder, the image backend,
the device stage, the thread pool) and the error policy; it knows nothing of the
DataLoader. For batch k the producer calls::

    reads = maker.read_ahead(indices_of_batch_k_plus_1, plan)   # records + params, on the pool
    item  = maker.make(indices_of_batch_k, plan, reads_of_batch_k)

``make`` is ``finish(start(...))``, two halves that a producer may interleave to keep
``maker.lookahead`` batches started ahead of the one it finishes (the image backend's
``lookahead``: DALI on a GPU works on batch k + 1 while batch k is finished):

``start``: (1) the records and parameters read ahead; (2) the images submitted to the
backend and the annotations (moved instances, targets) to the pool, both writing into
buffers from the device stage. It never raises: an error is kept for ``finish``, so errors
reach the loop in batch order. ``finish``: (3) a sample that failed is dropped and the
batch rebuilt from the others (rare; batch content stays a function of the good samples
only), or its :class:`SampleError` raised under ``on_error="raise"``; (4) the batch dict
collated and copied to the device. Returns ``(payload, skips)``: ``payload`` is
``(batch, event)`` or None when every sample failed; ``skips`` lists the samples left out.
"""
from __future__ import annotations

from concurrent.futures import Executor, Future
from typing import Dict, List, Optional, Tuple

import numpy as np

from .backends import ImageBackend
from .collate import batch_arrays
from .device import DeviceStage, image_tensor
from .sample import IMAGE, Sample, SampleBuilder, SampleError
from .sampling import EpochPlan

__all__ = ["BatchMaker"]


class BatchMaker:
    def __init__(self, builder: SampleBuilder, backend: ImageBackend, device: DeviceStage,
                 pool: Executor, on_error: str):
        self.builder, self.backend, self.device, self.pool = builder, backend, device, pool
        self.on_error = on_error

    def read_ahead(self, indices: np.ndarray, plan: EpochPlan) -> List[Future]:
        """Start reading one batch: a future per sample giving its :class:`Sample`."""
        return [self.pool.submit(self.builder.read, int(i), plan.epoch, plan.seed) for i in indices]

    @property
    def lookahead(self) -> int:
        """Batches to start ahead of the one being finished (the backend's ``lookahead``)."""
        return max(0, int(getattr(self.backend, "lookahead", 0)))

    def make(self, indices: np.ndarray, plan: EpochPlan, reads: List[Future]):
        """The batch of ``indices`` (see the module docstring) -> (payload, skips)."""
        return self.finish(self.start(indices, plan, reads))

    def start(self, indices: np.ndarray, plan: EpochPlan, reads: List[Future]) -> "_Started":
        """Steps 1-2 for the batch of ``indices``; never raises (see the module docstring)."""
        st = _Started()
        try:
            for f in reads:  # 1. records + params (submitted one batch ahead)
                try:
                    st.samples.append(f.result())
                except SampleError as e:
                    st.read_errors.append(e)
            if st.samples:  # 2. images + annotations
                st.launched = self._launch(st.samples)
        except BaseException as e:  # noqa: BLE001 - raised by finish(), in batch order
            st.error = e
        return st

    def finish(self, st: "_Started"):
        """Steps 3-4 of a started batch -> (payload, skips)."""
        if st.error is not None:
            raise st.error
        skips: list = []
        for e in st.read_errors:
            self._fail(e, skips)  # raises under on_error="raise"
        samples, launched = st.samples, st.launched
        del st
        while samples:  # 3. drop the failed samples and redo
            images, fixed, per, errors = self._collect(samples, launched)
            if not errors:
                break
            drop = set()
            for j, e in sorted(errors, key=lambda x: x[0]):
                if j not in drop:
                    drop.add(j)
                    self._fail(e, skips)  # raises under on_error="raise"
            samples = [s for j, s in enumerate(samples) if j not in drop]
            launched = self._launch(samples) if samples else None
        if not samples:
            return None, skips
        host = {"image": image_tensor(images, self.device.image_dtype)}  # 4. collate, copy
        host.update(batch_arrays([s.index for s in samples], per, fixed))
        return self.device.to_device(host), skips

    def _launch(self, samples: List[Sample]):
        """Submit the images of ``samples`` to the backend and their annotations to the pool
        -> (pending images, fixed-size target buffers, annotation futures)."""
        dev, b = self.device, self.builder
        fixed = dev.target_buffers(len(samples))
        out = dev.image_buffer(len(samples)) if self.backend.writes_host_buffer else None
        recs = [s.record for s in samples]
        with dev.stream():  # device work of the backend goes to the loader's stream
            pending = self.backend.submit([r.image_bytes for r in recs],
                                          [s.params for s in samples],
                                          [r.file_name for r in recs],
                                          [(int(r.height), int(r.width)) for r in recs], out=out)
        futs = [self.pool.submit(b.annotate, s, {k: v[j:j + 1] for k, v in fixed.items()})
                for j, s in enumerate(samples)]
        return pending, fixed, futs

    def _collect(self, samples: List[Sample], launched):
        """Wait for a launched batch -> (images, fixed targets, per-sample arrays,
        [(position, SampleError)])."""
        pending, fixed, futs = launched
        with self.device.stream():
            images, image_errors = pending.result()
        errors: List[Tuple[int, SampleError]] = []
        for j, e in image_errors:
            s = samples[j]
            err = SampleError(s.index, s.record.id, s.record.file_name, IMAGE, e)
            err.__cause__ = e
            errors.append((j, err))
        per: List[Optional[Dict[str, np.ndarray]]] = []
        for j, f in enumerate(futs):
            try:
                per.append(f.result())
            except SampleError as e:
                errors.append((j, e))
                per.append(None)
        return images, fixed, per, errors

    def _fail(self, err: SampleError, skips: list) -> None:
        if self.on_error == "raise":
            raise err
        skips.append({"index": err.index, "id": err.sample_id, "file": err.file_name,
                      "error": str(err)})


class _Started:
    """A batch between :meth:`BatchMaker.start` and :meth:`BatchMaker.finish`."""

    __slots__ = ("samples", "read_errors", "launched", "error")

    def __init__(self):
        self.samples: List[Sample] = []
        self.read_errors: List[SampleError] = []
        self.launched = None
        self.error: Optional[BaseException] = None
