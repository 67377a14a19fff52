"""Locating the original COCO files for the baselines (kept free of torch so light rows start
fast): the same locator ``fastload pack`` uses (:func:`fastload.formats.coco.locate`), so the
baselines read the very JSON and images that were packed."""
from __future__ import annotations

import json
from pathlib import Path


class BaselineError(ValueError):
    """The baseline could not read the dataset (names the file)."""


def find_coco(root) -> tuple:
    """``(annotation_json, image_dir)`` of a COCO dataset (a folder or the JSON itself);
    :class:`BaselineError` naming the file when there is none or its first image is missing."""
    from fastload.formats.coco import locate
    try:
        js, img_dir = locate(root)
    except ValueError as e:
        raise BaselineError(str(e)) from None
    try:
        images = json.loads(Path(js).read_text()).get("images") or []
    except (OSError, ValueError) as e:
        raise BaselineError(f"{js}: unreadable COCO JSON: {e}") from None
    if not images:
        raise BaselineError(f"{js}: no images")
    first = images[0].get("file_name")
    if not first or not (Path(img_dir) / first).is_file():
        raise BaselineError(f"{js}: image {first!r} not found in {img_dir} (the folder pack "
                            f"would read); pass the dataset folder that holds it")
    return js, img_dir
