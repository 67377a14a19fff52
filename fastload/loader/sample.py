"""One sample's annotation side: record -> augmentation parameters -> moved instances -> targets.

:class:`SampleBuilder` is the per-sample flow of the loader in one place (the role of
detectron2's ``DatasetMapper``); its ``__call__`` reads as the four steps::

    record    = self.record(index)                                 # 1. read
    params    = self.params(index, record, epoch, seed)            # 2. draw parameters
    instances = self.move(index, record, params)                   # 3. move the annotations
    arrays    = self.targets(index, record, instances, views)      # 4. build the targets

The image of the sample is augmented by the image backend (:mod:`.backends`) from the
record's bytes and the same ``params``; because a backend may work on a whole batch, the
producer runs steps 1-2 (:meth:`SampleBuilder.read`) one batch ahead, hands the images to
the backend, and runs steps 3-4 (:meth:`SampleBuilder.annotate`) on the thread pool while
the backend works. Every step is thread-safe and a function of (dataset, config, seed,
epoch, index) only.

A failure in any step raises :class:`SampleError` naming the dataset index, the record id,
the source file and the stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from fastload.augment.config import AugmentConfig
from fastload.targets.specs import DatasetInfo, TargetSpec

__all__ = ["SampleError", "Sample", "SampleBuilder", "open_dataset", "dataset_info",
           "record_location"]


class SampleError(ValueError):
    """Reading, decoding, augmenting or building targets for one sample failed.

    Attributes: ``index`` (dataset index), ``sample_id`` (record id or None),
    ``file_name`` (record's source file or None), ``stage`` ("reading the record",
    "drawing augmentation parameters", "decoding / augmenting the image", "moving the
    annotations", "building targets").
    """

    def __init__(self, index, sample_id, file_name, stage, cause):
        self.index, self.sample_id, self.file_name, self.stage = index, sample_id, file_name, stage
        where = f"sample index {index}"
        if sample_id is not None:
            where += f" (id {sample_id}, file {file_name!r})"
        elif file_name is not None:
            where += f" (in {file_name})"
        super().__init__(f"fastload: {where} failed while {stage}: "
                         f"{type(cause).__name__}: {cause}")


#: stage names used in :class:`SampleError` messages
READ, PARAMS, IMAGE, MOVE, TARGETS = ("reading the record", "drawing augmentation parameters",
                                      "decoding / augmenting the image", "moving the annotations",
                                      "building targets")


def open_dataset(dataset):
    """A packed directory path -> :class:`fastload.Dataset`; anything with ``len()`` and
    ``[i] -> Record`` is used as it is."""
    if isinstance(dataset, (str, Path)):
        from fastload.store import Dataset
        return Dataset(dataset)
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError("dataset must be a packed directory path or a fastload.Dataset "
                        f"(anything with len() and [i] -> Record), got {type(dataset).__name__}")
    return dataset


def dataset_info(ds) -> DatasetInfo:
    """What the target specs need from a dataset (its optional ``classes``,
    ``keypoint_names`` and ``flip_pairs``)."""
    classes = list(getattr(ds, "classes", None) or [])
    kp_names = list(getattr(ds, "keypoint_names", None) or [])
    flip_pairs = [tuple(p) for p in (getattr(ds, "flip_pairs", None) or [])]
    return DatasetInfo(num_classes=len(classes), classes=classes,
                       num_keypoints=len(kp_names), flip_pairs=flip_pairs)


def record_location(ds, index: int) -> Optional[str]:
    """Where record ``index`` lives, for an error about a record that cannot be read:
    "SHARD_FILE, record POS" for a packed :class:`fastload.Dataset`
    (:meth:`fastload.store.Dataset.record_location`), else the dataset's ``path``, else None."""
    from fastload.store import Dataset
    if isinstance(ds, Dataset):
        try:
            return ds.record_location(int(index))
        except IndexError:
            pass
    path = getattr(ds, "path", None)
    return None if path is None else str(path)


@dataclass
class Sample:
    """A sample on its way through the loader: its dataset index, record and parameters."""
    index: int
    record: object  # fastload.record.Record
    params: object  # fastload.augment.params.SampleParams


class SampleBuilder:
    """The annotation side of one sample (see the module docstring); thread-safe.

    ``fixed_shapes``: target key -> (per-sample shape, NumPy dtype) of the fixed-size target
    arrays, which the caller allocates per batch (see :class:`.device.DeviceStage`) and
    passes as per-sample views ``{key: batch_array[b:b + 1]}``.
    """

    def __init__(self, dataset, cfg: AugmentConfig, specs: List[TargetSpec], info: DatasetInfo):
        self.dataset, self.cfg, self.specs, self.info = dataset, cfg, list(specs), info
        self.out_size = cfg.out_size
        self.flip_pairs = info.flip_pairs or None
        self.fixed_shapes: Dict[str, Tuple[tuple, np.dtype]] = {}
        for s in self.specs:
            for k, (shape, dt) in s.fixed_shapes(self.out_size).items():
                self.fixed_shapes[k] = (tuple(shape), np.dtype(dt))

    def __call__(self, index: int, epoch: int, seed: int,
                 views: Dict[str, np.ndarray]) -> Tuple[Sample, Dict[str, np.ndarray]]:
        """The whole flow: -> (the Sample, its variable-size arrays); ``views`` are filled."""
        record = self.record(index)
        params = self.params(index, record, epoch, seed)
        instances = self.move(index, record, params)
        arrays = self.targets(index, record, instances, views)
        return Sample(int(index), record, params), arrays

    # ---------------------------------------------------------------- the two halves
    def read(self, index: int, epoch: int, seed: int) -> Sample:
        """Steps 1-2: the record and its augmentation parameters."""
        record = self.record(index)
        return Sample(int(index), record, self.params(index, record, epoch, seed))

    def annotate(self, sample: Sample, views: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Steps 3-4: move the sample's instances, fill ``views``, return the variable-size
        arrays."""
        instances = self.move(sample.index, sample.record, sample.params)
        return self.targets(sample.index, sample.record, instances, views)

    # ---------------------------------------------------------------- the steps
    def record(self, index: int):
        try:
            return self.dataset[int(index)]
        except Exception as e:
            raise SampleError(index, None, record_location(self.dataset, index), READ, e) from e

    def params(self, index: int, record, epoch: int, seed: int):
        from fastload.augment.params import sample_params
        try:
            return sample_params(self.cfg, int(seed), int(epoch), int(index),
                                 int(record.height), int(record.width))
        except Exception as e:
            raise SampleError(index, record.id, record.file_name, PARAMS, e) from e

    def move(self, index: int, record, params):
        """The record's instances moved by the sample's matrix, clipped, filtered
        (``fastload.augment.geometry.transform_instances``)."""
        from fastload.augment.geometry import transform_instances
        try:
            return transform_instances(record, params, self.out_size, self.cfg.min_visible,
                                       self.flip_pairs)
        except Exception as e:
            raise SampleError(index, record.id, record.file_name, MOVE, e) from e

    def targets(self, index: int, record, inst, views: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The variable-size arrays of the batch dict (boxes, labels, ignore, polygons,
        keypoints) and the specs' outputs: fixed-size ones written into ``views``,
        variable-size ones returned."""
        out = self._instance_arrays(inst)
        try:
            for s in self.specs:
                extra = s.fill(views, inst, self.out_size)
                if extra:
                    out.update(extra)
        except Exception as e:
            raise SampleError(index, record.id, record.file_name, TARGETS, e) from e
        return out

    def _instance_arrays(self, inst) -> Dict[str, np.ndarray]:
        n = int(inst.labels.shape[0])
        nparts = np.diff(np.asarray(inst.inst_parts)).astype(np.int64)
        out = {
            "boxes": np.asarray(inst.boxes, np.float32).reshape(n, 4),
            "labels": np.asarray(inst.labels, np.int64),
            "ignore": np.asarray(inst.ignore, bool),
            "poly_points": np.asarray(inst.points, np.float32).reshape(-1, 2),
            "poly_lengths": np.diff(np.asarray(inst.part_offsets)).astype(np.int64),
            "poly_instance": np.repeat(np.arange(n, dtype=np.int64), nparts),
        }
        k = self.info.num_keypoints
        if inst.keypoints is not None or k:
            kk = k or int(inst.keypoints.shape[1])
            kp = np.zeros((n, kk, 3), np.float32)
            if inst.keypoints is not None:
                kc = min(kk, int(inst.keypoints.shape[1]))
                kp[:, :kc] = inst.keypoints[:, :kc]
            out["keypoints"] = kp
        return out
