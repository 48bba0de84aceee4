"""data_builders.nuscenes on a synthetic nuScenes-schema dataset with analytic motion
(tests/helpers_nuscenes.py), loaded by the real nuscenes-devkit."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from data_builders.nuscenes import agent_type, build, build_samples
from dsdrive.data.camera import ego_to_camera
from dsdrive.data.dataset import load_samples
from dsdrive.geometry import wrap_angle
from dsdrive.data.types import CAMERA_NAMES
from helpers_nuscenes import (
    AGENTS,
    EGO_SPEED,
    EGO_YAW_RATE,
    STEERING_RAD,
    agent_global,
    ego_state,
    make_nuscenes,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_nuscenes(tmp_path_factory.mktemp("nusc"), with_can_bus=True, with_map_expansion=True)
    samples, report = build_samples(root, progress=False)
    return root, samples, report


def _by_scene(samples, scene):
    return [s for s in samples if s.scene_id == scene]


def _to_ego(xy_global, t):
    xy0, yaw0 = ego_state(t)
    c, s = np.cos(yaw0), np.sin(yaw0)
    d = np.asarray(xy_global)[:2] - xy0
    return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])


def test_agent_type_mapping():
    assert agent_type("vehicle.car") == "VEHICLE"
    assert agent_type("vehicle.bus.rigid") == "VEHICLE"
    assert agent_type("vehicle.bicycle") == "CYCLIST" and agent_type("vehicle.motorcycle") == "CYCLIST"
    assert agent_type("human.pedestrian.police_officer") == "PEDESTRIAN"
    assert agent_type("movable_object.trafficcone") == "TRAFFIC_CONE"
    assert agent_type("movable_object.barrier") == "TRAFFIC_BARRIER"
    assert agent_type("animal") == "OTHER" and agent_type("movable_object.debris") == "OTHER"


def test_sample_counts_skip_keyframes_without_full_future(built):
    _, samples, report = built
    # 12 keyframes -> 6 with 6 later keyframes; 9 -> 3.
    assert report["samples_per_scene"] == {"scene-0001": 6, "scene-0002": 3}
    assert report["keyframes"] == 21 and len(samples) == 9
    assert report["counts"]["keyframe skipped: future beyond scene end"] == 12
    assert all(s.source == "nuscenes" and s.map_name == "singapore-onenorth" for s in samples)
    assert [s.sample_id for s in _by_scene(samples, "scene-0001")] == [f"s0-{k}" for k in range(6)]


def test_ego_future_and_history_match_the_analytic_arc(built):
    _, samples, _ = built
    r = EGO_SPEED / EGO_YAW_RATE
    for k, s in enumerate(_by_scene(samples, "scene-0001")):
        for j, dt in enumerate(np.arange(1, 7) * 0.5):
            expected = [r * np.sin(EGO_YAW_RATE * dt), r * (1 - np.cos(EGO_YAW_RATE * dt)), EGO_YAW_RATE * dt]
            np.testing.assert_allclose(s.targets.ego_future[j], expected, atol=1e-3)
        assert s.targets.ego_future_mask.all()
        np.testing.assert_array_equal(s.inputs.ego_history_mask, [k - 4 + j >= 0 for j in range(4)])
        for j in range(4):
            dt = (j - 4) * 0.5
            expected = [r * np.sin(EGO_YAW_RATE * dt), r * (1 - np.cos(EGO_YAW_RATE * dt)), EGO_YAW_RATE * dt]
            np.testing.assert_allclose(s.inputs.ego_history[j], expected if k - 4 + j >= 0 else [0, 0, 0], atol=1e-3)
        # 3 s at 0.12 rad/s and 6 m/s: lateral offset 3.2 m -> LEFT.
        assert s.inputs.command == "LEFT"


def test_ego_status_from_can_bus_and_from_poses(built):
    _, samples, report = built
    can = _by_scene(samples, "scene-0001")[2].inputs
    np.testing.assert_allclose(can.ego_status, [EGO_SPEED, 0, 0, EGO_SPEED * EGO_YAW_RATE, EGO_YAW_RATE, STEERING_RAD], atol=1e-5)
    assert can.ego_status_mask.all()
    first, later = _by_scene(samples, "scene-0002")[0].inputs, _by_scene(samples, "scene-0002")[2].inputs
    assert not first.ego_status_mask.any()  # no CAN bus, no previous keyframe
    # backward difference over 0.5 s: the chord of the arc, seen from the current pose.
    chord = 2 * EGO_SPEED / EGO_YAW_RATE * np.sin(EGO_YAW_RATE * 0.25) / 0.5
    np.testing.assert_allclose(np.hypot(*later.ego_status[:2]), chord, atol=1e-4)
    np.testing.assert_allclose(later.ego_status[4], EGO_YAW_RATE, atol=1e-5)
    np.testing.assert_array_equal(later.ego_status_mask, [True] * 5 + [False])
    assert report["counts"]["scenes without CAN bus pose (ego status from ego poses)"] == 1


def test_agents_boxes_velocities_and_futures_in_ego_frame(built):
    _, samples, _ = built
    s = _by_scene(samples, "scene-0001")[3]
    t, yaw0 = 1.5, ego_state(1.5)[1]
    a = s.inputs.agents
    assert "inst-truck_far-s0" not in a.ids  # 98 m away, radius 50 m
    assert sorted(a.types) == sorted(["VEHICLE", "PEDESTRIAN", "CYCLIST", "TRAFFIC_CONE"])
    dists = np.hypot(a.boxes[:, 0], a.boxes[:, 1])
    assert np.all(np.diff(dists) >= 0)  # nearest first
    for name in ("car", "ped", "bike", "cone"):
        i = a.ids.index(f"inst-{name}-s0")
        pos, yaw = agent_global(name, t)
        w, l, h = AGENTS[name][3]
        np.testing.assert_allclose(a.boxes[i, :2], _to_ego(pos, t), atol=1e-4)
        np.testing.assert_allclose(a.boxes[i, 2:6], [pos[2], l, w, h], atol=1e-5)
        assert abs(wrap_angle(a.boxes[i, 6] - (yaw - yaw0))) < 1e-5
        vel = np.asarray(AGENTS[name][2])
        c, sn = np.cos(yaw0), np.sin(yaw0)
        np.testing.assert_allclose(a.velocities[i], [c * vel[0] + sn * vel[1], -sn * vel[0] + c * vel[1]], atol=1e-4)
        # futures: keyframes 4 .. present, via PredictHelper
        last = min(AGENTS[name][5], 11)
        expected_mask = [3 + k <= last for k in range(1, 13)]
        np.testing.assert_array_equal(s.targets.agent_future_masks[i], expected_mask)
        for k in range(1, 13):
            if expected_mask[k - 1]:
                fpos, fyaw = agent_global(name, t + 0.5 * k)
                np.testing.assert_allclose(s.targets.agent_futures[i, k - 1, :2], _to_ego(fpos, t), atol=1e-4)
                assert abs(wrap_angle(s.targets.agent_futures[i, k - 1, 2] - (fyaw - yaw0))) < 1e-5
            else:
                np.testing.assert_array_equal(s.targets.agent_futures[i, k - 1], 0.0)
    assert "inst-bike-s0" not in _by_scene(samples, "scene-0001")[0].inputs.agents.ids  # appears at keyframe 2


def test_cameras_are_motion_compensated_like_the_devkit_chain(built):
    root, samples, _ = built
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.geometry_utils import BoxVisibility

    nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    s = _by_scene(samples, "scene-0001")[4]
    assert [c.name for c in s.inputs.cameras] == list(CAMERA_NAMES)
    sample = nusc.get("sample", s.sample_id)
    a = s.inputs.agents
    for cam in s.inputs.cameras:
        assert cam.intrinsics.shape == (3, 3) and cam.cam2ego.shape == (4, 4)
        assert cam.image_path.startswith(str(root)) and __import__("os").path.exists(cam.image_path)
        np.testing.assert_allclose(cam.cam2ego[3], [0, 0, 0, 1])
        # devkit: global -> ego(t_cam) -> camera, boxes in the camera frame
        _, boxes, _ = nusc.get_sample_data(sample["data"][cam.name], box_vis_level=BoxVisibility.NONE)
        for box in boxes:
            inst = nusc.get("sample_annotation", box.token)["instance_token"]
            if inst in a.ids:
                ours = ego_to_camera(a.boxes[a.ids.index(inst), :3][None], cam.cam2ego)[0]
                np.testing.assert_allclose(ours, box.center, atol=2e-3)


def test_tilted_ego_pose_gives_the_planar_ego_frame(tmp_path):
    """Real nuScenes ego poses carry ~1 deg of pitch/roll. The ego frame stays planar (yaw only,
    as ScenarioNet samples and the simulator have it): box z is the global height (ego z = 0),
    x/y the planar transform; cam2ego is expressed in the same frame, so boxes still land where
    the devkit's full 3D chain puts them in each camera."""
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.geometry_utils import BoxVisibility

    root = make_nuscenes(tmp_path / "tilt", with_can_bus=False, ego_tilt=(0.0105, -0.021))
    samples, _ = build_samples(root, progress=False)
    s = _by_scene(samples, "scene-0001")[3]
    t, a = 1.5, s.inputs.agents
    for name in ("car", "ped", "bike", "cone"):
        i = a.ids.index(f"inst-{name}-s0")
        pos, _ = agent_global(name, t)
        np.testing.assert_allclose(a.boxes[i, :3], [*_to_ego(pos, t), pos[2]], atol=1e-4)
    r = EGO_SPEED / EGO_YAW_RATE
    np.testing.assert_allclose(s.targets.ego_future[-1], [r * np.sin(EGO_YAW_RATE * 3), r * (1 - np.cos(EGO_YAW_RATE * 3)), EGO_YAW_RATE * 3], atol=1e-3)
    nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    checked = 0
    for cam in s.inputs.cameras:
        _, boxes, _ = nusc.get_sample_data(nusc.get("sample", s.sample_id)["data"][cam.name], box_vis_level=BoxVisibility.NONE)
        for box in boxes:
            inst = nusc.get("sample_annotation", box.token)["instance_token"]
            if inst in a.ids:
                np.testing.assert_allclose(ego_to_camera(a.boxes[a.ids.index(inst), :3][None], cam.cam2ego)[0], box.center, atol=2e-3)
                checked += 1
    assert checked == 6 * 4


def test_map_polylines_from_the_map_expansion(built, tmp_path):
    _, samples, _ = built
    m = _by_scene(samples, "scene-0001")[0].inputs.map
    assert set(m.types) == {"lane_centerline", "lane_divider", "road_edge", "ped_crossing"}
    div = m.points[m.types.index("lane_divider")]
    # the divider runs 2 m left of the start pose from -30 m to +60 m, clipped to |x| <= 50 m
    np.testing.assert_allclose(div[:, 1], 2.0, atol=1e-3)
    np.testing.assert_allclose(sorted([div[0, 0], div[-1, 0]]), [-30.0, 50.0], atol=1e-3)
    centre = m.points[m.types.index("lane_centerline")]
    np.testing.assert_allclose(centre[:, 1], 0.0, atol=1e-3)
    cross = m.points[m.types.index("ped_crossing")]
    assert cross[:, 0].min() >= 20 - 1e-3 and cross[:, 0].max() <= 24 + 1e-3
    # without the expansion: empty maps and a counted note
    root = make_nuscenes(tmp_path / "nomap", with_can_bus=False, with_map_expansion=False)
    samples2, report = build_samples(root, progress=False)
    assert all(len(s.inputs.map) == 0 for s in samples2)
    assert report["counts"]["map expansion absent for singapore-onenorth (empty map)"] == 1
    assert report["counts"]["can bus expansion absent (all scenes: ego status from ego poses, steering masked)"] == 1
    assert not any(s.inputs.ego_status_mask[5] for s in samples2)


def test_build_cli_entry_writes_dataset_and_report(built, tmp_path):
    root, samples, _ = built
    out = tmp_path / "planning"
    args = argparse.Namespace(source="nuscenes", input=str(root), out=str(out), version="v1.0-mini", keyframe_step=2, radius=50.0, strict=False, no_progress=True)
    assert build(args) == 0
    loaded = load_samples(out)
    assert [s.sample_id for s in loaded] == ["s0-0", "s0-2", "s0-4", "s1-0", "s1-2"]
    ref = next(s for s in samples if s.sample_id == "s0-2")
    np.testing.assert_allclose(loaded[1].targets.ego_future, ref.targets.ego_future)
    assert json.loads((out / "build_report.json").read_text())["samples"] == 5
    bad = argparse.Namespace(**{**vars(args), "input": str(tmp_path / "missing"), "out": str(tmp_path / "x")})
    assert build(bad) == 2 and not (tmp_path / "x").exists()
    with pytest.raises(FileNotFoundError, match="v1.0-trainval"):
        build_samples(root, version="v1.0-trainval")
