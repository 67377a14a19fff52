"""Annotation geometry: Numba kernels vs the plain references, dropping, keypoints (clipping:
test_clip.py)."""
import numpy as np
import pytest

from fastload.augment.config import AugmentConfig
from fastload.augment.geometry import transform_instances, transform_instances_reference
from fastload.augment.params import SampleParams, compose_matrix, sample_params
from fastload.record import Instance, Record
from fastload.synth.scenes import FLIP_PAIRS, make_scene


def _record_from_scene(scene, ignore_every=0):
    insts = []
    for k, si in enumerate(scene.instances):
        allp = np.concatenate(si.polygons)
        bbox = np.array([allp[:, 0].min(), allp[:, 1].min(), allp[:, 0].max(), allp[:, 1].max()],
                        np.float32)
        insts.append(Instance(label=si.label, polygons=si.polygons, bbox=bbox,
                              ignore=bool(ignore_every and k % ignore_every == 0),
                              keypoints=si.keypoints))
    return Record.from_instances(0, "scene.png", b"", "png", scene.height, scene.width, insts)


def _params(matrix, hflip=False, vflip=False):
    return SampleParams(matrix=np.asarray(matrix, np.float32), hflip=hflip, vflip=vflip,
                        hue_deg=0.0, noise_sigma=0.0, noise_seed=0)


def _assert_same(a, b):
    np.testing.assert_array_equal(a.src_index, b.src_index)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.ignore, b.ignore)
    np.testing.assert_array_equal(a.part_offsets, b.part_offsets)
    np.testing.assert_array_equal(a.inst_parts, b.inst_parts)
    np.testing.assert_allclose(a.points, b.points, atol=1e-3)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    if a.keypoints is None:
        assert b.keypoints is None
    else:
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)


def test_transform_instances_matches_reference_many_seeds():
    cfg = AugmentConfig(out_size=(96, 128), hflip_prob=0.5, vflip_prob=0.3,
                        rotate_deg=(-90, 90), scale=(0.6, 1.8), translate=(-0.4, 0.4))
    n_dropped = n_kept = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        scene = make_scene(rng, 160, 120, keypoints=True, unique_colors=True)
        rec = _record_from_scene(scene, ignore_every=3)
        p = sample_params(cfg, 7, 0, seed, rec.height, rec.width)
        for mv in (0.1, 0.6):
            a = transform_instances(rec, p, cfg.out_size, mv, FLIP_PAIRS)
            b = transform_instances_reference(rec, p, cfg.out_size, mv, FLIP_PAIRS)
            _assert_same(a, b)
            n_kept += a.num_instances
            n_dropped += rec.num_instances - a.num_instances
        assert a.points.dtype == np.float32 and a.part_offsets.dtype == np.int32
        assert a.boxes.shape == (a.num_instances, 4)
        if len(a.points):
            assert a.points.min() >= 0 and a.points[:, 0].max() <= 128 and a.points[:, 1].max() <= 96
    assert n_dropped > 10 and n_kept > 50  # both branches exercised


def test_identity_keeps_everything_and_boxes():
    rng = np.random.default_rng(3)
    scene = make_scene(rng, 160, 120, keypoints=True)
    rec = _record_from_scene(scene)
    t = transform_instances(rec, _params(np.eye(3)), (120, 160))
    assert t.num_instances == rec.num_instances
    np.testing.assert_allclose(t.points, rec.points, atol=1e-4)
    np.testing.assert_allclose(t.boxes, rec.bboxes, atol=1e-4)


def test_min_visible_drop_and_ignore_kept():
    # a 10x10 square, shifted so that 15% of it stays in the frame
    sq = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    insts = [Instance(0, [sq], np.array([0, 0, 10, 10], np.float32)),
             Instance(1, [sq], np.array([0, 0, 10, 10], np.float32), ignore=True)]
    rec = Record.from_instances(0, "x", b"", "png", 10, 10, insts)
    m = np.array([[1, 0, 98.5], [0, 1, 0], [0, 0, 1]], np.float32)  # x in [98.5, 108.5]
    t = transform_instances(rec, _params(m), (100, 100), min_visible=0.1)
    assert t.src_index.tolist() == [0, 1]
    np.testing.assert_allclose(t.boxes[0], [98.5, 0, 100, 10])
    t = transform_instances(rec, _params(m), (100, 100), min_visible=0.2)
    assert t.src_index.tolist() == [1] and t.ignore.tolist() == [True]
    m[0, 2] = 150  # entirely outside: even the ignore region goes
    t = transform_instances(rec, _params(m), (100, 100))
    assert t.num_instances == 0 and t.points.shape == (0, 2) and t.inst_parts.tolist() == [0]


def test_box_only_instance():
    insts = [Instance(2, [], np.array([10, 10, 30, 20], np.float32))]
    rec = Record.from_instances(0, "x", b"", "png", 50, 50, insts)
    m = compose_matrix(50, 50, 50, 50, hflip=True)
    t = transform_instances(rec, _params(m, hflip=True), (50, 50))
    assert t.num_instances == 1 and t.inst_parts.tolist() == [0, 0]
    np.testing.assert_allclose(t.boxes[0], [20, 10, 40, 20], atol=1e-5)
    r = transform_instances_reference(rec, _params(m, hflip=True), (50, 50))
    np.testing.assert_allclose(r.boxes, t.boxes, atol=1e-5)


@pytest.mark.parametrize("hflip,vflip,swapped", [(False, False, False), (True, False, True),
                                                 (False, True, True), (True, True, False)])
def test_keypoints_flip_pairs_and_visibility(hflip, vflip, swapped):
    sq = np.array([[10, 10], [40, 10], [40, 40], [10, 40]], np.float32)
    kps = np.array([[25, 20, 2], [20, 15, 2], [30, 15, 1], [5, 45, 2], [45, 45, 0]], np.float32)
    rec = Record.from_instances(0, "x", b"", "png", 50, 50,
                                [Instance(0, [sq], np.array([10, 10, 40, 40], np.float32),
                                          keypoints=kps)])
    m = compose_matrix(50, 50, 50, 50, hflip=hflip, vflip=vflip)
    t = transform_instances(rec, _params(m, hflip, vflip), (50, 50), flip_pairs=FLIP_PAIRS)
    k = t.keypoints[0]
    moved = kps[:, :2].copy()
    if hflip:
        moved[:, 0] = 50 - moved[:, 0]
    if vflip:
        moved[:, 1] = 50 - moved[:, 1]
    order = [0, 2, 1, 4, 3] if swapped else [0, 1, 2, 3, 4]
    for dst, src in enumerate(order):
        if kps[src, 2] > 0:
            np.testing.assert_allclose(k[dst, :2], moved[src], atol=1e-5)
            assert k[dst, 2] == kps[src, 2]
        else:
            assert k[dst].tolist() == [0, 0, 0]
    # keypoint moved out of the frame -> visibility 0 and zeroed
    shift = np.array([[1, 0, 20], [0, 1, 0], [0, 0, 1]], np.float32)
    t = transform_instances(rec, _params(shift), (50, 50), min_visible=0.0)
    assert t.keypoints[0, 3].tolist() == [25, 45, 2]
    assert t.keypoints[0, 4].tolist() == [0, 0, 0]
    assert t.keypoints[0, 0].tolist() == [45, 20, 2]
    shift[0, 2] = 30  # (20,15)->(50,15): x == W is outside the half-open frame
    t = transform_instances(rec, _params(shift), (50, 50), min_visible=0.0)
    assert t.keypoints[0, 1].tolist() == [0, 0, 0]


def test_decoded_record_and_empty_record():
    rng = np.random.default_rng(4)
    rec = Record.decode(_record_from_scene(make_scene(rng, 160, 120, keypoints=True)).encode())
    assert not rec.points.flags.writeable  # read-only views of the msgpack buffer
    p = sample_params(AugmentConfig(out_size=(64, 64)), 0, 0, 0, rec.height, rec.width)
    _assert_same(transform_instances(rec, p, (64, 64), 0.1, FLIP_PAIRS),
                 transform_instances_reference(rec, p, (64, 64), 0.1, FLIP_PAIRS))
    empty = Record.from_instances(0, "e", b"", "png", 10, 10, [])
    t = transform_instances(empty, p, (64, 64))
    assert t.num_instances == 0 and t.points.shape == (0, 2) and t.keypoints is None
    assert t.part_offsets.tolist() == [0] and t.inst_parts.tolist() == [0]
    with pytest.raises(ValueError, match="matrix"):
        transform_instances(empty, _params(np.eye(2)), (64, 64))
