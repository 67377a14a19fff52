"""Annotation geometry per sample: Numba kernel vs the plain Python/NumPy reference.

A synthetic 640x480 scene with 8 instances (some multi-part) and keypoints, moved by a
rotation + scale + flip into 512x512, clipped, filtered.
"""
import numpy as np
import pytest

from fastload.augment.config import AugmentConfig
from fastload.augment.geometry import transform_instances, transform_instances_reference
from fastload.augment.params import sample_params
from fastload.record import Instance, Record
from fastload.synth.scenes import FLIP_PAIRS, make_scene


@pytest.fixture(scope="module")
def case():
    scene = make_scene(np.random.default_rng(0), 640, 480, n_instances=8, keypoints=True)
    insts = []
    for si in scene.instances:
        allp = np.concatenate(si.polygons)
        insts.append(Instance(si.label, si.polygons, np.array([*allp.min(0), *allp.max(0)],
                                                              np.float32),
                              keypoints=si.keypoints))
    rec = Record.decode(Record.from_instances(0, "s.jpg", b"", "jpeg", 480, 640, insts).encode())
    cfg = AugmentConfig(out_size=(512, 512), rotate_deg=(-30, 30), scale=(1.2, 1.5))
    return rec, sample_params(cfg, 0, 0, 3, 480, 640), cfg


def test_reference_python(benchmark, case):
    rec, p, cfg = case
    t = benchmark(transform_instances_reference, rec, p, cfg.out_size, 0.1, FLIP_PAIRS)
    assert t.num_instances > 0


def test_numba_kernel(benchmark, case):
    rec, p, cfg = case
    transform_instances(rec, p, cfg.out_size, 0.1, FLIP_PAIRS)  # compile / load cache
    t = benchmark(transform_instances, rec, p, cfg.out_size, 0.1, FLIP_PAIRS)
    assert t.num_instances > 0
