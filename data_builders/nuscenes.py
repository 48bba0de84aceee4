"""nuScenes (through nuscenes-devkit) -> :class:`dsdrive.data.types.PlanningSample`, one per keyframe.

Run as:
    dsdrive build --source nuscenes --input ~/data/nuscenes --version v1.0-mini --out /tmp/planning-nusc

Source: the nuScenes database (Caesar et al., "nuScenes: A multimodal dataset for autonomous
driving", CVPR 2020) read with ``nuscenes.nuscenes.NuScenes``; agent futures with
``nuscenes.prediction.PredictHelper``; ego status with the CAN bus expansion
(``NuScenesCanBus``) and map polylines with the map expansion (``NuScenesMap``) when present.

What one sample holds (the **ego frame** is that of the keyframe's LIDAR_TOP ``ego_pose``:
x forward, y left, z up, origin at the ego pose, **planar**: the ego pose's yaw only, as in
ScenarioNet samples and the simulator; the pose's pitch/roll, about 1 deg, is left out, so a
box's z is its height above the ego origin, ``z - ego z``):

* every ``keyframe_step``-th keyframe (2 Hz; default every one) that has 6 later keyframes
  (+0.5 ... +3.0 s); others are skipped and counted ("future beyond scene end");
* the planner inputs come from :func:`dsdrive.data.world_state.planning_inputs_from_world` (the
  one feature path, shared with the ScenarioNet builder and the closed-loop simulator), given:
  the ego track of the scene's keyframes up to this one (2 Hz, no velocities: ``ego_history``
  from the 4 previous keyframes, masked before the scene start); the route (the scene's keyframe
  poses on the nominal 2 Hz clock, so ``command`` is the lateral offset of keyframe +6, +3 s);
  the measured ego status; the keyframe's annotations; the location's map;
* ``ego_status`` (vx, vy, ax, ay, yaw_rate, steering): measured from the CAN bus ``pose`` message
  (vel, accel, rotation_rate, all in the vehicle frame) and ``steeranglefeedback`` (rad; else
  ``vehicle_monitor.steering`` in deg) at or before the keyframe time; fields without a message
  are derived by the feature path from backward differences of the keyframe ego poses (velocity
  and yaw rate need the previous keyframe, acceleration the two previous); steering masked.
  Only past values enter this input;
* agents: the keyframe's ``sample_annotation`` within ``radius`` (2D) of the ego, nearest first;
  box (x, y, z, l, w, h, yaw) with nuScenes ``size`` = (w, l, h) reordered, z relative to the
  ego, yaw relative to the ego yaw; velocity ``NuScenes.box_velocity`` rotated into the ego
  frame (NaN -> 0, counted for kept agents); futures (12, 3) at +0.5 ... +6.0 s of the kept
  agents from ``PredictHelper.get_future_for_agent`` (global records, transformed here; each
  record placed at round(dt / 0.5) and masked where absent);
* ``ego_future`` (6, 3) from the 6 next keyframes;
* map polylines (map expansion present, :mod:`data_builders.nuscenes_map`): lane/road dividers
  -> ``lane_divider``, boundaries of road_segment ∪ lane polygons -> ``road_edge``, ped_crossing
  outlines -> ``ped_crossing``, lane and lane-connector centrelines -> ``lane_centerline``,
  clipped to the ego-frame ROI box, at most ``max_polylines`` nearest first, resampled to 20
  points; without the expansion the map is empty (counted);
* cameras: the six ``CAM_*`` keyframe images with ``camera_intrinsic`` and a motion-compensated
  ``cam2ego`` = inv(planar ego_pose(t_lidar)) @ ego_pose(t_cam) @ calibrated_sensor, i.e. the
  camera at its own exposure time expressed in the keyframe's (planar) ego frame (the
  devkit/mmdet3d ``sensor2lidar`` chain, so boxes project onto the images exactly). The static rig alone is off by up to ~18 px on scene-0061 at 9 m/s
  (cameras fire up to 43 ms before LIDAR_TOP; see tests/test_camera_projection.py).

Bad input: a missing table folder raises ``FileNotFoundError`` naming it; malformed records raise
``ValueError`` naming table, token and field (or are skipped and counted unless ``strict``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from pyquaternion import Quaternion

from data_builders.nuscenes_map import NuScenesMapExtractor
from dsdrive.constants import AGENT_FUTURE_STEPS, FUTURE_STEPS, STEP_SECONDS
from dsdrive.data.types import CAMERA_NAMES, EGO_STATUS_FIELDS, Camera, PlanningSample, PlanningTargets
from dsdrive.data.world_state import AgentState, EgoTrack, FeatureOptions, Route, WorldState, planning_inputs_from_world
from dsdrive.geometry import wrap_angle

SOURCE = "nuscenes"
KEYFRAME_TOLERANCE_S = 0.15
"""An agent-future record belongs to step k when |dt - k * 0.5 s| is below this (PredictHelper's buffer)."""
CAN_POSE_MAX_AGE_S = 0.1
"""A CAN ``pose``/``steeranglefeedback`` message is used if at most this old (they run at 50/100 Hz)."""
CAN_MONITOR_MAX_AGE_S = 0.6
"""A ``vehicle_monitor`` message (2 Hz) is used if at most this old."""


def agent_type(category: str) -> str:
    """nuScenes category name -> :data:`dsdrive.data.types.AGENT_TYPES` entry.

    ``vehicle.bicycle`` / ``vehicle.motorcycle`` -> CYCLIST, other ``vehicle.*`` -> VEHICLE,
    ``human.pedestrian.*`` -> PEDESTRIAN, ``movable_object.trafficcone`` -> TRAFFIC_CONE,
    ``movable_object.barrier`` -> TRAFFIC_BARRIER, everything else -> OTHER.
    """
    if category in ("vehicle.bicycle", "vehicle.motorcycle"):
        return "CYCLIST"
    if category.startswith("vehicle."):
        return "VEHICLE"
    if category.startswith("human.pedestrian."):
        return "PEDESTRIAN"
    if category == "movable_object.trafficcone":
        return "TRAFFIC_CONE"
    if category == "movable_object.barrier":
        return "TRAFFIC_BARRIER"
    return "OTHER"


def pose_matrix(record: dict) -> np.ndarray:
    """(4, 4) transform from a nuScenes ``translation``/``rotation`` (w, x, y, z) record."""
    m = np.eye(4)
    m[:3, :3] = Quaternion(record["rotation"]).rotation_matrix
    m[:3, 3] = record["translation"]
    return m


def heading_of(rotation: list[float]) -> float:
    """Planar heading (rad) of a nuScenes orientation quaternion (w, x, y, z): the direction of
    its rotated x axis in the x-y plane (the devkit's ``quaternion_yaw``; exact under pitch/roll,
    unlike pyquaternion's ``yaw_pitch_roll``, which is off by ~1e-4 rad at 1 deg of tilt)."""
    r = Quaternion(rotation).rotation_matrix
    return float(np.arctan2(r[1, 0], r[0, 0]))


class _EgoFrame:
    """The planar ego frame of one keyframe (the frame of :mod:`dsdrive.data.world_state`):
    origin at the ``ego_pose`` translation, x along its yaw, z up; the pose's small pitch/roll
    (about 1 deg) is not applied, so heights are ``z - ego z`` as in ScenarioNet samples and the
    simulator. Global (nuScenes) -> ego transforms of the targets and the cameras."""

    def __init__(self, ego_pose: dict):
        self.t = np.asarray(ego_pose["translation"], dtype=np.float64)
        self.yaw = heading_of(ego_pose["rotation"])
        ego2global = np.eye(4)
        ego2global[:3, :3] = Quaternion(axis=[0.0, 0.0, 1.0], angle=self.yaw).rotation_matrix
        ego2global[:3, 3] = self.t
        self.global2ego = np.linalg.inv(ego2global)

    def points(self, xyz: np.ndarray) -> np.ndarray:
        """Global points (N, 3) -> ego frame (N, 3)."""
        p = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        return p @ self.global2ego[:3, :3].T + self.global2ego[:3, 3]

    def vectors(self, v: np.ndarray) -> np.ndarray:
        """Global vectors (N, 3) -> ego frame (N, 3) (rotation only)."""
        return np.asarray(v, dtype=np.float64).reshape(-1, 3) @ self.global2ego[:3, :3].T

    def rel_yaw(self, rotation: list[float]) -> float:
        """Yaw of a global orientation quaternion relative to the ego heading (rad)."""
        return float(wrap_angle(heading_of(rotation) - self.yaw))


class _CanBus:
    """Ego status from the nuScenes CAN bus expansion for one scene, or None per message."""

    def __init__(self, can, scene_name: str, report: Counter):
        self.pose = self.steer = self.monitor = None
        if can is None:
            return
        for attr, msg in (("pose", "pose"), ("steer", "steeranglefeedback"), ("monitor", "vehicle_monitor")):
            try:
                messages = can.get_messages(scene_name, msg, print_warnings=False)
            except FileNotFoundError:  # this scene has no such message file
                continue
            except Exception as e:  # the devkit raises a bare Exception for its CAN-bus blacklist only
                if "does not have any CAN bus data" not in str(e):
                    raise
                continue
            if messages:
                setattr(self, attr, (np.array([m["utime"] for m in messages], dtype=np.int64), messages))
        if self.pose is None:
            report["scenes without CAN bus pose (ego status from ego poses)"] += 1
        if self.steer is None and self.monitor is None:
            report["scenes without CAN bus steering (steering masked)"] += 1

    @staticmethod
    def _latest(table, utime: int, max_age_s: float) -> dict | None:
        if table is None:
            return None
        times, messages = table
        i = int(np.searchsorted(times, utime, side="right")) - 1
        if i < 0 or (utime - times[i]) * 1e-6 > max_age_s:
            return None
        return messages[i]

    def status(self, utime: int) -> tuple[np.ndarray, np.ndarray]:
        values, mask = np.zeros(len(EGO_STATUS_FIELDS)), np.zeros(len(EGO_STATUS_FIELDS), bool)
        pose = self._latest(self.pose, utime, CAN_POSE_MAX_AGE_S)
        if pose is not None:
            values[0:2], values[2:4], values[4] = pose["vel"][:2], pose["accel"][:2], pose["rotation_rate"][2]
            mask[0:5] = True
        steer = self._latest(self.steer, utime, CAN_POSE_MAX_AGE_S)
        if steer is not None:
            values[5], mask[5] = steer["value"], True
        else:
            mon = self._latest(self.monitor, utime, CAN_MONITOR_MAX_AGE_S)
            if mon is not None:
                values[5], mask[5] = np.deg2rad(mon["steering"]), True
        return values, mask


def _open_can_bus(dataroot: Path, can_bus_root: str | None, report: Counter):
    """NuScenesCanBus over ``can_bus_root``, ``dataroot`` or its parent (first with can_bus/), else None."""
    from nuscenes.can_bus.can_bus_api import NuScenesCanBus

    for root in ([Path(can_bus_root)] if can_bus_root else []) + [dataroot, dataroot.parent]:
        if (root / "can_bus").is_dir():
            return NuScenesCanBus(dataroot=str(root))
    report["can bus expansion absent (all scenes: ego status from ego poses, steering masked)"] += 1
    return None


def _scene_keyframes(nusc, scene: dict) -> list[dict]:
    out, token = [], scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        out.append(sample)
        token = sample["next"]
    return out


def _ego_pose_of(nusc, sample: dict) -> dict:
    if "LIDAR_TOP" not in sample["data"]:
        raise ValueError(f"sample {sample['token']}: no LIDAR_TOP sample_data (field sample.data)")
    return nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])


def _pose_rows(frame: _EgoFrame, poses: list[dict]) -> np.ndarray:
    """(K, 3) x, y, heading of ego poses in ``frame``."""
    if not poses:
        return np.zeros((0, 3))
    xy = frame.points(np.array([p["translation"] for p in poses]))[:, :2]
    yaw = np.array([frame.rel_yaw(p["rotation"]) for p in poses])
    return np.concatenate([xy, yaw[:, None]], axis=1)


def _planar(pose: dict) -> tuple[np.ndarray, float]:
    """(x, y) and yaw (rad) of a nuScenes ``ego_pose`` / annotation record (global frame)."""
    return np.asarray(pose["translation"][:2], dtype=np.float64), heading_of(pose["rotation"])


def _agent_state(nusc, sample: dict) -> tuple[AgentState, list[dict], np.ndarray]:
    """All annotations of a keyframe as an :class:`AgentState` (global frame), the annotation
    records in the same order and a (N,) flag of velocities that were NaN (set to 0).

    Raises:
        ValueError: an annotation with a malformed size/translation (token and values).
    """
    anns = [nusc.get("sample_annotation", t) for t in sample["anns"]]
    for a in anns:
        if len(a["size"]) != 3 or len(a["translation"]) != 3:
            raise ValueError(f"sample_annotation {a['token']}: malformed size/translation {a['size']}/{a['translation']}")
    if not anns:
        return AgentState.empty(), [], np.zeros(0, bool)
    vel = np.array([np.asarray(nusc.box_velocity(a["token"]), np.float64)[:2] for a in anns])
    nan = ~np.isfinite(vel).all(1)
    agents = AgentState(
        ids=[a["instance_token"] for a in anns],
        types=[agent_type(a["category_name"]) for a in anns],
        xy=np.array([a["translation"][:2] for a in anns], np.float64),
        yaw=np.array([_planar(a)[1] for a in anns]),
        lwh=np.array([[a["size"][1], a["size"][0], a["size"][2]] for a in anns], np.float64),  # nuScenes size is (w, l, h)
        velocity=np.where(nan[:, None], 0.0, vel),
        z=np.array([a["translation"][2] for a in anns], np.float64),
    )
    return agents, anns, nan


def _agent_futures(nusc, helper, sample: dict, anns: list[dict], frame: _EgoFrame) -> tuple[np.ndarray, np.ndarray]:
    """Futures (N, 12, 3) in ``frame`` and masks (N, 12) of the annotations ``anns``."""
    t0 = sample["timestamp"] * 1e-6
    futures = np.zeros((len(anns), AGENT_FUTURE_STEPS, 3))
    masks = np.zeros((len(anns), AGENT_FUTURE_STEPS), bool)
    for n, a in enumerate(anns):
        records = helper.get_future_for_agent(a["instance_token"], sample["token"], AGENT_FUTURE_STEPS * STEP_SECONDS, in_agent_frame=False, just_xy=False)
        for rec in records:
            dt = nusc.get("sample", rec["sample_token"])["timestamp"] * 1e-6 - t0
            k = int(round(dt / STEP_SECONDS))
            if 1 <= k <= AGENT_FUTURE_STEPS and abs(dt - k * STEP_SECONDS) < KEYFRAME_TOLERANCE_S:
                futures[n, k - 1, :2] = frame.points(np.array(rec["translation"]))[0, :2]
                futures[n, k - 1, 2] = frame.rel_yaw(rec["rotation"])
                masks[n, k - 1] = True
    return futures.astype(np.float32), masks


def _cameras(nusc, sample: dict, frame: _EgoFrame, report: Counter) -> list[Camera]:
    """The keyframe's cameras with ``cam2ego`` into ``frame`` (the planar ego frame of the LiDAR time)."""
    global2ego = frame.global2ego
    cams = []
    for name in CAMERA_NAMES:
        if name not in sample["data"]:
            report[f"camera {name} missing"] += 1
            continue
        sd = nusc.get("sample_data", sample["data"][name])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        intr = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
        if intr.shape != (3, 3):
            raise ValueError(f"calibrated_sensor {cs['token']}: camera_intrinsic has shape {intr.shape}, expected (3, 3)")
        cam_ego = pose_matrix(nusc.get("ego_pose", sd["ego_pose_token"]))
        cam2ego = global2ego @ cam_ego @ pose_matrix(cs)
        path = os.path.abspath(os.path.join(nusc.dataroot, sd["filename"]))
        cams.append(Camera(name, path, intr.astype(np.float32), cam2ego.astype(np.float32)))
    return cams


def build_samples(
    dataroot: str | Path,
    version: str = "v1.0-mini",
    radius: float = 50.0,
    keyframe_step: int = 1,
    map_roi: tuple[float, float] = (50.0, 30.0),
    max_polylines: int = 100,
    can_bus_root: str | None = None,
    strict: bool = False,
    progress: bool = True,
) -> tuple[list[PlanningSample], dict]:
    """Build planning samples from a nuScenes dataroot (see the module docstring for content).

    Args:
        dataroot: folder holding ``<version>/`` tables, ``samples/`` and ``maps/``.
        version: table folder, e.g. ``v1.0-mini``, ``v1.0-trainval``.
        radius: keep agents within this 2D distance of the ego (m).
        keyframe_step: use every n-th keyframe (1 = every keyframe, 2 Hz).
        map_roi: ego-frame map box half extents (x, y) in metres.
        max_polylines: keep at most this many map polylines, nearest to the ego first.
        can_bus_root: folder holding ``can_bus/`` (default: ``dataroot`` or its parent).
        strict: raise on the first malformed keyframe instead of skipping and counting it.
        progress: show a tqdm bar over scenes.

    Returns:
        ``(samples, report)``: samples in scene then time order; ``report`` with ``scenes``,
        ``keyframes``, ``samples``, ``samples_per_scene`` and ``counts`` (reason -> count).

    Raises:
        FileNotFoundError: ``dataroot/version`` does not exist (names the path).
        ValueError: malformed records when ``strict``.
    """
    from nuscenes.nuscenes import NuScenes
    from nuscenes.prediction import PredictHelper
    from tqdm import tqdm

    dataroot = Path(dataroot).expanduser().resolve()
    if not (dataroot / version).is_dir():
        raise FileNotFoundError(f"{dataroot / version}: no nuScenes tables (expected {version}/sample.json ...); pass --input DATAROOT --version VERSION")
    if keyframe_step < 1:
        raise ValueError(f"keyframe_step must be >= 1, got {keyframe_step}")
    nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    helper = PredictHelper(nusc)
    counts: Counter = Counter()
    can = _open_can_bus(dataroot, can_bus_root, counts)
    maps = NuScenesMapExtractor(dataroot, counts)
    features = FeatureOptions(radius, tuple(map_roi), max_polylines)
    samples: list[PlanningSample] = []
    per_scene: dict[str, int] = {}
    n_keyframes = 0
    for scene in tqdm(nusc.scene, desc="nuScenes scenes", disable=not progress):
        keyframes = _scene_keyframes(nusc, scene)
        n_keyframes += len(keyframes)
        location = nusc.get("log", scene["log_token"])["location"]
        canbus = _CanBus(can, scene["name"], counts if can is not None else Counter())
        per_scene[scene["name"]] = 0
        poses = [_ego_pose_of(nusc, s) for s in keyframes]
        times = [s["timestamp"] * 1e-6 for s in keyframes]
        planar = [_planar(p) for p in poses]
        # the route: keyframe poses on the nominal 2 Hz clock (keyframe k at k * 0.5 s)
        route = Route(np.array([xy for xy, _ in planar]), np.arange(len(poses)) * STEP_SECONDS) if poses else None
        for i in range(0, len(keyframes), keyframe_step):
            if i + FUTURE_STEPS >= len(keyframes):
                counts["keyframe skipped: future beyond scene end"] += 1
                continue
            try:
                samples.append(_build_one(nusc, helper, scene, keyframes, poses, planar, times, route, i, location, canbus, maps, features, counts))
                per_scene[scene["name"]] += 1
            except (ValueError, KeyError) as exc:
                if strict:
                    raise
                counts[f"keyframe skipped: {type(exc).__name__}"] += 1
                print(f"nuscenes: skipped {scene['name']} keyframe {i}: {exc}", file=sys.stderr)
    report = {"scenes": len(nusc.scene), "keyframes": n_keyframes, "samples": len(samples), "samples_per_scene": per_scene, "counts": dict(counts)}
    return samples, report


def _build_one(nusc, helper, scene, keyframes, poses, planar, times, route, i, location, canbus, maps, features, counts) -> PlanningSample:
    sample, frame = keyframes[i], _EgoFrame(poses[i])
    ego = EgoTrack(STEP_SECONDS, [xy for xy, _ in planar[: i + 1]], [yaw for _, yaw in planar[: i + 1]],
                   float(poses[i]["translation"][2]), timestamps=times[: i + 1])
    status, smask = canbus.status(sample["timestamp"])
    agents, anns, nan_velocity = _agent_state(nusc, sample)
    world = WorldState(sample["token"], scene["name"], ego, agents, route, maps.at(location),
                       measured_status=status, measured_status_mask=smask, cameras=_cameras(nusc, sample, frame, counts))
    inputs = planning_inputs_from_world(world, features)
    index_of = {a["instance_token"]: n for n, a in enumerate(anns)}
    kept = [index_of[t] for t in inputs.agents.ids]
    n_nan = int(nan_velocity[kept].sum()) if kept else 0
    if n_nan:
        counts["agent velocity NaN -> 0 (single annotation or gap > 1.5 s)"] += n_nan
    fut, fmask = _agent_futures(nusc, helper, sample, [anns[k] for k in kept], frame)
    future = _pose_rows(frame, poses[i + 1 : i + 1 + FUTURE_STEPS])
    targets = PlanningTargets(future.astype(np.float32), np.ones(FUTURE_STEPS, bool), fut, fmask)
    return PlanningSample(SOURCE, location, times[i] - times[0], inputs, targets)


def build(args: argparse.Namespace) -> int:
    """``dsdrive build --source nuscenes``: build, save with :func:`dsdrive.data.dataset.save_samples`,
    write ``build_report.json`` and print a summary. Returns 0 ok, 1 nothing built, 2 bad input."""
    from dsdrive.data.dataset import save_samples

    t0 = time.perf_counter()
    if not args.input:
        print("dsdrive build --source nuscenes: --input DATAROOT is required (folder with v1.0-mini/, samples/, maps/)", file=sys.stderr)
        return 2
    step = getattr(args, "keyframe_step", None) or 1
    try:
        samples, report = build_samples(
            args.input,
            version=getattr(args, "version", "v1.0-mini"),
            radius=getattr(args, "radius", 50.0),
            keyframe_step=step,
            map_roi=tuple(getattr(args, "map_roi", (50.0, 30.0))),
            max_polylines=getattr(args, "max_polylines", 100),
            strict=getattr(args, "strict", False),
            progress=not getattr(args, "no_progress", False),
        )
    except FileNotFoundError as exc:
        print(f"dsdrive build: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"dsdrive build: {exc}", file=sys.stderr)
        return 1
    commands = Counter(s.inputs.command for s in samples)
    print(f"nuscenes {args.input} ({report['scenes']} scenes, {report['keyframes']} keyframes) -> {len(samples)} samples; commands {dict(commands)}")
    for reason, n in sorted(report["counts"].items()):
        print(f"  {reason}: {n}")
    if not samples:
        print(f"dsdrive build: no samples built; nothing written to {args.out}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_samples(samples, out)
    report.update(source=SOURCE, input=str(args.input), out=str(out.resolve()), commands=dict(commands), seconds=time.perf_counter() - t0)
    from dsdrive.data.atomic_io import write_json_atomic

    write_json_atomic(out / "build_report.json", report)
    print(f"wrote {out} in {report['seconds']:.1f} s")
    return 0
