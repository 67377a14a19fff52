"""``fastload demo``: make a small synthetic COCO dataset, pack it, show it, load it.

    fastload demo [--dir DIR] [--n 64] [--keypoints]

Writes ``DIR/src`` (COCO JSON + 640x480 JPEGs from :mod:`fastload.synth`), packs it
into ``DIR/packed``, prints ``fastload info``, and iterates two epochs of
``fastload.DataLoader(DIR/packed, batch_size=8, device="cpu")``. On a fresh install the first
epoch includes the one-time compilation of fastload's Numba kernels (Numba's on-disk cache
keeps them for later runs; ``fastload warmup`` compiles them ahead of time), so it is slower
only then.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def run_demo(directory=None, n: int = 64, keypoints: bool = False, out=print) -> int:
    from fastload.packing import pack
    from fastload.store import format_info
    from fastload.synth import write_dataset
    d = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="fastload-demo-"))
    src, packed = d / "src", d / "packed"
    t0 = time.perf_counter()
    scenes = write_dataset(src, "coco", n_images=n, keypoints=keypoints)
    out(f"wrote {len(scenes)} synthetic 640x480 images "
        f"({sum(len(s.instances) for s in scenes)} instances) as COCO to {src} "
        f"in {time.perf_counter() - t0:.1f} s")
    summary = pack(src, packed, "coco", overwrite=True, progress=False)
    out(str(summary))
    out("")
    out(format_info(packed))
    out("")
    from fastload.loader import DataLoader

    loader = DataLoader(str(packed), batch_size=8, device="cpu")
    for epoch in range(2):
        loader.set_epoch(epoch)
        t0 = time.perf_counter()
        n_img = 0
        for batch in loader:
            n_img += int(batch["image"].shape[0])
        dt = time.perf_counter() - t0
        note = (" (on a fresh install, this includes compiling the Numba kernels once; "
                "`fastload warmup` does it ahead of time)" if epoch == 0 else "")
        out(f"epoch {epoch}: {n_img} images in {dt:.2f} s, {n_img / max(dt, 1e-9):.0f} images/s, "
            f"batch image {tuple(batch['image'].shape)} {batch['image'].dtype}{note}")
    return 0
