"""The producer thread: batches built ahead into a bounded queue.

A :class:`Producer` is handed a :class:`~.batch.BatchMaker` (the stages) and an
:class:`~.sampling.EpochPlan` with the batch to start at; it holds nothing else (never the
DataLoader). Its daemon thread builds the plan's batches in order and puts
``("batch", epoch, k, (payload, skips))`` for each, then ``("end", epoch, None, None)``, then
goes on with the next epoch's batches (at most ``prefetch`` of them wait in the queue), so a
training loop that moves on to the next epoch finds them ready: no bubble at epoch
boundaries. An exception ends the thread after ``("error", epoch, None, exc)``. The records
of batch k + 1 are read (on the pool) while batch k is built.

:meth:`Producer.stop` asks the thread to end; it notices between batches and while waiting
to put one (every 50 ms), and frees the queued batches as it ends. ``stop`` takes no lock and
does not wait (:meth:`Producer.join` does), so it is safe in a finalizer, which the garbage
collector may run in any thread, even one inside this producer's queue.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Optional

from .batch import BatchMaker
from .sampling import EpochPlan

__all__ = ["Producer"]


class Producer:
    def __init__(self, maker: BatchMaker, plan: EpochPlan, start: int, prefetch: int,
                 name: str = "fastload-producer"):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(prefetch)))
        self._stopped = False  # a plain flag: set from any thread without a lock
        #: the plan whose batches the queue delivers next, from batch ``start`` (kept up to date
        #: by the consumer, which alone knows where the head of the queue is)
        self.delivers, self.start = plan, int(start)
        self.thread = threading.Thread(target=self._run, args=(maker, plan, int(start)),
                                       name=name, daemon=True)
        self.thread.start()

    # ---------------------------------------------------------------- producer side
    def _run(self, maker: BatchMaker, plan: EpochPlan, start: int) -> None:
        try:
            maker.device.bind_thread()
            while not self._stopped:
                batches = plan.batches()
                ahead = maker.read_ahead(batches[start], plan) if start < len(batches) else None
                for k in range(start, len(batches)):
                    if self._stopped:
                        return
                    cur = ahead
                    ahead = maker.read_ahead(batches[k + 1], plan) if k + 1 < len(batches) else None
                    item = maker.make(batches[k], plan, cur)
                    del cur
                    if not self._put(("batch", plan.epoch, k, item)):
                        return
                    del item
                if not self._put(("end", plan.epoch, None, None)):
                    return
                plan, start = plan.next_epoch(), 0
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
            self._put(("error", plan.epoch, None, e))
        finally:
            if self._stopped:  # free the batches nobody will take
                self._drain()

    def _put(self, item) -> bool:
        while not self._stopped:
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    # ---------------------------------------------------------------- consumer side
    def get(self, timeout: float = 0.0):
        """The next item, or None once the producer was stopped. ``RuntimeError`` if the thread
        died without an item, ``TimeoutError`` after ``timeout`` seconds (0: no limit)."""
        t0 = time.monotonic()
        while True:
            if self._stopped:
                return None
            try:
                return self._queue.get(timeout=0.05)
            except queue.Empty:
                if not self.thread.is_alive():
                    try:  # it may have put its last item just before exiting
                        return self._queue.get_nowait()
                    except queue.Empty:
                        raise RuntimeError("fastload: the producer thread stopped without a "
                                           "result") from None
                if timeout and time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"fastload: no batch within timeout={timeout} s") from None

    def queued(self) -> int:
        """Items waiting in the queue."""
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Ask the thread to end (it frees the queued batches); takes no lock, does not wait."""
        self._stopped = True

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def join(self, timeout: Optional[float]) -> bool:
        """Wait up to ``timeout`` s (None: no limit) for the thread to end; True if it did."""
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)
        return not self.thread.is_alive()
