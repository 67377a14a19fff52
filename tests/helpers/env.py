"""Where the tests' optional data lives, and the skip markers that depend on the machine."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# ../shared beside the checkout (CI, the main checkout); a worktree one level deeper finds
# the same folder two levels up
SHARED_DATA = next((p / "shared" / "data" for p in (ROOT.parent, ROOT.parent.parent)
                    if (p / "shared" / "data").is_dir()), ROOT.parent / "shared" / "data")
COCO_SAMPLE = SHARED_DATA / "coco-sample"
COCO128_SEG = SHARED_DATA / "coco128-seg"


def has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


requires_gpu = pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")
requires_coco_sample = pytest.mark.skipif(not COCO_SAMPLE.exists(),
                                          reason=f"{COCO_SAMPLE} absent (only in the project's CI)")
