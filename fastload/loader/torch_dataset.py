"""`fastload.TorchDataset`: the loader's samples as a map-style ``torch.utils.data.Dataset``."""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.utils.data

from fastload.augment.config import AugmentConfig
from fastload.targets.specs import resolve_targets
from fastload.warmup import loader_jobs, warm_up

from .backends import BackendContext, create_backend
from .device import DeviceStage, image_tensor
from .sample import IMAGE, SampleBuilder, SampleError, dataset_info, open_dataset

__all__ = ["TorchDataset"]


class TorchDataset(torch.utils.data.Dataset):
    """A map-style ``torch.utils.data.Dataset`` giving the same samples (CPU image path).

    ``ds[i]`` -> dict of CPU tensors for dataset index ``i`` at the current epoch (set with
    :meth:`set_epoch`): ``image`` (3,H,W), ``index`` (), ``num_instances`` (), and the
    instance keys unpadded (``boxes`` (n,4), ``labels`` (n,), ``ignore`` (n,), ``poly_points``
    (V,2), ``poly_lengths`` (P,), ``poly_instance`` (P,), ``keypoints`` (n,K,3)) plus the
    target keys without the batch dimension. Use it with
    ``torch.utils.data.DataLoader(tds, batch_size=..., collate_fn=fastload.loader.collate)``:
    the instance keys vary in size and need :func:`collate`; the other keys alone would
    stack with ``default_collate``. With ``num_workers > 0`` each worker calls
    ``set_epoch`` only if you do it before the workers start (``persistent_workers=False``).
    Constructing it compiles (or loads from Numba's cache) the kernels it uses
    (:mod:`fastload.warmup`), so that worker processes inherit them instead of each compiling.
    """

    def __init__(self, dataset, augment: Optional[AugmentConfig] = None, targets=(), seed: int = 0):
        self.dataset = open_dataset(dataset)
        self.augment = augment if augment is not None else AugmentConfig()
        self.info = dataset_info(self.dataset)
        self.targets = resolve_targets(targets, self.info)
        self._builder = SampleBuilder(self.dataset, self.augment, self.targets, self.info)
        self._buffers = DeviceStage(torch.device("cpu"), self.augment.dtype, self.augment.out_size,
                                    self._builder.fixed_shapes)
        self.seed = int(seed)
        self.epoch = 0
        self._backend = None  # the "cpu" image backend, one per (forked) process
        self._pid = None
        # compile (or load) the kernels now, before torch's workers fork: they inherit them
        warm_up(loader_jobs(self.augment, self.targets, backend="cpu"))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.dataset)

    def __getstate__(self):  # worker processes build their own backend
        state = dict(self.__dict__)
        state["_backend"] = state["_pid"] = None
        return state

    def __getitem__(self, i):
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        if self._backend is None or self._pid != os.getpid():
            ctx = BackendContext(self.augment, batch_size=1, num_threads=1,
                                 device=torch.device("cpu"), seed=self.seed)
            self._backend, self._pid = create_backend("cpu", ctx), os.getpid()
        fixed = self._buffers.target_buffers(1)
        sample, per = self._builder(i, self.epoch, self.seed, fixed)
        rec = sample.record
        images, errors = self._backend.submit([rec.image_bytes], [sample.params], [rec.file_name],
                                              [(int(rec.height), int(rec.width))]).result()
        if errors:
            raise SampleError(i, rec.id, rec.file_name, IMAGE, errors[0][1]) from errors[0][1]
        out = {"image": image_tensor(images, self.augment.dtype)[0],
               "index": torch.tensor(i, dtype=torch.int64),
               "num_instances": torch.tensor(per["labels"].shape[0], dtype=torch.int64)}
        for k, v in per.items():
            out[k] = torch.from_numpy(v)
        for k, v in fixed.items():
            out[k] = torch.from_numpy(v[0])
        return out
