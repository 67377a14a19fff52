"""`fastload.DataLoader`: a drop-in for ``torch.utils.data.DataLoader`` yielding batch dicts on the device.

The DataLoader holds the configuration, the position in the data (one :class:`EpochPlan`:
the seed and epoch live there and nowhere else; the batches of the epoch consumed) and its
resources. It builds the stages once (sample builder, image backend, device stage, thread
pool: :class:`BatchMaker`) and hands them to a :class:`Producer` thread per run of epochs;
the producer never sees the DataLoader. The consumer side (:class:`_EpochIterator`) takes
batches off the producer's queue, counts them and hands them to the training stream.

Lifetime, one mechanism: everything that must be released (the pool, the backend, the one
producer slot) is in :class:`_Resources`, which alone starts and stops threads and is closed
by the loader's one ``weakref.finalize`` (``close()``, deletion, interpreter exit). An
iterator is a lease on the slot, returned when it is exhausted, closed, or dropped (a weak
reference whose callback the resources own).
"""
from __future__ import annotations

import itertools
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Optional

import numpy as np
import torch

from fastload.augment.config import AugmentConfig
from fastload.targets.specs import resolve_targets

from .backends import BackendContext, check_backend, create_backend, default_backend
from .batch import BatchMaker
from .device import DeviceStage
from .producer import Producer
from .sample import SampleBuilder, dataset_info, open_dataset
from .sampling import EpochPlan, detect_distributed

__all__ = ["DataLoader"]

#: how long closing waits for a producer to finish the call it is in (it is a daemon)
_JOIN_S = 5.0
_NUMBERS = itertools.count()

_REFUSED = {
    "num_workers": (0, "fastload uses threads, not worker processes: pass num_threads=N "
                       "(CPU threads for reading, targets and the CPU image backend)"),
    "collate_fn": (None, "fastload collates into a fixed batch dict (see fastload.loader docs): "
                         "post-process the dict in your loop, or add a targets=FunctionTarget(fn) "
                         "for extra per-sample arrays"),
    "sampler": (None, "fastload samples itself: use shuffle=, seed=, set_epoch(), and "
                      "rank=/world_size= (detected under torchrun) instead of a (Distributed)Sampler"),
    "batch_sampler": (None, "use batch_size=, drop_last=, shuffle= and seed= instead"),
    "worker_init_fn": (None, "there are no worker processes: do per-process setup before "
                             "creating the loader"),
    "persistent_workers": (False, "fastload's threads already persist for the loader's life; "
                                  "drop the argument"),
    "multiprocessing_context": (None, "fastload starts no processes; drop the argument"),
    "pin_memory": (False, "batches are delivered on `device` already (host buffers are pinned "
                          "internally when device is CUDA); drop the argument"),
    "pin_memory_device": ("", "pass device='cuda:N' instead"),
    "in_order": (True, "fastload always yields batches in order (required for exact resume)"),
}


def _torch_keywords(torch_kwargs: dict, prefetch: int, seed: int):
    """torch DataLoader keywords -> (prefetch, seed, timeout); refuse the others."""
    timeout = 0.0
    for key, val in torch_kwargs.items():
        if key == "prefetch_factor":
            if val is not None:
                prefetch = int(val)
        elif key == "generator":
            if val is not None:
                seed = int(val.initial_seed())
        elif key == "timeout":
            timeout = float(val)
            if timeout < 0:
                raise ValueError(f"timeout must be >= 0, got {val}")
        elif key in _REFUSED:
            default, msg = _REFUSED[key]
            if not (val is default or val == default):
                raise TypeError(f"fastload.DataLoader does not support {key}={val!r}: {msg}")
        else:
            raise TypeError(f"fastload.DataLoader got an unexpected keyword argument {key!r}")
    return prefetch, seed, timeout


def _resolve_device(device, local_rank: int, world_size: int) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but torch sees no CUDA device; use device='cpu'")
        if dev.index is None:  # one process per GPU under torchrun: cuda:LOCAL_RANK
            dev = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {dev} does not exist ({torch.cuda.device_count()} GPUs visible)")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'cuda', 'cuda:N' or 'cpu', got {device!r}")
    return dev


class _Resources:
    """What a DataLoader owns that must be released: the thread pool, the image backend
    (built on the first iteration, with the seed of that moment in its context) and
    the one producer slot. The only code that starts or stops producer threads: a new one
    starts only after the previous one has ended, so a timed-out producer never overlaps the
    next. Holds no reference to the DataLoader. Nothing waits while holding the lock (threads
    are started and joined outside it), since the finalizer and the lease callback may run
    in any thread, whenever the garbage collector runs."""

    def __init__(self, builder: SampleBuilder, device: DeviceStage, backend: str,
                 backend_ctx: BackendContext, on_error: str):
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
        with self._lock:
            p = self.producer if ref is self._lease else None
            if p is not None:
                p.stop()
                self._lease = None
        if p is not None and not self._in_own_thread():  # (the producer may wait on this thread)
            p.join(_JOIN_S)

    def park(self, producer: Producer, plan: EpochPlan) -> None:
        """The epoch ``producer`` delivered has ended: keep it prefetching ``plan``."""
        with self._lock:
            if producer is self.producer and not producer.stopped:
                producer.delivers, producer.start = plan, 0
                self.parked, self._lease = True, None
            else:
                producer.stop()

    def release(self, producer: Producer, join_s: Optional[float] = _JOIN_S) -> None:
        """The iterator of ``producer`` is done with it: stop it unless it is parked; wait
        up to ``join_s`` s for it (0: do not wait; the next start() will)."""
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
        left to a short-lived thread instead of deadlocking."""
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
            p.join(_JOIN_S)
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.backend is not None:
            self.backend.close()


class _EpochIterator:
    """Iterator over one epoch (the consumer side). ``close()``, an exception or dropping it
    mid-epoch stops its producer; an epoch run to its end leaves the producer running on the
    next epoch (parked in the loader's resources)."""

    def __init__(self, loader: "DataLoader", producer: Producer, plan: EpochPlan):
        self._loader = loader  # like torch: a live iterator keeps its loader alive
        self._resources = loader._resources
        self._producer, self._plan = producer, plan
        self._n = len(plan)
        self._timeout = loader.timeout
        self._done = False

    def __iter__(self):
        return self

    def __len__(self):
        return self._n

    def __next__(self):
        while True:
            if self._done:
                raise StopIteration
            try:
                got = self._producer.get(self._timeout)
            except TimeoutError:
                # the producer is stuck in a read or a kernel: stop it without waiting for it
                # (a daemon thread); the next iteration starts only once it has ended
                self._done = True
                self._resources.release(self._producer, join_s=0.0)
                raise
            except BaseException:
                self.close()
                raise
            if got is None:  # stopped: a newer iteration or close() took over
                self._done = True
                raise StopIteration
            kind, epoch, k, item = got
            if kind == "end":
                self._done = True
                self._loader._epoch_finished(self._plan)
                self._resources.park(self._producer, self._plan.next_epoch())
                raise StopIteration
            if kind == "error":
                self.close()
                raise item
            payload, skips = item
            self._loader._delivered(k, payload, skips)
            if payload is None:  # every sample of this batch was skipped
                continue
            return DeviceStage.hand_off(*payload)

    def close(self):
        """Stop the producer thread and free queued batches (idempotent)."""
        self._done = True
        self._resources.release(self._producer)


class DataLoader:
    """Drop-in for ``torch.utils.data.DataLoader`` over a packed dataset, yielding batch dicts.

    ``dataset``: a packed directory (path) or a :class:`fastload.Dataset` (anything with
    ``len()`` and ``[i] -> fastload.record.Record``; ``.classes``, ``.keypoint_names`` and
    ``.flip_pairs`` are used when present).
    ``augment``: an :class:`AugmentConfig` (default ``AugmentConfig()``;
    ``AugmentConfig.off()`` for the plain resized image).
    ``targets``: names (``"centernet"``, ``"masks"``, ``"fcos"``, ``"keypoints"``) or spec
    objects from :mod:`fastload.targets.specs`, including ``FunctionTarget(fn)``.
    ``device``: ``"cuda"`` when available else ``"cpu"``; under distributed training
    ``cuda`` means ``cuda:LOCAL_RANK``.
    ``backend``: an image backend registered in :mod:`fastload.loader.backends`: ``"dali"``
    (the default on CUDA; also runs on the CPU with DALI's CPU operators) or ``"cpu"``
    (fused Numba, the default on the CPU).
    ``num_threads``: CPU threads (default: the cores available, at most 8).
    ``prefetch``: batches built ahead of the training loop (bounded queue).
    ``rank`` / ``world_size``: explicit distributed split; detected from
    ``torch.distributed`` or torchrun's ``RANK``/``WORLD_SIZE`` otherwise
    (see :func:`fastload.loader.epoch_indices` for the policy).
    ``on_error``: ``"raise"`` (a :class:`SampleError` naming index, id and file reaches the
    loop) or ``"skip"`` (the sample is left out of its batch and counted in ``stats``; a
    batch whose samples all fail is not yielded).

    torch DataLoader keywords: ``prefetch_factor`` (-> ``prefetch``), ``generator``
    (-> ``seed = generator.initial_seed()``) and ``timeout`` (seconds to wait for a batch,
    0 = no limit) are honoured; ``num_workers``, ``collate_fn``, ``sampler``,
    ``batch_sampler``, ``worker_init_fn``, ``persistent_workers``,
    ``multiprocessing_context``, ``pin_memory``, ``pin_memory_device`` and ``in_order``
    are accepted only at their torch default (a no-op) and otherwise refused with a
    ``TypeError`` saying what to use instead.

    Epochs: each new iteration runs epoch ``loader.epoch``; a completed epoch advances it
    by one, so without ``set_epoch`` successive epochs get new orders (like torch with
    ``shuffle=True``) and with ``set_epoch(e)`` epoch e exactly (like DistributedSampler).
    An iteration abandoned mid-epoch is restarted from its first batch by the next
    ``iter()``, unless ``load_state_dict`` says otherwise.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, augment: Optional[AugmentConfig] = None, targets=(),
                 device=None, num_threads: Optional[int] = None, prefetch: int = 2,
                 rank: Optional[int] = None, world_size: Optional[int] = None,
                 on_error: str = "raise", backend: Optional[str] = None, **torch_kwargs):
        prefetch, seed, self.timeout = _torch_keywords(torch_kwargs, prefetch, seed)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if int(prefetch) < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if augment is None:
            augment = AugmentConfig()
        if not isinstance(augment, AugmentConfig):
            raise TypeError(f"augment must be an AugmentConfig, got {type(augment).__name__}")
        self.dataset = open_dataset(dataset)
        self.augment, self.prefetch, self.on_error = augment, int(prefetch), on_error
        self.rank, self.world_size, self.local_rank = detect_distributed(rank, world_size)
        self.device = _resolve_device(device, self.local_rank, self.world_size)
        self.backend = check_backend(default_backend(self.device.type) if backend is None else backend)
        if num_threads is None:
            try:
                num_threads = len(os.sched_getaffinity(0))
            except AttributeError:  # no sched_getaffinity (macOS)
                num_threads = os.cpu_count() or 1
            num_threads = max(1, min(8, num_threads))
        self.num_threads = int(num_threads)
        self.info = dataset_info(self.dataset)
        self.targets = resolve_targets(targets, self.info)

        # the position in the data: the plan (seed, epoch, ...) and the batches consumed
        self._plan = EpochPlan(len(self.dataset), int(batch_size), seed=int(seed), epoch=0,
                               shuffle=shuffle, drop_last=drop_last, rank=self.rank,
                               world_size=self.world_size)
        self._consumed = 0  # batches of the current epoch already handed to the loop
        self._resume = 0    # first batch of the next iteration
        self.stats = {"batches": 0, "samples": 0, "skipped": 0, "skipped_batches": 0,
                      "skipped_samples": []}

        builder = SampleBuilder(self.dataset, augment, self.targets, self.info)
        device_stage = DeviceStage(self.device, augment.dtype, augment.out_size, builder.fixed_shapes)
        ctx = BackendContext(augment, batch_size=self.batch_size, num_threads=self.num_threads,
                             device=self.device)
        self._resources = _Resources(builder, device_stage, self.backend, ctx, on_error)
        self._finalizer = weakref.finalize(self, self._resources.close)

    # ---------------------------------------------------------------- the plan's fields
    seed = property(lambda self: self._plan.seed, doc="Seed of the order and the augmentation.")
    epoch = property(lambda self: self._plan.epoch, doc="The epoch the next iteration runs.")
    batch_size = property(lambda self: self._plan.batch_size)
    shuffle = property(lambda self: self._plan.shuffle)
    drop_last = property(lambda self: self._plan.drop_last)

    # ---------------------------------------------------------------- torch-like API
    def __len__(self) -> int:
        return len(self._plan)

    def set_epoch(self, epoch: int) -> None:
        """Run epoch ``epoch`` next (its order and augmentation come from (seed, epoch))."""
        self._plan = self._plan.with_epoch(epoch)
        self._consumed = self._resume = 0

    def state_dict(self) -> dict:
        """Position in the data: resume with :meth:`load_state_dict` at the exact next batch."""
        return {"seed": self.seed, "epoch": self.epoch, "batches_consumed": self._consumed,
                "world_size": self.world_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Make the next iteration continue epoch ``state['epoch']`` after
        ``state['batches_consumed']`` batches, with identical content."""
        for k in ("seed", "epoch", "batches_consumed"):
            if k not in state:
                raise ValueError(f"load_state_dict: missing key {k!r}")
        for k in ("world_size", "batch_size"):
            if k in state and state[k] != getattr(self, k):
                raise ValueError(f"load_state_dict: state was saved with {k}={state[k]}, "
                                 f"this loader has {getattr(self, k)}")
        self._plan = replace(self._plan, seed=int(state["seed"]), epoch=int(state["epoch"]))
        self._consumed = self._resume = int(state["batches_consumed"])

    def __iter__(self) -> _EpochIterator:
        start = min(self._resume, len(self))
        producer = self._resources.start(self._plan, start, self.prefetch,
                                         wait_s=self.timeout or None)
        self._resume, self._consumed = 0, start
        it = _EpochIterator(self, producer, self._plan)
        self._resources.lease(producer, it)
        return it

    def close(self) -> None:
        """Stop the running iteration, the producer and the thread pool, and release the
        image backend (also done on deletion and at interpreter exit)."""
        self._finalizer()

    # ---------------------------------------------------------------- consumer callbacks
    def _delivered(self, k: int, payload, skips) -> None:
        """Batch ``k`` of the current epoch reached the loop (payload None: all skipped):
        stats count what the loop has been handed, not what was prefetched."""
        st = self.stats
        if skips:
            st["skipped"] += len(skips)
            st["skipped_samples"].extend(skips)
            del st["skipped_samples"][:-100]
        if payload is None:
            st["skipped_batches"] += 1
        else:
            st["batches"] += 1
            st["samples"] += int(payload[0]["index"].shape[0])
        self._consumed = k + 1

    def _epoch_finished(self, plan: EpochPlan) -> None:
        """The epoch of ``plan`` ran to its end: advance (unless set_epoch moved elsewhere)."""
        if self._plan.epoch == plan.epoch:
            self._plan = self._plan.next_epoch()
            self._consumed = self._resume = 0
