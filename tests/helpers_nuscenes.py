"""A small synthetic dataset in the nuScenes schema, loadable by the real ``NuScenes`` class.

All 13 tables of ``v1.0-*`` (attribute, calibrated_sensor, category, ego_pose, instance, log,
map, sample, sample_annotation, sample_data, scene, sensor, visibility) are written as JSON to
``<root>/v1.0-mini/``, a map mask PNG to ``<root>/maps/``, tiny JPEGs for the six cameras,
a CAN bus expansion for the first scene only (``can_bus/scene-0001_pose.json`` and
``_steeranglefeedback.json``) and, optionally, a map expansion JSON.

Motion is analytic so tests can check exact values:

* the ego drives an arc: speed ``EGO_SPEED`` m/s, yaw rate ``EGO_YAW_RATE`` rad/s, starting at
  ``EGO_START`` with heading ``EGO_YAW0`` (see :func:`ego_state`);
* agents move on straight lines at constant global velocity (:data:`AGENTS`);
* keyframes every 0.5 s; each camera fires ``CAM_DELAY_S[k]`` before the LiDAR, with its own
  ego pose (as in nuScenes), so motion compensation of ``cam2ego`` is exercised;
* optionally (``ego_tilt``) every ego pose is pitched and rolled, as real nuScenes ego poses are
  (about 0.6 deg and -1.2 deg on scene-0061), to exercise the planar ego frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pyquaternion import Quaternion

T0_US = 1_600_000_000_000_000
EGO_SPEED, EGO_YAW_RATE, EGO_YAW0 = 6.0, 0.12, 0.4
EGO_START = np.array([300.0, 600.0])
SCENES = (("scene-0001", 12), ("scene-0002", 9))
"""(name, number of keyframes); scene-0001 has a CAN bus, scene-0002 has none."""
CAMERA_YAWS = {"CAM_FRONT": 0.0, "CAM_FRONT_RIGHT": -0.96, "CAM_FRONT_LEFT": 0.96, "CAM_BACK": np.pi, "CAM_BACK_LEFT": 1.92, "CAM_BACK_RIGHT": -1.92}
CAM_DELAY_S = {"CAM_FRONT": 0.035, "CAM_FRONT_RIGHT": 0.027, "CAM_FRONT_LEFT": 0.043, "CAM_BACK": 0.010, "CAM_BACK_LEFT": 0.0005, "CAM_BACK_RIGHT": 0.020}
INTRINSICS = [[1266.0, 0.0, 800.0], [0.0, 1266.0, 450.0], [0.0, 0.0, 1.0]]
LOCATION = "singapore-onenorth"
STEERING_RAD = 0.25
# name -> (category, start offset in the ego frame at t=0 (x, y, z), global velocity (vx, vy), size (w, l, h), first, last keyframe)
AGENTS = {
    "car": ("vehicle.car", (15.0, 3.0, 0.8), (4.0, 1.0), (1.9, 4.5, 1.6), 0, 99),
    "ped": ("human.pedestrian.adult", (8.0, -6.0, 0.9), (0.0, 1.2), (0.6, 0.7, 1.75), 0, 99),
    "bike": ("vehicle.bicycle", (-10.0, 2.0, 0.6), (5.0, -0.5), (0.6, 1.8, 1.2), 2, 8),
    "cone": ("movable_object.trafficcone", (20.0, -4.0, 0.3), (0.0, 0.0), (0.4, 0.4, 0.7), 0, 99),
    "truck_far": ("vehicle.truck", (90.0, 40.0, 1.5), (0.0, 0.0), (2.5, 9.0, 3.5), 0, 99),
}


def ego_state(t: float) -> tuple[np.ndarray, float]:
    """Global ego (x, y) and yaw at time ``t`` seconds after the scene start (constant-turn arc)."""
    r = EGO_SPEED / EGO_YAW_RATE
    yaw = EGO_YAW0 + EGO_YAW_RATE * t
    xy = EGO_START + r * np.array([np.sin(yaw) - np.sin(EGO_YAW0), -np.cos(yaw) + np.cos(EGO_YAW0)])
    return xy, yaw


def agent_global(name: str, t: float) -> tuple[np.ndarray, float]:
    """Global centre (x, y, z) and yaw of an agent at ``t`` s (yaw = direction of motion, or 0.5 rad when static)."""
    _, off, vel, _, _, _ = AGENTS[name]
    xy0, yaw0 = ego_state(0.0)
    c, s = np.cos(yaw0), np.sin(yaw0)
    start = xy0 + np.array([c * off[0] - s * off[1], s * off[0] + c * off[1]])
    pos = start + np.asarray(vel) * t
    yaw = float(np.arctan2(vel[1], vel[0])) if np.hypot(*vel) > 0 else 0.5
    return np.array([pos[0], pos[1], off[2]]), yaw


def _q(yaw: float) -> list[float]:
    return list(Quaternion(axis=[0, 0, 1], angle=yaw).elements)


def _cam_rotation(yaw: float) -> list[float]:
    """Camera (x right, y down, z forward) -> ego rotation for a camera looking along ``yaw``."""
    r0 = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    rz = Quaternion(axis=[0, 0, 1], angle=yaw).rotation_matrix
    return list(Quaternion(matrix=rz @ r0).elements)


def _link(records: list[dict]) -> None:
    for a, b in zip(records, records[1:]):
        a["next"], b["prev"] = b["token"], a["token"]


def _ego_q(yaw: float, tilt: tuple[float, float]) -> list[float]:
    """Ego rotation: yaw, then pitch ``tilt[0]`` about y and roll ``tilt[1]`` about x (rad)."""
    q = Quaternion(axis=[0, 0, 1], angle=yaw) * Quaternion(axis=[0, 1, 0], angle=tilt[0]) * Quaternion(axis=[1, 0, 0], angle=tilt[1])
    return list(q.elements)


def make_nuscenes(root: str | Path, with_can_bus: bool = True, with_map_expansion: bool = False,
                  ego_tilt: tuple[float, float] = (0.0, 0.0)) -> Path:
    """Write the synthetic dataset under ``root`` and return ``root`` (the nuScenes dataroot);
    ``ego_tilt`` = (pitch, roll) in rad of every ego pose."""
    root = Path(root)
    tables: dict[str, list] = {k: [] for k in ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility")}
    tables["visibility"] = [{"token": str(i), "level": lvl, "description": lvl} for i, lvl in enumerate(["v0-40", "v40-60", "v60-80", "v80-100"], 1)]
    tables["attribute"] = [{"token": "attr-moving", "name": "vehicle.moving", "description": "moving"}]
    cats = sorted({a[0] for a in AGENTS.values()})
    tables["category"] = [{"token": f"cat-{c}", "name": c, "description": c} for c in cats]
    channels = ["LIDAR_TOP", *CAMERA_YAWS]
    for ch in channels:
        tables["sensor"].append({"token": f"sensor-{ch}", "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP" else "camera"})
        cam = ch != "LIDAR_TOP"
        tables["calibrated_sensor"].append({
            "token": f"cs-{ch}", "sensor_token": f"sensor-{ch}",
            "translation": [1.0 * np.cos(CAMERA_YAWS[ch]) + 0.5, 0.5 * np.sin(CAMERA_YAWS[ch]), 1.6] if cam else [0.94, 0.0, 1.84],
            "rotation": _cam_rotation(CAMERA_YAWS[ch]) if cam else _q(-np.pi / 2),
            "camera_intrinsic": INTRINSICS if cam else [],
        })
    tables["log"].append({"token": "log-0", "logfile": "synthetic-log", "vehicle": "n000", "date_captured": "2020-01-01", "location": LOCATION})
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 20), 255, np.uint8)).save(root / "maps" / "map-0.png")
    tables["map"].append({"token": "map-0", "log_tokens": ["log-0"], "category": "semantic_prior", "filename": "maps/map-0.png"})
    for name in AGENTS:
        tables["instance"].append({"token": f"inst-{name}", "category_token": f"cat-{AGENTS[name][0]}"})
    ann_chains: dict[str, list] = {name: [] for name in AGENTS}
    t_scene = 0.0
    for si, (scene_name, n) in enumerate(SCENES):
        scene_tok = f"scene-tok-{si}"
        samples = [{"token": f"s{si}-{k}", "timestamp": T0_US + int(round((t_scene + 0.5 * k) * 1e6)), "scene_token": scene_tok, "prev": "", "next": ""} for k in range(n)]
        _link(samples)
        tables["sample"] += samples
        tables["scene"].append({"token": scene_tok, "name": scene_name, "description": "synthetic", "log_token": "log-0", "nbr_samples": n, "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"]})
        for ch in channels:
            sds = []
            for k, smp in enumerate(samples):
                t = 0.5 * k - CAM_DELAY_S.get(ch, 0.0)  # scene-relative time of this sensor's capture
                ts = smp["timestamp"] - int(round(CAM_DELAY_S.get(ch, 0.0) * 1e6))
                xy, yaw = ego_state(t)
                ep = f"ep-{si}-{k}-{ch}"
                tables["ego_pose"].append({"token": ep, "timestamp": ts, "rotation": _ego_q(yaw, ego_tilt), "translation": [xy[0], xy[1], 0.0]})
                ext = "pcd.bin" if ch == "LIDAR_TOP" else "jpg"
                fname = f"samples/{ch}/synthetic__{ch}__{ts}.{ext}"
                (root / "samples" / ch).mkdir(parents=True, exist_ok=True)
                if ch == "LIDAR_TOP":
                    np.zeros((4, 5), np.float32).tofile(root / fname)
                else:
                    Image.new("RGB", (16, 9), (80, 80, 80)).save(root / fname)
                sds.append({"token": f"sd-{si}-{k}-{ch}", "sample_token": smp["token"], "ego_pose_token": ep, "calibrated_sensor_token": f"cs-{ch}", "timestamp": ts, "fileformat": ext.split(".")[-1], "is_key_frame": True, "height": 0 if ch == "LIDAR_TOP" else 900, "width": 0 if ch == "LIDAR_TOP" else 1600, "filename": fname, "prev": "", "next": ""})
            _link(sds)
            tables["sample_data"] += sds
        for name, (cat, _, _, size, first, last) in AGENTS.items():
            for k, smp in enumerate(samples):
                if not first <= k <= last:
                    continue
                pos, yaw = agent_global(name, 0.5 * k)
                ann_chains[name].append({"token": f"ann-{name}-{si}-{k}", "sample_token": smp["token"], "instance_token": f"inst-{name}", "visibility_token": "4", "attribute_tokens": [], "translation": [float(v) for v in pos], "size": list(size), "rotation": _q(yaw), "prev": "", "next": "", "num_lidar_pts": 10, "num_radar_pts": 0})
        if with_can_bus and si == 0:
            _write_can_bus(root, scene_name, T0_US, n)
        t_scene += 0.5 * n + 10.0  # scenes are separate logs in time; agents restart per scene below
    for name, chain in ann_chains.items():
        # one instance per scene in nuScenes: split the chain per scene
        by_scene: dict[str, list] = {}
        for a in chain:
            by_scene.setdefault(a["sample_token"].split("-")[0], []).append(a)
        inst = next(i for i in tables["instance"] if i["token"] == f"inst-{name}")
        tables["instance"].remove(inst)
        for sk, anns in by_scene.items():
            tok = f"inst-{name}-{sk}"
            for a in anns:
                a["instance_token"] = tok
            _link(anns)
            tables["sample_annotation"] += anns
            tables["instance"].append({"token": tok, "category_token": inst["category_token"], "nbr_annotations": len(anns), "first_annotation_token": anns[0]["token"], "last_annotation_token": anns[-1]["token"]})
    out = root / "v1.0-mini"
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (out / f"{name}.json").write_text(json.dumps(rows))
    if with_map_expansion:
        write_map_expansion(root)
    return root


def _write_can_bus(root: Path, scene_name: str, t0_us: int, n: int) -> None:
    """50 Hz ``pose`` (vel/accel/rotation_rate in the vehicle frame) and 100 Hz steering."""
    can = root / "can_bus"
    can.mkdir(parents=True, exist_ok=True)
    dur = 0.5 * (n - 1)
    pose = []
    for k in range(int(dur * 50) + 1):
        t = k / 50.0
        xy, yaw = ego_state(t)
        pose.append({"utime": t0_us + int(round(t * 1e6)), "pos": [xy[0], xy[1], 0.0], "orientation": _q(yaw), "vel": [EGO_SPEED, 0.0, 0.0], "accel": [0.0, EGO_SPEED * EGO_YAW_RATE, 9.81], "rotation_rate": [0.0, 0.0, EGO_YAW_RATE]})
    steer = [{"utime": t0_us + int(round(k / 100.0 * 1e6)), "value": STEERING_RAD} for k in range(int(dur * 100) + 1)]
    (can / f"{scene_name}_pose.json").write_text(json.dumps(pose))
    (can / f"{scene_name}_steeranglefeedback.json").write_text(json.dumps(steer))


def write_map_expansion(root: Path) -> dict:
    """A minimal map expansion (v1.3 schema): one straight lane along the ego's start heading,
    its road segment, a lane divider and a pedestrian crossing, in global metres."""
    xy0, yaw = ego_state(0.0)
    d, n = np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])

    def pt(a, b):  # a metres along the start heading, b metres to its left, from the ego start
        return xy0 + a * d + b * n

    nodes, rec = [], {}

    def node(p):
        nodes.append({"token": f"node-{len(nodes)}", "x": float(p[0]), "y": float(p[1])})
        return nodes[-1]["token"]

    road = [node(pt(a, b)) for a, b in ((-30, -5), (60, -5), (60, 5), (-30, 5))]
    lane = [node(pt(a, b)) for a, b in ((-30, -2), (60, -2), (60, 2), (-30, 2))]
    cross = [node(pt(a, b)) for a, b in ((20, -5), (24, -5), (24, 5), (20, 5))]
    divider = [node(pt(a, 2.0)) for a in (-30, 60)]
    start, end = pt(-30, 0), pt(60, 0)
    rec.update(
        version="1.3", canvas_edge=[2000.0, 2000.0], node=nodes,
        polygon=[{"token": t, "exterior_node_tokens": ns, "holes": []} for t, ns in (("poly-road", road), ("poly-lane", lane), ("poly-cross", cross))],
        line=[{"token": "line-div", "node_tokens": divider}],
        drivable_area=[], road_block=[], walkway=[], stop_line=[], carpark_area=[], road_divider=[], traffic_light=[], lane_connector=[],
        road_segment=[{"token": "rs-0", "polygon_token": "poly-road", "is_intersection": False, "drivable_area_token": ""}],
        lane=[{"token": "lane-0", "polygon_token": "poly-lane", "lane_type": "CAR", "from_edge_line_token": "", "to_edge_line_token": "", "left_lane_divider_segments": [], "right_lane_divider_segments": []}],
        ped_crossing=[{"token": "pc-0", "polygon_token": "poly-cross", "road_segment_token": "rs-0"}],
        lane_divider=[{"token": "ld-0", "line_token": "line-div", "lane_divider_segments": []}],
        arcline_path_3={"lane-0": [{"start_pose": [float(start[0]), float(start[1]), float(yaw)], "end_pose": [float(end[0]), float(end[1]), float(yaw)], "shape": "LSR", "radius": 999.0, "segment_length": [0.0, 90.0, 0.0]}]},
        connectivity={"lane-0": {"incoming": [], "outgoing": []}},
    )
    path = root / "maps" / "expansion"
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{LOCATION}.json").write_text(json.dumps(rec))
    return rec
