"""`fastload.DataLoader`: a drop-in for ``torch.utils.data.DataLoader`` yielding batch dicts on the device.

The DataLoader holds the configuration, the position in the data (one :class:`EpochPlan`:
the seed and epoch live there and nowhere else; the batches of the epoch consumed) and its
resources. It builds the stages once (sample builder, image backend, device stage, thread
pool: :class:`BatchMaker`) and hands them to a :class:`Producer` thread per run of epochs;
the producer never sees the DataLoader. The consumer side (:class:`_EpochIterator`) takes
batches off the producer's queue, counts them and hands them to the training stream.

Lifetime, one mechanism: everything that must be released (the pool, the backend, the one
producer slot) is in :class:`~.resources.Resources`, which alone starts and stops threads and is closed
by the loader's one ``weakref.finalize`` (``close()``, deletion, interpreter exit). An
iterator is a lease on the slot, returned when it is exhausted, closed, or dropped (a weak
reference whose callback the resources own).

Fork: threads do not survive ``fork()`` (a pool whose threads are gone takes tasks nobody
runs), and a lock one of them held stays held in the child. The resources remember the
process that made them; in another process they are never touched again (closing them there
does nothing), and the loader builds fresh ones from the same stages on its next use
(:meth:`DataLoader._live_resources`): the child iterates like the parent would, and an
iterator carried over a fork goes on from its next batch.
"""
from __future__ import annotations

import os
import weakref
from dataclasses import replace
from typing import Optional

import numpy as np
import torch

from fastload.augment.config import AugmentConfig
from fastload.targets.specs import resolve_targets
from fastload.warmup import loader_jobs, warm_up

from .backends import BackendContext, check_backend, default_backend
from .device import DeviceStage
from .producer import Producer
from .resources import Resources
from .sample import SampleBuilder, dataset_info, open_dataset
from .sampling import EpochPlan, detect_distributed

__all__ = ["DataLoader"]

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


def _integer(name: str, value, lo: Optional[int] = None, hi: Optional[int] = None,
             why: str = "") -> int:
    """``value`` as an int, or ``ValueError`` naming ``name`` (a bool, a float or anything
    outside [lo, hi] is refused, never rounded or clamped)."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if ok and (lo is None or value >= lo) and (hi is None or value <= hi):
        return int(value)
    rng = (f" in [{lo}, {hi}]" if hi is not None else f" >= {lo}") if lo is not None else ""
    raise ValueError(f"fastload: {name} must be an integer{rng}, got {value!r}"
                     + (f" ({why})" if why else ""))


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


class _EpochIterator:
    """Iterator over one epoch (the consumer side). ``close()``, an exception or dropping it
    mid-epoch stops its producer; an epoch run to its end leaves the producer running on the
    next epoch (parked in the loader's resources). Carried over a fork, it goes on from its
    next batch with a producer of the child."""

    def __init__(self, loader: "DataLoader", producer: Producer, plan: EpochPlan, start: int):
        self._loader = loader  # like torch: a live iterator keeps its loader alive
        self._resources = loader._resources
        self._producer, self._plan = producer, plan
        self._next = start  # the batch of the plan this iterator delivers next
        self.generation = loader._generation
        self._n = len(plan)
        self._timeout = loader.timeout
        self._done = False

    @property
    def active(self) -> bool:
        """Still delivering batches (not exhausted, closed or stopped)."""
        return not self._done

    @property
    def remaining(self) -> int:
        """Batches of the epoch not delivered yet."""
        return self._n - self._next

    @property
    def epoch(self) -> int:
        return self._plan.epoch

    def _follow_fork(self) -> None:
        """This iterator was made in the parent of a fork: go on from its next batch with a
        producer of this process (unless a newer iteration took over meanwhile)."""
        if not self._loader._is_current(self):
            self._done = True
            return
        self._resources = self._loader._live_resources()
        self._producer = self._resources.start(self._plan, self._next, self._loader.prefetch,
                                               wait_s=None)
        self._resources.lease(self._producer, self)

    def __iter__(self):
        return self

    def __len__(self):
        return self._n

    def __next__(self):
        while True:
            if not self._done and not self._resources.in_this_process():
                self._follow_fork()
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
                self._loader._epoch_finished(self)
                self._resources.park(self._producer, self._plan.next_epoch())
                raise StopIteration
            if kind == "error":
                self.close()
                raise item
            payload, skips = item
            self._next = k + 1
            self._loader._delivered(self, k, payload, skips)
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

        # the kernels this configuration uses, compiled (or loaded) by the first iteration
        self._warmup_jobs = loader_jobs(augment, self.targets, self.backend, self.device.type)
        builder = SampleBuilder(self.dataset, augment, self.targets, self.info)
        # host arrays alive at once: the queue, the batch being built, one started ahead, the
        # loop's current and previous batch; recycled on the CPU once the loop drops them
        device_stage = DeviceStage(self.device, augment.dtype, augment.out_size, builder.fixed_shapes,
                                   recycle=self.prefetch + 3)
        ctx = BackendContext(augment, batch_size=self.batch_size, num_threads=self.num_threads,
                             device=self.device)
        self._resources = Resources(builder, device_stage, self.backend, ctx, on_error)
        self._finalizer = weakref.finalize(self, self._resources.close)
        self._current = None  # weak reference to the iterator of the latest iteration
        self._generation = 0  # bumped when set_epoch / load_state_dict move the position

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
        """Run epoch ``epoch`` next (its order and augmentation come from (seed, epoch)).

        Call it between epochs: while an iterator of this loader still has batches to
        deliver it raises ``RuntimeError`` (the batches in flight belong to the running
        epoch; exhaust, ``close()`` or drop that iterator first)."""
        epoch = _integer("set_epoch: epoch", epoch, lo=0)
        self._check_between_iterations(f"set_epoch({epoch})")
        self._plan = self._plan.with_epoch(epoch)
        self._consumed = self._resume = 0
        self._generation += 1

    def state_dict(self) -> dict:
        """Position in the data: resume with :meth:`load_state_dict` at the exact next batch.
        ``num_samples``, ``shuffle`` and ``drop_last`` (with ``world_size`` and
        ``batch_size``) say which plan the position is in; a loader with another one refuses
        the state."""
        return {"seed": self.seed, "epoch": self.epoch, "batches_consumed": self._consumed,
                "world_size": self.world_size, "batch_size": self.batch_size,
                "num_samples": len(self.dataset), "shuffle": self.shuffle,
                "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> None:
        """Make the next iteration continue epoch ``state['epoch']`` after
        ``state['batches_consumed']`` batches, with identical content.

        ``batches_consumed`` must be in [0, len(loader)] (``len(loader)``: the epoch has run
        to its last batch), else ``ValueError``: a position outside the epoch would replay or
        skip batches. Like :meth:`set_epoch`, not while an iteration is running."""
        for k in ("seed", "epoch", "batches_consumed"):
            if k not in state:
                raise ValueError(f"load_state_dict: missing key {k!r}")
        mine = {"world_size": self.world_size, "batch_size": self.batch_size,
                "num_samples": len(self.dataset), "shuffle": self.shuffle,
                "drop_last": self.drop_last}
        for k, v in mine.items():  # (absent from states saved before they were added)
            if k in state and state[k] != v:
                raise ValueError(f"load_state_dict: state was saved with {k}={state[k]}, "
                                 f"this loader has {v}: its batches are not this loader's")
        seed = _integer("load_state_dict: seed", state["seed"])
        epoch = _integer("load_state_dict: epoch", state["epoch"], lo=0)
        n = len(self)
        consumed = _integer("load_state_dict: batches_consumed", state["batches_consumed"], lo=0,
                            hi=n, why=f"this loader has {n} batches per epoch: {len(self.dataset)} "
                                      f"samples, batch_size={self.batch_size}, world_size="
                                      f"{self.world_size}, drop_last={self.drop_last}")
        self._check_between_iterations("load_state_dict")
        self._plan = replace(self._plan, seed=seed, epoch=epoch)
        self._consumed = self._resume = consumed
        self._generation += 1

    def __iter__(self) -> _EpochIterator:
        resources = self._live_resources()
        warm_up(self._warmup_jobs)  # once per process; see fastload.warmup
        start = self._resume
        producer = resources.start(self._plan, start, self.prefetch, wait_s=self.timeout or None)
        self._resume, self._consumed = 0, start
        it = _EpochIterator(self, producer, self._plan, start)
        self._current = weakref.ref(it)
        resources.lease(producer, it)
        return it

    def close(self) -> None:
        """Stop the running iteration, the producer and the thread pool, and release the
        image backend (also done on deletion and at interpreter exit)."""
        self._live_resources()
        self._finalizer()

    # ---------------------------------------------------------------- position and process
    def _is_current(self, it: _EpochIterator) -> bool:
        """``it`` is the latest iteration and the position has not been moved since."""
        return (self._current is not None and self._current() is it
                and it.generation == self._generation)

    def _check_between_iterations(self, what: str) -> None:
        it = self._current() if self._current is not None else None
        if it is not None and it.active and it.remaining > 0:
            raise RuntimeError(
                f"fastload: {what} called while an iteration of epoch {it.epoch} is running "
                f"({it.remaining} of its {len(it)} batches not delivered yet); call it between "
                "epochs, or close() / drop that iterator first")

    def _live_resources(self) -> Resources:
        """The resources of this process: after a fork, the child's first use builds its own
        from the same stages (the parent's threads did not survive the fork) and leaves the
        parent's untouched."""
        r = self._resources
        if not r.in_this_process():
            self._finalizer.detach()
            fresh = r.for_forked_child()
            if r.closed:
                fresh.close()
            self._resources = fresh
            self._finalizer = weakref.finalize(self, fresh.close)
        return self._resources

    # ---------------------------------------------------------------- consumer callbacks
    def _delivered(self, it: _EpochIterator, k: int, payload, skips) -> None:
        """Batch ``k`` of ``it``'s epoch reached the loop (payload None: all skipped):
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
        if it.generation == self._generation:
            self._consumed = k + 1

    def _epoch_finished(self, it: _EpochIterator) -> None:
        """``it``'s epoch ran to its end: advance, unless set_epoch / load_state_dict moved
        the position since ``it`` started."""
        if it.generation == self._generation:
            self._plan = self._plan.next_epoch()
            self._consumed = self._resume = 0
            self._generation += 1
