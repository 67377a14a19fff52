import pytest

from fastload.packing import pack
from fastload.synth.datasets import write_dataset


@pytest.fixture(scope="package")
def packed(tmp_path_factory):
    """23 synthetic COCO images packed into 5 shards of 5 (the last one 3): (OUT, scenes)."""
    root = tmp_path_factory.mktemp("store")
    scenes = write_dataset(root / "src", "coco", n_images=23, width=96, height=64, seed=3)
    pack(root / "src", root / "out", "coco", shard_size=5, workers=1, progress=False)
    return root / "out", scenes
