"""Random flat polygon sets for the target tests: concave, self-touching, multi-part."""
import numpy as np


def random_polygon(rng, cx, cy, r, kind):
    if kind == 0:  # concave star
        n = int(rng.integers(3, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.2, 1.0, n)
        return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
    if kind == 1:  # self-touching: two squares sharing one vertex (figure-eight)
        return np.array([[cx, cy], [cx + r, cy], [cx + r, cy + r], [cx, cy],
                         [cx - r, cy - r], [cx, cy - r]], float)
    if kind == 2:  # self-intersecting bow tie
        return np.array([[cx - r, cy - r], [cx + r, cy + r], [cx + r, cy - r], [cx - r, cy + r]], float)
    if kind == 3:  # axis-aligned rectangle on pixel edges
        x0, y0 = np.floor(cx), np.floor(cy)
        k = max(1.0, np.floor(r))
        return np.array([[x0, y0], [x0 + k, y0], [x0 + k, y0 + k], [x0, y0 + k]], float)
    return rng.uniform(-r, r, (int(rng.integers(1, 3)), 2)) + [cx, cy]  # degenerate (<3 pts)


def random_instances(rng, n, H, W, max_parts=3):
    pts, po, ip = [], [0], [0]
    for _ in range(n):
        for _ in range(int(rng.integers(1, max_parts + 1))):
            cx, cy = rng.uniform(-0.2, 1.2) * W, rng.uniform(-0.2, 1.2) * H
            r = rng.uniform(0.5, 0.6 * max(H, W))
            p = random_polygon(rng, cx, cy, r, int(rng.choice(5, p=[0.5, 0.15, 0.15, 0.15, 0.05])))
            pts.append(p)
            po.append(po[-1] + len(p))
        ip.append(len(po) - 1)
    points = np.concatenate(pts).astype(np.float32) if pts else np.zeros((0, 2), np.float32)
    return points, np.array(po, np.int32), np.array(ip, np.int32)
