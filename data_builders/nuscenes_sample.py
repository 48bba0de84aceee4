"""One nuScenes keyframe from an mmdetection3d info pickle -> a six-camera :class:`PlanningSample`.

Source: the ``data_list`` of an mmdetection3d v1.1 nuScenes info pickle (``ego2global``,
``lidar_points.lidar2ego``, ``images[CAM_*]`` with ``img_path`` / ``cam2img`` / ``cam2ego``, and
``instances`` with ``bbox_3d`` in the LiDAR frame (geometric centre, l, w, h, yaw), ``velocity`` and
``bbox_label_3d`` over the ten nuScenes detection classes). ``../shared/data/nuscenes-sample-0061``
holds one (scene-0061's first keyframe with its six camera images); a full nuScenes goes through
nuscenes-devkit instead (``dsdrive build --source nuscenes``, :mod:`data_builders.nuscenes`).

Output frame: the ego frame of the keyframe (x forward, y left, metres, heading 0 along +x).
The info pickle holds no ego motion, so the ego status (vx, vy) and the ground-truth future
(+0.5 ... +3.0 s) are read from the ScenarioNet copy of the same scene when given (its log starts
at the same ego pose; 10 Hz, indices 5, 10, ..., 30); the history is empty (the keyframe is the log
start). Agents are the ground-truth boxes, moved LiDAR -> ego; the map is empty.

Pickles are read through :mod:`dsdrive.data.safe_pickle` (builtins and numpy only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsdrive.data import safe_pickle
from dsdrive.data.paths import SHARED_DATA
from dsdrive.data.types import (
    Agents,
    Camera,
    MapPolylines,
    PlanningInputs,
    PlanningSample,
    PlanningTargets,
    command_from_future,
)
from dsdrive.geometry import global_to_ego, rotate_vectors, wrap_angle

NUSCENES_0061 = SHARED_DATA / "nuscenes-sample-0061"
"""The shared six-camera nuScenes keyframe (scene-0061)."""
NUSCENES_INFO = NUSCENES_0061 / "n015-2018-07-24-11-22-45+0800.pkl"
"""Its mmdetection3d info pickle."""
SCENARIONET_0061 = SHARED_DATA / "nuscenes-mini-scenarionet" / "sd_nuscenes_v1.0-mini_scene-0061.pkl"
"""The ScenarioNet copy of scene-0061 (ego status and future of the keyframe)."""
NUSCENES_LABELS = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle", "pedestrian", "traffic_cone",
                   "barrier")
"""``bbox_label_3d`` index -> nuScenes detection class (mmdetection3d order)."""
AGENT_TYPE = {
    "car": "VEHICLE", "truck": "VEHICLE", "trailer": "VEHICLE", "bus": "VEHICLE", "construction_vehicle": "VEHICLE",
    "bicycle": "CYCLIST", "motorcycle": "CYCLIST", "pedestrian": "PEDESTRIAN", "traffic_cone": "TRAFFIC_CONE",
    "barrier": "TRAFFIC_BARRIER",
}
"""nuScenes detection class -> :data:`dsdrive.data.types.AGENT_TYPES`."""


def load_info(path: str | Path = NUSCENES_INFO, index: int = 0) -> dict:
    """``data_list[index]`` of an mmdetection3d info pickle.

    Raises:
        FileNotFoundError: no such file (naming it).
        ValueError: the pickle has no ``data_list`` or ``index`` is out of range (naming file and index).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no nuScenes info pickle (see ../shared/data/README.md)")
    data = safe_pickle.load_pickle(path)
    items = data.get("data_list") if isinstance(data, dict) else None
    if not isinstance(items, list) or not -len(items) <= index < len(items):
        raise ValueError(f"{path}: field 'data_list' has {len(items) if isinstance(items, list) else 'no'} entries; index {index} requested")
    return items[index]


def lidar_to_ego_boxes(boxes: np.ndarray, lidar2ego: np.ndarray) -> np.ndarray:
    """(N, 7) LiDAR-frame boxes (x, y, z geometric centre, l, w, h, yaw) -> (N, 7) float64 ego frame
    (x forward, y left, metres; yaw rotated by the LiDAR's yaw in the ego frame)."""
    out = np.array(boxes, dtype=np.float64).reshape(-1, 7).copy()
    out[:, :3] = out[:, :3] @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
    out[:, 6] = out[:, 6] + np.arctan2(lidar2ego[1, 0], lidar2ego[0, 0])
    return out


def _ego_motion(scenarionet: Path | None, e2g: np.ndarray, yaw: float):
    status, status_mask = np.zeros(6, np.float32), np.zeros(6, bool)
    future, future_mask = np.zeros((6, 3), np.float32), np.zeros(6, bool)
    if scenarionet is not None and Path(scenarionet).is_file():
        ego = safe_pickle.load_pickle(scenarionet)["tracks"]["ego"]["state"]
        status[:2] = rotate_vectors(np.asarray(ego["velocity"][0], np.float64), yaw)
        status_mask[:2] = True
        idx = np.arange(5, 35, 5)  # +0.5 ... +3.0 s at 10 Hz
        future[:, :2] = global_to_ego(np.asarray(ego["position"])[idx, :2], e2g[:2, 3], yaw)
        future[:, 2] = wrap_angle(np.asarray(ego["heading"])[idx] - yaw)
        future_mask[:] = np.asarray(ego["valid"])[idx] > 0
    return status, status_mask, future, future_mask


def info_sample(info_path: str | Path = NUSCENES_INFO, index: int = 0, scenarionet_path: str | Path | None = None,
                scene_id: str = "scene-0061", map_name: str = "singapore-onenorth") -> PlanningSample:
    """The keyframe ``index`` of an info pickle as a six-camera PlanningSample (module docstring).

    Args:
        info_path: the mmdetection3d info pickle; camera ``img_path`` entries are relative to its folder.
        index: entry of ``data_list``.
        scenarionet_path: the ScenarioNet pickle of the same scene, starting at this keyframe's ego
            pose (ego status and future); None or missing -> status and future masked out.
        scene_id, map_name: written into the sample (the info pickle does not hold them).

    Returns:
        A PlanningSample (source ``nuscenes``): agents = the ground-truth boxes (ids ``inst_<k>`` in
        info order, ego frame; ``bbox_label_3d`` -1, mmdetection3d's "none of the ten classes", is
        type OTHER), six cameras with ``cam2img`` / ``cam2ego``, command from the future.

    Raises:
        FileNotFoundError / ValueError: see :func:`load_info`; ValueError also for a
        ``bbox_label_3d`` outside -1..9 (naming the file and value).
    """
    info_path = Path(info_path)
    info = load_info(info_path, index)
    lidar2ego = np.asarray(info["lidar_points"]["lidar2ego"], dtype=np.float64)
    inst = info["instances"]
    bad = [i["bbox_label_3d"] for i in inst if not -1 <= int(i["bbox_label_3d"]) < len(NUSCENES_LABELS)]
    if bad:
        raise ValueError(f"{info_path}: field 'bbox_label_3d' = {bad[0]} outside -1..{len(NUSCENES_LABELS) - 1}")
    boxes = lidar_to_ego_boxes(np.array([i["bbox_3d"] for i in inst], np.float64).reshape(-1, 7), lidar2ego)
    vel = np.array([i["velocity"][:2] for i in inst], dtype=np.float64).reshape(-1, 2) @ lidar2ego[:2, :2].T
    types = [AGENT_TYPE[NUSCENES_LABELS[int(i["bbox_label_3d"])]] if int(i["bbox_label_3d"]) >= 0 else "OTHER" for i in inst]
    agents = Agents([f"inst_{k}" for k in range(len(inst))], types, boxes.astype(np.float32), vel.astype(np.float32))
    cameras = [Camera(name, str(info_path.parent / c["img_path"]), np.asarray(c["cam2img"], np.float32), np.asarray(c["cam2ego"], np.float32))
               for name, c in info["images"].items()]
    e2g = np.asarray(info["ego2global"], dtype=np.float64)
    yaw = float(np.arctan2(e2g[1, 0], e2g[0, 0]))
    status, status_mask, future, future_mask = _ego_motion(Path(scenarionet_path) if scenarionet_path else None, e2g, yaw)
    inputs = PlanningInputs(
        sample_id=info["token"], scene_id=scene_id, ego_history=np.zeros((4, 3), np.float32), ego_history_mask=np.zeros(4, bool),
        ego_status=status, ego_status_mask=status_mask, command=command_from_future(future), agents=agents, map=MapPolylines.empty(),
        cameras=cameras,
    )
    n = len(agents)
    targets = PlanningTargets(future, future_mask, np.zeros((n, 12, 3), np.float32), np.zeros((n, 12), bool))
    return PlanningSample("nuscenes", map_name, 0.0, inputs, targets)


def nuscenes_sample_0061() -> PlanningSample:
    """The shared scene-0061 keyframe (:data:`NUSCENES_INFO`, ego motion from :data:`SCENARIONET_0061`):
    69 ground-truth agents, six cameras, no history, no map."""
    return info_sample(NUSCENES_INFO, 0, SCENARIONET_0061, "scene-0061", "singapore-onenorth")


__all__ = ["NUSCENES_0061", "NUSCENES_INFO", "SCENARIONET_0061", "NUSCENES_LABELS", "AGENT_TYPE", "load_info", "lidar_to_ego_boxes",
           "info_sample", "nuscenes_sample_0061"]
