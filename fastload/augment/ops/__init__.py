"""The op table: every augmentation op, one module each, in application order.

Each module of this package (other than ``base``) defines one :class:`~.base.Op` named
``OP``; :data:`OPS` holds them sorted by ``order``. ``AugmentConfig``, ``SampleParams``
and the parameter sampler (``fastload.augment.params``), the fused CPU kernel
(``fastload.augment.fused``), the DALI graph (``fastload.augment.dali``) and the reference
pipeline (``fastload.augment.cpu.augment_image_reference``) are all built from it, so
adding an op is adding a module here (``docs/extending.md``).

Today, in order: ``affine`` (0: flips, rotation, scale, translation; composes the matrix
that the warp applies first), ``hue`` (10), ``brightness_contrast`` (20), ``shadow`` (30),
``noise`` (40); then clamp + normalize.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Dict, Tuple

from fastload.augment.ops.base import Op


def _discover() -> Tuple[Op, ...]:
    ops = []
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        op = getattr(module, "OP", None)
        if not isinstance(op, Op):
            raise ImportError(f"{module.__file__}: an op module must define OP, an instance "
                              f"of fastload.augment.ops.base.Op")
        if op.name != info.name:
            raise ImportError(f"{module.__file__}: OP.name is {op.name!r}; name the module "
                              f"after its op")
        ops.append(op)
    ops.sort(key=lambda op: op.order)
    _check_table(ops)
    return tuple(ops)


def _check_table(ops) -> None:
    seen_order: Dict[int, str] = {}
    seen_field: Dict[str, str] = {}
    seen_value: Dict[str, str] = {"matrix": "the sampler"}
    for op in ops:
        if op.order in seen_order:
            raise ImportError(f"ops {seen_order[op.order]!r} and {op.name!r} both have "
                              f"order {op.order}")
        seen_order[op.order] = op.name
        for f in op.fields:
            if f.name in seen_field:
                raise ImportError(f"config field {f.name!r} declared by both "
                                  f"{seen_field[f.name]!r} and {op.name!r}")
            seen_field[f.name] = op.name
        for v in op.values:
            if v in seen_value:
                raise ImportError(f"sample value {v!r} declared by both {seen_value[v]!r} and "
                                  f"{op.name!r}")
            seen_value[v] = op.name
        if op.pixel is None and not op.moves_coordinates:
            raise ImportError(f"op {op.name!r} neither moves coordinates nor has a pixel piece")
    legacy = sorted((op.legacy_uniforms for op in ops if op.legacy_uniforms is not None),
                    key=lambda s: s.start)
    end = 0
    for s in legacy:
        if s.start != end or s.stop <= s.start:
            raise ImportError(f"the legacy uniform slices must tile one block: {legacy}")
        end = s.stop


OPS: Tuple[Op, ...] = _discover()
BY_NAME: Dict[str, Op] = {op.name: op for op in OPS}
PIXEL_OPS: Tuple[Op, ...] = tuple(op for op in OPS if op.pixel is not None)
GEOMETRIC_OPS: Tuple[Op, ...] = tuple(op for op in OPS if op.moves_coordinates)
