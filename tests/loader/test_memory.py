"""Memory stays flat over many epochs (bounded queues, no per-epoch leaks)."""
import gc

import pytest

from tests.helpers.data import blob_dataset
from fastload.augment.config import AugmentConfig
from fastload.loader import DataLoader


def _rss_mb():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc")
def test_rss_flat_over_20_epochs():
    ds = blob_dataset(8, width=128, height=96)
    ld = DataLoader(ds, batch_size=4, shuffle=True, augment=AugmentConfig(out_size=(96, 96)),
                    targets=["centernet", "masks"], num_threads=2, prefetch=2)
    rss = []
    for epoch in range(20):
        ld.set_epoch(epoch)
        for i, b in enumerate(ld):
            if i == 0 and epoch % 2:
                break  # abandoned epochs must not leak either
        del b
        gc.collect()
        rss.append(_rss_mb())
    growth = max(rss[3:]) - rss[2]
    assert growth < 50, f"RSS grew {growth:.1f} MB after epoch 3: {[round(r) for r in rss]}"
