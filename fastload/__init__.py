"""fastload: keep GPUs fed while training detection, segmentation and keypoint CNNs.

    import fastload
    loader = fastload.DataLoader("data/packed", batch_size=32, shuffle=True,
                                 augment=fastload.AugmentConfig(out_size=(512, 512)),
                                 targets=["centernet"])
    for batch in loader:          # dict of torch tensors on the device
        ...

See README.md for the CLI (`fastload pack`, `info`, `verify`, `bench`, `inspect`).
"""
__version__ = "0.1.0"

_LAZY = {
    "Dataset": "fastload.store",
    "Record": "fastload.record",
    "Instance": "fastload.record",
    "AugmentConfig": "fastload.augment.config",
    "DataLoader": "fastload.loader",
    "TorchDataset": "fastload.loader",
    "pack": "fastload.packing",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):  # lazy so that `import fastload` stays cheap (no DALI/torch import)
    if name in _LAZY:
        import importlib
        mod = importlib.import_module(_LAZY[name])
        return getattr(mod, name)
    raise AttributeError(f"module 'fastload' has no attribute {name!r}")
