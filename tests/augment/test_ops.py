"""The op table and the things built from it: SampleParams, identity values, streams."""
import numpy as np
import pytest

from fastload.augment.config import AugmentConfig
from fastload.augment.cpu import augment_image, augment_image_reference, kernel_ops
from fastload.augment.ops import BY_NAME, GEOMETRIC_OPS, OPS, PIXEL_OPS
from fastload.augment.params import SampleParams, sample_params, stream_generator
from fastload.dtypes import output_numpy_dtype
from fastload.synth.scenes import make_scene


def test_table_order_and_declarations():
    names = [op.name for op in OPS]
    assert names[0] == "affine" and [op.name for op in GEOMETRIC_OPS] == ["affine"]
    # application order of the original ops, and the new op between hue and shadow
    order = [names.index(n) for n in ("hue", "brightness_contrast", "shadow", "noise")]
    assert order == sorted(order)
    assert len({op.order for op in OPS}) == len(OPS)
    legacy = sorted((op.legacy_uniforms.start, op.legacy_uniforms.stop, op.name)
                    for op in OPS if op.legacy_uniforms is not None)
    assert legacy == [(0, 6, "affine"), (6, 7, "hue"), (7, 8, "noise"), (8, 10, "shadow")]
    streams = [op.stream for op in OPS if op.legacy_uniforms is None]
    assert all(s >> 63 == 1 for s in streams) and len(set(streams)) == len(streams)
    assert all(op.stream is None for op in OPS if op.legacy_uniforms is not None)
    for op in PIXEL_OPS:
        assert len(op.kernel_args) == len(op.kernel_values(SampleParams(np.eye(3)),
                                                           AugmentConfig(), {}))


def test_sample_params_container():
    p = SampleParams(np.eye(3, dtype=np.float32), hue_deg=5.0)
    assert p.hflip is False and p.shadow_polygons == [] and p.shadow_darkness == 1.0
    assert p.noise_sigma == 0.0 and p.noise_seed == 0 and p.brightness == 0.0
    q = SampleParams(matrix=np.eye(3, dtype=np.float32), hue_deg=5.0)
    assert p == q and p.values_of("hue") == {"hue_deg": 5.0}
    q.shadow_polygons.append(np.zeros((3, 2), np.float32))
    assert p.shadow_polygons == []  # identity lists are not shared
    assert p != q
    r = SampleParams(np.eye(3, dtype=np.float32), hue_deg=5.0,
                     shadow_polygons=[np.ones((3, 2), np.float32)])
    s = SampleParams(np.eye(3, dtype=np.float32), hue_deg=5.0,
                     shadow_polygons=[np.ones((3, 2), np.float32)])
    assert r == s and r != SampleParams(np.eye(3, dtype=np.float32) * 2, hue_deg=5.0,
                                        shadow_polygons=[np.ones((3, 2), np.float32)])
    with pytest.raises(TypeError):
        SampleParams(np.eye(3), rotation=3)
    with pytest.raises(TypeError):
        SampleParams(np.eye(3), False)  # values are keyword-only
    assert "hue_deg" in SampleParams.__doc__ and "brightness" in SampleParams.__doc__


def test_identity_values_need_no_op_and_leave_the_reference_alone():
    ident = SampleParams(np.eye(3, dtype=np.float32))
    v = np.random.default_rng(0).uniform(-20, 300, (8, 9, 3))
    for op in PIXEL_OPS:
        assert not op.needed(ident), op.name
        assert np.array_equal(op.reference(v, ident, AugmentConfig()), v), op.name


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_per_sample_off_values_keep_exact_results(dtype):
    """An op in the kernel whose sample values are its identity changes nothing: the result
    equals the kernel without that op, bit for bit."""
    rng = np.random.default_rng(3)
    img = make_scene(rng, width=90, height=70, n_instances=3).image
    on = AugmentConfig(out_size=(48, 64), dtype=dtype, pad_value=300.0, rotate_deg=30,
                       hue_deg=30, brightness=0.2, contrast=0.2, noise_sigma=(1, 5),
                       shadow_prob=1.0)
    for op in PIXEL_OPS:
        p = sample_params(on, 4, 0, 1, 70, 90)
        values = {k: getattr(p, k) for name in BY_NAME for k in BY_NAME[name].values}
        values.update(op.identity())
        q = SampleParams(p.matrix, **values)
        without = AugmentConfig(**{**on.to_dict(), **op.off_values()})
        assert op in kernel_ops(on, q) and op not in kernel_ops(without, q)
        a = augment_image(img, q, on, np.empty((3, 48, 64), output_numpy_dtype(dtype)))
        b = augment_image(img, q, without, np.empty((3, 48, 64), output_numpy_dtype(dtype)))
        assert a.tobytes() == b.tobytes(), op.name


def test_hand_made_params_bring_their_op_into_the_kernel():
    """params needing an op that the config turns off still get it (as the reference does)."""
    cfg = AugmentConfig.off(out_size=(20, 30), dtype="uint8")
    img = np.full((20, 30, 3), 100, np.uint8)
    p = SampleParams(np.eye(3, dtype=np.float32), contrast=0.5, brightness=0.1)
    assert [op.name for op in kernel_ops(cfg, p)] == ["brightness_contrast"]
    out = augment_image(img, p, cfg, np.empty((3, 20, 30), np.uint8))
    assert (out == 176).all()  # 100 * 1.5 + 25.5 = 175.5, rounded half up
    assert np.array_equal(out, augment_image_reference(img, p, cfg))


def test_streams_are_independent_of_the_legacy_stream():
    legacy = np.random.Generator(np.random.Philox(key=np.array([5, (1 << 32) | 2], np.uint64)))
    own = stream_generator(5, 1, 2, BY_NAME["brightness_contrast"].stream)
    a, b = legacy.random(1000), own.random(1000)
    assert not np.isin(a, b).any()
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1
    again = stream_generator(5, 1, 2, BY_NAME["brightness_contrast"].stream).random(1000)
    assert np.array_equal(b, again)
