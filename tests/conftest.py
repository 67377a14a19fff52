import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tools/ importable

SHARED_DATA = ROOT.parent / "shared" / "data"
COCO_SAMPLE = SHARED_DATA / "coco-sample"


def has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


requires_gpu = pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")
requires_coco_sample = pytest.mark.skipif(not COCO_SAMPLE.exists(),
                                          reason=f"{COCO_SAMPLE} absent (only in the project's CI)")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
