"""Pinhole camera projection: 3D boxes in the ego frame -> pixels of a camera.

Used by the nuScenes builder's checks and by perspective-view (PV) -> BEV matching (e.g. a VLM
teacher's 2D key objects, DriveLM ``<c1,CAM_BACK,u,v>``, matched to ego-frame agent boxes).

Frames and conventions:

* **Ego frame**: x forward, y left, z up, metres (see :mod:`dsdrive.data.types`).
* **Camera frame** (OpenCV / nuScenes): x right, y down, z forward (optical axis), metres.
* ``cam2ego`` (4, 4): homogeneous transform camera frame -> ego frame, so
  ``p_ego = cam2ego @ p_cam``; nuScenes ``calibrated_sensor`` translation/rotation of a camera
  build it.
* ``intrinsics`` (3, 3): pinhole matrix K (pixels), ``[u, v, 1]^T ~ K @ p_cam``; pixel
  ``(0, 0)`` is the top-left corner of the top-left pixel, u right, v down
  (nuScenes ``view_points`` convention).
* Boxes ``(x, y, z, l, w, h, yaw)``: centre (the geometric centre, as nuScenes ``Box.center``),
  length along the heading, width, height, yaw counter-clockwise about +z from +x.
"""

from __future__ import annotations

import numpy as np
from shapely.geometry import MultiPoint, box as shapely_box

NEAR_PLANE_M = 0.1
"""Points closer than this along the optical axis are treated as behind the camera."""
MIN_VISIBLE_FRACTION = 0.25
"""Default share of a box's projected area that must fall inside the image for it to count
as visible (see :func:`project_boxes_to_camera`)."""

# The 12 edges of a box as pairs of indices into box3d_corners' 8 corners.
_EDGES = np.array(
    [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]]
)


def box3d_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners of oriented 3D boxes.

    Args:
        boxes: (N, 7) ``x, y, z, l, w, h, yaw`` (m, rad), centre = geometric centre, in any
            z-up frame (ego, lidar, global).

    Returns:
        (N, 8, 3) corners in the same frame: indices 0-3 the bottom face (z - h/2) and 4-7 the
        top face, each face counter-clockwise seen from above starting front-left
        (+l/2, +w/2), then rear-left, rear-right, front-right.

    Raises:
        ValueError: ``boxes`` is not (N, 7).
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 7:
        raise ValueError(f"box3d_corners: boxes must be (N, 7) x,y,z,l,w,h,yaw; got shape {b.shape}")
    sx = np.array([0.5, -0.5, -0.5, 0.5] * 2)
    sy = np.array([0.5, 0.5, -0.5, -0.5] * 2)
    sz = np.array([-0.5] * 4 + [0.5] * 4)
    lx, ly, lz = b[:, 3:4] * sx, b[:, 4:5] * sy, b[:, 5:6] * sz  # (N, 8) in the box frame
    c, s = np.cos(b[:, 6:7]), np.sin(b[:, 6:7])
    x = b[:, 0:1] + c * lx - s * ly
    y = b[:, 1:2] + s * lx + c * ly
    z = b[:, 2:3] + lz
    return np.stack([x, y, z], axis=-1)


def ego_to_camera(points: np.ndarray, cam2ego: np.ndarray) -> np.ndarray:
    """Ego-frame points (..., 3) -> camera frame (..., 3) (x right, y down, z forward), metres."""
    p = np.asarray(points, dtype=np.float64)
    ego2cam = np.linalg.inv(np.asarray(cam2ego, dtype=np.float64))
    return p @ ego2cam[:3, :3].T + ego2cam[:3, 3]


def project_points(points: np.ndarray, cam2ego: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project ego-frame points into a pinhole camera.

    Args:
        points: (N, 3) points in the ego frame (x forward, y left, z up), metres.
        cam2ego: (4, 4) camera -> ego transform (camera frame x right, y down, z forward).
        intrinsics: (3, 3) pinhole matrix K, pixels.

    Returns:
        ``uv`` (N, 2) pixel coordinates (u right, v down) and ``depth`` (N,) metres along the
        optical axis. Points with ``depth <= 0`` are behind the camera: their ``uv`` is NaN.
    """
    pc = ego_to_camera(np.asarray(points, dtype=np.float64).reshape(-1, 3), cam2ego)
    depth = pc[:, 2]
    proj = pc @ np.asarray(intrinsics, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = proj[:, :2] / depth[:, None]
    uv[depth <= 0] = np.nan
    return uv, depth


def _clipped_vertices(corners_cam: np.ndarray, near: float) -> np.ndarray:
    """Vertices (K, 3) of one box (8, 3 camera frame) cut by the plane z = near (kept z >= near)."""
    keep = [corners_cam[corners_cam[:, 2] >= near]]
    for i, j in _EDGES:
        a, b = corners_cam[i], corners_cam[j]
        if (a[2] - near) * (b[2] - near) < 0:  # the edge crosses the near plane
            t = (near - a[2]) / (b[2] - a[2])
            keep.append((a + t * (b - a))[None])
    return np.concatenate(keep, axis=0)


def project_boxes_to_camera(
    boxes_ego: np.ndarray,
    cam2ego: np.ndarray,
    intrinsics: np.ndarray,
    image_size: tuple[int, int],
    min_visible_fraction: float = MIN_VISIBLE_FRACTION,
    near: float = NEAR_PLANE_M,
) -> tuple[np.ndarray, np.ndarray]:
    """Project 3D boxes into one camera image as axis-aligned 2D boxes.

    Each box is cut by the near plane ``z_cam = near`` (so a box partly behind the camera keeps
    its in-front part exactly: the vertices of the clipped polyhedron are the in-front corners
    plus the edge/plane intersections), its vertices are projected, and the convex hull of the
    projections (the exact image of a convex body) is intersected with the image rectangle
    ``[0, W] x [0, H]``.

    Visibility rule: a box is visible when some part of it is in front of the near plane and
    ``area(hull ∩ image) / area(hull) >= min_visible_fraction`` (default 0.25), i.e. at least a
    quarter of its projected silhouette lies inside the image. This is the nuScenes devkit's
    ``post_process_coords`` (hull ∩ canvas -> bounds) plus an explicit area threshold; the
    devkit itself drops corners behind the camera instead of clipping edges.

    Args:
        boxes_ego: (N, 7) ``x, y, z, l, w, h, yaw`` in the ego frame (x forward, y left, z up),
            metres/radians, centre = geometric centre.
        cam2ego: (4, 4) camera -> ego transform (camera x right, y down, z forward).
        intrinsics: (3, 3) pinhole matrix K, pixels.
        image_size: ``(W, H)`` pixels, e.g. ``(1600, 900)`` for nuScenes.
        min_visible_fraction: share of the projected area that must be inside the image.
        near: near-plane distance along the optical axis, metres.

    Returns:
        ``boxes_2d`` (N, 4) float64 ``x1, y1, x2, y2`` pixels clipped to the image (NaN where
        the box is entirely behind the camera or its hull misses the image), and ``visible``
        (N,) bool.
    """
    b = np.asarray(boxes_ego, dtype=np.float64).reshape(-1, 7)
    width, height = image_size
    canvas = shapely_box(0.0, 0.0, float(width), float(height))
    k = np.asarray(intrinsics, dtype=np.float64)
    corners_cam = ego_to_camera(box3d_corners(b), cam2ego)  # (N, 8, 3)
    out = np.full((len(b), 4), np.nan)
    visible = np.zeros(len(b), dtype=bool)
    for n in range(len(b)):
        verts = _clipped_vertices(corners_cam[n], near)
        if len(verts) < 3:
            continue
        proj = verts @ k.T
        uv = proj[:, :2] / proj[:, 2:3]
        hull = MultiPoint([tuple(p) for p in uv]).convex_hull
        inside = hull.intersection(canvas)
        if inside.is_empty:
            continue
        out[n] = inside.bounds
        area = hull.area
        visible[n] = area > 0 and inside.area / area >= min_visible_fraction
    return out, visible


def box_iou_2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of axis-aligned 2D boxes.

    Args:
        a: (N, 4) ``x1, y1, x2, y2`` (any consistent unit, e.g. pixels).
        b: (M, 4) same layout.

    Returns:
        (N, M) IoU in [0, 1]; boxes with zero area (or NaN coordinates) give 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0)
