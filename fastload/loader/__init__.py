"""The loader: ``fastload.DataLoader`` as a chain of stages (see docs/loader.md).

Data flow of one batch (DESIGN.md)::

    EpochPlan (seed, epoch, rank, shuffle)  -> this rank's batches of indices    [sampling]
      -> SampleBuilder.read: record, SampleParams from (seed, epoch, index)      [sample]
         (thread pool, one batch ahead)
      -> image backend: submit(encoded, params) ... result()                     [backends]
         ("cpu": fused Numba per sample on the pool; "dali": the DALI graph)
      || SampleBuilder.annotate: moved instances + targets (pool, Numba, no GIL) [sample]
      -> padded / stacked batch dict                                             [collate]
      -> pinned host buffers, copy on the loader's CUDA stream, hand-off event   [device]

:class:`Producer` (a daemon thread, handed the stages as a :class:`BatchMaker`) builds
batches ``prefetch`` ahead into a bounded queue while the training loop consumes, across
epoch boundaries; :class:`DataLoader` holds the configuration, the position (one
:class:`EpochPlan`) and the resources (pool, backend, producer slot: ``resources``).
Everything is a thread (no worker processes): no copy-on-read growth; a process that forks
gets its own threads on its first use of the loader. Coordinates in the batch dict are continuous output pixel
coordinates (pixel (i, j) covers [j, j+1) x [i, i+1)), see DESIGN.md.
"""
from .collate import INSTANCE_KEYS, PAD_VALUES, collate
from .dataloader import DataLoader
from .sample import SampleError
from .sampling import EpochPlan, epoch_indices
from .torch_dataset import TorchDataset

__all__ = ["DataLoader", "TorchDataset", "SampleError", "collate", "epoch_indices", "EpochPlan",
           "INSTANCE_KEYS", "PAD_VALUES"]
