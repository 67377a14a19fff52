"""Benchmarks of fastload side by side with torch's DataLoader and with the limits.

Modules: :mod:`.baseline` (the torch DataLoader baselines and the one PIL/NumPy
augmentation baseline), :mod:`.data` (locating the COCO files), :mod:`.runner` (one row,
one process), :mod:`.suite` (the command's work), :mod:`.report` (table, JSON, chart).
See docs/bench.md.
"""
from __future__ import annotations

DEFAULT_SECONDS = 6.0
DEFAULT_IMAGES = 128
DEFAULT_ROWS = "torch-seed,torch-numpy,fastload-cpu,fastload-gpu,bounds"
