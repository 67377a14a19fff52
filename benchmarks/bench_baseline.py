"""One sample through the torch baselines of `fastload bench` vs fastload's CPU path.

Per sample (-> 512x512, every augmentation on, CenterNet targets, stride 4), on the synthetic
640x480 scenes and on the real COCO photos of coco128-seg (skipped when absent), all reading
the same packed dataset:
- ``torch_seed`` / ``torch_numpy``: PilNumpyDataset.__getitem__ with Python-loop / NumPy targets
  (the DESIGN.md problem and its first fix);
- ``albumentations``: AlbumentationsDataset.__getitem__ (OpenCV decode, albumentations, NumPy
  targets), the peer people use today;
- ``fastload_cpu``: fastload.TorchDataset.__getitem__ (record read + fused Numba augmentation +
  Numba targets), same data.
Run: python3 -m pytest benchmarks/bench_baseline.py --benchmark-only --benchmark-group-by=param:bench_dataset
"""
import itertools

import pytest


def _cycle(ds):
    idx = itertools.count()
    ds[0]  # warm caches (first record, imports, Numba)
    return lambda: ds[next(idx) % len(ds)]


@pytest.mark.parametrize("targets", ["python", "numpy"])
def test_torch_seed_sample(benchmark, bench_dataset, bench_cfg, targets):
    from fastload.bench.pil_baseline import PilNumpyDataset
    out = benchmark(_cycle(PilNumpyDataset(bench_dataset, cfg=bench_cfg, targets=targets)))
    assert out["image"].shape == (3, 512, 512)


def test_albumentations_sample(benchmark, bench_dataset, bench_cfg):
    pytest.importorskip("albumentations")
    from fastload.bench.albumentations_baseline import AlbumentationsDataset
    out = benchmark(_cycle(AlbumentationsDataset(bench_dataset, cfg=bench_cfg)))
    assert out["image"].shape == (3, 512, 512)


def test_fastload_cpu_sample(benchmark, bench_dataset, bench_cfg):
    from fastload.loader import TorchDataset
    tds = TorchDataset(bench_dataset, augment=bench_cfg, targets=["centernet"], seed=0)
    out = benchmark(_cycle(tds))
    assert out["image"].shape == (3, 512, 512)


@pytest.mark.benchmark(group="one batch of 8 through torch DataLoader(num_workers=0)")
@pytest.mark.parametrize("targets", ["python", "numpy"])
def test_torch_seed_batch8(benchmark, bench_packed, bench_cfg, targets):
    from fastload.bench.pil_baseline import pil_numpy_loader
    it = iter(pil_numpy_loader(bench_packed, targets=targets, batch_size=8, num_workers=0,
                               cfg=bench_cfg, epochs=1000))
    b = benchmark(lambda: next(it))
    assert b["image"].shape == (8, 3, 512, 512) and b["hm"].shape[2:] == (128, 128)


@pytest.mark.benchmark(group="one batch of 8 through torch DataLoader(num_workers=0)")
def test_albumentations_batch8(benchmark, bench_packed, bench_cfg):
    pytest.importorskip("albumentations")
    from fastload.bench.albumentations_baseline import albumentations_loader
    it = iter(albumentations_loader(bench_packed, cfg=bench_cfg, batch_size=8, num_workers=0,
                                    epochs=1000))
    b = benchmark(lambda: next(it))
    assert b["image"].shape == (8, 3, 512, 512) and b["hm"].shape[2:] == (128, 128)
