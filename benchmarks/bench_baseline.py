"""One sample through the torch baselines of `fastload bench` vs fastload's CPU path.

Per sample (640x480 JPEG -> 512x512, every augmentation on, CenterNet targets, stride 4):
- ``torch_seed``: BaselineDataset.__getitem__ with Python-loop targets (the DESIGN.md problem);
- ``torch_numpy``: the same with the vectorized NumPy targets;
- ``fastload_cpu``: fastload.TorchDataset.__getitem__ (record read + fused Numba
  augmentation + Numba targets), same data, same per-sample parameters.
Run: python3 -m pytest benchmarks/bench_baseline.py --benchmark-only --benchmark-group-by=group
"""
import itertools

import pytest


@pytest.fixture(scope="module", params=["python", "numpy"])
def baseline(request, bench_coco, bench_cfg):
    from fastload.bench.baseline import BaselineDataset
    return BaselineDataset(bench_coco, cfg=bench_cfg, seed=0, targets=request.param)


@pytest.mark.benchmark(group="one sample, 512x512, all augmentations + centernet")
def test_torch_baseline_sample(benchmark, baseline):
    idx = itertools.count()
    baseline[0]  # warm caches (first file open, imports)
    out = benchmark(lambda: baseline[next(idx) % len(baseline)])
    assert out["image"].shape == (3, 512, 512)


@pytest.mark.benchmark(group="one sample, 512x512, all augmentations + centernet")
def test_fastload_cpu_sample(benchmark, bench_packed, bench_cfg):
    loader = pytest.importorskip("fastload.loader")
    try:
        tds = loader.TorchDataset(bench_packed, augment=bench_cfg, targets=["centernet"], seed=0)
        tds[0]  # Numba compilation / cache load
    except ImportError as e:
        pytest.skip(f"fastload CPU path not available: {e}")
    idx = itertools.count()
    out = benchmark(lambda: tds[next(idx) % len(tds)])
    assert out["image"].shape == (3, 512, 512)


@pytest.mark.benchmark(group="one batch of 8 through torch DataLoader(num_workers=0)")
@pytest.mark.parametrize("targets", ["python", "numpy"])
def test_torch_baseline_batch8(benchmark, bench_coco, bench_cfg, targets):
    from fastload.bench.baseline import make_baseline_loader
    dl = make_baseline_loader(bench_coco, targets=targets, batch_size=8, num_workers=0,
                              cfg=bench_cfg)
    it = iter(dl)
    b = benchmark(lambda: next(it))
    assert b["image"].shape == (8, 3, 512, 512) and b["hm"].shape[2:] == (128, 128)
