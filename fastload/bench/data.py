"""Locating the original COCO files (kept free of torch so light rows start fast)."""
from __future__ import annotations

import json
from pathlib import Path


class BaselineError(ValueError):
    """The baseline could not read the dataset (names the file)."""


def find_coco(root) -> tuple:
    """Locate ``(annotation_json, image_dir)`` of a COCO dataset directory (or a JSON path)."""
    root = Path(root)
    if root.is_file():
        cands = [root]
        base = root.parent
    else:
        base = root
        cands = sorted(root.glob("*.json")) + sorted(root.glob("annotations/*.json")) \
            + sorted(root.glob("*/*.json"))
    for js in cands:
        if js.name == "manifest.json":
            continue
        try:
            d = json.loads(js.read_text())
        except (OSError, ValueError):
            continue
        if not (isinstance(d, dict) and "images" in d and "annotations" in d):
            continue
        if not d["images"]:
            raise BaselineError(f"{js}: no images")
        first = d["images"][0]["file_name"]
        for img_dir in (js.parent, base, js.parent / "images", base / "images",
                        js.parent.parent / "images", js.parent.parent):
            if (img_dir / first).is_file():
                return js, img_dir
        hits = list(base.rglob(Path(first).name))
        if hits:
            return js, hits[0].parent
        raise BaselineError(f"{js}: image {first!r} not found under {base}")
    raise BaselineError(f"{root}: no COCO annotation JSON (with 'images' and 'annotations') found")
