"""The producer thread: batches built ahead into a bounded queue.

A :class:`Producer` is handed a :class:`~.batch.BatchMaker` (the stages) and an
:class:`~.sampling.EpochPlan` with the batch to start at; it holds nothing else (never the
DataLoader). Its daemon thread builds the plan's batches in order and puts
``("batch", epoch, k, (payload, skips))`` for each, then ``("end", epoch, None, None)``, then
goes on with the next epoch's batches (at most ``prefetch`` of them wait in the queue), so a
training loop that moves on to the next epoch finds them ready: no bubble at epoch
boundaries. An exception ends the thread after ``("error", epoch, None, exc)``. The records
of batches k + 1 .. k + 1 + L are read (on the pool) while batch k is built, across epoch ends
too. With a backend that has ``lookahead`` L (``BatchMaker.lookahead``; DALI on a GPU and the
CPU backend on 2 threads or more: 1), batches k + 1 .. k + L are started (images submitted,
annotations on the pool) before batch k is finished, across epoch ends too; items still reach
the queue in order. A batch whose records are not read yet is started only after the batches
started before it are delivered: a slow read (a stalled disk) never holds back a batch that
is ready.

:meth:`Producer.stop` asks the thread to end; it notices between batches and while waiting
to put one (every 50 ms), and frees the queued batches as it ends. ``stop`` takes no lock and
does not wait (:meth:`Producer.join` does), so it is safe in a finalizer, which the garbage
collector may run in any thread, even one inside this producer's queue.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Iterator, Optional

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
        self._epoch = plan.epoch  # of the item being delivered (for an error)
        try:
            maker.device.bind_thread()
            lookahead = maker.lookahead
            window: deque = deque()  # (plan, k, started batch); k None: the end of plan's epoch
            for p, k, indices, reads in _schedule(maker, plan, start, lookahead + 1):
                if self._stopped:
                    return
                # records still being read: deliver what is started rather than wait for them
                if k is not None and not all(f.done() for f in reads):
                    if not self._deliver(maker, window, 0):
                        return
                window.append((p, k, None if k is None else maker.start(indices, p, reads)))
                del reads
                if not self._deliver(maker, window, lookahead):
                    return
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
            self._put(("error", self._epoch, None, e))
        finally:
            if self._stopped:  # free the batches nobody will take
                self._drain()

    def _deliver(self, maker: BatchMaker, window: deque, keep: int) -> bool:
        """Finish and queue the window's items, oldest first, until at most ``keep`` started
        batches are left in it and its head is not an epoch end; False once stopped."""
        while window and (window[0][1] is None or sum(w[1] is not None for w in window) > keep):
            p, k, st = window.popleft()
            self._epoch = p.epoch
            item = ("end", p.epoch, None, None) if k is None else ("batch", p.epoch, k, maker.finish(st))
            del st
            if not self._put(item):
                return False
            del item
        return True

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


def _schedule(maker: BatchMaker, plan: EpochPlan, start: int, depth: int = 1) -> Iterator[tuple]:
    """``(plan, k, indices, reads)`` for every batch from batch ``start`` of ``plan`` on, epoch
    after epoch, with ``(plan, None, None, None)`` after each epoch's last batch. The reads of
    a batch (``maker.read_ahead``) are started ``depth`` batches before it is yielded."""
    def items():
        p, s = plan, start
        while True:
            batches = p.batches()
            for k in range(s, len(batches)):
                yield p, k, batches[k]
            yield p, None, None
            p, s = p.next_epoch(), 0

    def pull():
        p, k, idx = next(it)
        ahead.append((p, k, idx, None if k is None else maker.read_ahead(idx, p)))

    def batches_ahead():
        return sum(a[1] is not None for a in ahead)

    it, ahead = items(), deque()
    pull()
    while True:
        while batches_ahead() < depth + 1 or ahead[-1][1] is None:
            pull()  # (after an epoch's end, the next epoch's first batches too)
        yield ahead.popleft()
