"""Fast CPU augmentation backend: one fused Numba kernel per image.

For every output pixel (row i, col j) of an ``(H, W)`` output, in this order (the same
semantics as the DALI pipeline):

1. warp by the sample's matrix, bilinear, ``pad_value`` outside (``fastload.augment.warp``);
2. each pixel op of the table (``fastload.augment.ops``), in order: hue, brightness and
   contrast, shadow, gaussian noise; an op is in the kernel when the config turns it on
   (or the sample's values need it), and a sample whose values are the op's identity is
   left untouched by it;
3. clamp to [0, 255], normalize, store CHW in the output dtype (``fastload.augment.output``).

The kernel is generated from the table (``fastload.augment.fused``), so the whole chain is
one pass over the output with no intermediate image.

Encoded images are decoded by :func:`fastload.augment.decode.decode_for_warp`: a JPEG whose
matrix shrinks it 2x or more is decoded at 1/2, 1/4 or 1/8 by libjpeg-turbo's scaled IDCT and
warped with the matrix composed with that scale (:func:`warp_matrix`), which also anti-aliases.

Public API: :class:`CpuAugmenter` (batches on a thread pool; kernels release the GIL),
:func:`augment_image` (one image into a preallocated ``(3, H, W)`` slice) and
:func:`augment_image_reference` (slow, obvious NumPy passes composed from the ops'
references, for the tests).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np

from fastload.augment.config import AugmentConfig
from fastload.augment.decode import DecodeBuffer, decode_for_warp
from fastload.augment.fused import fused_kernel
from fastload.augment.ops import PIXEL_OPS
from fastload.augment.output import norm_consts, output_reference, output_target
from fastload.augment.warp import inverse_2x3, warp_reference
from fastload.dtypes import output_numpy_dtype

__all__ = ["CpuAugmenter", "augment_image", "augment_image_reference",
           "kernel_ops", "warp_matrix"]


def _check_image(image, name="image"):
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name}: expected an HWC uint8 RGB array, got {desc}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: empty image {image.shape}")
    return np.ascontiguousarray(image)


def kernel_ops(cfg: AugmentConfig, params=None):
    """The pixel ops in the kernel for ``cfg``: those it turns on, plus any that this
    sample's ``params`` need (params made by hand may use an op the config turns off)."""
    return tuple(op for op in PIXEL_OPS
                 if op.active(cfg) or (params is not None and op.needed(params)))


def warp_matrix(matrix, source_scale: int = 1) -> np.ndarray:
    """The matrix that warps an image decoded at 1/``source_scale`` of the size ``matrix``
    was drawn for: ``matrix @ diag(k, k, 1)`` (decoded pixel (i, j) covers source
    [jk, (j+1)k) x [ik, (i+1)k); ``fastload.augment.decode``); ``matrix`` itself for 1."""
    if source_scale == 1:
        return matrix
    k = float(source_scale)
    return np.asarray(matrix, np.float64) @ np.diag([k, k, 1.0])


def augment_image(image_hwc_uint8: np.ndarray, params, cfg: AugmentConfig,
                  out_chw: np.ndarray, mask_buffer: Optional[np.ndarray] = None,
                  name: str = "image", scratch: Optional[dict] = None,
                  source_scale: int = 1) -> np.ndarray:
    """Augment one HWC uint8 RGB image into the preallocated ``out_chw`` (3, H, W).

    ``params``: a SampleParams (matrix maps source pixel coords to output pixel coords,
    continuous convention of DESIGN.md). ``out_chw`` must be C-contiguous with
    ``(H, W) == cfg.out_size`` and dtype ``output_numpy_dtype(cfg.dtype)``.
    ``mask_buffer``: optional reusable uint8 (H, W) scratch for the shadow mask;
    ``scratch``: a reusable dict of such buffers (one per thread). ``source_scale``: the
    image was decoded at 1/k of the size ``params.matrix`` was drawn for
    (:func:`fastload.augment.decode.decode_for_warp`); the warp uses :func:`warp_matrix`.
    Releases the GIL for the whole kernel. Returns ``out_chw``.
    """
    img = _check_image(image_hwc_uint8, name)
    H, W = cfg.out_size
    want = output_numpy_dtype(cfg.dtype)
    if not isinstance(out_chw, np.ndarray) or out_chw.shape != (3, H, W) \
            or out_chw.dtype != want or not out_chw.flags.c_contiguous:
        raise ValueError(f"out_chw: expected a C-contiguous (3, {H}, {W}) {want} array, got "
                         f"{getattr(out_chw, 'dtype', type(out_chw))} {getattr(out_chw, 'shape', '')}")
    minv = inverse_2x3(warp_matrix(params.matrix, source_scale), f"{name}: params.matrix")
    if scratch is None:
        scratch = {}
    if mask_buffer is not None:
        scratch["mask"] = mask_buffer
    ops = kernel_ops(cfg, params)
    args = []
    for op in ops:
        try:
            args += op.kernel_values(params, cfg, scratch)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    scale, offset = norm_consts(cfg)
    kind, dst = output_target(out_chw, cfg)
    fused_kernel(ops, kind)(img, minv, float(cfg.pad_value), dst, scale, offset,
                            np.zeros(1, np.float32), *args)
    return out_chw


def augment_image_reference(image: np.ndarray, params, cfg: AugmentConfig,
                            source_scale: int = 1) -> np.ndarray:
    """Slow, obvious NumPy version of :func:`augment_image`: the warp, each op's reference
    in table order, clamp + normalize, as separate float64 passes (``source_scale`` as in
    :func:`augment_image`).

    Returns a (3, H, W) array of ``output_numpy_dtype(cfg.dtype)``."""
    v = warp_reference(_check_image(image), warp_matrix(params.matrix, source_scale),
                       cfg.out_size, cfg.pad_value)
    for op in PIXEL_OPS:
        v = op.reference(v, params, cfg)
    return output_reference(v, cfg)


class CpuAugmenter:
    """Decode + augment batches on a thread pool (the kernels and decoders release the GIL).

    ``run(images_or_encoded, params_list, out=None)``: each item is either an HWC uint8
    RGB array or encoded bytes (JPEG/PNG/...; decoded by
    :func:`fastload.augment.decode.decode_for_warp`, so a JPEG the matrix shrinks 2x or more
    is decoded at a reduced size); ``params_list[b]`` is that sample's
    SampleParams. Writes into ``out`` (B, 3, H, W) of ``output_numpy_dtype(cfg.dtype)``
    if given, else allocates it; returns it (NumPy: wrap with ``torch.from_numpy``;
    for bfloat16 convert the float32 result with torch). Outputs do not depend on the
    number of threads.
    """

    def __init__(self, cfg: AugmentConfig, num_threads: Optional[int] = None):
        self.cfg = cfg
        self.num_threads = int(num_threads or os.cpu_count() or 1)
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.dtype = output_numpy_dtype(cfg.dtype)
        self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="fastload-cpu") \
            if self.num_threads > 1 else None
        self._pid = os.getpid()  # threads do not survive a fork: see _live_pool
        self._local = threading.local()

    def _live_pool(self):
        """The pool of this process: a forked child builds its own (the parent's threads are
        not in the child, so tasks given to the inherited pool would never run)."""
        if self._pool is not None and self._pid != os.getpid():
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="fastload-cpu")
            self._pid = os.getpid()
        return self._pool

    def _scratch(self) -> dict:
        s = getattr(self._local, "scratch", None)
        if s is None:
            s = self._local.scratch = {}
        return s

    def _one(self, item, params, out_b, b, names):
        name = names[b] if names is not None else f"sample {b}"
        scratch = self._scratch()
        if isinstance(item, np.ndarray) and item.ndim == 3:
            img, k = item, 1
        else:  # decoded into this thread's buffer, used before the thread's next decode
            buf = scratch.get("decoded")
            if buf is None:
                buf = scratch["decoded"] = DecodeBuffer()
            img, k = decode_for_warp(item, params.matrix, name, pad_value=self.cfg.pad_value,
                                     buffer=buf)
        augment_image(img, params, self.cfg, out_b, name=name, scratch=scratch, source_scale=k)

    def run(self, images_or_encoded: Sequence, params_list: Sequence, out: Optional[np.ndarray] = None,
            names: Optional[Sequence[str]] = None) -> np.ndarray:
        B = len(images_or_encoded)
        if len(params_list) != B:
            raise ValueError(f"got {B} images but {len(params_list)} params")
        H, W = self.cfg.out_size
        if out is None:
            out = np.empty((B, 3, H, W), self.dtype)
        elif out.shape != (B, 3, H, W) or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out: expected a C-contiguous ({B}, 3, {H}, {W}) {self.dtype} array, "
                             f"got {out.dtype} {out.shape}")
        pool = self._live_pool()
        if pool is None or B == 1:
            for b in range(B):
                self._one(images_or_encoded[b], params_list[b], out[b], b, names)
        else:
            futs = [pool.submit(self._one, images_or_encoded[b], params_list[b], out[b], b, names)
                    for b in range(B)]
            for f in futs:
                f.result()
        return out

    def run_torch(self, images_or_encoded: Sequence, params_list: Sequence,
                  out: Optional[np.ndarray] = None, names: Optional[Sequence[str]] = None):
        """:meth:`run` wrapped as a CPU torch tensor of ``cfg.dtype`` (zero-copy except
        bfloat16, which is converted from the float32 result), like ``DaliAugmenter.run``."""
        import torch
        t = torch.from_numpy(self.run(images_or_encoded, params_list, out, names))
        return t.to(torch.bfloat16) if self.cfg.dtype == "bfloat16" else t

    def close(self):
        if self._pool is not None:
            if self._pid == os.getpid():  # (a forked child has no threads of it to stop)
                self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # pragma: no cover
        try:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.shutdown(wait=False)
        except Exception:
            pass
