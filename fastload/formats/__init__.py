"""Input-format readers for ``fastload pack``.

Each reader module exposes ``read(src: Path, **options) -> SourceDataset``
(:mod:`fastload.formats.base`). Readers only parse; ``fastload.pack`` validates every
sample with one policy for all formats. Options a reader does not know are ignored.
"""
from __future__ import annotations

import importlib
import inspect

READERS = {
    "coco": "fastload.formats.coco",
    "labelme": "fastload.formats.labelme",
    "via": "fastload.formats.via",
    "yolo": "fastload.formats.yolo",
    "masks": "fastload.formats.masks",
}


def get_reader(name: str):
    """The reader module for format ``name`` (one of :data:`READERS`); a clear
    ``ValueError`` for unknown names."""
    if name not in READERS:
        raise ValueError(f"unknown input format {name!r}; choose one of {', '.join(READERS)}")
    try:
        return importlib.import_module(READERS[name])
    except ModuleNotFoundError as e:
        if e.name == READERS[name]:
            raise ValueError(f"input format {name!r} is not available in this build "
                             f"({READERS[name]} is missing)") from None
        raise


def read_source(name: str, src, **options):
    """Run format ``name``'s reader on ``src``, passing only the options its ``read``
    accepts (all of them if it takes ``**options``); ``None`` options are dropped."""
    from pathlib import Path
    mod = get_reader(name)
    opts = {k: v for k, v in options.items() if v is not None}
    sig = inspect.signature(mod.read)
    if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        opts = {k: v for k, v in opts.items() if k in sig.parameters}
    return mod.read(Path(src), **opts)
