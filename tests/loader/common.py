"""Helpers shared by the loader tests."""
import threading
import time

import torch

from fastload.augment.config import AugmentConfig

CFG = AugmentConfig(out_size=(64, 64))


def collect(loader):
    """One epoch of ``loader``, every tensor cloned."""
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def producers():
    return [t for t in threading.enumerate() if t.name.startswith("fastload-producer") and t.is_alive()]


def fastload_threads():
    return [t for t in threading.enumerate() if t.name.startswith("fastload") and t.is_alive()]


def wait_until(cond, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


class SlowDataset:
    """Records from a BlobDataset, one of them slow to read (a stalled NAS); ``times``: how
    many reads of it are slow (None: all)."""

    def __init__(self, base, slow_index, seconds, times=None):
        self.base, self.slow, self.seconds, self.times = base, slow_index, seconds, times
        self.classes, self.keypoint_names, self.flip_pairs = base.classes, base.keypoint_names, base.flip_pairs

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i == self.slow and (self.times is None or self.times > 0):
            if self.times is not None:
                self.times -= 1
            time.sleep(self.seconds)
        return self.base[i]
