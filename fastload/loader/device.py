"""The device stage: host buffers, dtype, the copy to the device and the hand-off to the loop.

- Buffers: the fixed-size target arrays and the CPU backend's images of a batch are
  allocated here. On a CUDA device they live in pinned host memory (torch's caching host
  allocator), so the kernels write straight into the memory the asynchronous host-to-device
  copy reads: no extra host copy of big maps. On the CPU, with ``recycle=N``, they come from
  a :class:`~.buffers.BufferRecycler` (N arrays per shape): the arrays of a batch the training
  loop has dropped are written again instead of allocating (and page-faulting) new ones.
- dtype: images come out of a backend in ``fastload.dtypes.output_numpy_dtype(cfg.dtype)``
  (bfloat16 is not a NumPy dtype: float32, converted here with torch).
- The copy: on a CUDA device every host array is copied with ``non_blocking=True`` on the
  loader's one CUDA stream (created by the producer thread, which also issues the image
  backend's device work there: the DALI backend's noise fields and the copy of DALI's
  output into a torch-owned tensor), and an event is recorded after the copies; tensors
  already on the device pass through.
- The hand-off (consumer side, :meth:`DeviceStage.hand_off`): the training loop's current
  stream waits on that event (no host synchronisation) and the tensors are marked as used
  by that stream for the caching allocator.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from fastload.dtypes import output_numpy_dtype, output_torch_dtype, torch_dtype

from .buffers import BufferRecycler

__all__ = ["DeviceStage", "image_tensor"]


def image_tensor(images, dtype_name: str) -> torch.Tensor:
    """A backend's images (NumPy or torch) as a torch tensor of ``output_torch_dtype(dtype_name)``
    (zero-copy, except the conversion of float32 to bfloat16)."""
    t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    want = output_torch_dtype(dtype_name)
    if t.dtype != want:
        t = t.to(want)
    return t


class DeviceStage:
    """Host buffers, the CUDA stream and the copy of one batch to ``device`` (see module doc).

    ``device``: a ``torch.device``; ``image_dtype``: ``cfg.dtype``; ``image_size``: (H, W);
    ``target_shapes``: key -> (per-sample shape, NumPy dtype) of the fixed-size targets.
    ``recycle``: on the CPU, reuse host arrays nothing holds any more, keeping up to this many
    per shape (0: allocate every batch's arrays; ignored on CUDA, where buffers are pinned).
    """

    def __init__(self, device: torch.device, image_dtype: str, image_size: Tuple[int, int],
                 target_shapes: Dict[str, Tuple[tuple, np.dtype]], recycle: int = 0):
        self.device = torch.device(device)
        self.image_dtype = image_dtype
        self.image_size = tuple(image_size)
        self.target_shapes = dict(target_shapes)
        self.pinned = self.device.type == "cuda"
        self.recycle = int(recycle)
        self.recycler: Optional[BufferRecycler] = None
        if self.recycle > 0 and not self.pinned:  # one image + one array per target key
            self.recycler = BufferRecycler(self.recycle, max_shapes=4 * (1 + len(self.target_shapes)))
        self._stream: Optional[torch.cuda.Stream] = None

    # ------------------------------------------------------------ producer thread
    def bind_thread(self) -> None:
        """Called first by the producer thread: like torch's pin-memory thread, its CUDA work
        (pinned buffers, the stream, DALI's output) goes to the loader's GPU, never to a
        context on cuda:0."""
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def target_buffers(self, n: int) -> Dict[str, np.ndarray]:
        """Zeroed (n, ...) arrays of the fixed-size targets (pinned on a CUDA device)."""
        if self.pinned:
            return {k: torch.zeros((n,) + shape, dtype=torch_dtype(dt), pin_memory=True).numpy()
                    for k, (shape, dt) in self.target_shapes.items()}
        if self.recycler is not None:
            return {k: self.recycler.take((n,) + shape, dt, zero=True, tag=k)
                    for k, (shape, dt) in self.target_shapes.items()}
        return {k: np.zeros((n,) + shape, dt) for k, (shape, dt) in self.target_shapes.items()}

    def image_buffer(self, n: int) -> np.ndarray:
        """An uninitialized (n, 3, H, W) host array for a backend that writes host images."""
        shape = (n, 3) + self.image_size
        dt = output_numpy_dtype(self.image_dtype)
        if self.pinned:  # write the images where the asynchronous copy reads them
            return torch.empty(shape, dtype=torch_dtype(dt), pin_memory=True).numpy()
        if self.recycler is not None:
            return self.recycler.take(shape, dt, tag="image")
        return np.empty(shape, dt)

    def stream(self):
        """Context that makes the loader's CUDA stream current (a no-op on the CPU)."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(self._stream)

    def to_device(self, host: Dict[str, object]) -> Tuple[Dict[str, torch.Tensor], Optional[object]]:
        """Host arrays / tensors -> tensors on the device, and the CUDA event that marks the
        end of the copies (None on the CPU)."""
        dev = self.device
        res = {}
        if dev.type != "cuda":
            for k, v in host.items():
                t = v if isinstance(v, torch.Tensor) else torch.from_numpy(v)
                res[k] = t.to(dev) if t.device != dev else t
            return res, None
        with self.stream():
            for k, v in host.items():
                t = v if isinstance(v, torch.Tensor) else torch.from_numpy(v)
                if t.device.type == "cpu":
                    if not t.is_pinned():  # targets are allocated pinned; small keys are not
                        t = t.pin_memory()
                    t = t.to(dev, non_blocking=True)
                res[k] = t
            ev = torch.cuda.Event()
            ev.record(self._stream)
        return res, ev

    # ------------------------------------------------------------ consumer thread
    @staticmethod
    def hand_off(batch: Dict[str, torch.Tensor], event) -> Dict[str, torch.Tensor]:
        """Make ``batch`` safe to use on the consumer's current stream: wait on the copy
        event there (no host synchronisation) and record the stream on every CUDA tensor."""
        if event is not None:
            cur = torch.cuda.current_stream(batch["image"].device)
            cur.wait_event(event)
            for t in batch.values():
                if t.is_cuda:
                    t.record_stream(cur)
        return batch
