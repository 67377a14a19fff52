"""`fastload.DataLoader`: a drop-in for ``torch.utils.data.DataLoader`` yielding batch dicts on the device.

Data flow of one batch (DESIGN.md)::

    sampler (seed, epoch, rank, shuffle) -> indices
      -> read records (thread pool)
      -> SampleParams per sample from (seed, epoch, index)      [fastload.augment.params]
      -> CPU threads: transform_instances + targets (Numba, GIL released)
      || images: backend ("dali": DALI pipeline on the GPU; "cpu": fused Numba CpuAugmenter)
      -> torch tensors on the device -> batch dict

A background producer thread builds batches ``prefetch`` ahead into a bounded queue while
the training loop consumes; records of batch k+1 are read while the images of batch k are
augmented. Everything is a thread (no worker processes): no fork, no copy-on-read growth.

Coordinates in the batch dict are continuous output pixel coordinates (pixel (i, j) covers
[j, j+1) x [i, i+1)), see DESIGN.md.

Batch dict (BRIEF.md, fixed):

- ``image`` (B,3,H,W) ``cfg.dtype``; ``index`` (B,) int64 dataset indices
- ``num_instances`` (B,) int64; ``boxes`` (B,M,4) float32 x1,y1,x2,y2 (0-padded);
  ``labels`` (B,M) int64 (-1 padded); ``ignore`` (B,M) bool
- ``poly_points`` (B,V,2) float32, each sample's part vertices concatenated, 0-padded;
  ``poly_lengths`` (B,P) int64 vertices per part (0-padded); ``poly_instance`` (B,P) int64
  instance of each part (-1 padded)
- ``keypoints`` (B,M,K,3) float32 when the dataset has keypoints
- one set of keys per target spec (see :mod:`fastload.targets.specs`).

M, V and P are the maxima over the batch (at least 0).
"""
from __future__ import annotations

import atexit
import math
import os
import queue
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.utils.data

from fastload.augment.config import AugmentConfig
from fastload.targets.specs import DatasetInfo, TargetSpec, resolve_targets

__all__ = ["DataLoader", "TorchDataset", "SampleError", "collate", "epoch_indices",
           "INSTANCE_KEYS", "PAD_VALUES"]

#: keys whose first dimension varies per sample and is padded by :func:`collate`
INSTANCE_KEYS = ("boxes", "labels", "ignore", "keypoints", "poly_points", "poly_lengths",
                 "poly_instance", "inst_masks")
#: pad value of each variable-size key (0 / False otherwise)
PAD_VALUES = {"labels": -1, "poly_instance": -1}


class SampleError(ValueError):
    """Reading, decoding, augmenting or building targets for one sample failed.

    Attributes: ``index`` (dataset index), ``sample_id`` (record id or None),
    ``file_name`` (record's source file or None), ``stage`` ("read", "params", "image",
    "instances", "targets").
    """

    def __init__(self, index, sample_id, file_name, stage, cause):
        self.index, self.sample_id, self.file_name, self.stage = index, sample_id, file_name, stage
        where = f"sample index {index}"
        if sample_id is not None:
            where += f" (id {sample_id}, file {file_name!r})"
        elif file_name is not None:
            where += f" (in {file_name})"
        super().__init__(f"fastload: {where} failed while {stage}: "
                         f"{type(cause).__name__}: {cause}")


# --------------------------------------------------------------------------- sampling
def epoch_indices(n: int, *, seed: int, epoch: int, shuffle: bool, rank: int = 0,
                  world_size: int = 1) -> np.ndarray:
    """This rank's dataset indices for one epoch, in order.

    The order is a permutation drawn from ``(seed, epoch)`` (identical on every rank and
    machine; ``arange(n)`` without shuffle), padded to a multiple of ``world_size`` by
    repeating its first elements (the ``DistributedSampler(drop_last=False)`` policy), of
    which rank ``r`` takes ``order[r::world_size]``. So all ranks get the same count,
    disjoint shares, and the union covers every sample once (plus the repeated pads).
    """
    if n <= 0:
        return np.zeros(0, np.int64)
    if shuffle:
        order = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch)]).permutation(n)
    else:
        order = np.arange(n)
    order = order.astype(np.int64)
    total = math.ceil(n / world_size) * world_size
    if total > n:
        reps = math.ceil((total - n) / n)
        order = np.concatenate([order] + [order] * reps)[:total]
    return order[rank::world_size]


def _batches(indices: np.ndarray, batch_size: int, drop_last: bool) -> List[np.ndarray]:
    n = len(indices)
    nb = n // batch_size if drop_last else math.ceil(n / batch_size)
    return [indices[k * batch_size:(k + 1) * batch_size] for k in range(nb)]


def _dist_info(rank, world_size):
    """(rank, world_size, local_rank) from arguments, torch.distributed, or torchrun's env."""
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    local = None
    if rank is None:
        try:
            import torch.distributed as dist
            if dist.is_available() and dist.is_initialized():
                rank, world_size = dist.get_rank(), dist.get_world_size()
        except Exception:
            pass
    if rank is None and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if rank is None:
        rank, world_size = 0, 1
    rank, world_size = int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    local = int(os.environ.get("LOCAL_RANK", rank if world_size > 1 else 0))
    return rank, world_size, local


# --------------------------------------------------------------------------- collation
def _pad_stack_np(arrs: List[np.ndarray], pad) -> np.ndarray:
    m = max((a.shape[0] for a in arrs), default=0)
    a0 = arrs[0]
    out = np.full((len(arrs), m) + a0.shape[1:], pad, dtype=a0.dtype)
    for b, a in enumerate(arrs):
        out[b, :a.shape[0]] = a
    return out


def collate(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Collate per-sample dicts of CPU tensors (from :class:`TorchDataset`) into a batch dict.

    Use as ``torch.utils.data.DataLoader(TorchDataset(...), collate_fn=fastload.loader.collate)``.
    Keys in :data:`INSTANCE_KEYS` have a per-sample first dimension and are padded to the
    batch maximum (with :data:`PAD_VALUES`, else 0); every other key is stacked
    (``default_collate`` would do for those alone). The result has the layout of a
    :class:`DataLoader` batch.
    """
    import torch
    if not samples:
        raise ValueError("collate: empty list of samples")
    out = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        vals = [v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)) for v in vals]
        if key in INSTANCE_KEYS:
            m = max(v.shape[0] for v in vals)
            t = torch.full((len(vals), m) + tuple(vals[0].shape[1:]), PAD_VALUES.get(key, 0),
                           dtype=vals[0].dtype)
            for b, v in enumerate(vals):
                t[b, :v.shape[0]] = v
            out[key] = t
        else:
            out[key] = torch.stack(vals)
    return out


# --------------------------------------------------------------------------- the per-sample work
def _open_dataset(dataset):
    if isinstance(dataset, (str, Path)):
        from fastload.store import Dataset
        return Dataset(dataset)
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError("dataset must be a packed directory path or a fastload.Dataset "
                        f"(anything with len() and [i] -> Record), got {type(dataset).__name__}")
    return dataset


def _dataset_info(ds) -> DatasetInfo:
    classes = list(getattr(ds, "classes", None) or [])
    kp_names = list(getattr(ds, "keypoint_names", None) or [])
    flip_pairs = [tuple(p) for p in (getattr(ds, "flip_pairs", None) or [])]
    return DatasetInfo(num_classes=len(classes), classes=classes,
                       num_keypoints=len(kp_names), flip_pairs=flip_pairs)


_TORCH_DTYPES = {np.dtype(k): v for k, v in [
    ("float32", torch.float32), ("float16", torch.float16), ("float64", torch.float64),
    ("int64", torch.int64), ("int32", torch.int32), ("int16", torch.int16), ("uint8", torch.uint8),
    ("int8", torch.int8), ("bool", torch.bool)]}


class _Builder:
    """The CPU side of one sample: read, params, moved instances, targets (thread-safe)."""

    def __init__(self, ds, cfg: AugmentConfig, specs: List[TargetSpec], info: DatasetInfo, seed: int):
        self.ds, self.cfg, self.specs, self.info, self.seed = ds, cfg, specs, info, int(seed)
        self.out_size = cfg.out_size
        self.flip_pairs = info.flip_pairs or None
        self.fixed = {}
        for s in specs:
            for k, (shape, dt) in s.fixed_shapes(self.out_size).items():
                self.fixed[k] = (tuple(shape), np.dtype(dt))

    def read(self, index: int, epoch: int):
        """-> (record, params). Raises SampleError."""
        from fastload.augment.params import sample_params
        try:
            rec = self.ds[int(index)]
        except Exception as e:
            raise SampleError(index, None, self._where(index), "reading the record", e) from e
        try:
            params = sample_params(self.cfg, self.seed, int(epoch), int(index),
                                   int(rec.height), int(rec.width))
        except Exception as e:
            raise SampleError(index, rec.id, rec.file_name, "drawing augmentation parameters", e) from e
        return rec, params

    def _where(self, index):
        """Best description of where a sample that could not be read lives."""
        path = getattr(self.ds, "path", None)
        try:
            shard, pos = self.ds.locate(int(index))  # fastload.Dataset: (shard, position)
            name = self.ds.manifest["shards"][shard]["file"]
            return f"{Path(path) / name}, record {pos}"
        except Exception:
            pass
        return None if path is None else str(path)

    def sample_cpu(self, backend, index, rec, params, img_slot, views):
        """One sample on the pool: image into its slot, then instances and targets.
        (Here, not on the loader: pool tasks must not hold the loader.)"""
        try:
            backend.run_one(rec.image_bytes, params, img_slot, rec.file_name)
        except Exception as e:
            raise SampleError(index, rec.id, rec.file_name, "decoding / augmenting the image", e) from e
        return self.instances(index, rec, params, views)

    pinned = False  # the loader sets it for a CUDA device

    def alloc(self, b: int) -> Dict[str, np.ndarray]:
        """Zeroed (b, ...) target arrays. For a CUDA device they live in pinned host memory
        (torch's caching host allocator), so the kernels write straight into the buffers
        the asynchronous host-to-device copy reads: no extra host copy of big maps."""
        if self.pinned:
            return {k: torch.zeros((b,) + shape, dtype=_TORCH_DTYPES[dt], pin_memory=True).numpy()
                    for k, (shape, dt) in self.fixed.items()}
        return {k: np.zeros((b,) + shape, dt) for k, (shape, dt) in self.fixed.items()}

    def instances(self, index, rec, params, fixed_views: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Move the instances, fill the fixed target slots, return the variable-size arrays."""
        from fastload.augment.geometry import transform_instances
        try:
            inst = transform_instances(rec, params, self.out_size, self.cfg.min_visible, self.flip_pairs)
        except Exception as e:
            raise SampleError(index, rec.id, rec.file_name, "moving the annotations", e) from e
        n = int(inst.labels.shape[0])
        nparts = np.diff(np.asarray(inst.inst_parts)).astype(np.int64)
        out = {
            "boxes": np.asarray(inst.boxes, np.float32).reshape(n, 4),
            "labels": np.asarray(inst.labels, np.int64),
            "ignore": np.asarray(inst.ignore, bool),
            "poly_points": np.asarray(inst.points, np.float32).reshape(-1, 2),
            "poly_lengths": np.diff(np.asarray(inst.part_offsets)).astype(np.int64),
            "poly_instance": np.repeat(np.arange(n, dtype=np.int64), nparts),
        }
        k = self.info.num_keypoints
        if inst.keypoints is not None or k:
            kk = k or int(inst.keypoints.shape[1])
            kp = np.zeros((n, kk, 3), np.float32)
            if inst.keypoints is not None:
                kc = min(kk, int(inst.keypoints.shape[1]))
                kp[:, :kc] = inst.keypoints[:, :kc]
            out["keypoints"] = kp
        try:
            for s in self.specs:
                extra = s.fill(fixed_views, inst, self.out_size)
                if extra:
                    out.update(extra)
        except Exception as e:
            raise SampleError(index, rec.id, rec.file_name, "building targets", e) from e
        return out


# --------------------------------------------------------------------------- image backends
class _CpuBackend:
    """Fused Numba augmenter (fastload.augment.cpu), one sample per call on the loader's pool
    (so a bad image is attributed to its sample and one pool serves images and targets)."""
    per_sample = True

    def __init__(self, cfg, num_threads):
        from fastload.augment.cpu import CpuAugmenter, output_dtype
        self.aug = CpuAugmenter(cfg, 1)
        self.dtype = output_dtype(cfg.dtype)
        self.out_size = cfg.out_size

    def alloc(self, b, pinned=False):
        shape = (b, 3) + tuple(self.out_size)
        if pinned:  # CUDA device: write the images where the async copy reads them
            return torch.empty(shape, dtype=_TORCH_DTYPES[np.dtype(self.dtype)], pin_memory=True).numpy()
        return np.empty(shape, self.dtype)

    def run_one(self, encoded, params, out_slot, name):
        self.aug.run([encoded], [params], out=out_slot, names=[name])

    def close(self):
        self.aug.close()


class _DaliBackend:
    """The DALI pipeline (fastload.augment.dali.DaliAugmenter): GPU with a device id, DALI's
    CPU operators without; one call per batch, returns a torch tensor (CUDA tensors are
    written on the current stream, which the producer sets to its own)."""
    per_sample = False

    def __init__(self, cfg, num_threads, batch_size, device_id, seed):
        from fastload.augment.dali import DaliAugmenter
        self.aug = DaliAugmenter(cfg, batch_size=batch_size, device_id=device_id,
                                 num_threads=num_threads, seed=seed)

    def run(self, encoded, params, names=None):
        return self.aug.run(encoded, params, names=names)

    def close(self):
        self.aug.close()


def _to_torch(a, device, dtype_name, torch):
    if isinstance(a, torch.Tensor):
        t = a
    else:
        t = torch.from_numpy(np.ascontiguousarray(a))
    if dtype_name == "bfloat16" and t.dtype != torch.bfloat16:
        t = t.to(torch.bfloat16)
    return t


# --------------------------------------------------------------------------- the producer
_LIVE = weakref.WeakSet()


@atexit.register
def _stop_all():  # program end: stop every producer so nothing is left waiting
    for p in list(_LIVE):
        p.shutdown(join_timeout=1.0)


class _Pipeline:
    """A producer thread and its bounded queue, starting at (epoch, start).

    It builds the batches of its epoch, puts ("end", epoch), then goes on with the next
    epoch's first batches (at most ``prefetch`` of them wait in the queue), so a training
    loop that moves on to epoch + 1 finds them ready: no bubble at epoch boundaries. The
    loader hands the running pipeline to the next iterator when its (seed, epoch, start)
    match, and shuts it down otherwise. Holds the loader weakly and the iterator not at all.
    """

    def __init__(self, loader_ref, epoch, start, seed, prefetch):
        self.q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self.stop = threading.Event()
        self.seed = seed
        self.next_epoch = epoch   # the epoch whose batches the queue will deliver next
        self._loader_ref = loader_ref  # weak: a blocked producer must not keep the loader alive
        self.thread = threading.Thread(target=self._run, args=(epoch, start),
                                       name="fastload-producer", daemon=True)
        _LIVE.add(self)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, epoch, start):
        try:
            ld = self._loader_ref()
            if ld is not None and ld.device.type == "cuda":
                # like torch's pin-memory thread: this thread's CUDA work (pinned buffers,
                # streams, DALI output) goes to the loader's GPU, never a context on cuda:0
                torch.cuda.set_device(ld.device)
            del ld
            while not self.stop.is_set():
                ld = self._loader_ref()
                if ld is None:
                    return
                batches = ld._epoch_batches(epoch)
                ahead = ld._read_ahead(batches[start], epoch) if start < len(batches) else None
                del ld
                for k in range(start, len(batches)):
                    ld = self._loader_ref()
                    if ld is None or self.stop.is_set():
                        return
                    cur = ahead
                    ahead = ld._read_ahead(batches[k + 1], epoch) if k + 1 < len(batches) else None
                    item = ld._make_batch(batches[k], epoch, cur, self.stop)
                    del ld, cur
                    if not self._put(("batch", epoch, k, item)):
                        return
                    del item
                if not self._put(("end", epoch, None, None)):
                    return
                epoch, start = epoch + 1, 0
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
            self._put(("error", epoch, None, e))

    def get(self, timeout):
        """Next item; RuntimeError if the thread died without one, TimeoutError after timeout."""
        t0 = time.monotonic()
        while True:
            try:
                return self.q.get(timeout=0.05)
            except queue.Empty:
                if not self.thread.is_alive():
                    try:  # it may have put its last item just before exiting
                        return self.q.get_nowait()
                    except queue.Empty:
                        raise RuntimeError("fastload: the producer thread stopped without a result") from None
                if timeout and time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"fastload: no batch within timeout={timeout} s") from None

    def shutdown(self, join_timeout=5.0):
        self.stop.set()
        try:  # drain so a blocked put wakes up and big batches are freed
            while True:
                self.q.get_nowait()
        except queue.Empty:
            pass
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(join_timeout)
        _LIVE.discard(self)


class _LoaderIter:
    """Iterator over one epoch. ``close()`` (or dropping it mid-epoch) stops its producer
    thread; an epoch run to its end hands the producer back to the loader for the next one."""

    def __init__(self, loader: "DataLoader", pipe: _Pipeline, n, epoch):
        self._loader = loader  # like torch: a live iterator keeps its loader alive
        self._loader_ref = weakref.ref(loader)
        self._n = n
        self._epoch = epoch
        self._timeout = loader.timeout
        self._pipe = pipe
        self._fin = weakref.finalize(self, pipe.shutdown)
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
                kind, epoch, k, item = self._pipe.get(self._timeout)
            except TimeoutError:
                # the producer is stuck in a read or a kernel: stop it, do not wait for it
                # (a daemon thread; it exits as soon as its current call returns)
                self._done = True
                self._fin.detach()
                self._pipe.shutdown(join_timeout=0.1)
                raise
            except BaseException:
                self.close()
                raise
            loader = self._loader_ref()
            if kind == "end":
                self._done = True
                self._fin.detach()
                if loader is not None and loader._active_iter() is self:
                    self._pipe.next_epoch = epoch + 1
                    loader._end_epoch(self._epoch, self._pipe)
                else:
                    self._pipe.shutdown()
                raise StopIteration
            if kind == "error":
                self.close()
                raise item
            payload, skips = item
            if loader is not None:
                loader._count(payload, skips)
                if loader._active_iter() is self:
                    loader._consumed = k + 1
            if payload is None:  # every sample of this batch was skipped
                continue
            batch, ev = payload
            if ev is not None:  # device copies were issued on the producer's stream
                import torch
                cur = torch.cuda.current_stream(batch["image"].device)
                cur.wait_event(ev)
                for t in batch.values():
                    if t.is_cuda:
                        t.record_stream(cur)
            return batch

    def close(self):
        """Stop the producer thread and free queued batches (idempotent)."""
        self._done = True
        self._fin()


# --------------------------------------------------------------------------- the loader
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
    ``backend``: ``"dali"`` (default on CUDA; also allowed on CPU via DALI's CPU operators)
    or ``"cpu"`` (fused Numba, default on CPU).
    ``num_threads``: CPU threads (default: the cores available, at most 8).
    ``prefetch``: batches built ahead of the training loop (bounded queue).
    ``rank`` / ``world_size``: explicit distributed split; detected from
    ``torch.distributed`` or torchrun's ``RANK``/``WORLD_SIZE`` otherwise
    (see :func:`epoch_indices` for the policy).
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

        self.dataset = _open_dataset(dataset)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.seed, self.augment, self.prefetch, self.on_error = int(seed), augment, int(prefetch), on_error
        self.timeout = timeout
        self.rank, self.world_size, self.local_rank = _dist_info(rank, world_size)

        import torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device={device!r} but torch sees no CUDA device; use device='cpu'")
            if dev.index is None:  # one process per GPU under torchrun: cuda:LOCAL_RANK
                dev = torch.device("cuda", self.local_rank if self.world_size > 1
                                   else torch.cuda.current_device())
            if dev.index >= torch.cuda.device_count():
                raise ValueError(f"device {dev} does not exist ({torch.cuda.device_count()} GPUs visible)")
        elif dev.type != "cpu":
            raise ValueError(f"device must be 'cuda', 'cuda:N' or 'cpu', got {device!r}")
        self.device = dev
        if backend is None:
            backend = "dali" if dev.type == "cuda" else "cpu"
        if backend not in ("dali", "cpu"):
            raise ValueError(f"backend must be 'dali' or 'cpu', got {backend!r}")
        self.backend = backend
        if num_threads is None:
            try:
                num_threads = len(os.sched_getaffinity(0))
            except AttributeError:
                num_threads = os.cpu_count() or 1
            num_threads = max(1, min(8, num_threads))
        self.num_threads = int(num_threads)

        self.info = _dataset_info(self.dataset)
        self.targets = resolve_targets(targets, self.info)
        self._builder = _Builder(self.dataset, augment, self.targets, self.info, self.seed)
        self._builder.pinned = dev.type == "cuda"
        self._backend_obj = None
        self._backend_fin = None
        self._pool = None
        self._pool_fin = None
        self._lock = threading.Lock()
        self._cuda_stream = None

        self.epoch = 0
        self._consumed = 0       # batches of `epoch` already handed to the loop
        self._resume = 0         # first batch of the next iteration
        self._active = lambda: None  # weakref to the running iterator
        self._spare: Optional[_Pipeline] = None  # producer already working on the next epoch
        self.stats = {"batches": 0, "samples": 0, "skipped": 0, "skipped_batches": 0,
                      "skipped_samples": []}

    # ---------------------------------------------------------------- torch-like API
    def _indices(self, epoch) -> np.ndarray:
        return epoch_indices(len(self.dataset), seed=self.seed, epoch=epoch, shuffle=self.shuffle,
                             rank=self.rank, world_size=self.world_size)

    def __len__(self) -> int:
        n = len(self.dataset)
        per_rank = math.ceil(n / self.world_size) if n else 0
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Run epoch ``epoch`` next (its order and augmentation come from (seed, epoch))."""
        self.epoch, self._consumed, self._resume = int(epoch), 0, 0

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
        self.seed = int(state["seed"])
        self._builder.seed = self.seed
        self.epoch = int(state["epoch"])
        self._consumed = self._resume = int(state["batches_consumed"])

    def _epoch_batches(self, epoch) -> List[np.ndarray]:
        return _batches(self._indices(epoch), self.batch_size, self.drop_last)

    def __iter__(self) -> _LoaderIter:
        old = self._active()
        if old is not None:
            old.close()
        start = min(self._resume, len(self))
        self._resume = 0
        self._consumed = start
        pipe, self._spare = self._spare, None
        if pipe is not None and not (pipe.next_epoch == self.epoch and start == 0
                                     and pipe.seed == self.seed and pipe.thread.is_alive()):
            pipe.shutdown()
            pipe = None
        if pipe is None:
            pipe = _Pipeline(weakref.ref(self), self.epoch, start, self.seed, self.prefetch)
        it = _LoaderIter(self, pipe, len(self), self.epoch)
        self._active = weakref.ref(it)
        return it

    def _active_iter(self):
        return self._active()

    def _end_epoch(self, epoch, pipe):
        """An epoch ran to its end: advance, and keep its producer (already on epoch + 1)."""
        if self.epoch == epoch:
            self.epoch, self._consumed, self._resume = epoch + 1, 0, 0
        self._active = lambda: None
        if self._spare is not None:
            self._spare.shutdown()
        self._spare = pipe

    def close(self) -> None:
        """Stop the running iteration and the thread pool (also done on deletion and at exit)."""
        old = self._active()
        if old is not None:
            old.close()
        if self._spare is not None:
            self._spare.shutdown()
            self._spare = None
        if self._pool_fin is not None:
            self._pool_fin()
        if self._backend_fin is not None:
            self._backend_fin()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---------------------------------------------------------------- the batch
    def _get_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="fastload-pool")
                self._pool_fin = weakref.finalize(self, self._pool.shutdown, wait=True,
                                                  cancel_futures=True)
            return self._pool

    def _get_backend(self):
        with self._lock:
            if self._backend_obj is None:
                if self.backend == "cpu":
                    self._backend_obj = _CpuBackend(self.augment, self.num_threads)
                else:
                    did = self.device.index if self.device.type == "cuda" else None
                    self._backend_obj = _DaliBackend(self.augment, self.num_threads,
                                                     self.batch_size, did, self.seed)
                self._backend_fin = weakref.finalize(self, self._backend_obj.close)
            return self._backend_obj

    def _read_ahead(self, idx: np.ndarray, epoch: int):
        """Submit the record reads (+ params) of one batch; returns futures."""
        pool = self._get_pool()
        return [pool.submit(self._builder.read, int(i), epoch) for i in idx]

    def _fail(self, err: SampleError, skips: list):
        if self.on_error == "raise":
            raise err
        skips.append({"index": err.index, "id": err.sample_id, "file": err.file_name,
                      "error": str(err)})

    def _count(self, batch, skips):
        """Consumer side: stats count what the loop has been handed (not what was prefetched)."""
        st = self.stats
        if skips:
            st["skipped"] += len(skips)
            st["skipped_samples"].extend(skips)
            del st["skipped_samples"][:-100]
        if batch is None:
            st["skipped_batches"] += 1
        else:
            st["batches"] += 1
            st["samples"] += int(batch[0]["index"].shape[0])

    def _run_images_batch(self, backend, recs, params):
        """Batch backend (DALI): images of all samples; on failure, find the bad ones."""
        try:
            with self._stream_ctx():
                return backend.run([r.image_bytes for r in recs], params,
                                   names=[r.file_name for r in recs]), []
        except Exception:
            bad = []
            for j, (r, p) in enumerate(zip(recs, params)):
                try:
                    backend.run([r.image_bytes], [p])
                except Exception as e:
                    bad.append((j, e))
            if not bad:
                raise
            return None, bad

    def _make_batch(self, idx: np.ndarray, epoch: int, read_futs, stop: threading.Event):
        b = self._builder
        pool = self._get_pool()
        backend = self._get_backend()
        # 1. records + params (submitted one batch ahead)
        skips: list = []
        ok_idx, recs, params = [], [], []
        for i, f in zip(idx, read_futs):
            try:
                rec, p = f.result()
            except SampleError as e:
                self._fail(e, skips)
                continue
            ok_idx.append(int(i))
            recs.append(rec)
            params.append(p)
        # 2. images + instances + targets; on a failure drop the bad samples and redo the
        #    batch (rare; keeps batch content a function of the good samples only)
        while recs:
            n = len(recs)
            fixed = b.alloc(n)
            views = [{k: v[j:j + 1] for k, v in fixed.items()} for j in range(n)]
            errs = []
            if backend.per_sample:
                images = backend.alloc(n, b.pinned)
                futs = [pool.submit(b.sample_cpu, backend, i, r, p, images[j:j + 1], vw)
                        for j, (i, r, p, vw) in enumerate(zip(ok_idx, recs, params, views))]
            else:
                futs = [pool.submit(b.instances, i, r, p, vw)
                        for i, r, p, vw in zip(ok_idx, recs, params, views)]
                images, bad = self._run_images_batch(backend, recs, params)
                errs += [(j, SampleError(ok_idx[j], recs[j].id, recs[j].file_name,
                                         "decoding / augmenting the image", e)) for j, e in bad]
            per = []
            for j, f in enumerate(futs):
                try:
                    per.append(f.result())
                except SampleError as e:
                    errs.append((j, e))
                    per.append(None)
            if not errs:
                break
            errs.sort(key=lambda x: x[0])
            drop = set()
            for j, e in errs:
                if j not in drop:
                    drop.add(j)
                    self._fail(e, skips)  # raises under on_error="raise"
            keep = [j for j in range(n) if j not in drop]
            ok_idx = [ok_idx[j] for j in keep]
            recs = [recs[j] for j in keep]
            params = [params[j] for j in keep]
        if not recs:
            return None, skips
        import torch
        # 3. collate
        out: Dict[str, Any] = {}
        out["image"] = _to_torch(images, self.device, self.augment.dtype, torch)
        out["index"] = np.asarray(ok_idx, np.int64)
        out["num_instances"] = np.asarray([s["labels"].shape[0] for s in per], np.int64)
        var_keys = list(dict.fromkeys(k for s in per for k in s if k not in fixed))
        for k in var_keys:
            like = next(s[k] for s in per if k in s)
            arrs = [s[k] if k in s else  # e.g. keypoints absent from some records
                    np.zeros((s["labels"].shape[0],) + like.shape[1:], like.dtype) for s in per]
            if k not in INSTANCE_KEYS:  # FunctionTarget outputs: same shape every sample
                shapes = {a.shape for a in arrs}
                if len(shapes) > 1:
                    raise ValueError(f"target key {k!r} has different shapes across samples "
                                     f"{sorted(shapes)}; a FunctionTarget must return fixed shapes")
                out[k] = np.stack(arrs)
            else:
                out[k] = _pad_stack_np(arrs, PAD_VALUES.get(k, 0))
        out.update(fixed)
        return self._to_device(out, torch), skips

    def _stream_ctx(self):
        """The producer's CUDA stream (device work of a batch is issued there), or a no-op."""
        import contextlib
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        if self._cuda_stream is None:
            self._cuda_stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(self._cuda_stream)

    def _to_device(self, out, torch):
        dev = self.device
        res = {}
        if dev.type != "cuda":
            for k, v in out.items():
                t = v if isinstance(v, torch.Tensor) else torch.from_numpy(v)
                res[k] = t.to(dev) if t.device != dev else t
            return res, None
        with self._stream_ctx():
            for k, v in out.items():
                t = v if isinstance(v, torch.Tensor) else torch.from_numpy(v)
                if t.device.type == "cpu":
                    if not t.is_pinned():  # targets are allocated pinned; small keys are not
                        t = t.pin_memory()
                    t = t.to(dev, non_blocking=True)
                res[k] = t
            ev = torch.cuda.Event()
            ev.record(self._cuda_stream)
        return res, ev


# --------------------------------------------------------------------------- torch Dataset
class TorchDataset(torch.utils.data.Dataset):
    """A map-style ``torch.utils.data.Dataset`` giving the same samples (CPU image path).

    ``ds[i]`` -> dict of CPU tensors for dataset index ``i`` at the current epoch (set with
    :meth:`set_epoch`): ``image`` (3,H,W), ``index`` (), ``num_instances`` (), and the
    instance keys unpadded (``boxes`` (n,4), ``labels`` (n,), ``ignore`` (n,), ``poly_points``
    (V,2), ``poly_lengths`` (P,), ``poly_instance`` (P,), ``keypoints`` (n,K,3)) plus the
    target keys without the batch dimension. Use it with
    ``torch.utils.data.DataLoader(tds, batch_size=..., collate_fn=fastload.loader.collate)``:
    the instance keys vary in size and need :func:`collate`; the other keys alone would
    stack with ``default_collate``. With ``num_workers > 0`` each worker calls
    ``set_epoch`` only if you do it before the workers start (``persistent_workers=False``).
    """

    def __init__(self, dataset, augment: Optional[AugmentConfig] = None, targets=(), seed: int = 0):
        self.dataset = _open_dataset(dataset)
        self.augment = augment if augment is not None else AugmentConfig()
        self.info = _dataset_info(self.dataset)
        self.targets = resolve_targets(targets, self.info)
        self._builder = _Builder(self.dataset, self.augment, self.targets, self.info, seed)
        self.seed = int(seed)
        self.epoch = 0
        self._aug = None
        self._pid = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        import torch
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        if self._aug is None or self._pid != os.getpid():  # one augmenter per (forked) process
            from fastload.augment.cpu import CpuAugmenter
            self._aug, self._pid = CpuAugmenter(self.augment, 1), os.getpid()
        rec, p = self._builder.read(i, self.epoch)
        fixed = self._builder.alloc(1)
        per = self._builder.instances(i, rec, p, fixed)
        try:
            img = self._aug.run([rec.image_bytes], [p])
        except Exception as e:
            raise SampleError(i, rec.id, rec.file_name, "decoding / augmenting the image", e) from e
        out = {"image": _to_torch(img, None, self.augment.dtype, torch)[0],
               "index": torch.tensor(i, dtype=torch.int64),
               "num_instances": torch.tensor(per["labels"].shape[0], dtype=torch.int64)}
        for k, v in per.items():
            out[k] = torch.from_numpy(v)
        for k, v in fixed.items():
            out[k] = torch.from_numpy(v[0])
        return out


