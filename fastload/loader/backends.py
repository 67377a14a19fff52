"""Image backends: encoded images + per-sample parameters -> the batch's augmented images.

A backend is one class registered by name (:func:`register_backend`; ``cpu``: the fused
Numba kernel, :class:`CpuBackend`, and ``dali``: the DALI graph, :class:`DaliBackend`, are
registered at the bottom of this module, each with its description and the device types it is
the default on). ``DataLoader(backend=NAME)`` accepts exactly the registered names, and
``docs/loader.md`` lists them (a test checks).

The protocol is two-phase, so that a producer can start the images of a batch, do other
work (the annotations) and collect them later::

    pending = backend.submit(encoded, params, names, sizes, out=None)   # returns at once
    images, errors = pending.result()

``encoded``: encoded image bytes per sample; ``params``: their ``SampleParams``; ``names``:
labels for error messages (file names); ``sizes``: the ``(height, width)`` each sample's
params were drawn for; a decoded image of another size is that sample's error. ``out``: for
a backend with ``writes_host_buffer``, the (B, 3, H, W) host array of
``fastload.dtypes.output_numpy_dtype(cfg.dtype)`` to write into (pinned memory on a CUDA
device); other backends return their own tensor. ``result()`` -> ``(images, errors)`` with
``errors`` a list of ``(position in the batch, exception)`` for the samples whose image
failed (``images`` is then not to be used); an error that belongs to no sample is raised.
Backends draw no randomness of their own: the params carry all of it (the noise too).

A backend may set ``lookahead = N`` (default 0): the producer then submits up to N batches
ahead of the one whose result it takes (``DaliBackend`` on a GPU: 1, so DALI works on batch
k + 1 while batch k is finished).
"""
from __future__ import annotations

import threading
import weakref
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from fastload.augment.config import AugmentConfig

__all__ = ["ImageBackend", "Pending", "BackendContext", "register_backend", "unregister_backend",
           "backend_names", "backend_descriptions", "default_backend", "check_backend",
           "create_backend", "CpuBackend", "DaliBackend"]

#: per-sample image errors: (position in the batch, exception)
ImageErrors = List[Tuple[int, BaseException]]


class Pending(Protocol):
    def result(self) -> Tuple[Any, ImageErrors]:
        """Wait for the batch: (images, per-sample errors)."""


class ImageBackend(Protocol):
    #: True: ``submit`` writes into the ``out`` host buffer it is given
    writes_host_buffer: bool

    def submit(self, encoded: Sequence, params: Sequence, names: Sequence[str],
               sizes: Sequence[Tuple[int, int]], out: Optional[np.ndarray] = None) -> Pending: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendContext:
    """What a backend factory is given: the augmentation config, the batch size, the CPU
    threads, the output device (``torch.device``), the loader's seed (for a backend that
    needs one; the built-in ones take all randomness from the params) and the loader's
    thread pool (None: run on the calling thread)."""
    cfg: AugmentConfig
    batch_size: int
    num_threads: int
    device: Any
    seed: int = 0
    pool: Optional[Executor] = None


@dataclass(frozen=True)
class _Entry:
    name: str
    factory: Callable[[BackendContext], ImageBackend]
    description: str
    default_on: Tuple[str, ...]


_REGISTRY: Dict[str, _Entry] = {}


def register_backend(name: str, factory: Callable[[BackendContext], ImageBackend],
                     description: str, default_on: Sequence[str] = (),
                     replace: bool = False) -> None:
    """Make ``DataLoader(backend=name)`` build its image backend with ``factory(context)``.
    ``default_on``: device types ("cpu", "cuda") for which it is the default backend."""
    if not replace and name in _REGISTRY:
        raise ValueError(f"an image backend named {name!r} is already registered")
    for dev in default_on:
        other = next((e.name for e in _REGISTRY.values()
                      if dev in e.default_on and e.name != name), None)
        if other is not None:
            raise ValueError(f"backend {other!r} is already the default on {dev!r}")
    _REGISTRY[name] = _Entry(name, factory, description, tuple(default_on))


def unregister_backend(name: str) -> None:
    _REGISTRY.pop(name, None)


def backend_names() -> Tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def backend_descriptions() -> Dict[str, str]:
    return {n: _REGISTRY[n].description for n in backend_names()}


def default_backend(device_type: str) -> str:
    for e in _REGISTRY.values():
        if device_type in e.default_on:
            return e.name
    raise ValueError(f"no image backend is registered as the default on {device_type!r}; "
                     f"pass backend= one of {list(backend_names())}")


def check_backend(name) -> str:
    if name not in _REGISTRY:
        raise ValueError(f"backend must be one of the registered image backends "
                         f"{list(backend_names())}, got {name!r}")
    return name


def create_backend(name: str, ctx: BackendContext) -> ImageBackend:
    return _REGISTRY[check_backend(name)].factory(ctx)


# --------------------------------------------------------------------------- pendings
class _Done:
    """A batch already finished."""

    def __init__(self, images, errors: ImageErrors):
        self._images, self._errors = images, errors

    def result(self):
        return self._images, self._errors


class _Futures:
    """Per-sample tasks on a thread pool; the images are in ``out`` when they are done."""

    def __init__(self, out, futures):
        self._out, self._futures = out, futures

    def result(self):
        errors = []
        for j, f in enumerate(self._futures):
            try:
                f.result()
            except Exception as e:
                errors.append((j, e))
        return self._out, errors


# --------------------------------------------------------------------------- cpu
class CpuBackend:
    """The fused Numba kernel, one task per sample (so a bad image is attributed to its
    sample, and one pool serves images and annotations): read the header and check its size
    against the record's before decoding, decode (at a reduced size when the sample's matrix
    shrinks a JPEG 2x or more: :func:`fastload.augment.decode.decode_for_warp`), augment into
    the sample's row of ``out`` (:func:`fastload.augment.cpu.augment_image`). Without a pool
    the tasks run in ``submit``.

    ``lookahead = 1`` on a pool of 2 threads or more: the producer submits batch k + 1 before it
    waits for batch k, so a thread that finishes its last sample of batch k starts on batch
    k + 1 instead of waiting for the other threads' last samples (at 2 threads and batch 8 that
    wait is up to one sample per batch: 1/8 of a thread). The pool runs tasks in submission
    order, so batch k still finishes first."""
    writes_host_buffer = True

    def __init__(self, ctx: BackendContext):
        from fastload.dtypes import output_numpy_dtype
        self.cfg, self.pool = ctx.cfg, ctx.pool
        self.lookahead = 1 if ctx.pool is not None and ctx.num_threads > 1 else 0
        self.dtype = output_numpy_dtype(ctx.cfg.dtype)
        self._local = threading.local()  # per thread: the shadow mask and the decode buffer

    def submit(self, encoded, params, names, sizes, out=None):
        n = len(encoded)
        if out is None:
            out = np.empty((n, 3) + tuple(self.cfg.out_size), self.dtype)
        if self.pool is None:
            errors = []
            for j in range(n):
                try:
                    self.augment_one(encoded[j], params[j], names[j], sizes[j], out[j])
                except Exception as e:
                    errors.append((j, e))
            return _Done(out, errors)
        return _Futures(out, [self.pool.submit(self.augment_one, encoded[j], params[j], names[j],
                                               sizes[j], out[j]) for j in range(n)])

    def augment_one(self, encoded, params, name, size, out_chw) -> None:
        """One sample: the image (its header and decoded size checked against ``size``, the
        record's (height, width)) -> augmented into ``out_chw``."""
        from fastload.augment.cpu import augment_image
        from fastload.augment.decode import DecodeBuffer, decode_for_warp
        local = self._local
        mask = getattr(local, "mask", None)
        if mask is None:  # this thread's first sample
            mask = local.mask = np.empty(tuple(self.cfg.out_size), np.uint8)
            local.decoded = DecodeBuffer()
        # the decoded image lives in this thread's buffer until its next sample
        img, scale = decode_for_warp(encoded, params.matrix, name, size, self.cfg.pad_value,
                                     buffer=local.decoded)
        augment_image(img, params, self.cfg, out_chw, mask, name=name, source_scale=scale)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- dali
class DaliBackend:
    """The DALI graph (:class:`fastload.augment.dali.DaliAugmenter`), built on the first batch
    (in the producer thread). ``submit`` feeds the batch and schedules it at once (the noise
    field is made on the producer's current stream on a GPU) and returns; ``result()``
    collects it. ``lookahead = prefetch_depth - 1``: with the default depth on a GPU (2) the
    producer submits batch k + 1 before it takes batch k's result, so DALI works on k + 1
    while k is finished, queued and consumed. On DALI's CPU operators the default depth is 1
    (one batch at a time): there DALI's work competes with the pool for the same cores, and
    the look-ahead measured slower (37-41 vs 30-34 images/s, 2 shared cores). CUDA images
    are written on the producer's current stream (the loader's stream) into torch-owned
    tensors (see fastload/augment/dali.py's hand-off).

    Bad samples: the augmenter names them (``SampleErrors``: decode failures found by
    decoding each sample alone on the CPU, size mismatches, empty bytes); when DALI fails and
    the CPU decoder finds nothing wrong (a GPU-decoder-only failure), each sample is run
    alone on the pipeline to find the bad ones (as many DALI runs as samples: rare).
    A pending batch dropped without ``result()`` (the producer stopped) is cancelled.

    ``hw_decoder_load``: the share of JPEGs given to the GPU's hardware JPEG decoder (None:
    DALI's default). Register a variant to choose these, e.g.
    ``register_backend("dali-hw", lambda ctx: DaliBackend(ctx, hw_decoder_load=1.0), ...)``."""
    writes_host_buffer = False

    def __init__(self, ctx: BackendContext, hw_decoder_load: Optional[float] = None,
                 prefetch_depth: Optional[int] = None):
        from fastload.optional import require
        require("nvidia.dali", extra="dali", what="the DALI image backend (backend='dali')")
        self.ctx = ctx
        self.device_id = None
        if ctx.device.type == "cuda":  # "cuda" alone: the current device, like torch
            import torch
            self.device_id = torch.device(ctx.device).index
            if self.device_id is None:
                self.device_id = torch.cuda.current_device()
        if prefetch_depth is None:
            prefetch_depth = 1 if self.device_id is None else 2
        if int(prefetch_depth) < 1:
            raise ValueError(f"prefetch_depth must be >= 1, got {prefetch_depth}")
        self.hw_decoder_load, self.prefetch_depth = hw_decoder_load, int(prefetch_depth)
        self.lookahead = self.prefetch_depth - 1
        self._aug = None

    def _augmenter(self):
        if self._aug is None:
            from fastload.augment.dali import DaliAugmenter
            c = self.ctx
            self._aug = DaliAugmenter(c.cfg, batch_size=c.batch_size, device_id=self.device_id,
                                      num_threads=c.num_threads,
                                      prefetch_queue_depth=self.prefetch_depth,
                                      hw_decoder_load=self.hw_decoder_load)
        return self._aug

    def submit(self, encoded, params, names, sizes, out=None):
        from fastload.augment.dali import SampleErrors
        aug = self._augmenter()
        try:
            ticket = aug.submit(encoded, params, names=names, sizes=sizes)
        except SampleErrors as e:
            return _Done(None, e.errors)
        return _DaliPending(self, ticket, (encoded, params, names, sizes))

    def collect(self, ticket, batch) -> Tuple[Any, ImageErrors]:
        """A submitted batch's (images, per-sample errors); raises an error of no sample."""
        from fastload.augment.dali import SampleErrors
        aug = self._augmenter()
        try:
            return aug.fetch(ticket), []
        except SampleErrors as e:
            return None, e.errors
        except Exception as err:
            encoded, params, names, sizes = batch
            bad = []
            for j in range(len(encoded)):
                try:
                    aug.run([encoded[j]], [params[j]], names=[names[j]], sizes=[sizes[j]])
                except Exception as e:
                    bad.append((j, e))
            if not bad:
                raise err
            return None, bad

    def close(self) -> None:
        if self._aug is not None:
            self._aug.close()
            self._aug = None


class _DaliPending:
    """A batch in the DALI pipeline; cancelled in the augmenter if dropped unread."""

    def __init__(self, backend: DaliBackend, ticket: int, batch):
        self._backend, self._ticket, self._batch = backend, ticket, batch
        self._cancel = weakref.finalize(self, backend._aug.cancel, ticket)

    def result(self):
        self._cancel.detach()
        return self._backend.collect(self._ticket, self._batch)


register_backend("cpu", CpuBackend, "the fused Numba kernel on the loader's CPU threads "
                 "(fastload.augment.cpu)", default_on=("cpu",))
register_backend("dali", DaliBackend, "the DALI graph (fastload.augment.dali): on the GPU with "
                 "a CUDA device, DALI's CPU operators with device='cpu'", default_on=("cuda",))
