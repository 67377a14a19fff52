"""Benchmarks of fastload side by side with torch's DataLoader and with the limits.

Modules: :mod:`.pil_baseline` (the seed's pipeline: PIL/NumPy augmentation, the one
``pil_numpy_augment``), :mod:`.albumentations_baseline` (the peer: albumentations/OpenCV,
reusable as a training loader), :mod:`.torch_data` (what both share: reading a pack in
workers, boxes, sampler, collate), :mod:`.data` (the packed dataset a run measures),
:mod:`.runner` (one row, one process), :mod:`.alternate` (rows in alternating windows),
:mod:`.suite` (the command), :mod:`.megapixels` (images/s against source size),
:mod:`.stages` (where the time goes per image), :mod:`.report` (tables, JSON, charts),
:mod:`.proctree` (/proc process trees). See docs/bench.md.
"""
from __future__ import annotations

DEFAULT_SECONDS = 6.0
DEFAULT_WINDOWS = 4
DEFAULT_BATCH = 32
DEFAULT_IMAGES = 128
DEFAULT_ROWS = "torch-seed,torch-numpy,albumentations,fastload-cpu,fastload-gpu,bounds"
MEGAPIXEL_SIZES = "640x480,1920x1080,4000x3000"
MEGAPIXEL_ROWS = "torch-seed,albumentations,fastload-cpu"
MEGAPIXEL_BATCH = 8
MEGAPIXEL_IMAGES = 16
