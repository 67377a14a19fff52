"""Keypoint targets of CenterNet's pose variant (``multi_pose``), as a Numba kernel.

Reproduces the keypoint part of ``xingyizhou/CenterNet``
``src/lib/datasets/sample/multi_pose.py`` (the center ``hm``/``wh``/``reg``/``ind``/
``reg_mask`` come from :func:`fastload.targets.centernet_targets`). Per object ``k < max_objs``
whose clipped box has ``h > 0`` and ``w > 0`` (clipping and ``coords`` exactly as in
:mod:`fastload.targets.centernet`):

- ``hp_radius = max(0, int(gaussian_radius((ceil(h), ceil(w)))))``, ``ct_int`` = the
  box center's cell;
- for each joint ``j`` with visibility ``> 0`` and ``0 <= x < W``, ``0 <= y < H``
  (keypoints are already in output-map coordinates): ``pt_int = int(pt)``,
  ``hp_kps[k, 2j:2j+2] = pt - ct_int``, ``hp_kps_mask[k, 2j:2j+2] = 1``,
  ``hp_offset[k*J + j] = pt - pt_int``, ``hp_ind[k*J + j] = pt_int_y * W + pt_int_x``,
  ``hp_mask[k*J + j] = 1``, and a gaussian of radius ``hp_radius`` drawn at ``pt_int``
  into ``hp_hm[j]`` (max merge), like ``hm_hp``.

Output names (CenterNet's in brackets): ``hp_hm`` (J, H, W) float32 [``hm_hp``],
``hp_offset`` (M*J, 2) float32, ``hp_ind`` (M*J,) int64, ``hp_mask`` (M*J,) uint8
[int64 in CenterNet], ``hp_kps`` (M, 2J) float32 [``hps``], ``hp_kps_mask`` (M, 2J)
uint8 [``hps_mask``].

In continuous coordinates ``int(pt) = floor(pt)`` is the cell containing the keypoint
and ``0 <= x < W`` is exactly "inside the map" (in CenterNet's integer-center
convention the same test is used). Not reproduced (they belong to the center heatmap
or to rotation augmentation in CenterNet's own loader): ``hm[cls, ct] = 0.9999`` and
``reg_mask = 0`` for objects without labelled keypoints, the dense ``dense_hps``
variant, and the ``rot != 0`` special cases.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._common import check_boxes, check_size, scratch
from .centernet import RADIUS_MODES, _modes, box_center_radius, draw_gaussian


@njit(nogil=True, cache=True)
def _kp_one(hp_hm, hp_offset, hp_ind, hp_mask, kps, kps_mask, boxes, keypoints, k0, k1,
            corrected, continuous, gbuf):
    J, H, W = hp_hm.shape
    M = kps.shape[0]
    hp_hm[:] = 0.0
    hp_offset[:] = 0.0
    hp_ind[:] = 0
    hp_mask[:] = 0
    kps[:] = 0.0
    kps_mask[:] = 0
    if continuous:
        xmax = np.float32(W)
        ymax = np.float32(H)
    else:
        xmax = np.float32(W - 1)
        ymax = np.float32(H - 1)
    n = min(k1 - k0, M)
    for k in range(n):
        w, h, ctx, cty, radius = box_center_radius(boxes, k0 + k, xmax, ymax, corrected)
        if radius < 0:
            continue
        cix = min(int(ctx), W - 1)
        ciy = min(int(cty), H - 1)
        for j in range(J):
            if not keypoints[k0 + k, j, 2] > 0:
                continue
            px = keypoints[k0 + k, j, 0]
            py = keypoints[k0 + k, j, 1]
            if not (px >= 0 and px < W and py >= 0 and py < H):
                continue
            ix = int(px)
            iy = int(py)
            kps[k, 2 * j] = px - np.float32(cix)
            kps[k, 2 * j + 1] = py - np.float32(ciy)
            kps_mask[k, 2 * j] = 1
            kps_mask[k, 2 * j + 1] = 1
            q = k * J + j
            hp_offset[q, 0] = px - np.float32(ix)
            hp_offset[q, 1] = py - np.float32(iy)
            hp_ind[q] = iy * W + ix
            hp_mask[q] = 1
            draw_gaussian(hp_hm[j], ix, iy, radius, gbuf)


KEYS = ("hp_hm", "hp_offset", "hp_ind", "hp_mask", "hp_kps", "hp_kps_mask")


def alloc_keypoints(batch: int, num_joints: int, out_h: int, out_w: int, max_objs: int = 128) -> dict:
    """Preallocated (B, ...) outputs for :func:`keypoint_targets_into`."""
    return {"hp_hm": np.zeros((batch, num_joints, out_h, out_w), np.float32),
            "hp_offset": np.zeros((batch, max_objs * num_joints, 2), np.float32),
            "hp_ind": np.zeros((batch, max_objs * num_joints), np.int64),
            "hp_mask": np.zeros((batch, max_objs * num_joints), np.uint8),
            "hp_kps": np.zeros((batch, max_objs, 2 * num_joints), np.float32),
            "hp_kps_mask": np.zeros((batch, max_objs, 2 * num_joints), np.uint8)}


def _check_out(out):
    try:
        arrs = [out[k] for k in KEYS]
    except (KeyError, TypeError):
        raise ValueError(f"out must be a dict with {KEYS} (see alloc_keypoints)") from None
    hm, off, ind, msk, kps, kmask = arrs
    ok = hm.ndim == 4 and hm.dtype == np.float32
    if ok:
        B, J = hm.shape[:2]
        M = kps.shape[1] if kps.ndim == 3 else -1
        ok = (off.shape == (B, M * J, 2) and off.dtype == np.float32 and ind.shape == (B, M * J)
              and ind.dtype == np.int64 and msk.shape == (B, M * J) and msk.dtype == np.uint8
              and kps.shape == (B, M, 2 * J) and kps.dtype == np.float32
              and kmask.shape == (B, M, 2 * J) and kmask.dtype == np.uint8)
    if not ok:
        raise ValueError("keypoint out arrays have wrong shapes/dtypes (see alloc_keypoints)")
    return arrs


def _check_kps(keypoints, n, J=None):
    kp = np.asarray(keypoints)
    if kp.size == 0 and n == 0 and J is not None:
        return np.zeros((0, J, 3), np.float32)
    if kp.dtype.kind not in "fiu" or kp.ndim != 3 or kp.shape[0] != n or kp.shape[2] != 3 \
            or (J is not None and kp.shape[1] != J):
        raise ValueError(f"keypoints must be a numeric ({n}, {J if J is not None else 'J'}, 3) "
                         f"array (x, y, visibility), got {kp.dtype} {kp.shape}")
    kp = np.ascontiguousarray(kp, np.float32)
    if kp.size and not np.isfinite(kp).all():
        raise ValueError("keypoints contains NaN or inf (use visibility 0 for missing points)")
    return kp


def keypoint_targets(boxes, keypoints, out_h: int, out_w: int, max_objs: int = 128,
                     radius: str = "centernet", coords: str = "continuous") -> dict:
    """CenterNet multi_pose keypoint targets of one image (allocates its outputs).

    ``boxes`` float (K, 4) and ``keypoints`` float (K, J, 3) (x, y, visibility) in
    output-map pixels (``coords``: "continuous", DESIGN.md, or "centernet", integer
    pixel centers). Returns the ``hp_*`` arrays described in the module docstring.
    """
    out_h = check_size("out_h", out_h)
    out_w = check_size("out_w", out_w)
    max_objs = check_size("max_objs", max_objs, 0)
    kp = np.asarray(keypoints)
    if kp.ndim != 3:
        raise ValueError(f"keypoints must have shape (K, J, 3), got {kp.shape}")
    out = alloc_keypoints(1, kp.shape[1], out_h, out_w, max_objs)
    keypoint_targets_into(out, 0, boxes, keypoints, radius=radius, coords=coords)
    return {k: v[0] for k, v in out.items()}


def keypoint_targets_into(out: dict, b: int, boxes, keypoints, radius: str = "centernet",
                          coords: str = "continuous") -> None:
    """Fill sample ``b`` of preallocated ``out`` (from :func:`alloc_keypoints`); no allocation once warm."""
    hm, off, ind, msk, kps, kmask = _check_out(out)
    corrected, continuous = _modes(radius, coords)
    if not (0 <= b < hm.shape[0]):
        raise ValueError(f"sample index b={b} out of range for batch of {hm.shape[0]}")
    bx = check_boxes(boxes)
    kp = _check_kps(keypoints, bx.shape[0], hm.shape[1])
    gbuf = scratch("centernet_g", hm.shape[2] + hm.shape[3] + 2, np.float64)
    _kp_one(hm[b], off[b], ind[b], msk[b], kps[b], kmask[b], bx, kp, 0, bx.shape[0],
            corrected, continuous, gbuf)


# ----------------------------------------------------------------------------- MSRA
@njit(nogil=True, cache=True)
def _msra_kernel(hm, weight, keypoints, sigma, continuous):
    """``draw_msra_gaussian`` of CenterNet's utils/image.py per visible joint, max-merged."""
    J, H, W = hm.shape
    hm[:] = 0.0
    tmp_size = sigma * 3.0
    size = 2.0 * tmp_size + 1.0
    n = int(math.ceil(size))               # len(np.arange(0, size))
    c0 = math.floor(size / 2.0)            # size // 2
    two_ss = 2.0 * sigma * sigma
    for k in range(keypoints.shape[0]):
        for j in range(J):
            weight[k, j] = 0.0
            if not keypoints[k, j, 2] > 0:
                continue
            if continuous:
                mu_x = int(keypoints[k, j, 0])
                mu_y = int(keypoints[k, j, 1])
            else:
                mu_x = int(keypoints[k, j, 0] + np.float32(0.5))
                mu_y = int(keypoints[k, j, 1] + np.float32(0.5))
            ul_x = int(mu_x - tmp_size)
            ul_y = int(mu_y - tmp_size)
            br_x = int(mu_x + tmp_size + 1)
            br_y = int(mu_y + tmp_size + 1)
            if ul_x >= W or ul_y >= H or br_x < 0 or br_y < 0:
                continue
            weight[k, j] = 1.0
            for yy in range(max(0, ul_y), min(br_y, H)):
                gy = yy - ul_y
                if gy >= n:
                    break
                dy = gy - c0
                row = hm[j, yy]
                for xx in range(max(0, ul_x), min(br_x, W)):
                    gx = xx - ul_x
                    if gx >= n:
                        break
                    dx = gx - c0
                    g = np.float32(math.exp(-(dx * dx + dy * dy) / two_ss))
                    if g > row[xx]:
                        row[xx] = g


def msra_heatmaps(keypoints, out_h: int, out_w: int, sigma: float = 2.0,
                  coords: str = "continuous", out=None, weight_out=None):
    """MSRA / SimpleBaseline-style keypoint heatmaps: one fixed-sigma gaussian per joint.

    Reproduces ``draw_msra_gaussian`` (CenterNet ``utils/image.py``, the same drawing as
    HRNet's ``generate_target``): ``mu = int(x + 0.5)`` in integer-pixel-center
    coordinates (``coords="centernet"``), i.e. ``mu = int(x)`` -- the cell containing the
    point -- for continuous coordinates (default); a window ``[mu - 3 sigma, mu + 3 sigma]``
    of ``exp(-d^2 / (2 sigma^2))``, clipped at the borders; several people max-merged.
    Exact for sigmas with integer ``3 * sigma`` (1, 2, 3, ...).

    ``keypoints`` float (K, J, 3) (x, y, visibility) in heatmap pixels. Returns
    ``(hp_msra (J, out_h, out_w) float32, hp_msra_weight (K, J) float32)``: weight 1 for a
    visible joint whose window touches the map, else 0 (HRNet's ``target_weight``).
    """
    out_h = check_size("out_h", out_h)
    out_w = check_size("out_w", out_w)
    s = float(sigma)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    _, continuous = _modes("centernet", coords)
    kp = np.asarray(keypoints)
    if kp.ndim != 3:
        raise ValueError(f"keypoints must have shape (K, J, 3), got {kp.shape}")
    kp = _check_kps(kp, kp.shape[0], kp.shape[1])
    K, J = kp.shape[:2]
    if out is None:
        out = np.empty((J, out_h, out_w), np.float32)
    elif out.shape != (J, out_h, out_w) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 ({J}, {out_h}, {out_w}), got {out.dtype} {out.shape}")
    if weight_out is None:
        weight_out = np.empty((K, J), np.float32)
    elif weight_out.shape != (K, J) or weight_out.dtype != np.float32:
        raise ValueError(f"weight_out must be float32 ({K}, {J})")
    _msra_kernel(out, weight_out, kp, s, continuous)
    return out, weight_out


__all__ = ["keypoint_targets", "keypoint_targets_into", "alloc_keypoints", "msra_heatmaps", "KEYS",
           "RADIUS_MODES"]
