"""Image backends: the registry (validation, defaults, docs, a backend registered by a test),
the two-phase protocol of the "cpu" and "dali" backends against the augmenters run by hand,
and per-sample errors that name the sample."""
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from fastload.augment.config import AugmentConfig
from fastload.augment.params import sample_params
from fastload.loader import DataLoader, SampleError
from fastload.loader.backends import (BackendContext, backend_descriptions, backend_names,
                                      create_backend, default_backend, register_backend,
                                      unregister_backend)
from tests.helpers.data import blob_dataset, corrupt_image
from tests.loader.common import CFG, assert_batches_equal, collect

DOCS = Path(__file__).resolve().parents[2] / "docs" / "loader.md"


def _inputs(ds, idx, seed=0, epoch=0, cfg=CFG):
    recs = [ds[i] for i in idx]
    return ([r.image_bytes for r in recs],
            [sample_params(cfg, seed, epoch, i, r.height, r.width) for i, r in zip(idx, recs)],
            [r.file_name for r in recs], [(r.height, r.width) for r in recs])


# ------------------------------------------------------------------ registry
def test_unknown_backend_lists_the_registered_ones(blobs):
    assert {"cpu", "dali"} <= set(backend_names())
    with pytest.raises(ValueError, match="backend") as e:
        DataLoader(blobs, backend="opencv")
    for name in backend_names():
        assert repr(name) in str(e.value)
    assert default_backend("cpu") == "cpu" and default_backend("cuda") == "dali"
    assert DataLoader(blobs, augment=CFG, device="cpu").backend == "cpu"
    with pytest.raises(ValueError, match="already registered"):
        register_backend("cpu", lambda ctx: None, "again")


def test_docs_list_every_registered_backend():
    text = DOCS.read_text()
    for name in backend_names():
        assert re.search(rf"^\| `{re.escape(name)}` \|", text, re.M), \
            f"docs/loader.md has no row for the image backend {name!r}"
    assert backend_descriptions()["cpu"]


class _Flat:
    """A test backend: every image is the constant (sample's file number) / 10."""

    def __init__(self, ctx, host):
        self.ctx, self.writes_host_buffer, self.closed = ctx, host, False
        self.calls = 0

    def submit(self, encoded, params, names, sizes, out=None):
        self.calls += 1
        vals = [int(re.search(r"(\d+)", n).group(1)) / 10 for n in names]
        if self.writes_host_buffer:
            for j, v in enumerate(vals):
                out[j] = v
            images = out
        else:
            images = torch.stack([torch.full((3,) + tuple(self.ctx.cfg.out_size), v) for v in vals])

        class Done:
            def result(self):
                return images, []
        return Done()

    def close(self):
        self.closed = True


@pytest.mark.parametrize("host", [True, False])
def test_a_registered_backend_is_usable(blobs, host):
    made = []
    register_backend("test-flat", lambda ctx: made.append(_Flat(ctx, host)) or made[-1],
                     "constant images (a test)")
    try:
        kw = dict(batch_size=4, shuffle=True, seed=2, augment=CFG, targets=["centernet"],
                  num_threads=2)
        got = collect(DataLoader(blobs, backend="test-flat", **kw))
        ref = collect(DataLoader(blobs, backend="cpu", **kw))
        assert len(made) == 1 and made[0].ctx.batch_size == 4 and made[0].ctx.seed == 2
        assert made[0].calls >= len(got) == 3  # (and the next epoch is prefetched)
        for g, r in zip(got, ref):
            want = (g["index"].double() / 10).view(-1, 1, 1, 1).expand_as(g["image"]).float()
            assert torch.equal(g["image"], want)
            assert_batches_equal({k: v for k, v in g.items() if k != "image"},
                                 {k: v for k, v in r.items() if k != "image"})
        ld = DataLoader(blobs, backend="test-flat", **kw)
        next(iter(ld))
        ld.close()
        assert made[-1].closed
    finally:
        unregister_backend("test-flat")
    assert "test-flat" not in backend_names()


# ------------------------------------------------------------------ cpu
def test_cpu_backend_submits_to_the_shared_pool_and_returns_at_once(blobs):
    from fastload.augment.cpu import CpuAugmenter
    pool = ThreadPoolExecutor(1)
    gate = threading.Event()
    pool.submit(gate.wait)  # the pool's one thread is busy: submit must not wait for it
    try:
        be = create_backend("cpu", BackendContext(CFG, batch_size=4, num_threads=1,
                                                  device=torch.device("cpu"), pool=pool))
        enc, ps, names, sizes = _inputs(blobs, [0, 1, 2, 3], seed=3)
        out = np.empty((4, 3, 64, 64), np.float32)
        pending = be.submit(enc, ps, names, sizes, out=out)
        assert not gate.is_set()  # returned while no task could run yet
    finally:
        gate.set()
    images, errors = pending.result()
    pool.shutdown()
    assert images is out and errors == []
    ref = CpuAugmenter(CFG, 1).run(enc, ps)  # the augmenter run by hand: bit-identical
    assert np.array_equal(images, ref)


def test_cpu_backend_errors_name_their_sample(blobs):
    corrupt_image(blobs, 2)
    be = create_backend("cpu", BackendContext(CFG, batch_size=4, num_threads=1,
                                              device=torch.device("cpu")))
    enc, ps, names, sizes = _inputs(blobs, [1, 2, 3])
    sizes[2] = (sizes[2][0] + 1, sizes[2][1])  # the record says another size
    images, errors = be.submit(enc, ps, names, sizes).result()
    assert [j for j, _ in errors] == [1, 2]
    assert "img_0002.jpg" in str(errors[0][1])
    assert "img_0003.jpg" in str(errors[1][1]) and "record says" in str(errors[1][1])
    with pytest.raises(SampleError, match="sample index 2 .*img_0002.jpg.*decoding / augmenting"):
        list(DataLoader(blobs, batch_size=4, augment=CFG, backend="cpu"))


def test_cpu_backend_looks_ahead_one_batch_on_two_threads_or_more():
    ctx = BackendContext(CFG, batch_size=4, num_threads=2, device=torch.device("cpu"),
                         pool=ThreadPoolExecutor(2))
    assert create_backend("cpu", ctx).lookahead == 1
    ctx.pool.shutdown()
    one = BackendContext(CFG, batch_size=4, num_threads=1, device=torch.device("cpu"),
                         pool=ThreadPoolExecutor(1))
    assert create_backend("cpu", one).lookahead == 0  # one thread: nothing to overlap
    one.pool.shutdown()
    assert create_backend("cpu", BackendContext(CFG, 4, 2, torch.device("cpu"))).lookahead == 0


@pytest.mark.parametrize("n, bad", [(10, None), (3, None), (11, 5)])
def test_cpu_lookahead_submits_the_next_batch_first_and_changes_no_batch(n, bad):
    """At lookahead 1 (the order of the producer's calls: tests/loader/test_producer.py) the
    batches (order, content, the samples skipped) are those of lookahead 0, over three shuffled
    epochs; n=3 with batch_size 4 is one batch per epoch."""
    from fastload.loader.backends import CpuBackend

    class NoLookahead(CpuBackend):
        def __init__(self, ctx):
            super().__init__(ctx)
            self.lookahead = 0

    ds = blob_dataset(n)
    if bad is not None:
        corrupt_image(ds, bad)
    register_backend("test-no-lookahead", NoLookahead, "the cpu backend at lookahead 0 (a test)")
    try:
        kw = dict(batch_size=4, shuffle=True, seed=5, augment=CFG, targets=["centernet"],
                  num_threads=2, on_error="skip")
        ld, ref = DataLoader(ds, backend="cpu", **kw), DataLoader(ds, backend="test-no-lookahead", **kw)
        for epoch in range(3):
            got, want = collect(ld), collect(ref)
            assert len(got) == len(want) == (n + 3) // 4
            for g, w in zip(got, want):
                assert_batches_equal(g, w)
        assert ld.stats["skipped_samples"] == ref.stats["skipped_samples"]
        assert ld._resources.backend.lookahead == 1 and ref._resources.backend.lookahead == 0
        ld.close()
        ref.close()
    finally:
        unregister_backend("test-no-lookahead")


# ------------------------------------------------------------------ dali (its CPU operators here)
def test_dali_backend_two_phase_equals_augmenter_run(blobs):
    """Batches submitted ahead of their result (the producer's look-ahead) come back equal
    to the augmenter run batch by batch; a dropped pending batch is cancelled; bad samples
    are named."""
    import gc
    from fastload.augment.dali import DaliAugmenter
    ctx = BackendContext(CFG, batch_size=4, num_threads=2, device=torch.device("cpu"), seed=5)
    from fastload.loader.backends import DaliBackend
    assert create_backend("dali", ctx).lookahead == 0  # default on DALI's CPU operators
    be = DaliBackend(ctx, prefetch_depth=2)  # as on a GPU
    assert be.lookahead == 1
    aug = DaliAugmenter(CFG, batch_size=4, device_id=None, num_threads=2, prefetch_queue_depth=1)
    batches = [_inputs(blobs, idx, seed=5) for idx in ([0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 0])]
    pendings = [be.submit(*args) for args in batches]  # all in flight before any result
    for args, pending in zip(batches, pendings):
        images, errors = pending.result()
        assert errors == []
        assert torch.equal(images, aug.run(*args))
    dropped = be.submit(*batches[0])  # given up (the producer stopped): never returned
    del dropped
    gc.collect()
    images, errors = be.submit(*batches[1]).result()
    assert errors == [] and torch.equal(images, aug.run(*batches[1]))
    corrupt_image(blobs, 5)
    enc, ps, names, sizes = _inputs(blobs, [4, 5, 6, 7])
    sizes[3] = (1, 1)
    ahead = be.submit(*batches[2])
    images, errors = be.submit(enc, ps, names, sizes).result()  # out of order, after a bad one
    assert [j for j, _ in errors] == [1, 3]
    assert "img_0005.jpg" in str(errors[0][1]) and "img_0007.jpg" in str(errors[1][1])
    images, errors = ahead.result()
    assert errors == [] and torch.equal(images, aug.run(*batches[2]))
    enc[2] = b""  # found before DALI runs, like the corrupt header of sample 1
    images, errors = be.submit(enc, ps, names, [(72, 96)] * 4).result()
    assert [j for j, _ in errors] == [1, 2] and "empty" in str(errors[1][1])
    assert "img_0005.jpg" in str(errors[0][1])
    be.close()
    aug.close()


def test_dali_backend_on_cpu_matches_pipeline_by_hand(blobs):
    """backend="dali" (DALI CPU operators here): images equal DaliAugmenter run by hand on
    the same batches; a bad JPEG names its sample; skip works."""
    from fastload.augment.dali import DaliAugmenter
    from fastload.augment.params import sample_params

    ld = DataLoader(blobs, batch_size=4, shuffle=True, augment=CFG, backend="dali", seed=4,
                    num_threads=2)
    got = collect(ld)
    aug = DaliAugmenter(CFG, batch_size=4, device_id=None, num_threads=2)
    for b in got:
        idx = b["index"].tolist()
        recs = [blobs[i] for i in idx]
        ps = [sample_params(CFG, 4, 0, i, r.height, r.width) for i, r in zip(idx, recs)]
        assert torch.equal(aug.run([r.image_bytes for r in recs], ps), b["image"])
    aug.close()
    corrupt_image(blobs, 6)
    with pytest.raises(SampleError, match="sample index 6 .*img_0006.jpg"):
        list(DataLoader(blobs, batch_size=4, augment=CFG, backend="dali"))
    ld = DataLoader(blobs, batch_size=4, augment=CFG, backend="dali", on_error="skip")
    assert [b["index"].tolist() for b in ld] == [[0, 1, 2, 3], [4, 5, 7], [8, 9]]


ALL_ON = AugmentConfig(out_size=(72, 96), hue_deg=30, brightness=0.2, contrast=0.3,
                       shadow_prob=1.0, noise_sigma=(2, 10), dtype="uint8")


def _by_index(loader):
    return {int(i): img for b in loader for i, img in zip(b["index"], b["image"].clone())}


def test_dali_images_do_not_depend_on_the_batch_and_match_the_cpu_backend(blobs):
    """backend="dali" on DALI's CPU operators, every op on (noise included): the same index
    gets the identical image at batch sizes 3 and 5 and after a resume, and is within 2
    levels of backend="cpu"."""
    kw = dict(shuffle=True, seed=7, augment=ALL_ON, num_threads=2, device="cpu")
    three = _by_index(DataLoader(blobs, batch_size=3, backend="dali", **kw))
    five = _by_index(DataLoader(blobs, batch_size=5, backend="dali", **kw))
    cpu = _by_index(DataLoader(blobs, batch_size=4, backend="cpu", **kw))
    assert sorted(three) == sorted(five) == sorted(cpu) == list(range(10))
    worst = 0
    for i in range(10):
        assert torch.equal(three[i], five[i]), i
        d = (three[i].int() - cpu[i].int()).abs()
        assert d.max() <= 2 and d.float().mean() < 0.5, (i, d.max(), d.float().mean())
        worst = max(worst, int(d.max()))
    assert worst >= 1  # (DALI rounds between stages: not bit-identical, and the test can tell)
    ld = DataLoader(blobs, batch_size=3, backend="dali", **kw)
    it = iter(ld)
    next(it)
    state = ld.state_dict()
    it.close()
    resumed = DataLoader(blobs, batch_size=3, backend="dali", **kw)
    resumed.load_state_dict(state)
    rest = _by_index(resumed)
    assert len(rest) == 7 and all(torch.equal(rest[i], three[i]) for i in rest)


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("n", [10, 3])
def test_dali_prefetch_depths_give_the_same_batches(depth, n):
    """The DALI backend at prefetch depth 2 (the GPU's default: one batch submitted ahead)
    and 3 (two ahead), across epoch ends, gives the batches of depth 1 (the default on DALI's
    CPU operators), over three epochs; n=3 with batch_size 4 is one batch per epoch (fewer
    than the depth)."""
    from fastload.loader.backends import DaliBackend
    ds = blob_dataset(n)
    register_backend(f"dali-depth{depth}", lambda ctx: DaliBackend(ctx, prefetch_depth=depth),
                     "DALI at another prefetch depth (a test)")
    try:
        kw = dict(batch_size=4, shuffle=True, seed=6, augment=CFG, targets=["centernet"],
                  num_threads=2, device="cpu")
        ld = DataLoader(ds, backend=f"dali-depth{depth}", **kw)
        ref = DataLoader(ds, backend="dali", **kw)
        for epoch in range(3):
            got, want = collect(ld), collect(ref)
            assert len(got) == len(want) == (n + 3) // 4
            for g, w in zip(got, want):
                assert_batches_equal(g, w)
        assert ld._resources.backend.lookahead == depth - 1
    finally:
        unregister_backend(f"dali-depth{depth}")
