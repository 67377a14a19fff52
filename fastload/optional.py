"""Optional dependencies: a clear message naming the extra to install when one is missing.

    from fastload.optional import require
    dali = require("nvidia.dali", extra="dali", what="the DALI image backend")

The extras (``setup.cfg``): ``dali`` (NVIDIA DALI for CUDA 13, the GPU image backend and the
DALI CPU operators), ``masks`` (scikit-image: tracing mask PNGs and COCO crowd RLE into
polygons), ``bench`` (matplotlib and the comparison libraries of ``fastload bench``),
``ray`` (``fastload pack --engine ray``), ``remote`` (fsspec and aiohttp: datasets opened by
URL), ``all`` (every extra); ``dev`` adds the test tools to ``all``.
"""
from __future__ import annotations

import importlib


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def require(module: str, extra: str, what: str):
    """Import and return ``module``, or raise :class:`MissingDependency` saying that ``what``
    needs it and that ``pip install 'fastload[EXTRA]'`` installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        if e.name is not None and e.name != module and not e.name.startswith(top):
            raise  # the module is there but one of its own imports failed: show that
        raise MissingDependency(
            f"{what} needs the optional dependency {module!r}, which is not installed; "
            f"install it with: pip install 'fastload[{extra}]'") from None


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it twice on success)."""
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
