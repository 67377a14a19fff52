"""Target-building speed: Numba kernels vs the slow references they replace.

512x512 input, stride 4 (128x128 map), 5 / 20 / 100 objects, 1 / 80 classes.
Each group (``centernet-<objs>obj-<classes>cls``) holds the Python-loop reference
(the "4 ms" version of DESIGN.md), the NumPy version (the "0.4 ms" fix, a
transcription of the original CenterNet code) and the Numba kernel writing into
preallocated outputs (what the loader calls). Goals, at 20 objects /
1 class: Numba >= 50x the Python loop, >= 5x NumPy, < 50 us per image.

Run: ``python3 -m pytest benchmarks/bench_targets.py --benchmark-columns=mean,median,ops``
"""
import numpy as np
import pytest

from fastload.synth.scenes import random_polygon
from fastload.targets import (alloc_centernet, alloc_fcos, boxes_from_polygons, centernet_into,
                              fcos_into, instance_masks, semantic_mask)
from fastload.targets.reference import (centernet_numpy, centernet_python, fcos_reference,
                                        instance_masks_reference, semantic_mask_reference)

IN_SIZE = 512
STRIDE = 4
OUT = IN_SIZE // STRIDE


def scene(n_obj, num_classes, seed=0):
    """n_obj star polygons (radius 8..120 input px) in a 512x512 input, plus their boxes."""
    rng = np.random.default_rng(seed)
    polys = [random_polygon(rng, *rng.uniform(0, IN_SIZE, 2), rng.uniform(8, 120)) for _ in range(n_obj)]
    points = np.concatenate(polys) if polys else np.zeros((0, 2), np.float32)
    po = np.concatenate([[0], np.cumsum([len(p) for p in polys])]).astype(np.int32)
    ip = np.arange(n_obj + 1, dtype=np.int32)
    boxes = np.clip(boxes_from_polygons(points, po, ip), 0, IN_SIZE)
    labels = rng.integers(0, num_classes, n_obj)
    return points, po, ip, boxes, labels


CASES = [(n, c) for n in (5, 20, 100) for c in (1, 80)]


@pytest.mark.parametrize("impl", ["python_loop", "numpy", "numba"])
@pytest.mark.parametrize("n_obj,num_classes", CASES)
def test_centernet(benchmark, impl, n_obj, num_classes):
    benchmark.group = f"centernet-{n_obj}obj-{num_classes}cls"
    _, _, _, boxes, labels = scene(n_obj, num_classes)
    out_boxes = boxes / STRIDE
    if impl == "numba":
        out = alloc_centernet(1, num_classes, OUT, OUT)
        centernet_into(out, 0, out_boxes, labels)  # compile / load cache
        benchmark(centernet_into, out, 0, out_boxes, labels)
        ref = centernet_numpy(out_boxes, labels, num_classes, OUT, OUT)
        np.testing.assert_allclose(out["hm"][0], ref["hm"], atol=1e-6)
    else:
        f = centernet_python if impl == "python_loop" else centernet_numpy
        benchmark(f, out_boxes, labels, num_classes, OUT, OUT)


@pytest.mark.parametrize("impl", ["numpy", "numba"])
@pytest.mark.parametrize("n_obj", [5, 20, 100])
def test_fcos(benchmark, impl, n_obj):
    benchmark.group = f"fcos-{n_obj}obj"
    _, _, _, boxes, labels = scene(n_obj, 80)
    if impl == "numba":
        out = alloc_fcos(1, IN_SIZE, IN_SIZE)
        fcos_into(out, 0, boxes, labels, IN_SIZE, IN_SIZE, center_sampling_radius=1.5)
        benchmark(fcos_into, out, 0, boxes, labels, IN_SIZE, IN_SIZE, center_sampling_radius=1.5)
    else:
        benchmark(fcos_reference, boxes, labels, IN_SIZE, IN_SIZE, center_sampling_radius=1.5)


@pytest.mark.parametrize("impl", ["python", "numba"])
@pytest.mark.parametrize("n_obj", [5, 20])
def test_masks(benchmark, impl, n_obj):
    """Semantic map + per-instance masks at stride 4 (the Python reference is per pixel: slow)."""
    benchmark.group = f"masks-{n_obj}obj"
    points, po, ip, _, labels = scene(n_obj, 80)
    ignore = np.zeros(n_obj, bool)
    if impl == "numba":
        sem = np.empty((OUT, OUT), np.uint8)
        inst = np.empty((n_obj, OUT, OUT), np.uint8)

        def run():
            semantic_mask(points, po, ip, labels, ignore, OUT, OUT, STRIDE, out=sem)
            instance_masks(points, po, ip, OUT, OUT, STRIDE, out=inst)
        run()
        benchmark(run)
    else:
        def run_ref():
            semantic_mask_reference(points, po, ip, labels, ignore, OUT, OUT, STRIDE)
            instance_masks_reference(points, po, ip, OUT, OUT, STRIDE)
        benchmark.pedantic(run_ref, rounds=1, iterations=1)
