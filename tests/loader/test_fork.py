"""Fork: threads do not survive ``fork()``, so every object holding them rebuilds them in the
child. A child (real ``fork``) iterating a loader the parent already ran gets the batches the
parent gets, never hangs; an iterator carried over the fork goes on from its next batch; a
child that exits without touching the loader exits."""
import multiprocessing
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fastload.loader import DataLoader, TorchDataset
from tests.loader.common import CFG
from tests.loader.test_pinned_outputs import batches_hash

TIMEOUT_S = 120


def in_forked_child(fn):
    """``fn()`` run in a forked child; its result (picklable) or the test fails, also when
    the child gives nothing within TIMEOUT_S (a hang)."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child():
        try:
            send.send(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            send.send(("error", f"{type(e).__name__}: {e}"))

    p = ctx.Process(target=child, daemon=True)
    p.start()
    try:
        if not recv.poll(TIMEOUT_S):
            pytest.fail(f"the forked child hung: no result within {TIMEOUT_S} s")
        kind, value = recv.recv()
    finally:
        p.kill()
        p.join(10)
    if kind == "error":
        pytest.fail(f"in the forked child: {value}")
    return value


def _loader(ds):
    return DataLoader(ds, batch_size=3, shuffle=True, seed=5, augment=CFG, targets=["centernet"],
                      device="cpu", backend="cpu", num_threads=2)


def test_child_iterates_like_the_parent(blobs):
    ld = _loader(blobs)
    list(ld)  # epoch 0: the pool's threads run, and a producer prefetches epoch 1 right now

    def child():
        first = batches_hash(list(ld))   # epoch 1
        second = batches_hash(list(ld))  # epoch 2
        ld.close()
        return first, second, ld.epoch

    got = in_forked_child(child)
    assert got == (batches_hash(list(ld)), batches_hash(list(ld)), 3)
    ld.close()


def test_iterator_carried_over_a_fork_goes_on(blobs):
    ld = _loader(blobs)
    it = iter(ld)
    next(it)

    def child():
        rest = list(it)
        return batches_hash(rest), len(rest), ld.state_dict()["epoch"]

    h_child, n_child, epoch_child = in_forked_child(child)
    rest = list(it)
    n, h, epoch = len(rest), batches_hash(rest), ld.state_dict()["epoch"]
    assert (h_child, n_child, epoch_child) == (h, n, epoch) and n == len(ld) - 1 and epoch == 1
    ld.close()


def test_closed_loader_stays_closed_in_the_child(blobs):
    ld = _loader(blobs)
    list(ld)
    ld.close()

    def child():
        try:
            iter(ld)
        except RuntimeError as e:
            return str(e)
        return "iterated"

    assert "closed" in in_forked_child(child)


def test_child_exiting_without_the_loader_exits(tmp_path):
    """A plain os.fork child that ends with sys.exit runs the atexit finalizers of the
    parent's loader: they must not wait for the parent's threads (or their locks)."""
    script = textwrap.dedent("""
        import os, sys
        from tests.helpers.data import blob_dataset
        from tests.loader.common import CFG
        from fastload.loader import DataLoader
        ld = DataLoader(blob_dataset(10), batch_size=3, augment=CFG, device="cpu",
                        backend="cpu", num_threads=2)
        it = iter(ld)
        next(it)  # a producer is running, the pool busy
        pid = os.fork()
        if pid == 0:
            sys.exit(7)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=TIMEOUT_S, cwd=str(Path(__file__).parents[2]))
    assert r.returncode == 0, r.stderr
    assert "child exit 7" in r.stdout


def test_torch_dataset_in_a_forked_child(blobs):
    tds = TorchDataset(blobs, augment=CFG, targets=["centernet"], seed=2)
    tds.set_epoch(1)
    want = {k: v.numpy() for k, v in tds[4].items()}
    got = in_forked_child(lambda: {k: v.numpy() for k, v in tds[4].items()})
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_cpu_augmenter_in_a_forked_child(blobs):
    """CpuAugmenter's own thread pool: rebuilt in the child."""
    from fastload.augment.cpu import CpuAugmenter
    from fastload.augment.params import sample_params

    recs = [blobs[i] for i in range(4)]
    params = [sample_params(CFG, 0, 0, i, r.height, r.width) for i, r in enumerate(recs)]
    aug = CpuAugmenter(CFG, num_threads=2)
    want = aug.run([r.image_bytes for r in recs], params)  # the pool's threads start
    got = in_forked_child(lambda: aug.run([r.image_bytes for r in recs], params))
    assert np.array_equal(got, want)
    aug.close()
