"""The DALI augmentation pipeline: encoded bytes + per-sample parameters in, NCHW torch out.

    aug = DaliAugmenter(cfg, batch_size=32, device_id=0)        # GPU ("mixed" decode)
    aug = DaliAugmenter(cfg, batch_size=8, device_id=None)      # DALI CPU operators
    params = [sample_params(cfg, seed, epoch, i, h, w) for ...]
    images = aug.run(encoded_list, params)                       # torch (B, 3, H, W) cfg.dtype
    t1 = aug.submit(batch1, params1); t2 = aug.submit(batch2, params2)   # DALI works ahead
    images1 = aug.fetch(t1); images2 = aug.fetch(t2)

The graph is built from the op table (``fastload.augment.ops``), per sample:

1. decode to HWC uint8 RGB (``device="mixed"`` with a GPU: nvJPEG, with ``hw_decoder_load``
   of the JPEGs on the hardware decoder where the GPU has one; ``"cpu"`` otherwise);
2. ONE ``fn.warp_affine`` with the 2x3 part of ``params.matrix`` (source -> output,
   ``inverse_map=False``), bilinear, ``fill_value=cfg.pad_value``, size ``cfg.out_size``;
   output pixel (i, j) samples the source at M^-1 (j + .5, i + .5) (continuous coords);
   result rounded to uint8;
3. each pixel op the config turns on, in table order, as its DALI fragment fed by its
   external inputs (``Op.dali_inputs``, filled from the params): ``fn.hue``,
   ``fn.brightness_contrast``, the shadow mask product, the noise field; each rounds back to
   uint8 (round to nearest, saturate);
4. ``fn.crop_mirror_normalize`` to CHW ``(v - mean) / std`` in float32 / float16
   (bfloat16: float32 in DALI, converted by torch); uint8: a plain HWC->CHW transpose.

An op the config turns off is left out of the graph entirely; params that need it
(e.g. ``hue_deg != 0`` with ``cfg.hue_deg == (0, 0)``) raise ``ValueError``.

The graph draws no randomness: the noise is the field ``noise_sigma * z`` of each sample's
``noise_seed`` (``fastload.augment.noise``, the fused CPU kernel's generator), made where the
graph runs (Numba on the CPU, torch on the GPU's current stream) and fed as an input. So a
sample's image depends only on its bytes and params: not on the batch it is in, the
batches before it, or the backend (within the rounding documented in docs/augment.md).

Prefetch (``prefetch_queue_depth``, default 2): :meth:`submit` feeds a batch and schedules
it, so DALI works on batch k+1 while batch k is fetched and used. DALI's first scheduled
run executes ``depth`` iterations at once, so the first batches are held back until
``depth`` are fed; a :meth:`fetch` before that (fewer batches than ``depth`` in all) fills
the gap with one-sample filler batches, whose outputs are dropped. Batches come back by
ticket, in any order (outputs DALI returns ahead of their fetch are kept), and a ticket
given up with :meth:`cancel` is dropped when DALI returns it.

Hand-off to torch (``_to_torch``): the DALI output is viewed through DLPack
(``torch.from_dlpack``; the current stream waits on DALI's ready event, no host sync).
CPU operators: that view is the result (zero-copy; the dynamic executor never reuses a
buffer that is still referenced). GPU: the view is copied into a torch-owned tensor on the
current stream (the one device-to-device copy; bfloat16 converts in it), an event is
recorded after it, and the DALI output is kept alive until that event has completed (at
most ``depth + 2`` kept; beyond that the oldest is waited for). The returned tensor is then
an ordinary tensor of torch's caching allocator: ``record_stream`` protects it on the
consumer's stream, which a DALI buffer freed in DALI's own stream order would not be.

Bad input: a batch with samples that cannot be decoded, or whose decoded size differs from
``sizes``, or whose params need an op the config left out, raises :class:`SampleErrors`
(a ``ValueError``) naming the first one by position and name (``names``), with every bad
sample in ``.errors``. The pipeline keeps working afterwards.
"""
from __future__ import annotations

import itertools
import struct
import threading
import zlib
from collections import deque
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from fastload.augment.config import AugmentConfig
from fastload.augment.decode import read_header
from fastload.augment.ops import PIXEL_OPS
from fastload.augment.ops.base import DaliContext
from fastload.augment.params import SampleParams
from fastload.dtypes import output_torch_dtype
from fastload.optional import require

__all__ = ["DaliAugmenter", "SampleErrors"]


def _dali():
    return require("nvidia.dali", extra="dali", what="the DALI image backend")


class SampleErrors(ValueError):
    """Samples of one batch that failed: ``errors`` = [(position in the batch, ValueError)];
    the message is the first one's."""

    def __init__(self, errors: List[Tuple[int, ValueError]]):
        self.errors = list(errors)
        first = str(self.errors[0][1])
        more = (f" (and {len(self.errors) - 1} more: positions {[j for j, _ in self.errors[1:]]})"
                if len(self.errors) > 1 else "")
        super().__init__(first + more)


def _who(i: int, names) -> str:
    return f"sample {i}" + (f" ({names[i]})" if names is not None else "")


def _tiny_png() -> bytes:
    """A valid 1x1 black RGB PNG: the filler batch's image."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00")) + chunk(b"IEND", b""))


_FILLER = (_tiny_png(), SampleParams(np.eye(3, dtype=np.float32)))


class _Ticket(NamedTuple):
    id: int
    enc: List[np.ndarray]
    names: Optional[Sequence]
    sizes: Optional[Sequence]
    filler: bool
    fed: list  # batch-fed inputs (CUDA tensors), kept until the batch's outputs are popped


class DaliAugmenter:
    """A built DALI pipeline for one :class:`AugmentConfig` (see module docstring).

    ``device_id=None`` runs DALI's CPU operators and returns CPU torch tensors; an int runs
    decode ("mixed", nvJPEG) and every operator on that GPU and returns CUDA tensors on it,
    written on the caller's current stream. ``prefetch_queue_depth``: batches DALI may run
    ahead (>= 1). ``hw_decoder_load``: the fraction (0..1) of JPEGs given to the GPU's
    hardware JPEG decoder (A100, H100, ...); None keeps DALI's default (0.65 in DALI 2.4);
    GPU only.
    """

    #: DALI outputs kept alive for unfinished copies, beyond the prefetch depth
    HELD_EXTRA = 2

    def __init__(self, cfg: AugmentConfig, batch_size: int, device_id: Optional[int] = None,
                 num_threads: int = 2, prefetch_queue_depth: int = 2,
                 hw_decoder_load: Optional[float] = None):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if int(prefetch_queue_depth) < 1:
            raise ValueError(f"prefetch_queue_depth must be >= 1, got {prefetch_queue_depth}")
        if hw_decoder_load is not None:
            if device_id is None:
                raise ValueError("hw_decoder_load needs a GPU (device_id); the CPU decoder has no "
                                 "hardware part")
            if not 0.0 <= float(hw_decoder_load) <= 1.0:
                raise ValueError(f"hw_decoder_load must be in [0, 1], got {hw_decoder_load}")
        self.cfg = cfg
        self.batch_size = int(batch_size)
        self.device_id = device_id
        self.num_threads = int(num_threads)
        self.depth = int(prefetch_queue_depth)
        self.hw_decoder_load = None if hw_decoder_load is None else float(hw_decoder_load)
        self.ops = tuple(op for op in PIXEL_OPS if op.active(cfg))  # in the graph
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._tickets: deque = deque()       # scheduled or fed, in DALI's order
        self._waiting: List[int] = []        # submitted, not fetched nor cancelled
        self._ahead: Dict[int, tuple] = {}   # id -> (ticket, outputs or error), popped early
        self._cancelled: set = set()         # ids given up (set.add: safe from any thread)
        self._held: deque = deque()          # (DALI outputs, DLPack view, copy event) on a GPU
        self._unscheduled = 0                # fed before DALI's first (prefetching) run
        self._primed = False
        self._decode_pipe = None
        self.pipe = self._build()

    # --------------------------------------------------------------------- graph
    def _build(self):
        _dali()
        from nvidia.dali import fn, pipeline_def, types
        cfg = self.cfg
        gpu = self.device_id is not None
        out_h, out_w = cfg.out_size
        ctx = DaliContext(fn, types, gpu, cfg)
        dtypes = {"float32": types.FLOAT, "uint8": types.UINT8}
        ops = self.ops
        decoder_kw = {}
        if gpu and self.hw_decoder_load is not None:
            decoder_kw["hw_decoder_load"] = self.hw_decoder_load

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads,
                      device_id=self.device_id, exec_dynamic=True,
                      prefetch_queue_depth=self.depth)
        def augment():
            enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1, no_copy=False)
            mtx = fn.external_source(name="mtx", dtype=types.FLOAT, ndim=2)
            # stored pixel order, like every decoder of fastload: DALI applies EXIF
            # orientation by default (annotations label stored pixels: a rotated image
            # would put every mask off its object)
            shape = fn.peek_image_shape(enc, adjust_orientation=False)  # checks the size
            img = fn.decoders.image(enc, device="mixed" if gpu else "cpu",
                                    output_type=types.RGB, adjust_orientation=False,
                                    **decoder_kw)
            img = fn.warp_affine(img, matrix=mtx, size=(out_h, out_w), inverse_map=False,
                                 fill_value=float(cfg.pad_value),
                                 interp_type=types.INTERP_LINEAR, dtype=types.UINT8)
            for op in ops:
                inputs = {}
                for inp in op.dali_inputs:
                    kw = {"layout": inp.layout} if inp.layout else {}
                    if inp.batch_feed is not None:  # made where the graph runs
                        kw["device"] = "gpu" if gpu else "cpu"
                    inputs[inp.name] = fn.external_source(
                        name=f"{op.name}_{inp.name}", dtype=dtypes[inp.dtype], ndim=inp.ndim, **kw)
                img = op.dali_fragment(img, inputs, ctx)
            if cfg.dtype == "uint8":
                out = fn.transpose(img, perm=[2, 0, 1], output_layout="CHW")
            else:
                dt = types.FLOAT16 if cfg.dtype == "float16" else types.FLOAT
                out = fn.crop_mirror_normalize(img, dtype=dt, output_layout="CHW",
                                               mean=list(map(float, cfg.mean)),
                                               std=list(map(float, cfg.std)))
            return out, shape

        pipe = augment()
        pipe.build()
        return pipe

    def _torch_device(self):
        import torch
        return None if self.device_id is None else torch.device("cuda", self.device_id)

    # --------------------------------------------------------------------- feeding
    def _check(self, encoded, params, names, sizes) -> List[np.ndarray]:
        """The batch's encoded arrays; per-sample problems raise :class:`SampleErrors`."""
        n = len(encoded)
        if n != len(params):
            raise ValueError(f"{n} encoded images but {len(params)} SampleParams")
        if sizes is not None and len(sizes) != n:
            raise ValueError(f"{n} encoded images but {len(sizes)} sizes")
        if not 0 < n <= self.batch_size:
            raise ValueError(f"batch of {n} samples; must be 1..{self.batch_size}")
        left_out = [op for op in PIXEL_OPS if op not in self.ops]
        errors, enc = [], []
        for i, (e, q) in enumerate(zip(encoded, params)):
            a = np.frombuffer(e, np.uint8) if isinstance(e, (bytes, bytearray, memoryview)) \
                else np.ascontiguousarray(e, np.uint8).reshape(-1)
            enc.append(a)
            if a.size == 0:
                errors.append((i, ValueError(f"{_who(i, names)}: empty encoded image")))
                continue
            try:  # the pixel cap, before DALI allocates anything (DALI has none of its own)
                head = read_header(a, _who(i, names))
            except ValueError as ex:
                errors.append((i, ex))
                continue
            if sizes is not None and (head.height, head.width) != tuple(map(int, sizes[i])):
                h, w = map(int, sizes[i])
                errors.append((i, ValueError(
                    f"{_who(i, names)}: image is {head.height}x{head.width} (HxW) but its "
                    f"params were drawn for {h}x{w}")))
                continue
            for op in left_out:  # an op left out of the graph must not be needed
                if op.needed(q):
                    vals = ", ".join(f"{k}={v!r}"[:60] for k, v in q.values_of(op.name).items())
                    errors.append((i, ValueError(
                        f"{_who(i, names)}: {vals} but the config turns {op.name!r} off "
                        f"({', '.join(f.name for f in op.fields)})")))
                    break
        if errors:
            raise SampleErrors(errors)
        return enc

    def _feed(self, enc: List[np.ndarray], params: Sequence[SampleParams]) -> list:
        """Feed one batch to every external source; returns the inputs made on the GPU (kept
        alive until the batch is done, whichever stream DALI copies them on)."""
        p, cfg = self.pipe, self.cfg
        fed = []
        p.feed_input("enc", enc)
        p.feed_input("mtx", [np.ascontiguousarray(q.matrix[:2], np.float32) for q in params])
        dev = self._torch_device()
        for op in self.ops:
            for inp in op.dali_inputs:
                name = f"{op.name}_{inp.name}"
                if inp.batch_feed is None:
                    p.feed_input(name, [inp.feed(q, cfg) for q in params])
                elif dev is None:
                    p.feed_input(name, inp.batch_feed(params, cfg, None))
                else:  # made on the current stream; DALI copies it there
                    import torch
                    with torch.cuda.device(dev):
                        data = inp.batch_feed(params, cfg, dev)
                        p.feed_input(name, data, cuda_stream=torch.cuda.current_stream(dev))
                    fed.append(data)
        return fed

    def _enqueue(self, ticket: _Ticket, params) -> None:
        """Feed one batch and schedule it (or hold it back until DALI's first run has
        ``depth`` batches to prefetch). Caller holds the lock."""
        ticket.fed.extend(self._feed(ticket.enc, params))
        self._tickets.append(ticket)
        if self._primed:
            self.pipe.schedule_run()
            return
        self._unscheduled += 1
        if self._unscheduled == self.depth:
            self._prime()

    def _prime(self) -> None:
        """DALI's first run: it executes ``depth`` iterations, so feed filler batches up to
        that many, then schedule."""
        while self._unscheduled < self.depth:
            enc, q = _FILLER
            fed = self._feed([np.frombuffer(enc, np.uint8)], [q])
            self._tickets.append(_Ticket(next(self._ids), [], None, None, True, fed))
            self._unscheduled += 1
        self.pipe.schedule_run()
        self._primed = True

    # --------------------------------------------------------------------- public
    def submit(self, encoded: Sequence, params: Sequence[SampleParams], names=None,
               sizes=None) -> int:
        """Feed a batch and schedule it without waiting; returns its ticket for :meth:`fetch`.

        ``encoded``: encoded image bytes (JPEG/PNG/...); ``params``: one SampleParams each,
        drawn for the image's decoded size; ``names``: optional labels used in errors;
        ``sizes``: optional ``(height, width)`` per sample that the params were drawn for
        (e.g. the record's). Per-sample problems found before DALI runs (empty bytes, a header
        that does not read, is over the pixel cap or disagrees with ``sizes``, an op the config
        left out) raise :class:`SampleErrors` here; the rest come from fetch."""
        with self._lock:
            self._check_open()
            enc = self._check(encoded, params, names, sizes)
            t = _Ticket(next(self._ids), enc, names, sizes, False, [])
            self._enqueue(t, params)
            self._waiting.append(t.id)
            return t.id

    def fetch(self, ticket: Optional[int] = None):
        """A submitted batch (``ticket``; None: the oldest one not fetched) as torch
        (B, 3, H, W) ``cfg.dtype``. Raises :class:`SampleErrors` naming its bad samples."""
        with self._lock:
            self._check_open()
            self._forget_cancelled()
            if ticket is None:
                if not self._waiting:
                    raise RuntimeError("fetch() with nothing submitted")
                ticket = self._waiting[0]
            elif ticket not in self._waiting:
                raise RuntimeError(f"batch {ticket} was not submitted, or was already fetched "
                                   "or cancelled")
            self._waiting.remove(ticket)
            if ticket in self._ahead:
                t, res = self._ahead.pop(ticket)
            else:
                if not self._primed:
                    self._prime()
                while True:
                    t = self._tickets.popleft()
                    res = self._pop_outputs()
                    self._release_fed(t)
                    if t.id == ticket:
                        break
                    if t.filler or t.id in self._cancelled:
                        self._cancelled.discard(t.id)
                        continue
                    self._ahead[t.id] = (t, res)
            return self._result(t, res)

    def run(self, encoded: Sequence, params: Sequence[SampleParams], names=None, sizes=None):
        """Augment one batch now (:meth:`submit` + :meth:`fetch`): torch (B, 3, H, W)."""
        return self.fetch(self.submit(encoded, params, names=names, sizes=sizes))

    def cancel(self, ticket: int) -> None:
        """Give up a submitted batch: its output is dropped when DALI returns it. Takes no
        lock (safe in a finalizer, in any thread)."""
        self._cancelled.add(ticket)

    def pending(self) -> int:
        """Batches submitted and neither fetched nor cancelled."""
        return len([t for t in self._waiting if t not in self._cancelled])

    def close(self):
        with self._lock:
            if self.device_id is not None and self.pipe is not None:
                import torch  # copies still reading DALI's buffers, inputs DALI still reads
                torch.cuda.synchronize(self._torch_device())
            self._held.clear()
            self._ahead.clear()
            self._tickets.clear()
            self._waiting.clear()
            self.pipe = None
            self._decode_pipe = None

    # --------------------------------------------------------------------- collecting
    def _check_open(self):
        if self.pipe is None:
            raise RuntimeError("this DaliAugmenter is closed")

    def _forget_cancelled(self):
        for tid in self._cancelled.copy():  # (a C-level copy: no finalizer runs inside it)
            if tid in self._waiting:
                self._waiting.remove(tid)
            if tid in self._ahead:
                del self._ahead[tid]
                self._cancelled.discard(tid)

    def _release_fed(self, t: _Ticket) -> None:
        """Drop batch ``t``'s GPU inputs once its outputs are popped: the current stream has
        waited for the batch (``outputs(cuda_stream=...)``), so the caching allocator reuses
        their memory only after DALI is done with it (``record_stream``)."""
        if t.fed:
            import torch
            stream = torch.cuda.current_stream(self._torch_device())
            for x in t.fed:
                x.record_stream(stream)
            t.fed.clear()

    def _pop_outputs(self):
        """The next batch's DALI outputs (out, shapes), or the exception DALI raised for it.
        On a GPU they are ready on the current stream (no host wait for the GPU work)."""
        try:
            if self.device_id is None:
                return self.pipe.outputs()
            import torch
            return self.pipe.outputs(cuda_stream=torch.cuda.current_stream(self._torch_device()))
        except Exception as e:  # noqa: BLE001 - DALI's error for this batch, reported by fetch
            return e

    def _result(self, t: _Ticket, res):
        if isinstance(res, Exception):
            self._diagnose(t, res)
        out, shapes = res
        if t.sizes is not None:
            got = np.asarray(shapes.as_array())[:, :2]
            bad = [(i, ValueError(f"{_who(i, t.names)}: image is {gh}x{gw} (HxW) but its "
                                  f"params were drawn for {int(h)}x{int(w)}"))
                   for i, ((h, w), (gh, gw)) in enumerate(zip(t.sizes, got.tolist()))
                   if (int(h), int(w)) != (gh, gw)]
            if bad:
                raise SampleErrors(bad)
        return self._to_torch(out)

    def _to_torch(self, out):
        """DALI output -> torch through DLPack (see the module docstring's hand-off)."""
        import torch
        want = output_torch_dtype(self.cfg.dtype)
        dali_tensor = out.as_tensor()
        view = torch.from_dlpack(dali_tensor)  # a CUDA view: the current stream waits on DALI
        if not view.is_cuda:
            return view if view.dtype == want else view.to(want)
        dev = view.device
        stream = torch.cuda.current_stream(dev)
        res = torch.empty(view.shape, dtype=want, device=dev)
        res.copy_(view)
        ev = torch.cuda.Event()
        ev.record(stream)
        self._held.append((out, view, ev))
        while self._held and self._held[0][2].query():
            self._held.popleft()
        while len(self._held) > self.depth + self.HELD_EXTRA:
            self._held[0][2].synchronize()  # back-pressure: the GPU is far behind
            self._held.popleft()
        return res

    def _diagnose(self, t: _Ticket, err: Exception):
        """DALI failed on batch ``t``: decode each sample alone on the CPU and raise
        :class:`SampleErrors` for the ones that cannot be decoded or have another size than
        ``t.sizes``; RuntimeError when no sample is to blame."""
        bad = []
        for i, a in enumerate(t.enc):
            msg, shape = self._try_decode(a)
            if msg is not None:
                bad.append((i, ValueError(f"{_who(i, t.names)} in the batch cannot be decoded: "
                                          f"{msg}")))
            elif t.sizes is not None and tuple(shape[:2]) != tuple(int(v) for v in t.sizes[i]):
                bad.append((i, ValueError(f"{_who(i, t.names)}: image is {shape[0]}x{shape[1]} "
                                          f"(HxW) but its params were drawn for "
                                          f"{int(t.sizes[i][0])}x{int(t.sizes[i][1])}")))
        if bad:
            raise SampleErrors(bad) from None
        raise RuntimeError(f"DALI augmentation pipeline failed: {err}") from err

    def _try_decode(self, a: np.ndarray):
        """(None, decoded shape) or (DALI's error message, None), on DALI's CPU decoder."""
        from nvidia.dali import fn, pipeline_def, types
        if self._decode_pipe is None:
            @pipeline_def(batch_size=1, num_threads=1, device_id=None, exec_dynamic=True,
                          prefetch_queue_depth=1)
            def dec():
                e = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
                return fn.decoders.image(e, device="cpu", output_type=types.RGB,
                                         adjust_orientation=False)
            self._decode_pipe = dec()
            self._decode_pipe.build()
        try:
            self._decode_pipe.feed_input("enc", [a])
            (img,) = self._decode_pipe.run()
            return None, tuple(int(v) for v in img[0].shape())
        except RuntimeError as e:
            self._decode_pipe = None  # start from a fresh pipeline after an error
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            keep = [ln for ln in lines if not ln.startswith(("Critical error", "Current pipeline",
                                                              "File ", "which was used",
                                                              "e = ", "return fn."))]
            return " ".join(keep)[:300] or "DALI could not decode it", None
