"""Synthetic data made on the spot: realistic scenes with polygon instances, written as real
datasets in every input format ``fastload pack`` reads. ``fastload demo``, ``fastload bench``
(without a dataset), the tests and the benchmarks use it.

- :mod:`fastload.synth.scenes`: :func:`make_scene` (an image with polygon instances and
  keypoints), :func:`encode_jpeg`, :func:`encode_png`, the class and keypoint names;
- :mod:`fastload.synth.photos`: :func:`make_photo` (photo-like statistics at any size: 1/f
  spectrum, textured objects, edges, camera-like JPEG sizes), :func:`write_photo_dataset`;
- :mod:`fastload.synth.datasets`: :func:`write_dataset` (any format), :func:`write_coco`;
- :mod:`fastload.synth.formats`: the labelme, VIA, YOLO-seg and mask-PNG writers, and
  :func:`check_reading` (a reader's output against what was written).
"""
from fastload.synth.datasets import FORMATS, make_scenes, write_coco, write_dataset
from fastload.synth.photos import make_photo, write_photo_dataset
from fastload.synth.scenes import (CLASSES, FLIP_PAIRS, KEYPOINT_NAMES, Scene, encode_jpeg,
                                   encode_png, make_scene)

__all__ = ["FORMATS", "make_scenes", "write_coco", "write_dataset", "CLASSES", "FLIP_PAIRS",
           "KEYPOINT_NAMES", "Scene", "encode_jpeg", "encode_png", "make_scene", "make_photo",
           "write_photo_dataset"]
