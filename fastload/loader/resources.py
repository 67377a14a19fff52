"""The resources a :class:`fastload.DataLoader` owns, under one lifetime mechanism.

:class:`Resources` holds the thread pool, the image backend (built on the first iteration)
and the one producer slot; it alone starts and stops producer threads, and the loader's one
``weakref.finalize`` closes it (``close()``, deletion, interpreter exit). An iterator is a
lease on the slot (:meth:`Resources.lease`), returned when it is exhausted, closed or
dropped (a weak reference whose callback the resources own). Nothing here refers to the
DataLoader.

Fork: threads do not survive ``fork()`` (a pool whose threads are gone takes tasks nobody
runs) and a lock one of them held stays held in the child. Resources remember the process
that made them and do nothing in another one (closing them there is a no-op: the threads are
the parent's); :meth:`Resources.for_forked_child` gives the child fresh ones from the same
stages.
"""
from __future__ import annotations

import itertools
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Optional

from .backends import BackendContext, create_backend
from .batch import BatchMaker
from .device import DeviceStage
from .producer import Producer
from .sample import SampleBuilder
from .sampling import EpochPlan

__all__ = ["Resources"]

#: how long closing waits for a producer to finish the call it is in (it is a daemon)
JOIN_S = 5.0
_NUMBERS = itertools.count()


class Resources:
    """What a DataLoader owns that must be released: the thread pool, the image backend
    (built on the first iteration, with the seed of that moment in its context) and
    the one producer slot. The only code that starts or stops producer threads: a new one
    starts only after the previous one has ended, so a timed-out producer never overlaps the
    next. Holds no reference to the DataLoader. Nothing waits while holding the lock (threads
    are started and joined outside it), since the finalizer and the lease callback may run
    in any thread, whenever the garbage collector runs."""

    def __init__(self, builder: SampleBuilder, device: DeviceStage, backend: str,
                 backend_ctx: BackendContext, on_error: str):
        self.pid = os.getpid()  # the process whose threads these are
        self._config = (builder, device, backend, backend_ctx, on_error)
        number = next(_NUMBERS)  # names this loader's threads (see close())
        self._pool_name, self._producer_name = f"fastload-pool-{number}", f"fastload-producer-{number}"
        self.pool = ThreadPoolExecutor(backend_ctx.num_threads, thread_name_prefix=self._pool_name)
        self._builder, self._device, self._on_error = builder, device, on_error
        self._backend_name, self._backend_ctx = backend, replace(backend_ctx, pool=self.pool)
        self.backend = None
        self._maker: Optional[BatchMaker] = None
        self.producer: Optional[Producer] = None  # the running one, or the last one (stopped)
        self.parked = False  # the producer finished an epoch and prefetches the next one
        self._lease = None   # weak reference to the iterator consuming the producer
        self.closed = False
        self._lock = threading.RLock()

    def in_this_process(self) -> bool:
        return self.pid == os.getpid()

    def for_forked_child(self) -> "Resources":
        """Fresh resources for a forked child: the same sample builder, backend name and
        configuration; a new pool, backend, device stage (no CUDA stream of the parent) and
        no producer. Touches nothing of ``self`` (its locks may be held by threads that did
        not survive the fork)."""
        builder, device, backend, ctx, on_error = self._config
        device = DeviceStage(device.device, device.image_dtype, device.image_size,
                             device.target_shapes, recycle=device.recycle)
        return Resources(builder, device, backend, ctx, on_error)

    def _stages(self, seed: int) -> BatchMaker:
        if self._maker is None:
            self.backend = create_backend(self._backend_name, replace(self._backend_ctx, seed=seed))
            self._maker = BatchMaker(self._builder, self.backend, self._device, self.pool,
                                     self._on_error)
        return self._maker

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("fastload: this DataLoader is closed")

    def start(self, plan: EpochPlan, start: int, prefetch: int, wait_s: Optional[float]) -> Producer:
        """A producer delivering ``plan`` from batch ``start``: the parked one when it is
        exactly there, else a new one once the previous one has ended (waiting up to
        ``wait_s`` s, None: no limit; ``TimeoutError`` if it is still busy)."""
        with self._lock:
            self._check_open()
            p = self.producer
            self.parked, was_parked, self._lease = False, self.parked, None
            if (p is not None and was_parked and not p.stopped and p.alive and start == 0
                    and p.delivers == plan):
                return p
            if p is not None:
                p.stop()
        if p is not None and not p.join(wait_s):
            raise TimeoutError(
                f"fastload: the previous producer is still busy after {wait_s} s (stuck in a "
                "read or a kernel); not starting a second one next to it")
        new = Producer(self._stages(plan.seed), plan, start, prefetch, name=self._producer_name)
        with self._lock:
            self.producer = new
            if self.closed:
                new.stop()
                self._check_open()
        return new

    def lease(self, producer: Producer, iterator) -> None:
        """``iterator`` consumes ``producer``; dropping it mid-epoch stops the producer."""
        with self._lock:
            if producer is self.producer:
                self._lease = weakref.ref(iterator, self._lease_dropped)

    def _lease_dropped(self, ref) -> None:
        if not self.in_this_process():  # an iterator carried over a fork: nothing of ours
            return
        with self._lock:
            p = self.producer if ref is self._lease else None
            if p is not None:
                p.stop()
                self._lease = None
        if p is not None and not self._in_own_thread():  # (the producer may wait on this thread)
            p.join(JOIN_S)

    def park(self, producer: Producer, plan: EpochPlan) -> None:
        """The epoch ``producer`` delivered has ended: keep it prefetching ``plan``."""
        if not self.in_this_process():
            return
        with self._lock:
            if producer is self.producer and not producer.stopped:
                producer.delivers, producer.start = plan, 0
                self.parked, self._lease = True, None
            else:
                producer.stop()

    def release(self, producer: Producer, join_s: Optional[float] = JOIN_S) -> None:
        """The iterator of ``producer`` is done with it: stop it unless it is parked; wait
        up to ``join_s`` s for it (0: do not wait; the next start() will)."""
        if not self.in_this_process():
            return
        with self._lock:
            if producer is self.producer and self.parked:
                return
            producer.stop()
            if producer is self.producer:
                self._lease = None
        if join_s:
            producer.join(join_s)

    def close(self) -> None:
        """Stop the producer, then the pool, then the backend (idempotent).

        The loader's finalizer calls this whenever the garbage collector frees the loader,
        in whatever thread triggered the collection. When that is one of this loader's own
        threads, it may be inside the pool's own lock (``ThreadPoolExecutor.submit``
        allocates while holding it) or be the thread to wait for: the waiting part is then
        left to a short-lived thread instead of deadlocking. In a forked child it does
        nothing: the threads are the parent's (they do not exist here), and so may be the
        lock."""
        if not self.in_this_process():
            return
        with self._lock:
            if self.closed:
                return
            self.closed = True
            p, self._lease = self.producer, None
            if p is not None:
                p.stop()
        if self._in_own_thread():
            threading.Thread(target=self._finish_close, args=(p,), name="fastload-close",
                             daemon=True).start()
        else:
            self._finish_close(p)

    def _in_own_thread(self) -> bool:
        name = threading.current_thread().name
        return name == self._producer_name or name.startswith(self._pool_name + "_")

    def _finish_close(self, p: Optional[Producer]) -> None:
        if p is not None:
            p.join(JOIN_S)
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.backend is not None:
            self.backend.close()
