import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `tests.helpers` and tools/ importable


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
