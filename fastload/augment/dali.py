"""The DALI augmentation pipeline: encoded bytes + per-sample parameters in, NCHW torch out.

    aug = DaliAugmenter(cfg, batch_size=32, device_id=0)        # GPU ("mixed" decode)
    aug = DaliAugmenter(cfg, batch_size=8, device_id=None)      # DALI CPU operators
    params = [sample_params(cfg, seed, epoch, i, h, w) for ...]
    images = aug.run(encoded_list, params)                       # torch (B, 3, H, W) cfg.dtype

The graph is built from the op table (``fastload.augment.ops``), per sample:

1. decode to HWC uint8 RGB (``device="mixed"`` with a GPU, ``"cpu"`` otherwise);
2. ONE ``fn.warp_affine`` with the 2x3 part of ``params.matrix`` (source -> output,
   ``inverse_map=False``), bilinear, ``fill_value=cfg.pad_value``, size ``cfg.out_size``;
   output pixel (i, j) samples the source at M^-1 (j + .5, i + .5) (continuous coords);
   result rounded to uint8;
3. each pixel op the config turns on, in table order, as its DALI fragment fed by its
   external inputs (``Op.dali_inputs``, filled from the params): ``fn.hue``,
   ``fn.brightness_contrast``, the shadow mask product, ``fn.noise.gaussian``; each
   rounds back to uint8 (round to nearest, saturate);
4. ``fn.crop_mirror_normalize`` to CHW ``(v - mean) / std`` in float32 / float16
   (bfloat16: float32 in DALI, converted by torch); uint8: a plain HWC->CHW transpose.

An op the config turns off is left out of the graph entirely; params that need it
(e.g. ``hue_deg != 0`` with ``cfg.hue_deg == (0, 0)``) raise ``ValueError``.

Noise values: DALI seeds its noise operator once per pipeline (``seed`` argument of this
class), not per sample; ``params.noise_seed`` is NOT used here, only ``noise_sigma``. The
noise a sample gets therefore depends on the order of batches since the pipeline was built
(reproducible for the same sequence of batches, not per sample). The fused CPU backend keys
its noise by ``noise_seed``.

Bad input: a sample that fails to decode raises ``ValueError`` naming its position in the
batch and its name (``names`` argument, e.g. the file name or dataset index). The
pipeline keeps working afterwards.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import List, Optional, Sequence

import numpy as np

from fastload.augment.config import AugmentConfig
from fastload.augment.ops import PIXEL_OPS
from fastload.augment.ops.base import DaliContext
from fastload.augment.params import SampleParams
from fastload.dtypes import output_numpy_dtype, torch_dtype
from fastload.optional import require


def _dali():
    return require("nvidia.dali", extra="dali", what="the DALI image backend")


class DaliAugmenter:
    """A built DALI pipeline for one :class:`AugmentConfig` (see module docstring).

    ``device_id=None`` runs DALI's CPU operators and returns CPU torch tensors;
    an int runs decode ("mixed", nvJPEG) and every operator on that GPU and returns CUDA
    tensors on that device, copied device-to-device (no host round trip) on a side stream
    and complete when returned (see ``_to_torch``).
    """

    def __init__(self, cfg: AugmentConfig, batch_size: int, device_id: Optional[int] = None,
                 num_threads: int = 2, prefetch_queue_depth: int = 1, seed: int = 0):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.cfg = cfg
        self.batch_size = int(batch_size)
        self.device_id = device_id
        self.num_threads = int(num_threads)
        self.seed = int(seed)
        self.ops = tuple(op for op in PIXEL_OPS if op.active(cfg))  # in the graph
        self._pending: deque = deque()
        self._lock = threading.Lock()
        self._decode_pipe = None
        self.pipe = self._build(prefetch_queue_depth)

    # --------------------------------------------------------------------- graph
    def _build(self, depth):
        _dali()
        from nvidia.dali import fn, pipeline_def, types
        cfg = self.cfg
        gpu = self.device_id is not None
        out_h, out_w = cfg.out_size
        ctx = DaliContext(fn, types, gpu, cfg)
        dtypes = {"float32": types.FLOAT, "uint8": types.UINT8}
        ops = self.ops

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads,
                      device_id=self.device_id, seed=self.seed, exec_dynamic=True,
                      prefetch_queue_depth=depth)
        def augment():
            enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1, no_copy=False)
            mtx = fn.external_source(name="mtx", dtype=types.FLOAT, ndim=2)
            shape = fn.peek_image_shape(enc)  # header only; checks the record's size
            img = fn.decoders.image(enc, device="mixed" if gpu else "cpu",
                                    output_type=types.RGB)
            img = fn.warp_affine(img, matrix=mtx, size=(out_h, out_w), inverse_map=False,
                                 fill_value=float(cfg.pad_value),
                                 interp_type=types.INTERP_LINEAR, dtype=types.UINT8)
            for op in ops:
                inputs = {}
                for inp in op.dali_inputs:
                    kw = {"layout": inp.layout} if inp.layout else {}
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

    # --------------------------------------------------------------------- feeding
    def _feed(self, encoded: Sequence, params: Sequence[SampleParams], sizes=None):
        n = len(encoded)
        if n != len(params):
            raise ValueError(f"{n} encoded images but {len(params)} SampleParams")
        if sizes is not None and len(sizes) != n:
            raise ValueError(f"{n} encoded images but {len(sizes)} sizes")
        if not 0 < n <= self.batch_size:
            raise ValueError(f"batch of {n} samples; must be 1..{self.batch_size}")
        left_out = [op for op in PIXEL_OPS if op not in self.ops]
        for i, q in enumerate(params):  # an op left out of the graph must not be needed
            for op in left_out:
                if op.needed(q):
                    vals = ", ".join(f"{k}={v!r}"[:60] for k, v in q.values_of(op.name).items())
                    raise ValueError(f"sample {i}: {vals} but the config turns {op.name!r} off "
                                     f"({', '.join(f.name for f in op.fields)})")
        enc = []
        for i, e in enumerate(encoded):
            a = np.frombuffer(e, np.uint8) if isinstance(e, (bytes, bytearray, memoryview)) \
                else np.ascontiguousarray(e, np.uint8).reshape(-1)
            if a.size == 0:
                raise ValueError(f"sample {i}: empty encoded image")
            enc.append(a)
        p = self.pipe
        p.feed_input("enc", enc)
        p.feed_input("mtx", [np.ascontiguousarray(q.matrix[:2], np.float32) for q in params])
        for op in self.ops:
            for inp in op.dali_inputs:
                p.feed_input(f"{op.name}_{inp.name}", [inp.feed(q, self.cfg) for q in params])
        return enc

    def _copy_stream(self):
        import torch
        if getattr(self, "_stream", None) is None:
            self._stream = torch.cuda.Stream(torch.device("cuda", self.device_id))
        return self._stream

    def _outputs(self):
        """pipe.outputs(), made ready on our copy stream when on a GPU."""
        if self.device_id is None:
            return self.pipe.outputs()
        return self.pipe.outputs(cuda_stream=self._copy_stream())

    def _to_torch(self, out):
        """DALI output -> torch. GPU: device-to-device copy on a side stream, which is then
        synchronized (it holds only DALI's work and the copy, never the training stream's),
        so the tensor is complete when returned and DALI may reuse its buffers; the tensor
        is marked as used by the caller's current stream for the caching allocator."""
        import torch
        if self.device_id is None:
            t = torch.from_numpy(np.asarray(out.as_array()))
            return t.to(torch.bfloat16) if self.cfg.dtype == "bfloat16" else t
        from nvidia.dali.plugin.pytorch import feed_ndarray
        tensor = out.as_tensor()
        dtype = torch_dtype(output_numpy_dtype(self.cfg.dtype))  # bfloat16: float32 here
        dev = torch.device("cuda", self.device_id)
        side = self._copy_stream()
        with torch.cuda.stream(side):
            t = torch.empty(tuple(tensor.shape()), dtype=dtype, device=dev)
            feed_ndarray(tensor, t, cuda_stream=side)
            if self.cfg.dtype == "bfloat16":
                t = t.to(torch.bfloat16)
        side.synchronize()
        t.record_stream(torch.cuda.current_stream(dev))
        return t

    @staticmethod
    def _check_sizes(shapes, sizes, names):
        if sizes is None:
            return
        got = np.asarray(shapes.as_array())[:, :2]
        for i, ((h, w), (gh, gw)) in enumerate(zip(sizes, got.tolist())):
            if (int(h), int(w)) != (gh, gw):
                who = f" ({names[i]})" if names is not None else ""
                raise ValueError(f"sample {i}{who}: image is {gh}x{gw} (HxW) but its params "
                                 f"were drawn for {int(h)}x{int(w)}")

    def _diagnose(self, enc: List[np.ndarray], names, err: Exception):
        """Find the sample(s) DALI could not decode; raise ValueError naming them."""
        bad = []
        for i, a in enumerate(enc):
            msg = self._try_decode(a)
            if msg is not None:
                bad.append((i, msg))
        if bad:
            i, msg = bad[0]
            who = f" ({names[i]})" if names is not None else ""
            more = f" (and {len(bad) - 1} more: positions {[b[0] for b in bad[1:]]})" \
                if len(bad) > 1 else ""
            raise ValueError(f"sample {i}{who} in the batch cannot be decoded: {msg}{more}") \
                from None
        raise RuntimeError(f"DALI augmentation pipeline failed: {err}") from err

    def _try_decode(self, a: np.ndarray) -> Optional[str]:
        from nvidia.dali import fn, pipeline_def, types
        if self._decode_pipe is None:
            @pipeline_def(batch_size=1, num_threads=1, device_id=None, exec_dynamic=True,
                          prefetch_queue_depth=1)
            def dec():
                e = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
                return fn.decoders.image(e, device="cpu", output_type=types.RGB)
            self._decode_pipe = dec()
            self._decode_pipe.build()
        try:
            self._decode_pipe.feed_input("enc", [a])
            self._decode_pipe.run()
            return None
        except RuntimeError as e:
            self._decode_pipe = None  # DALI marks a pipeline invalid after an error
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            keep = [ln for ln in lines if not ln.startswith(("Critical error", "Current pipeline",
                                                              "File ", "which was used",
                                                              "e = ", "return fn."))]
            return " ".join(keep)[:300] or "DALI could not decode it"

    # --------------------------------------------------------------------- public
    def run(self, encoded: Sequence, params: Sequence[SampleParams], names=None, sizes=None):
        """Augment one batch (1..batch_size samples); returns torch (B, 3, H, W) cfg.dtype.

        ``encoded``: encoded image bytes (JPEG/PNG/...); ``params``: one SampleParams each,
        drawn for the image's decoded size; ``names``: optional labels used in errors;
        ``sizes``: optional ``(height, width)`` per sample that the params were drawn for
        (e.g. the record's); a decoded image of another size raises ``ValueError``.
        """
        with self._lock:
            if self._pending:
                raise RuntimeError("run() while submitted batches are pending; fetch() them first")
            enc = self._feed(encoded, params, sizes)
            self.pipe.schedule_run()
            return self._collect(enc, names, sizes)

    def submit(self, encoded: Sequence, params: Sequence[SampleParams], names=None,
               sizes=None) -> None:
        """Feed a batch and schedule it without waiting (prefetch); get it with :meth:`fetch`.

        Batches come back in submission order. Keep at most ``prefetch_queue_depth``
        batches in flight."""
        with self._lock:
            enc = self._feed(encoded, params, sizes)
            self.pipe.schedule_run()
            self._pending.append((enc, names, sizes))

    def fetch(self):
        """The oldest submitted batch as torch (B, 3, H, W) (see :meth:`run`)."""
        with self._lock:
            if not self._pending:
                raise RuntimeError("fetch() with nothing submitted")
            enc, names, sizes = self._pending.popleft()
            return self._collect(enc, names, sizes)

    def _collect(self, enc, names, sizes):
        """Outputs of the oldest scheduled batch as torch; a DALI error is re-raised naming
        the bad sample, a size mismatch as ValueError. Caller holds ``self._lock``."""
        try:
            out, shapes = self._outputs()
        except RuntimeError as e:
            self._diagnose(enc, names, e)
        try:
            self._check_sizes(shapes, sizes, names)
            return self._to_torch(out)
        finally:
            self.pipe.release_outputs()

    def close(self):
        self.pipe = None
        self._decode_pipe = None
