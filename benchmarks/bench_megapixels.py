"""One sample against the source size: photo-like JPEGs (``fastload.synth.photos``, quality 90)
of 640x480, 1920x1080 and 4000x3000, -> 512x512 with every augmentation and CenterNet targets,
one thread, through each pipeline's torch Dataset:

- ``torch_seed``: PilNumpyDataset (PIL decode at full size, PIL/NumPy augmentation, Python-loop
  targets);
- ``albumentations``: AlbumentationsDataset (OpenCV decode at full size, albumentations, NumPy
  targets);
- ``fastload_cpu``: fastload.TorchDataset (the CPU backend: its decode, the fused kernel, Numba
  targets).

The whole-loader version, every row on every size in one alternating schedule with the chart,
is ``fastload bench --megapixels`` (docs/bench.md). This file shows the same curve per sample:

    python3 -m pytest benchmarks/bench_megapixels.py --benchmark-only --benchmark-group-by=param:size
"""
import itertools

import pytest

SIZES = ["640x480", "1920x1080", "4000x3000"]
N_IMAGES = 4


@pytest.fixture(scope="module", params=SIZES)
def size(request):
    return request.param


@pytest.fixture(scope="module")
def photos(size, tmp_path_factory):
    from fastload.packing import pack
    from fastload.synth.photos import write_photo_dataset
    w, h = (int(v) for v in size.split("x"))
    root = tmp_path_factory.mktemp(f"photos-{size}")
    write_photo_dataset(root / "src", N_IMAGES, w, h, seed=0)
    pack(root / "src", root / "packed", format="coco", workers=1, progress=False)
    return root / "packed"


def _cycle(ds):
    idx = itertools.count()
    ds[0]
    return lambda: ds[next(idx) % len(ds)]


def test_torch_seed(benchmark, photos, bench_cfg):
    from fastload.bench.pil_baseline import PilNumpyDataset
    out = benchmark(_cycle(PilNumpyDataset(photos, cfg=bench_cfg, targets="python")))
    assert out["image"].shape == (3, 512, 512)


def test_albumentations(benchmark, photos, bench_cfg):
    pytest.importorskip("albumentations")
    from fastload.bench.albumentations_baseline import AlbumentationsDataset
    out = benchmark(_cycle(AlbumentationsDataset(photos, cfg=bench_cfg)))
    assert out["image"].shape == (3, 512, 512)


def test_fastload_cpu(benchmark, photos, bench_cfg):
    from fastload.loader import TorchDataset
    out = benchmark(_cycle(TorchDataset(photos, augment=bench_cfg, targets=["centernet"])))
    assert out["image"].shape == (3, 512, 512)
