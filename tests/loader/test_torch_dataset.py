"""fastload.TorchDataset inside torch's DataLoader gives the same samples as fastload.DataLoader."""
import pytest
import torch

from tests.helpers.data import blob_dataset
from fastload.augment.config import AugmentConfig
from fastload.loader import INSTANCE_KEYS, DataLoader, SampleError, TorchDataset, collate

CFG = AugmentConfig(out_size=(64, 64))


@pytest.fixture(scope="module")
def ds():
    return blob_dataset(6)


def test_sample_matches_loader_batch(ds):
    tds = TorchDataset(ds, augment=CFG, targets=["centernet", "masks"], seed=9)
    assert isinstance(tds, torch.utils.data.Dataset) and len(tds) == 6
    tds.set_epoch(3)
    ld = DataLoader(ds, batch_size=3, augment=CFG, targets=["centernet", "masks"], seed=9,
                    num_threads=2)
    ld.set_epoch(3)
    batch = next(iter(ld))
    for j in range(3):
        s = tds[j]
        n = int(s["num_instances"])
        assert s["index"].item() == j and s["image"].shape == (3, 64, 64)
        assert torch.equal(s["image"], batch["image"][j])
        for k, v in s.items():
            if k in ("image", "index", "num_instances"):
                continue
            if k in INSTANCE_KEYS:
                assert torch.equal(v, batch[k][j, :v.shape[0]]), k
            else:
                assert torch.equal(v, batch[k][j]), k
        assert s["boxes"].shape == (n, 4)
    tds.set_epoch(4)
    assert not torch.equal(tds[0]["image"], batch["image"][0])  # epoch changes augmentation


def test_torch_dataloader_with_collate(ds):
    tds = TorchDataset(ds, augment=CFG, targets=["centernet"], seed=1)
    tl = torch.utils.data.DataLoader(tds, batch_size=3, collate_fn=collate)
    ld = DataLoader(ds, batch_size=3, augment=CFG, targets=["centernet"], seed=1, num_threads=2)
    for a, b in zip(tl, ld):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k
    # default_collate fails on the variable-size keys: the reason collate exists
    tds_one = [tds[0], tds[1]]
    if tds_one[0]["boxes"].shape != tds_one[1]["boxes"].shape:
        with pytest.raises(RuntimeError):
            torch.utils.data.default_collate(tds_one)


def test_worker_processes_and_errors(ds):
    tds = TorchDataset(ds, augment=CFG, seed=1)
    tl = torch.utils.data.DataLoader(tds, batch_size=2, collate_fn=collate, num_workers=1)
    got = [b["index"].tolist() for b in tl]
    assert got == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(IndexError):
        tds[6]
    from tests.helpers.data import corrupt_image
    bad = blob_dataset(3)
    corrupt_image(bad, 1)
    with pytest.raises(SampleError, match="img_0001.jpg"):
        TorchDataset(bad, augment=CFG)[1]
