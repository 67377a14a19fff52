"""The epoch plan: the distributed split policy, EpochPlan as an immutable value equal to
epoch_indices cut into batches, and the detection of rank / world size."""
import dataclasses
import math

import numpy as np
import pytest

from fastload.loader import DataLoader, EpochPlan, epoch_indices
from fastload.loader.sampling import detect_distributed
from tests.loader.common import CFG


@pytest.mark.parametrize("n,ws", [(10, 2), (10, 3), (7, 4), (2, 3)])
def test_epoch_indices_split(n, ws):
    shares = [epoch_indices(n, seed=1, epoch=3, shuffle=True, rank=r, world_size=ws) for r in range(ws)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == -(-n // ws)
    allidx = np.concatenate(shares)
    assert set(allidx.tolist()) == set(range(n))
    assert len(allidx) - n == (-n) % ws  # only the documented pads repeat
    order = epoch_indices(n, seed=1, epoch=3, shuffle=True)
    assert not np.array_equal(order, epoch_indices(n, seed=1, epoch=4, shuffle=True))


def test_epoch_indices_pinned_values():
    """The permutation policy itself (what every rank and machine must agree on)."""
    assert epoch_indices(6, seed=0, epoch=0, shuffle=False).tolist() == [0, 1, 2, 3, 4, 5]
    assert epoch_indices(5, seed=0, epoch=0, shuffle=False, rank=1, world_size=3).tolist() == [1, 4]
    expect = np.random.default_rng([7, 2]).permutation(9)
    assert epoch_indices(9, seed=7, epoch=2, shuffle=True).tolist() == expect.tolist()
    assert epoch_indices(0, seed=0, epoch=0, shuffle=True).shape == (0,)


@pytest.mark.parametrize("n", [0, 1, 7, 10, 13])
@pytest.mark.parametrize("bs", [1, 3, 4])
@pytest.mark.parametrize("ws", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_plan_batches_are_epoch_indices_cut(n, bs, ws, drop_last):
    for rank in range(ws):
        plan = EpochPlan(n, bs, seed=5, epoch=3, shuffle=True, drop_last=drop_last, rank=rank,
                         world_size=ws)
        idx = epoch_indices(n, seed=5, epoch=3, shuffle=True, rank=rank, world_size=ws)
        batches = plan.batches()
        per_rank = math.ceil(n / ws) if n else 0
        assert len(plan) == len(batches) == (per_rank // bs if drop_last else math.ceil(per_rank / bs))
        assert all(len(b) == bs for b in batches[:-1])
        flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        want = idx[:len(batches) * bs] if drop_last else idx
        assert flat.dtype == np.int64 and flat.tolist() == want.tolist()
        assert np.array_equal(plan.indices(), idx)


def test_plan_is_an_immutable_value():
    plan = EpochPlan(10, 4, seed=3, epoch=1, shuffle=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.epoch = 2
    with pytest.raises(ValueError, match="read-only"):
        plan.batches()[0][0] = 99
    with pytest.raises(ValueError, match="read-only"):
        plan.indices()[0] = 99
    same = EpochPlan(10, 4, seed=3, epoch=1, shuffle=True)
    assert plan == same and hash(plan) == hash(same)
    assert [b.tolist() for b in plan.batches()] == [b.tolist() for b in same.batches()]
    nxt = plan.next_epoch()
    assert nxt == plan.with_epoch(2) and nxt != plan and plan.epoch == 1
    assert nxt.indices().tolist() == epoch_indices(10, seed=3, epoch=2, shuffle=True).tolist()
    assert dataclasses.replace(plan, seed=4) != plan
    with pytest.raises(ValueError, match="batch_size"):
        EpochPlan(10, 0)
    with pytest.raises(ValueError, match="rank < world_size"):
        EpochPlan(10, 2, rank=2, world_size=2)


def test_loader_len_and_order_follow_the_plan(blobs):
    ld = DataLoader(blobs, batch_size=3, shuffle=True, seed=9, augment=CFG, num_threads=1)
    ld.set_epoch(4)
    plan = EpochPlan(10, 3, seed=9, epoch=4, shuffle=True)
    assert len(ld) == len(plan)
    got = [b["index"].tolist() for b in ld]
    assert got == [b.tolist() for b in plan.batches()]
    ld.close()


def test_rank_world_size_arguments(blobs):
    lens = [len(DataLoader(blobs, batch_size=2, rank=r, world_size=3, augment=CFG)) for r in range(3)]
    assert lens == [2, 2, 2]
    with pytest.raises(ValueError, match="both rank and world_size"):
        DataLoader(blobs, rank=1)
    with pytest.raises(ValueError, match="rank < world_size"):
        DataLoader(blobs, rank=2, world_size=2)


def test_detect_distributed_from_torchrun_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert detect_distributed() == (0, 1, 0)
    assert detect_distributed(2, 4) == (2, 4, 2)  # local rank defaults to the rank
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert detect_distributed() == (5, 8, 1)
    assert detect_distributed(0, 2) == (0, 2, 1)  # arguments win; LOCAL_RANK still names the GPU
    monkeypatch.setenv("RANK", "8")
    with pytest.raises(ValueError, match="rank < world_size"):
        detect_distributed()
