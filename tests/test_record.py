import msgpack
import numpy as np
import pytest

from fastload.record import FLAG_CROWD, FLAG_IGNORE, RECORD_VERSION, Instance, Record, RecordError


def _record(rng, keypoints=True):
    insts = []
    for k in range(4):
        parts = [rng.uniform(0, 100, (int(rng.integers(3, 12)), 2)).astype(np.float32)
                 for _ in range(int(rng.integers(1, 4)))]
        allp = np.concatenate(parts)
        insts.append(Instance(label=k % 3, polygons=parts,
                              bbox=np.r_[allp.min(0), allp.max(0)].astype(np.float32),
                              ignore=k == 2, crowd=k == 2,
                              keypoints=rng.uniform(0, 100, (5, 3)).astype(np.float32)
                              if keypoints else None))
    return Record.from_instances(id=77, file_name="a/b.jpg", image_bytes=b"\xff\xd8xx\xff\xd9",
                                 image_format="jpeg", height=100, width=120, instances=insts), insts


@pytest.mark.parametrize("keypoints", [True, False])
def test_round_trip(rng, keypoints):
    rec, insts = _record(rng, keypoints)
    back = Record.decode(rec.encode())
    assert (back.id, back.file_name, back.image_bytes, back.height, back.width) == \
        (77, "a/b.jpg", b"\xff\xd8xx\xff\xd9", 100, 120)
    assert back.num_instances == 4
    for a, b in zip(back.instances, insts):
        assert a.label == b.label and a.ignore == b.ignore and a.crowd == b.crowd
        assert len(a.polygons) == len(b.polygons)
        for p, q in zip(a.polygons, b.polygons):
            assert p.dtype == np.float32 and np.array_equal(p, q)
        assert np.array_equal(a.bbox, b.bbox)
        if keypoints:
            assert np.array_equal(a.keypoints, b.keypoints)
        else:
            assert a.keypoints is None
    assert back.flags[2] == FLAG_IGNORE | FLAG_CROWD


def test_empty_record():
    rec = Record.from_instances(1, "x.png", b"png", "png", 3, 4, [])
    back = Record.decode(rec.encode())
    assert back.num_instances == 0 and back.instances == [] and back.points.shape == (0, 2)


def test_newer_version_refused(rng):
    rec, _ = _record(rng)
    m = msgpack.unpackb(rec.encode(), raw=False)
    m["v"] = RECORD_VERSION + 1
    with pytest.raises(RecordError, match="newer"):
        Record.decode(msgpack.packb(m, use_bin_type=True))


@pytest.mark.parametrize("buf", [b"", b"\xc1garbage", msgpack.packb([1, 2, 3]),
                                 msgpack.packb({"x": 1})])
def test_malformed_bytes(buf):
    with pytest.raises(RecordError):
        Record.decode(buf)


def test_malformed_arrays(rng):
    rec, _ = _record(rng)
    m = msgpack.unpackb(rec.encode(), raw=False)
    m["pts"] = m["pts"][:-3]  # not a whole number of float32 pairs
    with pytest.raises(RecordError):
        Record.decode(msgpack.packb(m, use_bin_type=True))
    m = msgpack.unpackb(rec.encode(), raw=False)
    del m["img"]
    with pytest.raises(RecordError):
        Record.decode(msgpack.packb(m, use_bin_type=True))


@pytest.mark.parametrize("field, value, match", [
    ("poff", np.array([0, 5, 3], "<i4"), "part_offsets"),          # decreasing
    ("poff", np.array([0, 10**6], "<i4"), "part_offsets"),         # past the points
    ("iparts", np.array([0, 1], "<i4"), "inst_parts"),             # not one entry per instance
    ("iparts", np.array([0, 1, 2, 3, 99], "<i4"), "inst_parts"),   # past the parts
    ("flg", np.zeros(3, "u1"), "flags"),
])
def test_inconsistent_layout_refused(rng, field, value, match):
    """Offsets that would index past the arrays never reach the Numba kernels."""
    rec, _ = _record(rng)
    m = msgpack.unpackb(rec.encode(), raw=False)
    m[field] = value.tobytes()
    with pytest.raises(RecordError, match=f"record 77 \\(a/b.jpg\\): .*{match}"):
        Record.decode(msgpack.packb(m, use_bin_type=True))


def test_version_must_be_a_number(rng):
    rec, _ = _record(rng)
    m = msgpack.unpackb(rec.encode(), raw=False)
    m["v"] = "1"
    with pytest.raises(RecordError, match="version"):
        Record.decode(msgpack.packb(m, use_bin_type=True))


@pytest.mark.parametrize("field, value", [("id", "77"), ("id", 2 ** 64 - 1), ("file", 7),
                                          ("fmt", None), ("h", "64"), ("h", 0), ("w", -3),
                                          ("w", 2 ** 40), ("img", "text"), ("h", True)])
def test_scalar_fields_of_the_wrong_type_refused(rng, field, value):
    """A record whose height is the string '64' would reach a decoder or a kernel."""
    rec, _ = _record(rng)
    m = msgpack.unpackb(rec.encode(), raw=False)
    m[field] = value
    with pytest.raises(RecordError, match="malformed"):
        Record.decode(msgpack.packb(m, use_bin_type=True))


def test_negative_keypoint_count_refused(rng):
    rec, _ = _record(rng)
    m = msgpack.unpackb(rec.encode(), raw=False)
    m["kps"], m["nk"] = b"", -1  # reshape(n, -1, 3) would accept it
    with pytest.raises(RecordError, match="nk"):
        Record.decode(msgpack.packb(m, use_bin_type=True))
