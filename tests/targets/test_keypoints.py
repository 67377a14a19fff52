import numpy as np
import pytest

from fastload.targets import alloc_keypoints, gaussian_radius, keypoint_targets, keypoint_targets_into
from fastload.targets.reference import keypoints_reference


from tests.helpers.compare import assert_same


def random_case(rng, K, J, H, W):
    xy = rng.uniform(-0.2, 1.0, (K, 2)) * [W, H]
    wh = rng.exponential(0.3, (K, 2)) * [W, H]
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    kp = np.empty((K, J, 3), np.float32)
    kp[..., :2] = xy[:, None] + rng.uniform(-0.2, 1.2, (K, J, 2)) * wh[:, None]
    kp[..., 2] = rng.integers(0, 3, (K, J))
    if K:
        kp[0, 0, :2] = [W, H - 0.5]   # right border: outside
        kp[0, 1, :2] = [0, 0]         # top-left corner: inside
    return boxes, kp


@pytest.mark.parametrize("coords", ["continuous", "centernet"])
@pytest.mark.parametrize("radius", ["centernet", "corrected"])
def test_matches_reference(coords, radius):
    rng = np.random.default_rng(6)
    for t in range(30):
        K, J = int(rng.integers(0, 20)), int(rng.integers(1, 18))
        H, W = (int(v) for v in rng.integers(4, 40, 2))
        b, kp = random_case(rng, K, J, H, W)
        M = int(rng.integers(1, 16))
        kw = dict(max_objs=M, radius=radius, coords=coords)
        assert_same(keypoint_targets(b, kp, H, W, **kw), keypoints_reference(b, kp, H, W, **kw))


def test_semantics_and_into():
    b = np.array([[2, 2, 12, 12]], np.float32)
    kp = np.array([[[3.25, 4.5, 2], [20, 5, 2], [5, 5, 0]]], np.float32)
    o = keypoint_targets(b, kp, 16, 16, max_objs=4)
    assert o["hp_hm"].shape == (3, 16, 16)
    assert o["hp_hm"][0, 4, 3] == 1.0 and not o["hp_hm"][1:].any()
    assert o["hp_mask"].tolist() == [1, 0, 0] + [0] * 9
    assert o["hp_ind"][0] == 4 * 16 + 3
    np.testing.assert_array_equal(o["hp_offset"][0], [0.25, 0.5])
    np.testing.assert_array_equal(o["hp_kps"][0, :2], [3.25 - 7, 4.5 - 7])
    assert o["hp_kps_mask"][0].tolist() == [1, 1, 0, 0, 0, 0]
    r = int(gaussian_radius(10, 10))
    assert (o["hp_hm"][0] > 0).sum() == (2 * r + 1) ** 2
    out = alloc_keypoints(2, 3, 16, 16, max_objs=4)
    for v in out.values():
        v[...] = 5
    keypoint_targets_into(out, 1, b, kp)
    keypoint_targets_into(out, 0, np.zeros((0, 4), np.float32), np.zeros((0, 3, 3), np.float32))
    assert_same({k: out[k][1] for k in out}, o)
    assert not any(out[k][0].any() for k in out)
    keypoint_targets_into(out, 1, np.concatenate([b, b]), np.concatenate([kp, kp]))  # refill
    ref2 = keypoints_reference(np.concatenate([b, b]), np.concatenate([kp, kp]), 16, 16, max_objs=4)
    assert_same({k: out[k][1] for k in out}, ref2)
    assert not any(out[k][0].any() for k in out)


@pytest.mark.parametrize("kp, match", [
    (np.full((1, 2, 3), np.nan, np.float32), "NaN"),
    (np.zeros((2, 2, 3), np.float32), "keypoints must be"),
    (np.zeros((1, 2, 2), np.float32), "keypoints must be"),
])
def test_bad_input(kp, match):
    with pytest.raises(ValueError, match=match):
        keypoint_targets(np.array([[0, 0, 4, 4]], np.float32), kp, 8, 8)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("coords", ["continuous", "centernet"])
def test_msra_matches_reference(sigma, coords):
    from fastload.targets.keypoints import msra_heatmaps
    from fastload.targets.reference import msra_reference
    rng = np.random.default_rng(8)
    for t in range(15):
        K, J = int(rng.integers(0, 6)), int(rng.integers(1, 18))
        H, W = (int(v) for v in rng.integers(4, 48, 2))
        kp = np.empty((K, J, 3), np.float32)
        kp[..., 0] = rng.uniform(-10, W + 10, (K, J))
        kp[..., 1] = rng.uniform(-10, H + 10, (K, J))
        kp[..., 2] = rng.integers(0, 3, (K, J))
        hm, w = msra_heatmaps(kp, H, W, sigma, coords)
        rhm, rw = msra_reference(kp, H, W, sigma, coords)
        np.testing.assert_allclose(hm, rhm, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(w, rw)
    hm, w = msra_heatmaps(np.array([[[8.5, 6.2, 1]]], np.float32), 20, 16, 2.0)
    assert hm[0, 6, 8] == 1.0 and w[0, 0] == 1.0 and (hm[0] > 0).sum() == 13 * 13
