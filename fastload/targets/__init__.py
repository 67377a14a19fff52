"""Loss targets built by Numba kernels from polygons already moved into output coordinates.

Public kernels (each with a slow reference in :mod:`fastload.targets.reference`):

- CenterNet: :func:`centernet_targets`, :func:`centernet_into`, :func:`alloc_centernet`,
  :func:`gaussian_radius`
- keypoints (CenterNet multi_pose, ``hp_*``): :func:`keypoint_targets`,
  :func:`keypoint_targets_into`, :func:`alloc_keypoints`; MSRA-style :func:`msra_heatmaps`
- FCOS (``fcos_*``): :func:`fcos_targets`, :func:`fcos_into`, :func:`alloc_fcos`,
  :func:`fcos_level_sizes`, :func:`fcos_num_locations`, :func:`fcos_locations`
- polygons: :func:`boxes_from_polygons`, :func:`instance_centers`, :func:`semantic_mask`,
  :func:`instance_masks`; the rasterizer :func:`fill_polygon` / :func:`fill_parts`.

Importing compiles nothing: Numba compiles (or loads its on-disk cache) on first call.
See docs/targets.md for conventions.
"""
from .boxes import boxes_from_polygons, instance_centers
from .centernet import alloc_centernet, centernet_into, centernet_targets, gaussian_radius
from .fcos import (alloc_fcos, fcos_into, fcos_level_sizes, fcos_locations, fcos_targets,
                   fcos_num_locations)
from .keypoints import alloc_keypoints, keypoint_targets, keypoint_targets_into, msra_heatmaps
from .masks import instance_masks, semantic_mask
from .raster import fill_parts, fill_polygon

__all__ = [
    "centernet_targets", "centernet_into", "alloc_centernet", "gaussian_radius",
    "keypoint_targets", "keypoint_targets_into", "alloc_keypoints", "msra_heatmaps",
    "fcos_targets", "fcos_into", "alloc_fcos", "fcos_level_sizes", "fcos_num_locations",
    "fcos_locations", "boxes_from_polygons", "instance_centers", "semantic_mask", "instance_masks",
    "fill_polygon", "fill_parts",
]
