"""Shared fixtures and collection for the pytest-benchmark suite (``pytest benchmarks/``).

Benchmark files are named ``bench_*.py`` (functions ``test_*``) so that the unit-test run
(``testpaths = tests``) never picks them up; the hook below collects them when
``benchmarks/`` (or a folder in it) is given to pytest. A file named explicitly on the
command line is collected by pytest itself. The checkout's root is on ``sys.path``
(``pythonpath = .`` in setup.cfg), so the benchmarks measure this tree's fastload. See
docs/bench.md.

Fixtures (session-scoped, built once):
- ``bench_scene``: a synthetic 640x480 scene (``fastload.synth.scenes.make_scene``, seed 0);
  ``bench_image``: its HWC uint8 RGB image; ``bench_jpeg``: that image as JPEG bytes (q 90).
- ``bench_cfg``: the AugmentConfig the benchmarks share (512x512 output, all augmentations
  of DESIGN.md on: flip, rotation, scale, translation, hue, noise, shadow).
- ``bench_coco``: a synthetic COCO dataset (64 images 640x480) in a session tmpdir:
  folder with ``annotations/instances.json`` and ``images/``.
- ``bench_packed``: that dataset packed by ``fastload.packing.pack`` (LMDB shards + manifest).
- ``bench_real_packed``: the 128 real COCO photos of ``../shared/data/coco128-seg`` (YOLO-seg)
  packed; the benchmarks that use it skip when the folder is absent.
- ``bench_dataset``: parametrized over both packs (synthetic, then coco128-seg): what the
  per-sample baseline benchmarks run on.
"""
import numpy as np
import pytest

BENCH_IMAGES = 64


def pytest_collect_file(file_path, parent):
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def bench_scene():
    from fastload.synth.scenes import make_scene
    return make_scene(np.random.default_rng(0), width=640, height=480)


@pytest.fixture(scope="session")
def bench_image(bench_scene):
    return bench_scene.image


@pytest.fixture(scope="session")
def bench_jpeg(bench_image):
    from fastload.synth.scenes import encode_jpeg
    return encode_jpeg(bench_image, quality=90)


@pytest.fixture(scope="session")
def bench_cfg():
    from fastload.augment.config import AugmentConfig
    return AugmentConfig(out_size=(512, 512))


@pytest.fixture(scope="session")
def bench_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-coco")
    from fastload.synth.datasets import write_dataset
    write_dataset(root, "coco", BENCH_IMAGES, 0)
    return root


@pytest.fixture(scope="session")
def bench_packed(bench_coco, tmp_path_factory):
    pack = pytest.importorskip("fastload.packing").pack
    out = tmp_path_factory.mktemp("bench-packed") / "packed"
    pack(bench_coco, out, format="coco", workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def bench_real_packed(tmp_path_factory):
    from tests.helpers.env import COCO128_SEG
    if not COCO128_SEG.is_dir():
        pytest.skip(f"{COCO128_SEG} absent (real photos for the benchmarks)")
    pack = pytest.importorskip("fastload.packing").pack
    out = tmp_path_factory.mktemp("bench-coco128") / "packed"
    pack(COCO128_SEG, out, format="yolo", workers=1, progress=False)
    return out


@pytest.fixture(scope="session", params=["synthetic 640x480", "coco128-seg"])
def bench_dataset(request):
    """A packed dataset: the synthetic scenes, then the real photos (skipped when absent)."""
    name = "bench_packed" if request.param.startswith("synthetic") else "bench_real_packed"
    return request.getfixturevalue(name)
