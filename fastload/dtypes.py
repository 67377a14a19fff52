"""The one dtype map: names of output dtypes, NumPy dtypes and torch dtypes.

- :data:`OUTPUT_DTYPES`: the names ``AugmentConfig.dtype`` accepts;
- :func:`output_numpy_dtype`: the NumPy dtype the CPU image backend writes for a name
  (bfloat16 is not a NumPy dtype: float32, converted by torch afterwards);
- :func:`output_torch_dtype`: the torch dtype of the loader's ``image`` for a name;
- :func:`torch_dtype`: the torch dtype of a NumPy dtype (target arrays).
"""
from __future__ import annotations

import numpy as np

OUTPUT_DTYPES = ("float32", "float16", "bfloat16", "uint8")

_NUMPY_OUT = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
              "bfloat16": np.dtype(np.float32), "uint8": np.dtype(np.uint8)}


def output_numpy_dtype(name: str) -> np.dtype:
    """NumPy dtype written for output dtype ``name`` (bfloat16 -> float32, see module doc)."""
    try:
        return _NUMPY_OUT[name]
    except KeyError:
        raise ValueError(f"dtype must be one of {OUTPUT_DTYPES}, got {name!r}") from None


def output_torch_dtype(name: str):
    """torch dtype of the delivered image for output dtype ``name``."""
    import torch
    if name not in _NUMPY_OUT:
        raise ValueError(f"dtype must be one of {OUTPUT_DTYPES}, got {name!r}")
    return getattr(torch, name)


def torch_dtype(dt):
    """torch dtype of a NumPy dtype (``np.float32`` -> ``torch.float32``; bool -> torch.bool)."""
    import torch
    dt = np.dtype(dt)
    if dt == np.bool_:
        return torch.bool
    try:
        return getattr(torch, dt.name)
    except AttributeError:
        raise ValueError(f"no torch dtype for NumPy dtype {dt}") from None
