"""Host buffers reused once nothing else holds them (the loader's CPU-device batches).

A fresh (B, 3, H, W) float32 batch is 100 MB at B = 32, 512 x 512: allocated per batch, every
page of it is faulted in and zeroed by the kernel before the augmentation kernel writes it,
and unmapped when the batch is dropped (measured: about 0.35 ms per image, 3-4% of the CPU
path on 640x480 JPEGs). :class:`BufferRecycler` hands out an array it made before when no one
but the recycler holds it any more.

**Held or not**: every NumPy view of an array that owns its memory has that array as its
``base`` (NumPy collapses chains of views to the owner), ``torch.from_numpy`` keeps a reference
to the array in the tensor's storage, which every tensor made from it (slices, ``view``,
``.numpy()`` arrays, whose base is a tensor) shares. So an array whose reference count is
the recycler's own is held by nothing: no batch, tensor, view or pending task can reach its
memory, and none can appear (nothing else refers to it). The count the recycler's own
references give is measured once on a probe array through the same function
(:func:`_refcount_at`), not assumed. Tested: a buffer still reachable from a batch, a
tensor slice, a ``.numpy()`` view or a NumPy view is never handed out again; dropped, it is.

Bounded: at most ``capacity`` arrays per (tag, shape, dtype), at most ``max_shapes`` of those
(the least recently used one's arrays are forgotten: freed when their holders drop them); when
every array of a key is held and the key has ``capacity`` of them, a new array is made and not
kept. So the recycler keeps no more arrays of a key than were alive at one time.

Not for pinned memory on a CUDA device: an asynchronous copy still reading a buffer holds no
Python reference to it (torch's caching host allocator tracks that with events instead).
"""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import List, Tuple

import numpy as np

__all__ = ["BufferRecycler"]


def _refcount_at(arrays: List[np.ndarray], i: int) -> int:
    return sys.getrefcount(arrays[i])


#: the reference count of an array held only by a recycler's list, read by _refcount_at
_UNHELD = _refcount_at([np.empty(0)], 0)


class BufferRecycler:
    """``take(shape, dtype, zero, tag)``: an array of that shape and dtype that nothing else
    holds (zeroed when ``zero``; else its content is undefined, like ``np.empty``); ``tag``
    (e.g. the batch key) keeps the arrays of different uses apart. Thread-safe."""

    def __init__(self, capacity: int = 6, max_shapes: int = 4):
        if capacity < 1 or max_shapes < 1:
            raise ValueError(f"capacity and max_shapes must be >= 1, got {capacity}, {max_shapes}")
        self.capacity, self.max_shapes = int(capacity), int(max_shapes)
        self._arrays: "OrderedDict[Tuple, List[np.ndarray]]" = OrderedDict()
        self._lock = threading.Lock()
        self.reused = self.made = 0  # counters, for tests and profiling

    def take(self, shape: tuple, dtype, zero: bool = False, tag: str = "") -> np.ndarray:
        shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        key = (tag, shape, dtype.str)
        with self._lock:
            arrays = self._arrays.get(key)
            if arrays is None:
                arrays = self._arrays[key] = []
                while len(self._arrays) > self.max_shapes:
                    self._arrays.popitem(last=False)
            else:
                self._arrays.move_to_end(key)
            for i in range(len(arrays)):
                if _refcount_at(arrays, i) == _UNHELD:
                    a = arrays[i]
                    self.reused += 1
                    break
            else:
                a = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
                self.made += 1
                if len(arrays) < self.capacity:
                    arrays.append(a)
                return a
        if zero:
            a.fill(0)
        return a

    def held(self) -> int:
        """Arrays kept by the recycler that something else still holds."""
        with self._lock:
            return sum(_refcount_at(arrays, i) != _UNHELD
                       for arrays in self._arrays.values() for i in range(len(arrays)))
