"""The sample builder: the per-sample flow equals the steps run by hand, its two halves equal
the whole, and every stage's failure is a SampleError naming index, id, file and stage."""
import numpy as np
import pytest

from fastload.augment.config import AugmentConfig
from fastload.loader import SampleError
from fastload.loader.device import DeviceStage
from fastload.loader.sample import SampleBuilder, dataset_info, record_location
from fastload.targets.specs import CenterNetTarget, FunctionTarget, resolve_targets
from tests.helpers.data import corrupt_record

CFG = AugmentConfig(out_size=(64, 64))


def _builder(ds, targets):
    info = dataset_info(ds)
    return SampleBuilder(ds, CFG, resolve_targets(targets, info), info)


def _buffers(b, n=1):
    import torch
    return DeviceStage(torch.device("cpu"), CFG.dtype, CFG.out_size, b.fixed_shapes).target_buffers(n)


def test_call_is_the_steps_by_hand_and_the_two_halves(blobs):
    from fastload.augment.geometry import transform_instances
    from fastload.augment.params import sample_params
    from fastload.targets import centernet_targets

    b = _builder(blobs, [CenterNetTarget(stride=4, max_objs=8)])
    assert b.fixed_shapes["hm"] == ((len(blobs.classes), 16, 16), np.dtype(np.float32))
    for i in (0, 3, 7):
        views = _buffers(b)
        sample, arrays = b(i, 2, 11, views)
        rec = blobs[i]
        p = sample_params(CFG, 11, 2, i, rec.height, rec.width)
        assert sample.index == i and sample.record.id == rec.id
        assert np.array_equal(sample.params.matrix, p.matrix)
        inst = transform_instances(rec, p, CFG.out_size, CFG.min_visible, blobs.flip_pairs)
        assert np.array_equal(arrays["boxes"], inst.boxes)
        assert np.array_equal(arrays["labels"], inst.labels)
        assert np.array_equal(arrays["poly_points"], inst.points)
        keep = ~inst.ignore
        t = centernet_targets(inst.boxes[keep] / 4, inst.labels[keep], len(blobs.classes), 16, 16,
                              max_objs=8)
        assert np.array_equal(views["hm"][0], t["hm"])
        # read() + annotate(), as the producer runs them, give the same
        views2 = _buffers(b)
        arrays2 = b.annotate(b.read(i, 2, 11), views2)
        assert arrays.keys() == arrays2.keys()
        assert all(np.array_equal(arrays[k], arrays2[k]) for k in arrays)
        assert all(np.array_equal(views[k], views2[k]) for k in views)


def test_sample_error_message_format():
    e = SampleError(3, 7, "a.jpg", "building targets", RuntimeError("boom"))
    assert str(e) == ("fastload: sample index 3 (id 7, file 'a.jpg') failed while building "
                      "targets: RuntimeError: boom")
    assert (e.index, e.sample_id, e.file_name, e.stage) == (3, 7, "a.jpg", "building targets")
    e = SampleError(4, None, "/d/shard-00000.lmdb, record 4", "reading the record", KeyError(4))
    assert str(e) == ("fastload: sample index 4 (in /d/shard-00000.lmdb, record 4) failed while "
                      "reading the record: KeyError: 4")
    assert str(SampleError(5, None, None, "reading the record", ValueError("x"))) == \
        "fastload: sample index 5 failed while reading the record: ValueError: x"
    assert isinstance(e, ValueError)


def test_each_stage_names_itself(blobs, tmp_path):
    def bad(inst, out_size):
        raise RuntimeError("kaboom")
    b = _builder(blobs, [FunctionTarget(bad)])
    with pytest.raises(SampleError, match="sample index 2 .*id 2.*img_0002.jpg.*building targets.*kaboom"):
        b(2, 0, 0, _buffers(b))
    corrupt_record(blobs, 4)
    with pytest.raises(SampleError) as e:
        b.read(4, 0, 0)
    assert e.value.stage == "reading the record" and e.value.sample_id is None
    rec = blobs[1]
    rec.height = 0  # parameters cannot be drawn for an empty image
    with pytest.raises(SampleError) as e:
        b.params(1, rec, 0, 0)
    assert e.value.stage == "drawing augmentation parameters" and "img_0001.jpg" in str(e.value)
    with pytest.raises(SampleError) as e:
        b.move(1, blobs[1], None)
    assert e.value.stage == "moving the annotations" and e.value.index == 1


def test_record_location(packed_small):
    from fastload.store import Dataset
    ds = Dataset(packed_small)
    shard, pos = ds.locate(7)
    want = f"{packed_small / ds.manifest['shards'][shard]['file']}, record {pos}"
    assert record_location(ds, 7) == want
    assert record_location([1, 2], 0) is None  # no locate(), no path: nothing to name


@pytest.fixture(scope="module")
def packed_small(tmp_path_factory):
    from tests.helpers.data import packed_dataset
    return packed_dataset(tmp_path_factory.mktemp("sample"), n=8)


def test_concave_part_cut_at_a_corner_gets_the_visible_box():
    """A C-shape whose only visible part is the arm [150, 60]-[200, 80] of a 200 x 200 frame:
    boxes, CenterNet's wh and centre and FCOS's regression targets are that arm's, not the
    arm plus Sutherland-Hodgman's spike down the border to the corner (box [150, 60, 200, 200]
    before the fix)."""
    from fastload.record import Instance, Record
    from fastload.synth.scenes import encode_jpeg
    from tests.helpers.data import BlobDataset

    c_shape = np.array([(150, 60), (260, 60), (260, 260), (100, 260), (100, 240), (240, 240),
                        (240, 80), (150, 80)], np.float32)
    rec = Record.from_instances(0, "c.jpg", encode_jpeg(np.zeros((200, 200, 3), np.uint8)), "jpeg",
                                200, 200, [Instance(0, [c_shape], np.array([100, 60, 260, 260],
                                                                          np.float32))])
    ds = BlobDataset([rec.encode()], keypoint_names=None, flip_pairs=None)
    cfg = AugmentConfig.off(out_size=(200, 200), min_visible=0.0)
    info = dataset_info(ds)
    b = SampleBuilder(ds, cfg, resolve_targets(["centernet", "fcos"], info), info)
    import torch
    views = DeviceStage(torch.device("cpu"), cfg.dtype, cfg.out_size, b.fixed_shapes).target_buffers(1)
    _, arrays = b(0, 0, 0, views)
    assert arrays["boxes"].tolist() == [[150, 60, 200, 80]]
    assert sorted(map(tuple, arrays["poly_points"].tolist())) == [(150, 60), (150, 80), (200, 60),
                                                                  (200, 80)]
    assert views["reg_mask"][0, 0] == 1
    np.testing.assert_allclose(views["wh"][0, 0], [50 / 4, 20 / 4])  # stride 4
    assert views["ind"][0, 0] == int(70 / 4) * 50 + int(175 / 4)
    ltrb = views["fcos_ltrb"][0][views["fcos_labels"][0] > 0]
    assert len(ltrb) and ltrb[:, 3].max() <= 20 and ltrb[:, 1].max() <= 20  # inside the arm's 20 rows
