"""Per-sample outputs -> the batch dict (padding of the variable-size keys, stacking).

Batch dict (docs/loader.md has the table):

- ``image`` (B,3,H,W) ``cfg.dtype``; ``index`` (B,) int64 dataset indices
- ``num_instances`` (B,) int64; ``boxes`` (B,M,4) float32 x1,y1,x2,y2 (0-padded);
  ``labels`` (B,M) int64 (-1 padded); ``ignore`` (B,M) bool
- ``poly_points`` (B,V,2) float32, each sample's part vertices concatenated, 0-padded;
  ``poly_lengths`` (B,P) int64 vertices per part (0-padded); ``poly_instance`` (B,P) int64
  instance of each part (-1 padded)
- ``keypoints`` (B,M,K,3) float32 when the dataset has keypoints
- one set of keys per target spec (see :mod:`fastload.targets.specs`).

M, V and P are the maxima over the batch (at least 0).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

__all__ = ["INSTANCE_KEYS", "PAD_VALUES", "pad_stack", "batch_arrays", "collate"]

#: keys whose first dimension varies per sample and is padded by :func:`collate`
INSTANCE_KEYS = ("boxes", "labels", "ignore", "keypoints", "poly_points", "poly_lengths",
                 "poly_instance", "inst_masks")
#: pad value of each variable-size key (0 / False otherwise)
PAD_VALUES = {"labels": -1, "poly_instance": -1}


def pad_stack(arrays: List[np.ndarray], pad) -> np.ndarray:
    """Stack arrays that differ in their first dimension, padding it to the maximum."""
    m = max((a.shape[0] for a in arrays), default=0)
    a0 = arrays[0]
    out = np.full((len(arrays), m) + a0.shape[1:], pad, dtype=a0.dtype)
    for b, a in enumerate(arrays):
        out[b, :a.shape[0]] = a
    return out


def batch_arrays(indices: Sequence[int], per_sample: List[Dict[str, np.ndarray]],
                 fixed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The batch dict's host arrays except ``image``: ``index``, ``num_instances``, every
    per-sample key (instance keys padded, other per-sample keys stacked) and the fixed-size
    target arrays ``fixed`` (already (B, ...))."""
    out: Dict[str, Any] = {
        "index": np.asarray(indices, np.int64),
        "num_instances": np.asarray([s["labels"].shape[0] for s in per_sample], np.int64),
    }
    var_keys = list(dict.fromkeys(k for s in per_sample for k in s if k not in fixed))
    for k in var_keys:
        like = next(s[k] for s in per_sample if k in s)
        arrs = [s[k] if k in s else  # e.g. keypoints absent from some records
                np.zeros((s["labels"].shape[0],) + like.shape[1:], like.dtype) for s in per_sample]
        if k not in INSTANCE_KEYS:  # FunctionTarget outputs: same shape every sample
            shapes = {a.shape for a in arrs}
            if len(shapes) > 1:
                raise ValueError(f"target key {k!r} has different shapes across samples "
                                 f"{sorted(shapes)}; a FunctionTarget must return fixed shapes")
            out[k] = np.stack(arrs)
        else:
            out[k] = pad_stack(arrs, PAD_VALUES.get(k, 0))
    out.update(fixed)
    return out


def collate(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Collate per-sample dicts of CPU tensors (from :class:`TorchDataset`) into a batch dict.

    Use as ``torch.utils.data.DataLoader(TorchDataset(...), collate_fn=fastload.loader.collate)``.
    Keys in :data:`INSTANCE_KEYS` have a per-sample first dimension and are padded to the
    batch maximum (with :data:`PAD_VALUES`, else 0); every other key is stacked
    (``default_collate`` would do for those alone). The result has the layout of a
    :class:`DataLoader` batch.
    """
    import torch
    if not samples:
        raise ValueError("collate: empty list of samples")
    out = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        vals = [v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)) for v in vals]
        if key in INSTANCE_KEYS:
            m = max(v.shape[0] for v in vals)
            t = torch.full((len(vals), m) + tuple(vals[0].shape[1:]), PAD_VALUES.get(key, 0),
                           dtype=vals[0].dtype)
            for b, v in enumerate(vals):
                t[b, :v.shape[0]] = v
            out[key] = t
        else:
            out[key] = torch.stack(vals)
    return out
