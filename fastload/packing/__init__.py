"""``fastload pack``: a source dataset into LMDB shards plus ``manifest.json``.

    from fastload.packing import pack
    summary = pack("annotations/instances_train.json", "data/train", format="coco")

(also ``fastload.pack(...)``). Modules: :mod:`~fastload.packing.engine` (``pack``: reader,
workers, shard writing, summary, manifest), :mod:`~fastload.packing.validate` (the one
validation policy and the record encoding of a sample), :mod:`~fastload.packing.publish`
(the temp folder and the atomic rename to OUT, what OUT may be, its lock, the restore after
a killed publish).
"""
from fastload.packing.engine import POLICY_REASONS, PackError, PackSummary, pack
from fastload.packing.validate import (OVERSHOOT, prepare_sample, validate_parts,
                                       validate_parts_reference)

__all__ = ["pack", "PackError", "PackSummary", "prepare_sample", "validate_parts",
           "validate_parts_reference", "OVERSHOOT", "POLICY_REASONS"]
