"""Frame transforms and polyline utilities shared by builders, teachers, metrics and the simulator.

Frames: *global* (a map's metric frame: nuScenes global, ScenarioNet/MetaDrive world) and the
*ego frame* of one time (x forward, y left, origin at the ego position, heading 0 along +x).
Angles in radians, counter-clockwise positive.
"""

from __future__ import annotations

import numpy as np


def wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def global_to_ego(xy: np.ndarray, ego_xy: np.ndarray, ego_yaw: float) -> np.ndarray:
    """Global points (..., 2) metres -> ego frame (..., 2) of a pose (ego_xy (2,), ego_yaw rad)."""
    c, s = np.cos(ego_yaw), np.sin(ego_yaw)
    d = np.asarray(xy, dtype=np.float64) - np.asarray(ego_xy, dtype=np.float64)[..., :2]
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


def ego_to_global(xy: np.ndarray, ego_xy: np.ndarray, ego_yaw: float) -> np.ndarray:
    """Inverse of :func:`global_to_ego`: ego-frame points (..., 2) -> global (..., 2)."""
    c, s = np.cos(ego_yaw), np.sin(ego_yaw)
    p = np.asarray(xy, dtype=np.float64)
    return np.stack([c * p[..., 0] - s * p[..., 1], s * p[..., 0] + c * p[..., 1]], axis=-1) + np.asarray(
        ego_xy, dtype=np.float64
    )[..., :2]


def rotate_vectors(v: np.ndarray, yaw: float) -> np.ndarray:
    """Rotate vectors (..., 2) by -yaw: a global velocity -> the ego frame of heading ``yaw``."""
    c, s = np.cos(yaw), np.sin(yaw)
    v = np.asarray(v, dtype=np.float64)
    return np.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], axis=-1)


def resample_polyline(points: np.ndarray, num: int = 20) -> np.ndarray:
    """Resample a polyline (P, 2+) to ``num`` points equally spaced in arc length.

    Returns (num, 2). A single point (or zero-length line) is repeated.

    Raises:
        ValueError: ``points`` is empty.
    """
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    if len(pts) == 0:
        raise ValueError("resample_polyline: empty polyline")
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    if cum[-1] <= 1e-9:
        return np.repeat(pts[:1], num, axis=0)
    t = np.linspace(0.0, cum[-1], num)
    return np.stack([np.interp(t, cum, pts[:, 0]), np.interp(t, cum, pts[:, 1])], axis=-1)


def box_corners(x: np.ndarray, y: np.ndarray, length: np.ndarray, width: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Corners of oriented 2D boxes, (..., 4, 2), counter-clockwise from front-left.

    All inputs broadcast together; metres and radians in one frame.
    """
    x, y, length, width, yaw = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (x, y, length, width, yaw)))
    c, s = np.cos(yaw), np.sin(yaw)
    dx = np.array([0.5, -0.5, -0.5, 0.5])
    dy = np.array([0.5, 0.5, -0.5, -0.5])
    lx = length[..., None] * dx
    ly = width[..., None] * dy
    cx = x[..., None] + c[..., None] * lx - s[..., None] * ly
    cy = y[..., None] + s[..., None] * lx + c[..., None] * ly
    return np.stack([cx, cy], axis=-1)
