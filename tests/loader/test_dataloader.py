"""fastload.DataLoader: torch parity, contents equal to the pipeline run by hand, resume,
torch keyword refusals, failures (errors name the sample, skip counts).
Threads, lifetime, prefetch and timeouts: test_producer.py."""
import time

import numpy as np
import pytest
import torch

from tests.helpers.data import corrupt_image, corrupt_record, packed_dataset
from fastload.augment.config import AugmentConfig
from fastload.loader import DataLoader, SampleError, collate
from fastload.targets.specs import CenterNetTarget, FunctionTarget
from tests.helpers.env import requires_gpu
from tests.loader.common import CFG
from tests.loader.common import assert_batches_equal as _equal
from tests.loader.common import collect as _collect


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    from fastload.store import Dataset
    return Dataset(packed_dataset(tmp_path_factory.mktemp("loader"), n=10))


# ------------------------------------------------------------------ torch parity
def test_len_drop_last_last_batch(blobs):
    ld = DataLoader(blobs, batch_size=4, augment=CFG, num_threads=2)
    bs = _collect(ld)
    assert len(ld) == 3 == len(bs)
    assert [len(b["index"]) for b in bs] == [4, 4, 2]
    assert torch.cat([b["index"] for b in bs]).tolist() == list(range(10))  # no shuffle: in order
    ld = DataLoader(blobs, batch_size=4, drop_last=True, augment=CFG, num_threads=2)
    bs = _collect(ld)
    assert len(ld) == 2 == len(bs) and all(len(b["index"]) == 4 for b in bs)
    b = bs[0]
    assert b["image"].shape == (4, 3, 64, 64) and b["image"].dtype == torch.float32
    assert b["image"].device.type == "cpu"
    M = b["boxes"].shape[1]
    assert M == int(b["num_instances"].max())
    assert b["labels"].shape == (4, M) and b["ignore"].shape == (4, M)
    assert b["keypoints"].shape == (4, M, 5, 3)
    for j in range(4):  # padding rules
        n = int(b["num_instances"][j])
        assert (b["labels"][j, n:] == -1).all() and (b["labels"][j, :n] >= 0).all()
        assert (b["boxes"][j, n:] == 0).all()
        P = int((b["poly_instance"][j] >= 0).sum())
        assert int(b["poly_lengths"][j, :P].sum()) <= b["poly_points"].shape[1]
        assert (b["poly_lengths"][j, P:] == 0).all()


def test_reiteration_set_epoch_and_seed(blobs):
    ld = DataLoader(blobs, batch_size=4, shuffle=True, seed=3, augment=CFG, num_threads=2)
    ld.set_epoch(0)
    a = _collect(ld)
    ld.set_epoch(0)
    b = _collect(ld)
    for x, y in zip(a, b):
        _equal(x, y)
    order0 = torch.cat([x["index"] for x in a]).tolist()
    assert sorted(order0) == list(range(10)) and order0 != list(range(10))
    ld.set_epoch(1)
    order1 = torch.cat([x["index"] for x in _collect(ld)]).tolist()
    assert sorted(order1) == list(range(10)) and order1 != order0
    # a completed epoch advances the epoch (new order without set_epoch, like torch shuffle)
    assert ld.epoch == 2
    ld2 = DataLoader(blobs, batch_size=4, shuffle=True, seed=3, augment=CFG, num_threads=1, prefetch=1)
    for x, y in zip(a, _collect(ld2)):  # same seed, other thread count: same batches
        _equal(x, y)
    ld3 = DataLoader(blobs, batch_size=4, shuffle=True, seed=4, augment=CFG, num_threads=2)
    assert torch.cat([x["index"] for x in _collect(ld3)]).tolist() != order0


def test_contents_equal_pipeline_by_hand(packed):
    """record -> sample_params -> CpuAugmenter -> transform_instances -> targets, by hand."""
    from fastload.augment.cpu import CpuAugmenter
    from fastload.augment.geometry import transform_instances
    from fastload.augment.params import sample_params
    from fastload.targets import centernet_targets

    def area(inst, out_size):
        return {"n_parts": np.array([inst.part_offsets.shape[0] - 1], np.int64)}

    seed, epoch = 11, 2
    ld = DataLoader(packed, batch_size=3, shuffle=True, seed=seed, augment=CFG, num_threads=2,
                    targets=[CenterNetTarget(stride=4, max_objs=16), FunctionTarget(area)])
    ld.set_epoch(epoch)
    aug = CpuAugmenter(CFG, 1)
    checked = 0
    for batch in ld:
        for j, i in enumerate(batch["index"].tolist()):
            rec = packed[i]
            p = sample_params(CFG, seed, epoch, i, rec.height, rec.width)
            img = aug.run([rec.image_bytes], [p])[0]
            assert np.array_equal(batch["image"][j].numpy(), img)
            inst = transform_instances(rec, p, CFG.out_size, CFG.min_visible, packed.flip_pairs)
            n = inst.labels.shape[0]
            assert int(batch["num_instances"][j]) == n
            assert np.array_equal(batch["boxes"][j, :n].numpy(), inst.boxes)
            assert np.array_equal(batch["labels"][j, :n].numpy(), inst.labels)
            assert np.array_equal(batch["ignore"][j, :n].numpy(), inst.ignore)
            V = inst.points.shape[0]
            assert np.array_equal(batch["poly_points"][j, :V].numpy(), inst.points)
            lengths = np.diff(inst.part_offsets)
            assert np.array_equal(batch["poly_lengths"][j, :len(lengths)].numpy(), lengths)
            owner = np.repeat(np.arange(n), np.diff(inst.inst_parts))
            assert np.array_equal(batch["poly_instance"][j, :len(owner)].numpy(), owner)
            if inst.keypoints is not None:
                assert np.array_equal(batch["keypoints"][j, :n].numpy(), inst.keypoints)
            keep = ~inst.ignore
            t = centernet_targets(inst.boxes[keep] / 4, inst.labels[keep], len(packed.classes), 16, 16,
                          max_objs=16)
            for k in ("hm", "wh", "reg", "ind", "reg_mask"):
                assert np.array_equal(batch[k][j].numpy(), t[k]), k
            assert batch["n_parts"][j].item() == len(lengths)
            checked += 1
    assert checked == len(packed)
    aug.close()


def test_resume_equals_uninterrupted(blobs):
    kw = dict(batch_size=3, shuffle=True, seed=5, augment=CFG, num_threads=2)
    full = DataLoader(blobs, **kw)
    full.set_epoch(1)
    ref = _collect(full)
    ld = DataLoader(blobs, **kw)
    ld.set_epoch(1)
    it = iter(ld)
    got = [next(it), next(it)]
    state = ld.state_dict()
    assert state["epoch"] == 1 and state["batches_consumed"] == 2
    del it
    ld2 = DataLoader(blobs, **kw)
    ld2.load_state_dict(state)
    rest = _collect(ld2)
    assert len(rest) == len(ref) - 2
    for x, y in zip(ref, got + rest):
        _equal(x, y)
    assert ld2.epoch == 2 and ld2.state_dict()["batches_consumed"] == 0
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(blobs, batch_size=2, augment=CFG).load_state_dict(state)


@pytest.mark.parametrize("other", [dict(num_samples=9), dict(shuffle=False),
                                   dict(drop_last=True), dict(world_size=2)])
def test_load_state_dict_refuses_a_state_of_another_plan(blobs, other):
    """A position in another dataset's (or shuffle's, drop_last's) batches would resume at
    other samples: refused, naming the key."""
    ld = DataLoader(blobs, batch_size=3, shuffle=True, augment=CFG, num_threads=2)
    state = ld.state_dict()
    assert state["num_samples"] == 10 and state["shuffle"] and not state["drop_last"]
    key = next(iter(other))
    with pytest.raises(ValueError, match=f"state was saved with {key}=.*this loader has"):
        ld.load_state_dict(dict(state, **other))
    old_format = {k: state[k] for k in ("seed", "epoch", "batches_consumed", "world_size",
                                        "batch_size")}
    ld.load_state_dict(old_format)  # states saved before the new keys still load
    ld.close()


def test_set_epoch_during_an_iteration_is_refused(blobs):
    """set_epoch while batches of the running epoch are still to come would count them for
    the new epoch (state_dict would then resume the new epoch at a wrong batch): refused; the
    running iteration goes on untouched, and between epochs set_epoch works as before."""
    kw = dict(batch_size=3, shuffle=True, seed=5, augment=CFG, num_threads=2)
    ref = _collect(DataLoader(blobs, **kw))  # epoch 0
    ld = DataLoader(blobs, **kw)
    it = iter(ld)
    got = [next(it)]
    with pytest.raises(RuntimeError, match=r"set_epoch\(3\) called while an iteration of epoch 0 "
                                           r"is running \(3 of its 4 batches"):
        ld.set_epoch(3)
    with pytest.raises(RuntimeError, match="load_state_dict called while"):
        ld.load_state_dict({"seed": 5, "epoch": 3, "batches_consumed": 0})
    assert ld.epoch == 0 and ld.state_dict()["batches_consumed"] == 1
    got += [{k: v.clone() for k, v in b.items()} for b in it]
    assert len(got) == len(ref)
    for x, y in zip(ref, got):
        _equal(x, y)
    assert ld.epoch == 1
    # every batch delivered (the end not yet asked for), closed, or dropped: allowed
    it = iter(ld)
    for _ in range(len(ld)):
        next(it)
    ld.set_epoch(0)
    assert list(it) == [] and ld.epoch == 0  # the old iteration's end does not advance it
    again = _collect(ld)
    for x, y in zip(ref, again):
        _equal(x, y)
    it = iter(ld)
    next(it)
    it.close()
    ld.set_epoch(2)
    it = iter(ld)
    next(it)
    del it
    ld.set_epoch(2)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0, got -1"):
        ld.set_epoch(-1)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0, got 1.5"):
        ld.set_epoch(1.5)
    ld.close()


@pytest.mark.parametrize("consumed", [-1, 5, 100, 2.0, True, "1"])
def test_load_state_dict_refuses_a_position_outside_the_epoch(blobs, consumed):
    """A negative position would replay batches (batches[-1] is the last one) and one past
    the end would silently skip the epoch: both refused, naming the valid range."""
    ld = DataLoader(blobs, batch_size=3, augment=CFG, num_threads=2)  # 4 batches
    state = {"seed": 0, "epoch": 1, "batches_consumed": consumed}
    with pytest.raises(ValueError, match=r"batches_consumed must be an integer in \[0, 4\].*"
                                         r"4 batches per epoch: 10 samples, batch_size=3"):
        ld.load_state_dict(state)
    assert ld.epoch == 0 and ld.state_dict()["batches_consumed"] == 0  # nothing changed
    ld.close()


def test_load_state_dict_at_the_end_of_an_epoch_runs_the_next(blobs):
    kw = dict(batch_size=3, shuffle=True, seed=5, augment=CFG, num_threads=2)
    ref = DataLoader(blobs, **kw)
    ref.set_epoch(2)
    want = _collect(ref)
    ld = DataLoader(blobs, **kw)
    ld.load_state_dict({"seed": 5, "epoch": 1, "batches_consumed": len(ld)})
    assert _collect(ld) == [] and ld.epoch == 2
    for x, y in zip(want, _collect(ld)):
        _equal(x, y)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        ld.load_state_dict({"seed": 5, "epoch": -2, "batches_consumed": 0})


# ------------------------------------------------------------------ torch keywords
@pytest.mark.parametrize("kw,hint", [
    ({"num_workers": 4}, "num_threads"),
    ({"collate_fn": collate}, "FunctionTarget"),
    ({"sampler": [0, 1]}, "rank=/world_size="),
    ({"batch_sampler": [[0, 1]]}, "batch_size="),
    ({"worker_init_fn": print}, "no worker processes"),
    ({"persistent_workers": True}, "persist"),
    ({"multiprocessing_context": "spawn"}, "no processes"),
    ({"pin_memory": True}, "on `device`"),
    ({"pin_memory_device": "cuda"}, "device="),
    ({"in_order": False}, "in order"),
])
def test_torch_keywords_refused_with_hint(blobs, kw, hint):
    with pytest.raises(TypeError, match="does not support") as e:
        DataLoader(blobs, augment=CFG, **kw)
    assert hint in str(e.value)


def test_torch_keywords_honoured(blobs):
    ld = DataLoader(blobs, augment=CFG, num_workers=0, pin_memory=False, persistent_workers=False,
                    prefetch_factor=5, generator=torch.Generator().manual_seed(77), timeout=30)
    assert ld.prefetch == 5 and ld.seed == 77 and ld.timeout == 30
    with pytest.raises(TypeError, match="unexpected keyword argument 'shuffel'"):
        DataLoader(blobs, shuffel=True)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(blobs, batch_size=0)
    with pytest.raises(ValueError, match="on_error"):
        DataLoader(blobs, on_error="ignore")
    with pytest.raises(ValueError, match="unknown target"):
        DataLoader(blobs, targets=["centrnet"])
    with pytest.raises(ValueError, match="backend"):
        DataLoader(blobs, backend="opencv")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            DataLoader(blobs, device="cuda")
    with pytest.raises(TypeError, match="packed directory path"):
        DataLoader(42)


# ------------------------------------------------------------------ failures
def test_corrupt_image_error_names_sample(blobs):
    corrupt_image(blobs, 5)
    ld = DataLoader(blobs, batch_size=4, augment=CFG, num_threads=2)
    t0 = time.monotonic()
    seen = []
    with pytest.raises(SampleError) as e:
        for b in ld:
            seen += b["index"].tolist()
    assert time.monotonic() - t0 < 60
    msg = str(e.value)
    assert "sample index 5" in msg and "id 5" in msg and "img_0005.jpg" in msg
    assert e.value.index == 5 and e.value.file_name == "img_0005.jpg"
    assert seen == [0, 1, 2, 3]
    p = ld._resources.producer  # the iterator is still referenced by the traceback, but closed
    assert p is not None and p.stopped and not ld._resources.parked and not p.alive


def test_corrupt_record_error_and_skip_policy(blobs):
    corrupt_record(blobs, 2)
    corrupt_image(blobs, 7)
    with pytest.raises(SampleError, match="sample index 2 .*reading the record"):
        list(DataLoader(blobs, batch_size=4, augment=CFG))
    ld = DataLoader(blobs, batch_size=4, augment=CFG, on_error="skip")
    got = [b["index"].tolist() for b in ld]
    assert got == [[0, 1, 3], [4, 5, 6], [8, 9]]
    assert ld.stats["skipped"] == 2
    assert [s["index"] for s in ld.stats["skipped_samples"]] == [2, 7]
    assert ld.stats["skipped_samples"][1]["file"] == "img_0007.jpg"


def test_target_error_reaches_loop(blobs):
    def bad(inst, out_size):
        raise RuntimeError("boom")
    with pytest.raises(SampleError, match="sample index 0 .*img_0000.jpg.*building targets.*boom"):
        next(iter(DataLoader(blobs, batch_size=2, augment=CFG, targets=[FunctionTarget(bad)])))


def test_all_target_specs_match_kernels(packed):
    """masks / fcos / keypoints specs fill the batch exactly like the kernels called by hand."""
    from fastload.augment.geometry import transform_instances
    from fastload.augment.params import sample_params
    from fastload.targets import fcos_targets, instance_masks, keypoint_targets, semantic_mask
    from fastload.targets.specs import FCOSTarget, KeypointTarget, MaskTarget

    SR = ((0.0, 32.0), (32.0, float("inf")))
    cfg = AugmentConfig.off(out_size=(64, 64), rotate_deg=(-30, 30), hflip_prob=0.5)
    ld = DataLoader(packed, batch_size=4, augment=cfg, seed=2, num_threads=2,
                    targets=[MaskTarget(stride=2), FCOSTarget(strides=(8, 16), size_ranges=SR),
                             KeypointTarget(stride=4, max_objs=8)])
    batch = next(iter(ld))
    K = len(packed.keypoint_names)
    assert batch["hp_hm"].shape == (4, K, 16, 16) and batch["semantic"].shape == (4, 32, 32)
    M = batch["boxes"].shape[1]
    assert batch["inst_masks"].shape == (4, M, 32, 32)
    for j, i in enumerate(batch["index"].tolist()):
        rec = packed[i]
        p = sample_params(cfg, 2, 0, i, rec.height, rec.width)
        inst = transform_instances(rec, p, cfg.out_size, cfg.min_visible, packed.flip_pairs)
        n = inst.labels.shape[0]
        sem = semantic_mask(inst.points, inst.part_offsets, inst.inst_parts, inst.labels,
                            inst.ignore, 32, 32, 2.0)
        assert np.array_equal(batch["semantic"][j].numpy(), sem)
        im = instance_masks(inst.points, inst.part_offsets, inst.inst_parts, 32, 32, 2.0)
        assert np.array_equal(batch["inst_masks"][j, :n].numpy(), im)
        assert not batch["inst_masks"][j, n:].any()
        keep = ~inst.ignore
        f = fcos_targets(inst.boxes[keep], inst.labels[keep], 64, 64, len(packed.classes), strides=(8, 16),
                 size_ranges=SR)
        for k, v in f.items():
            assert np.array_equal(batch[k][j].numpy(), v), k
        kp = inst.keypoints[keep].copy() if inst.keypoints is not None else np.zeros((0, K, 3), np.float32)
        kp[..., :2] /= 4
        t = keypoint_targets(inst.boxes[keep] / 4, kp, 16, 16, max_objs=8)
        for k, v in t.items():
            assert np.array_equal(batch[k][j].numpy(), v), k


def test_corrupt_lmdb_record_names_shard(packed, tmp_path):
    """A garbled record inside a real LMDB shard: the error names the index and the shard file."""
    import shutil

    import lmdb

    from fastload.store import Dataset, encode_key
    root = tmp_path / "copy"
    shutil.copytree(packed.path, root)
    ds = Dataset(root)
    shard, pos = ds.locate(7)
    shard_file = root / ds.manifest["shards"][shard]["file"]
    env = lmdb.open(str(shard_file), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(encode_key(pos), b"\xc1garbage")
    env.close()
    with pytest.raises(SampleError, match="sample index 7") as e:
        list(DataLoader(ds, batch_size=4, augment=CFG))
    assert str(shard_file) in str(e.value) and e.value.stage == "reading the record"
    ld = DataLoader(root, batch_size=4, augment=CFG, on_error="skip")
    assert sum(len(b["index"]) for b in ld) == len(ds) - 1 and ld.stats["skipped"] == 1


@requires_gpu
def test_gpu_dali_batches_on_device_match_cpu_path(blobs):
    """On a GPU: every tensor on cuda, the stream hand-off gives finished data, and the DALI
    GPU batch agrees with the CPU backend (identical annotations and targets; images within
    interpolation differences, noise off)."""
    cfg = AugmentConfig(out_size=(64, 64), noise_sigma=(0.0, 0.0))
    kw = dict(batch_size=4, shuffle=True, seed=1, augment=cfg, targets=["centernet", "masks"])
    gpu = _collect(DataLoader(blobs, device="cuda", **kw))
    cpu = _collect(DataLoader(blobs, device="cpu", backend="cpu", **kw))
    for g, c in zip(gpu, cpu):
        assert all(v.is_cuda for v in g.values())
        for k in g:
            if k != "image":
                assert torch.equal(g[k].cpu(), c[k]), k
        diff = (g["image"].cpu() - c["image"]).abs() * torch.tensor(cfg.std).view(1, 3, 1, 1)
        assert diff.mean() < 1.0
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # batches are usable on whatever stream the loop runs
        b = next(iter(DataLoader(blobs, device="cuda", backend="cpu", **kw)))
        assert torch.isfinite(b["image"]).all()


def test_skip_whole_batch_and_stats_count_delivered_only(blobs):
    for i in (4, 5, 6, 7):
        corrupt_image(blobs, i)
    ld = DataLoader(blobs, batch_size=4, augment=CFG, on_error="skip", prefetch=2)
    assert [b["index"].tolist() for b in ld] == [[0, 1, 2, 3], [8, 9]]
    assert ld.stats["skipped_batches"] == 1 and ld.stats["skipped"] == 4
    assert ld.stats["batches"] == 2 and ld.stats["samples"] == 6
    time.sleep(0.5)  # the producer prefetches epoch 1 meanwhile: not counted until delivered
    assert ld.stats["skipped"] == 4


