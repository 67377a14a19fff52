"""``fastload pack``: a source dataset into LMDB shards plus ``manifest.json``.

    from fastload.packing import pack
    summary = pack("annotations/instances_train.json", "data/train", format="coco")

(also ``fastload.pack(...)``). See :mod:`fastload.packing.engine` for the steps, the
validation policy and the atomic publish.
"""
from fastload.packing.engine import (OVERSHOOT, POLICY_REASONS, PackError, PackSummary, pack,
                                     prepare_sample, validate_parts, validate_parts_reference)

__all__ = ["pack", "PackError", "PackSummary", "prepare_sample", "validate_parts",
           "validate_parts_reference", "OVERSHOOT", "POLICY_REASONS"]
