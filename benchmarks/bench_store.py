"""Pack throughput and random record reads, each beside its directory baseline.

    python3 -m pytest benchmarks/bench_store.py            # measure
    python3 -m pytest benchmarks/bench_store.py --benchmark-disable -q   # run once

Goals: pack >= 1000 images/s of 640x480 JPEG with 2 workers (no decode on the
way); random reads >= 20,000 records/s on one thread and >= 5x the directory baseline
(open + read the image file + parse its JSON annotation). Rates are in each case's
``extra_info``; compare cases of the same group.
"""
import json
import shutil

import numpy as np
import pytest

from fastload.packing import pack
from fastload.store import Dataset
from fastload.synth.datasets import write_dataset

N_IMAGES = 300
N_READS = 2000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_store")
    src = root / "src"
    write_dataset(src, "coco", n_images=N_IMAGES, width=640, height=480, seed=0)
    # the directory baseline for reads: one JSON annotation file per image
    coco = json.loads((src / "annotations" / "instances.json").read_text())
    per = {im["id"]: {"image": im, "annotations": []} for im in coco["images"]}
    for a in coco["annotations"]:
        per[a["image_id"]]["annotations"].append(a)
    (src / "ann").mkdir()
    for k, im in enumerate(coco["images"]):
        (src / "ann" / f"{k:06d}.json").write_text(json.dumps(per[im["id"]]))
    pack(src, root / "packed", "coco", workers=2, progress=False)
    return root


def _rate(benchmark, n, unit):
    st = benchmark.stats.stats if benchmark.stats else None
    if st is not None and st.mean > 0:
        benchmark.extra_info[unit] = round(n / st.mean, 1)


@pytest.mark.benchmark(group="pack")
def test_pack_workers2(benchmark, data):
    out = data / "bench_out"

    def run():
        pack(data / "src", out, "coco", workers=2, overwrite=True, progress=False)
    benchmark.pedantic(run, rounds=3, iterations=1)
    _rate(benchmark, N_IMAGES, "images_per_s")
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.benchmark(group="pack")
def test_pack_baseline_read_files_and_json(benchmark, data):
    src = data / "src"

    def run():
        coco = json.loads((src / "annotations" / "instances.json").read_bytes())
        n = 0
        for im in coco["images"]:
            n += len((src / "images" / im["file_name"]).read_bytes())
        return n
    benchmark.pedantic(run, rounds=3, iterations=1)
    _rate(benchmark, N_IMAGES, "images_per_s")


@pytest.mark.benchmark(group="random-read")
def test_random_reads_store(benchmark, data):
    ds = Dataset(data / "packed")
    idx = np.random.default_rng(0).integers(0, len(ds), N_READS).tolist()

    def run():
        for i in idx:
            r = ds[i]
            r.points  # the annotations are decoded arrays
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    _rate(benchmark, N_READS, "records_per_s")


@pytest.mark.benchmark(group="random-read")
def test_random_reads_directory_baseline(benchmark, data):
    src = data / "src"
    names = sorted((src / "images").iterdir())
    idx = np.random.default_rng(0).integers(0, len(names), N_READS).tolist()

    def run():
        for i in idx:
            with open(names[i], "rb") as f:
                f.read()
            with open(src / "ann" / f"{i:06d}.json", "rb") as f:
                ann = json.load(f)
            [np.asarray(p, np.float32).reshape(-1, 2) for a in ann["annotations"]
             for p in a["segmentation"]]
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    _rate(benchmark, N_READS, "records_per_s")
