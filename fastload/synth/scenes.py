"""Synthetic scenes: realistic-size images with polygon instances and keypoints.

Used by the tests and benchmarks (and by ``fastload bench`` when no dataset is
given). ``make_scene`` draws one image; the format writers (:mod:`fastload.synth.datasets`)
turn scenes into COCO / labelme / VIA / YOLO-seg / mask-PNG datasets on disk.

Coordinates follow DESIGN.md: continuous pixel coordinates, a pixel is inside a
polygon when its center is (PIL's polygon fill is used only for the picture; it is
close to that rule but not exact along edges).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ["person", "car", "dog", "bicycle", "bottle"]
KEYPOINT_NAMES = ["nose", "left_eye", "right_eye", "left_shoulder", "right_shoulder"]
FLIP_PAIRS = [(1, 2), (3, 4)]


@dataclass
class SceneInstance:
    label: int  # index into CLASSES
    polygons: List[np.ndarray]  # float32 (N, 2) parts, (x, y)
    keypoints: Optional[np.ndarray] = None  # float32 (K, 3)
    color: tuple = (255, 0, 0)


@dataclass
class Scene:
    image: np.ndarray  # HWC uint8 RGB
    instances: List[SceneInstance] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]


def random_polygon(rng: np.random.Generator, cx: float, cy: float, r: float,
                   n: Optional[int] = None, concave: bool = True) -> np.ndarray:
    """A star-shaped polygon around (cx, cy): vertices at sorted angles, radii jittered
    (concave when ``concave``). float32 (n, 2)."""
    n = int(n if n is not None else rng.integers(3, 24))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * (rng.uniform(0.45, 1.0, n) if concave else rng.uniform(0.85, 1.0, n))
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
    return pts.astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured background: smooth colour gradients plus blurred noise, so JPEG sizes
    are like photographs (tens of KB at 640x480), not like flat synthetic images."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        a, b, ph = rng.uniform(0.002, 0.02, 2).tolist() + [rng.uniform(0, 6.28)]
        img[..., c] = 128 + 70 * np.sin(a * xx + b * yy + ph)
    noise = Image.fromarray(rng.integers(0, 256, (h // 2, w // 2, 3), dtype=np.uint8))
    noise = noise.resize((w, h), Image.BILINEAR).filter(ImageFilter.GaussianBlur(1.0))
    img += (np.asarray(noise, np.float32) - 128) * 0.35
    return np.clip(img, 0, 255).astype(np.uint8)


def make_scene(rng: np.random.Generator, width: int = 640, height: int = 480,
               n_instances: Optional[int] = None, num_classes: int = len(CLASSES),
               keypoints: bool = False, multipart_prob: float = 0.15,
               unique_colors: bool = False) -> Scene:
    """Draw one scene.

    Instances are random concave polygons (3 to 23 vertices), some with two parts.
    With ``keypoints``, each instance gets ``len(KEYPOINT_NAMES)`` keypoints inside its
    first part, with COCO visibilities (0 unlabeled, 1 occluded, 2 visible); left/right
    pairs are placed so that left is at smaller x (the flip test relies on it).
    With ``unique_colors``, each instance is painted a distinct flat colour on a black
    background (for alignment tests); otherwise textured colours on a textured background.
    """
    n = int(n_instances if n_instances is not None else rng.integers(1, 9))
    if unique_colors:
        img = Image.new("RGB", (width, height), (0, 0, 0))
    else:
        img = Image.fromarray(_background(rng, height, width))
    draw = ImageDraw.Draw(img)
    insts: List[SceneInstance] = []
    for k in range(n):
        r = float(rng.uniform(0.05, 0.22) * min(width, height))
        cx = float(rng.uniform(r, width - r))
        cy = float(rng.uniform(r, height - r))
        parts = [random_polygon(rng, cx, cy, r)]
        if rng.random() < multipart_prob:
            r2 = r * 0.4
            cx2 = float(np.clip(cx + rng.uniform(-2, 2) * r, r2, width - r2))
            cy2 = float(np.clip(cy + rng.uniform(-2, 2) * r, r2, height - r2))
            parts.append(random_polygon(rng, cx2, cy2, r2, concave=False))
        if unique_colors:
            color = (int(40 + (k * 53) % 215), int(40 + (k * 97) % 215), int(40 + (k * 151) % 215))
        else:
            color = tuple(int(v) for v in rng.integers(0, 256, 3))
        for p in parts:
            draw.polygon([tuple(map(float, v)) for v in p], fill=color)
        kps = None
        if keypoints:
            K = len(KEYPOINT_NAMES)
            kps = np.zeros((K, 3), np.float32)
            base = parts[0].mean(0)
            # nose at the center, left/right pairs symmetric with left at smaller x
            offs = np.array([[0, -0.3], [-0.2, -0.4], [0.2, -0.4], [-0.35, 0.1], [0.35, 0.1]],
                            np.float32) * r * 0.6
            kps[:, :2] = base + offs
            kps[:, 2] = rng.choice([0, 1, 2, 2, 2], K).astype(np.float32)
            kps[kps[:, 2] == 0, :2] = 0.0  # COCO writes (0, 0, 0) for unlabeled keypoints
        insts.append(SceneInstance(label=int(rng.integers(0, num_classes)), polygons=parts,
                                   keypoints=kps, color=color))
    return Scene(image=np.asarray(img, np.uint8).copy(), instances=insts)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    import io
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


if __name__ == "__main__":
    s = make_scene(np.random.default_rng(0), keypoints=True)
    print(s.image.shape, len(s.instances), len(encode_jpeg(s.image)), "bytes as JPEG")
