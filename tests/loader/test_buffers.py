"""Host buffer recycling: an array is handed out again only when nothing else can reach its
memory (batch dicts, tensors, slices, .numpy() views, NumPy views), and a loader that
recycles yields exactly the batches of one that allocates every batch."""
import dataclasses
import gc
import threading

import numpy as np
import pytest
import torch

from tests.helpers.data import blob_dataset
from tests.loader.common import CFG, assert_batches_equal
from fastload.loader import DataLoader
from fastload.loader.buffers import BufferRecycler
from fastload.loader.device import DeviceStage

SHAPE = (2, 3, 4)


def _same_memory(a, b):
    return np.shares_memory(np.asarray(a), np.asarray(b))


def test_a_dropped_array_is_handed_out_again():
    r = BufferRecycler(capacity=2)
    a = r.take(SHAPE, np.float32)
    ptr = a.ctypes.data
    del a
    b = r.take(SHAPE, np.float32)
    assert b.ctypes.data == ptr and (r.made, r.reused) == (1, 1)


@pytest.mark.parametrize("holder", [
    "array", "tensor", "tensor_slice", "tensor_view", "tensor_numpy", "numpy_view", "batch_dict",
    "row_of_tensor", "list_of_rows"])
def test_an_array_something_still_holds_is_never_handed_out(holder):
    r = BufferRecycler(capacity=4)
    a = r.take(SHAPE, np.float32)
    a[...] = 7.0
    t = torch.from_numpy(a)
    held = {"array": lambda: a, "tensor": lambda: t, "tensor_slice": lambda: t[1:],
            "tensor_view": lambda: t.view(-1), "tensor_numpy": lambda: t[0].numpy(),
            "numpy_view": lambda: a[:, 1], "batch_dict": lambda: {"image": t},
            "row_of_tensor": lambda: t[1], "list_of_rows": lambda: list(t)}[holder]()
    del a, t
    gc.collect()
    others = [r.take(SHAPE, np.float32, zero=True) for _ in range(3)]
    flat = held["image"] if holder == "batch_dict" else held
    flat = flat if not isinstance(flat, list) else flat[0]
    for o in others:
        assert not _same_memory(o, flat)
    assert (np.asarray(flat) == 7.0).all()  # untouched by the zeroing of the others
    assert r.held() >= 1
    del held, flat
    gc.collect()
    again = [r.take(SHAPE, np.float32) for _ in range(4)]
    assert r.reused >= 1 and len({x.ctypes.data for x in again}) == 4


def test_zero_zeroes_a_reused_array():
    r = BufferRecycler()
    a = r.take(SHAPE, np.int64, zero=True)
    a[...] = 5
    del a
    b = r.take(SHAPE, np.int64, zero=True)
    assert r.reused == 1 and not b.any()


def test_tags_shapes_and_dtypes_keep_arrays_apart():
    r = BufferRecycler()
    a = r.take(SHAPE, np.float32, tag="wh")
    pa = a.ctypes.data
    del a
    for other in (dict(tag="reg"), dict(dtype=np.int32, tag="wh")):
        b = r.take(SHAPE, other.get("dtype", np.float32), tag=other["tag"])
        assert b.ctypes.data != pa and b.dtype == other.get("dtype", np.float32)
        del b
    c = r.take((1,) + SHAPE[1:], np.float32, tag="wh")
    assert c.shape == (1,) + SHAPE[1:]


def test_bounded_per_key_and_in_keys():
    r = BufferRecycler(capacity=2, max_shapes=2)
    held = [r.take(SHAPE, np.uint8) for _ in range(5)]  # 2 kept, 3 made and not kept
    assert r.made == 5 and r.held() == 2
    del held
    assert r.held() == 0
    r.take((1,), np.uint8)
    r.take((2,), np.uint8)  # a third key: the least recently used one is forgotten
    assert [shape for _, shape, _ in r._arrays] == [(1,), (2,)]
    with pytest.raises(ValueError):
        BufferRecycler(capacity=0)


def test_threads_never_share_an_array_they_hold():
    r = BufferRecycler(capacity=3)
    errors = []

    def work(tid):
        for n in range(300):
            a = r.take((64,), np.int64)
            a[...] = tid * 1000 + n
            if not (a == tid * 1000 + n).all():
                errors.append((tid, n))
            b = r.take((64,), np.int64)
            b[...] = -1
            if not (a == tid * 1000 + n).all():
                errors.append((tid, n, "overwritten"))
            del a, b

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and r.reused > 0


def test_device_stage_recycles_on_the_cpu_only():
    shapes = {"hm": ((2, 8, 8), np.dtype(np.float32))}
    cpu = DeviceStage(torch.device("cpu"), "float32", (8, 8), shapes, recycle=3)
    assert cpu.recycler is not None
    t = cpu.target_buffers(2)
    t["hm"][...] = 1
    del t
    assert not cpu.target_buffers(2)["hm"].any()  # reused, zeroed
    assert cpu.recycler.reused == 1
    assert DeviceStage(torch.device("cpu"), "float32", (8, 8), shapes).recycler is None
    assert DeviceStage(torch.device("cuda"), "float32", (8, 8), shapes, recycle=3).recycler is None


@pytest.mark.parametrize("dtype", ["float32", "uint8", "bfloat16"])
def test_loader_batches_equal_with_and_without_recycling(dtype):
    ds = blob_dataset(10)
    cfg = dataclasses.replace(CFG, dtype=dtype)
    kw = dict(batch_size=4, shuffle=True, augment=cfg, targets=["centernet"], num_threads=2)
    plain = DataLoader(ds, **kw)
    plain._resources._device.recycler = None  # allocate every batch (as before recycling)
    recycled = DataLoader(ds, **kw)
    kept = []  # every batch of epoch 0 held, the others dropped as they come
    for epoch in range(4):
        plain.set_epoch(epoch)
        recycled.set_epoch(epoch)
        for a, b in zip(plain, recycled):
            assert_batches_equal(a, b)
            if epoch == 0:
                kept.append((a, b))
    for a, b in kept:  # held batches were not overwritten by later epochs
        assert_batches_equal(a, b)
    rec = recycled._resources._device.recycler
    assert rec.reused > 0
    for key in ("image", "hm"):  # the held batches have memory of their own
        ptrs = [b[key].untyped_storage().data_ptr() for _, b in kept]
        assert len(set(ptrs)) == len(ptrs), key
    plain.close()
    recycled.close()
