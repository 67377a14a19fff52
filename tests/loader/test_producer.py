"""The producer and the loader's lifetime: the producer holds no reference to the DataLoader,
the next epoch is prefetched by the same producer, a timed-out producer never overlaps the
next one, and one mechanism stops every thread (break, exception, close, del, exit)."""
import gc
import subprocess
import sys
import textwrap
import threading
import time
import types
import weakref

import pytest
import torch

from fastload.loader import DataLoader, SampleError, epoch_indices
from fastload.loader.backends import CpuBackend, register_backend, unregister_backend
from tests.helpers.data import corrupt_image
from tests.loader.common import (CFG, SlowDataset, assert_batches_equal, collect, fastload_threads,
                                 producers, wait_until)


def _reachable(roots, target) -> bool:
    """Whether ``target`` is reachable from ``roots`` through references, weak ones included,
    and through the locals of frames (a running frame's references are not visible to the
    gc module), not counting modules, classes and functions (whose globals reach everything)."""
    skip_ids = {id(m.__dict__) for m in list(sys.modules.values()) if m is not None}
    seen, stack = set(), list(roots)
    while stack:
        o = stack.pop()
        if o is target:
            return True
        if id(o) in seen or id(o) in skip_ids or isinstance(
                o, (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType,
                    types.CodeType)):
            continue
        seen.add(id(o))
        if isinstance(o, weakref.ref):
            stack.append(o())
        if isinstance(o, types.FrameType):
            stack.extend([o.f_locals, o.f_back])
        stack.extend(gc.get_referents(o))
    return False


# ------------------------------------------------------------------ no reference to the loader
def test_producer_holds_no_reference_to_the_loader(blobs):
    ld = DataLoader(blobs, batch_size=2, shuffle=True, augment=CFG, num_threads=2, prefetch=1)
    it = iter(ld)
    next(it)  # mid-epoch: the producer thread is alive, blocked on its full queue
    p = ld._resources.producer
    assert p.alive
    roots = [p, p.thread, sys._current_frames()[p.thread.ident]]
    assert _reachable([it], ld)  # the check can see a reference where there is one ...
    assert _reachable(roots, ld._resources._maker)  # ... and into the producer's frames
    assert not _reachable(roots, ld)  # the producer, its thread and its live frames do not
    it.close()
    collect(ld)  # a whole epoch: the producer is parked, prefetching the next epoch
    p = ld._resources.producer
    assert p.alive and ld._resources.parked
    assert not _reachable([p, p.thread, sys._current_frames()[p.thread.ident]], ld)
    ref = weakref.ref(ld)
    del ld, it
    gc.collect()
    assert ref() is None  # collected while its producer was alive ...
    assert wait_until(lambda: not p.alive)  # ... which the loader's finalizer then stopped


# ------------------------------------------------------------------ prefetch across epochs
def test_next_epoch_is_prefetched_and_identical(blobs):
    ld = DataLoader(blobs, batch_size=4, shuffle=True, augment=CFG, num_threads=2, prefetch=2)
    collect(ld)  # epoch 0; its producer goes on with epoch 1
    spare = ld._resources.producer
    assert ld._resources.parked and spare.delivers.epoch == 1 and spare.start == 0
    deadline = time.monotonic() + 20
    while spare.queued() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert spare.queued() == 2, spare.queued()  # bounded: prefetch batches wait, no more
    e1 = collect(ld)
    assert ld._resources.producer is spare  # the prefetched epoch was delivered by it
    ref = DataLoader(blobs, batch_size=4, shuffle=True, augment=CFG, num_threads=2)
    ref.set_epoch(1)
    for x, y in zip(e1, collect(ref)):
        assert_batches_equal(x, y)
    spare = ld._resources.producer
    ld.set_epoch(7)  # not the prefetched epoch: the spare producer is dropped
    assert torch.cat([b["index"] for b in collect(ld)]).tolist() == \
        epoch_indices(10, seed=0, epoch=7, shuffle=True).tolist()
    assert not spare.thread.is_alive()
    last = [ld._resources.producer, ref._resources.producer]
    ld.close()
    ref.close()
    assert not any(p.thread.is_alive() for p in last)


# ------------------------------------------------------------------ timeouts
def test_timeout_raises_instead_of_waiting(blobs):
    collect(DataLoader(blobs, batch_size=4, augment=CFG))  # warm the kernels in this process
    ld = DataLoader(SlowDataset(blobs, 5, 3.0), batch_size=4, augment=CFG, timeout=0.5)
    it = iter(ld)
    next(it)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="timeout=0.5"):
        next(it)
    assert time.monotonic() - t0 < 2.5
    with pytest.raises(StopIteration):  # the iterator is closed after the error
        next(it)

def test_timed_out_producer_does_not_overlap_the_next(blobs):
    """A producer stuck in a backend call times out; the next iteration refuses to start a
    second producer next to it (TimeoutError after `timeout`), and starts once it has ended."""
    gate, calls = threading.Event(), []

    class Stuck(CpuBackend):
        def __init__(self, ctx):
            super().__init__(ctx)
            self.lookahead = 0  # the first batch is delivered before the second is submitted

        def submit(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:  # the second batch gets stuck in the "kernel"
                gate.wait(60)
            return super().submit(*args, **kwargs)

    ref = collect(DataLoader(blobs, batch_size=4, augment=CFG, backend="cpu", num_threads=2))
    gc.collect()  # (the kernels are warm in this process now: timeout=0.5 is for the stuck batch)
    before = set(producers())
    mine = lambda: [t for t in producers() if t not in before]  # noqa: E731
    most, watching = [0], threading.Event()

    def watch():
        while not watching.is_set():
            most[0] = max(most[0], len(mine()))
            time.sleep(0.001)

    register_backend("test-stuck", Stuck, "a CPU backend stuck on its second batch (a test)")
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        ld = DataLoader(blobs, batch_size=4, augment=CFG, backend="test-stuck", timeout=0.5,
                        num_threads=2)
        it = iter(ld)
        first = next(it)
        state = ld.state_dict()
        with pytest.raises(TimeoutError, match="timeout=0.5"):
            next(it)
        ld.load_state_dict(state)  # resume after the first batch (kept across the refusal)
        stuck = mine()
        assert len(stuck) == 1
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="previous producer is still busy"):
            iter(ld)
        assert 0.4 < time.monotonic() - t0 < 5
        assert mine() == stuck  # no second producer was started
        gate.set()
        assert wait_until(lambda: not stuck[0].is_alive())
        got = collect(ld)
    finally:
        gate.set()
        watching.set()
        watcher.join()
        unregister_backend("test-stuck")
    assert len(got) == 2 and len(ref) == 3
    for g, r in zip([first] + got, ref):
        assert_batches_equal(g, r)
    assert most[0] == 1  # never two producers of this loader at once
    ld.close()


# ------------------------------------------------------------------ one lifetime mechanism
def test_break_delete_and_interrupt_leave_no_threads(blobs):
    gc.collect()
    before = set(threading.enumerate())
    ld = DataLoader(blobs, batch_size=2, augment=CFG, num_threads=2, prefetch=1)
    mine = lambda: set(producers()) - before  # noqa: E731
    for _ in ld:
        break  # producer is blocked on the full queue here
    gc.collect()
    deadline = time.monotonic() + 10
    while mine() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not mine()
    with pytest.raises(KeyboardInterrupt):
        for _ in ld:
            raise KeyboardInterrupt
    gc.collect()
    assert not mine()
    it = iter(ld)
    next(it)
    it.close()
    assert not mine()
    del ld, it
    gc.collect()
    assert not set(fastload_threads()) - before

def test_one_finalizer_and_no_thread_left_after_close_error_or_del(blobs):
    """The loader registers one finalizer (none per iterator or per part); close(), an
    exception in the producer and deleting a loader whose producer is parked each leave no
    fastload thread (producer or pool) behind."""
    gc.collect()
    before = set(fastload_threads())
    mine = lambda: set(fastload_threads()) - before  # noqa: E731
    n_final = len(weakref.finalize._registry)
    ld = DataLoader(blobs, batch_size=2, augment=CFG, num_threads=2, prefetch=1)
    it = iter(ld)
    next(it)
    it2 = iter(ld)  # a new iteration replaces the first one's producer
    next(it2)
    with pytest.raises(StopIteration):
        next(it)
    assert len(weakref.finalize._registry) - n_final == 1
    ld.close()
    assert not mine()
    with pytest.raises(RuntimeError, match="closed"):
        iter(ld)
    del it, it2

    corrupt_image(blobs, 3)
    ld = DataLoader(blobs, batch_size=2, augment=CFG, num_threads=2)
    with pytest.raises(SampleError, match="sample index 3"):
        collect(ld)
    assert wait_until(lambda: not [t for t in mine() if t.name.startswith("fastload-producer")])
    del ld
    gc.collect()
    assert not mine()

    ld = DataLoader(blobs, batch_size=4, augment=CFG, num_threads=2, on_error="skip")
    collect(ld)  # parked, prefetching epoch 1
    assert any(t.name.startswith("fastload-producer") for t in mine())
    del ld
    assert not mine()  # no gc needed: the loader is in no reference cycle
    assert len(weakref.finalize._registry) == n_final


def test_program_end_mid_epoch_exits(tmp_path, blobs):
    """Leaving a loader mid-epoch at interpreter exit: the process ends promptly, rc 0."""
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2]
    script = textwrap.dedent(f"""
        import sys; sys.path[:0] = [{str(root)!r}]
        from tests.helpers.data import blob_dataset
        from fastload import DataLoader, AugmentConfig
        ld = DataLoader(blob_dataset(6), batch_size=2, augment=AugmentConfig(out_size=(64, 64)), prefetch=1)
        it = iter(ld)
        next(it)
        print("ok", flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"

def test_program_end_with_a_parked_producer_exits(tmp_path):
    """A loop that ran whole epochs ends the program with the producer prefetching the next
    epoch (and an iterator of an old epoch still referenced): exit is prompt, rc 0."""
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2]
    script = textwrap.dedent(f"""
        import sys; sys.path[:0] = [{str(root)!r}]
        from tests.helpers.data import blob_dataset
        from fastload import DataLoader, AugmentConfig
        ld = DataLoader(blob_dataset(6), batch_size=2, augment=AugmentConfig(out_size=(64, 64)),
                        prefetch=2)
        for epoch in range(2):
            it = iter(ld)
            for b in it:
                pass
        print("ok", flush=True)
    """)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok"
    assert time.monotonic() - t0 < 60


def test_finalizer_in_the_loaders_own_thread_does_not_deadlock(tmp_path):
    """The garbage collector runs a loader's finalizer in whatever thread triggered the
    collection, possibly its own producer while inside ``ThreadPoolExecutor.submit``, which
    holds the pool's lock and the process-wide one (which every other loader's submit then
    waits for). Simulated exactly: a backend's submit (the producer thread) takes those locks
    and runs the finalizer. Closing must neither deadlock nor leave a thread behind, and
    other loaders keep working. (Uses CPython's private lock names, as the hazard does.)"""
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2]
    script = textwrap.dedent(f"""
        import sys, threading, time
        sys.path[:0] = [{str(root)!r}]
        from tests.helpers.data import blob_dataset
        from fastload import DataLoader, AugmentConfig
        from concurrent.futures.thread import _global_shutdown_lock
        from fastload.loader.backends import CpuBackend, register_backend
        hook = {{}}

        class Collecting(CpuBackend):
            def submit(self, *args, **kwargs):
                if hook.pop("fire", False):  # the locks ThreadPoolExecutor.submit holds while
                    with hook["pool"]._shutdown_lock, _global_shutdown_lock:  # it allocates
                        hook["finalizer"]()
                return super().submit(*args, **kwargs)

        register_backend("collecting", Collecting, "runs the finalizer in the producer (a test)")
        ld = DataLoader(blob_dataset(8), batch_size=2, augment=AugmentConfig(out_size=(32, 32)),
                        backend="collecting", num_threads=2, timeout=60)
        hook.update(fire=True, pool=ld._resources.pool, finalizer=ld._finalizer)
        try:
            n = sum(1 for _ in ld)
        except Exception as e:  # the loader was closed under the loop: any clean end is fine
            n = type(e).__name__
        other = DataLoader(blob_dataset(4), batch_size=2, augment=AugmentConfig(out_size=(32, 32)),
                           num_threads=2, timeout=60)
        assert sum(len(b["index"]) for b in other) == 4  # other loaders' submits are not blocked
        other.close()
        deadline = time.monotonic() + 30
        while any(t.name.startswith("fastload") for t in threading.enumerate()):
            assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
            time.sleep(0.05)
        print("ok", n, flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert r.stdout.startswith("ok"), r.stdout


# ------------------------------------------------------------------ look-ahead and slow reads
class _Maker:
    """A BatchMaker stand-in that logs the producer's calls; ``hold``: batch numbers (counted
    from 0 over the whole run) whose reads stay unfinished until the test releases them."""

    def __init__(self, lookahead, hold=()):
        self.lookahead, self.hold, self.events = lookahead, set(hold), []
        self.device = types.SimpleNamespace(bind_thread=lambda: None)
        self.held, self._n = {}, 0

    def read_ahead(self, indices, plan):
        from concurrent.futures import Future
        f = Future()
        if self._n in self.hold:
            self.held[self._n] = f
        else:
            f.set_result(None)
        self._n += 1
        return [f]

    def start(self, indices, plan, reads):
        for f in reads:
            f.result()
        key = (plan.epoch, int(indices[0]))
        self.events.append(("start",) + key)
        return key

    def finish(self, st):
        self.events.append(("finish",) + st)
        return st, []


def _take(prod, n):
    items = [prod.get(timeout=10) for _ in range(n)]
    return [(kind, ep, k) for kind, ep, k, _ in items]


def test_lookahead_starts_the_next_batch_before_finishing_one_across_epoch_ends():
    from fastload.loader.producer import Producer
    from fastload.loader.sampling import EpochPlan
    maker = _Maker(lookahead=1)
    prod = Producer(maker, EpochPlan(6, 2), 0, prefetch=8)
    try:
        assert _take(prod, 8) == [("batch", 0, 0), ("batch", 0, 1), ("batch", 0, 2), ("end", 0, None),
                                  ("batch", 1, 0), ("batch", 1, 1), ("batch", 1, 2), ("end", 1, None)]
    finally:
        prod.stop()
        prod.join(5)
    assert maker.events[:6] == [("start", 0, 0), ("start", 0, 2), ("finish", 0, 0),
                                ("start", 0, 4), ("finish", 0, 2),
                                ("start", 1, 0)]  # the next epoch's first batch, before ...
    assert maker.events[6] == ("finish", 0, 4)    # ... the last one of this epoch is finished


@pytest.mark.parametrize("lookahead", [0, 1])
def test_a_batch_whose_records_are_still_read_does_not_hold_back_a_ready_one(lookahead):
    from fastload.loader.producer import Producer
    from fastload.loader.sampling import EpochPlan
    maker = _Maker(lookahead=lookahead, hold={1})
    prod = Producer(maker, EpochPlan(6, 2), 0, prefetch=8)
    try:
        assert _take(prod, 1) == [("batch", 0, 0)]  # delivered while batch 1 is still read
        assert ("start", 0, 2) not in maker.events
        wait_until(lambda: 1 in maker.held)
        maker.held[1].set_result(None)
        assert _take(prod, 3) == [("batch", 0, 1), ("batch", 0, 2), ("end", 0, None)]
    finally:
        prod.stop()
        prod.join(5)
