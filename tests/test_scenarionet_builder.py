"""ScenarioNet -> PlanningSample builder: real nuScenes-mini scenes, closed-form synthetic scenes, bad input."""

from __future__ import annotations

import pickle
import re
from collections import Counter

import numpy as np
import pytest

from data_builders.scenarionet import (
    BuildOptions,
    BuildReport,
    ScenarioFormatError,
    build_folder,
    build_scene,
    load_scenario,
)
from dsdrive.data.dataset import load_samples, save_samples
from dsdrive.geometry import ego_to_global, wrap_angle
from dsdrive.data.paths import GET_DATA_HELP
from dsdrive.data.safe_pickle import UnsafePickleError
from dsdrive.data.types import AGENT_TYPES, MAP_POINTS, MAP_TYPES, command_from_future
from helpers_scenarionet import REAL_DIR, REAL_SAMPLES_PER_SCENE, circle_scenario, needs_real_data, write_pickle


# ------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def real_build():
    return build_folder(REAL_DIR, progress=False)


@needs_real_data
def test_real_sample_counts_and_ids(real_build):
    samples, report = real_build
    assert report.files_seen == 8
    assert report.samples_per_scene == REAL_SAMPLES_PER_SCENE
    assert Counter(s.scene_id for s in samples) == Counter(REAL_SAMPLES_PER_SCENE)
    assert len({s.sample_id for s in samples}) == len(samples) == 275
    assert all(re.fullmatch(r"scene-\d{4}_\d+", s.sample_id) for s in samples)
    assert {s.source for s in samples} == {"scenarionet:nuscenes"}
    assert {(s.ego_source, s.ego_track_id, s.mirrored, s.augmented) for s in samples} == {("recorded_ego", "ego", False, False)}
    assert {s.map_name for s in samples} == {"boston-seaport", "singapore-onenorth", "singapore-queenstown", "singapore-hollandvillage"}
    # the only skips on clean data: keyframes whose 3 s future runs past the log end (6 per scene)
    assert report.reason_counts() == {"keyframe: future beyond log end": 48}


@needs_real_data
def test_real_ego_frame_matches_global_log(real_build):
    """Ego-frame future/history mapped back with the logged pose reproduce the logged positions."""
    samples, _ = real_build
    by_scene = {}
    for s in samples:
        if s.scene_id not in by_scene:
            by_scene[s.scene_id] = load_scenario(next(REAL_DIR.glob(f"*{s.scene_id}.pkl")))["tracks"]["ego"]["state"]
        ego = by_scene[s.scene_id]
        t = int(s.sample_id.split("_")[1])
        pos, yaw = ego["position"][:, :2], ego["heading"]
        fut = ego_to_global(s.targets.ego_future[:, :2], pos[t], yaw[t])
        np.testing.assert_allclose(fut, pos[t + 5 : t + 31 : 5], atol=1e-3)
        np.testing.assert_allclose(s.targets.ego_future[:, 2], wrap_angle(yaw[t + 5 : t + 31 : 5] - yaw[t]), atol=1e-5)
        hm = s.inputs.ego_history_mask
        assert hm.tolist() == [t - k >= 0 for k in (20, 15, 10, 5)]
        hist_steps = np.array([t - 20, t - 15, t - 10, t - 5])[hm]
        np.testing.assert_allclose(ego_to_global(s.inputs.ego_history[hm, :2], pos[t], yaw[t]), pos[hist_steps], atol=1e-3)


@needs_real_data
def test_real_moving_invariants(real_build):
    samples, _ = real_build
    moving = [s for s in samples if s.inputs.speed > 3.0]
    assert len(moving) > 150
    for s in moving:
        assert s.targets.ego_future[0, 0] > 0.5  # driving forward along +x
        if s.inputs.ego_history_mask[-1]:
            assert s.inputs.ego_history[-1, 0] < -0.5  # -0.5 s pose is behind
        assert abs(s.inputs.ego_status[1]) < 0.2 * s.inputs.speed  # velocity along +x
    stopped = [s for s in samples if s.scene_id == "scene-0553"]
    assert all(np.abs(s.targets.ego_future[:, :2]).max() < 0.5 for s in stopped)


@needs_real_data
def test_real_agents_map_and_commands(real_build):
    samples, _ = real_build
    for s in samples:
        a, m = s.inputs.agents, s.inputs.map
        assert "ego" not in a.ids and len(set(a.ids)) == len(a.ids)
        assert set(a.types) <= set(AGENT_TYPES)
        dist = np.hypot(a.boxes[:, 0], a.boxes[:, 1])
        assert np.all(dist <= 50.0 + 1e-3) and np.all(np.diff(dist) >= -1e-4)  # within radius, nearest first
        assert s.targets.agent_futures.shape == (len(a), 12, 3) and s.targets.agent_future_masks.shape == (len(a), 12)
        assert m.points.shape == (len(m), MAP_POINTS, 2) and 0 < len(m) <= 100
        assert set(m.types) <= set(MAP_TYPES)
        assert np.all(np.abs(m.points[..., 0]) <= 50.0 + 1e-3) and np.all(np.abs(m.points[..., 1]) <= 30.0 + 1e-3)
        assert s.inputs.command == command_from_future(s.targets.ego_future)
    commands = Counter(s.inputs.command for s in samples)
    assert commands["LEFT"] > 0 and commands["STRAIGHT"] > 0
    types = Counter(t for s in samples for t in s.inputs.map.types)
    assert types["lane_centerline"] and types["lane_divider"] and types["road_edge"]
    # agent futures beyond the log end are masked
    last = [s for s in samples if s.scene_id == "scene-0061"][-1]  # step 160 of 191: +6 s = 220
    assert len(last.inputs.agents) and not last.targets.agent_future_masks[:, -1].any()


@needs_real_data
def test_real_round_trip_and_dense_keyframes(real_build, tmp_path):
    samples, _ = real_build
    save_samples(samples[:40], tmp_path / "ds")
    back = load_samples(tmp_path / "ds")
    assert [s.sample_id for s in back] == [s.sample_id for s in samples[:40]]
    for a, b in zip(samples[:40], back):
        np.testing.assert_array_equal(a.targets.ego_future, b.targets.ego_future)
        np.testing.assert_array_equal(a.inputs.map.points, b.inputs.map.points)
        np.testing.assert_array_equal(a.targets.agent_future_masks, b.targets.agent_future_masks)
        assert a.inputs.agents.ids == b.inputs.agents.ids and a.inputs.command == b.inputs.command
        assert (a.ego_source, a.ego_track_id, a.mirrored) == (b.ego_source, b.ego_track_id, b.mirrored)
    path = next(REAL_DIR.glob("*scene-0061.pkl"))
    dense = build_scene(load_scenario(path), path, BuildOptions(keyframe_step=1))
    assert len(dense) == 191 - 30


# ------------------------------------------------------------------------------ closed form
@pytest.mark.parametrize("clockwise", [False, True])
def test_circle_closed_form(clockwise, tmp_path):
    v, r = 6.0, 25.0
    data = circle_scenario(speed=v, radius=r, clockwise=clockwise)
    report = BuildReport()
    samples = build_scene(data, tmp_path / "sd_scene-0001.pkl", BuildOptions(), report)
    assert [s.sample_id for s in samples] == [f"scene-0001_{t}" for t in range(0, 50, 5)]
    sign = -1.0 if clockwise else 1.0
    phi = v * np.arange(1, 7) * 0.5 / r
    expected = np.stack([r * np.sin(phi), sign * r * (1 - np.cos(phi)), sign * phi], -1)
    for s in samples:
        np.testing.assert_allclose(s.targets.ego_future, expected, atol=1e-4)
        assert s.inputs.command == ("RIGHT" if clockwise else "LEFT")
        np.testing.assert_allclose(s.inputs.ego_status[:2], [v, 0.0], atol=1e-4)
    s = samples[-1]  # full history
    hphi = -v * np.array([2.0, 1.5, 1.0, 0.5]) / r
    np.testing.assert_allclose(s.inputs.ego_history, np.stack([r * np.sin(hphi), sign * r * (1 - np.cos(hphi)), sign * hphi], -1), atol=1e-4)
    # backward differences over 0.5 s: yaw rate v/R, lateral acceleration ~ v^2/R
    dphi = v * 0.5 / r
    np.testing.assert_allclose(s.inputs.ego_status[4], sign * v / r, atol=1e-4)
    np.testing.assert_allclose(s.inputs.ego_status[3], sign * v * np.sin(dphi) / 0.5, atol=1e-3)
    assert s.inputs.ego_status_mask.tolist() == [True, True, True, True, True, False]
    assert samples[0].inputs.ego_history_mask.tolist() == [False] * 4
    assert samples[0].inputs.ego_status_mask.tolist() == [True, True, False, False, False, False]
    assert samples[1].inputs.ego_history_mask.tolist() == [False, False, False, True]


def test_circle_agents_and_map(tmp_path):
    data = circle_scenario(theta0=0.0)  # ego starts heading +x (global), so ego frame = shifted global
    samples = build_scene(data, tmp_path / "x.pkl", BuildOptions(radius=50.0))
    s = samples[0]
    assert s.inputs.agents.ids == ["near"]  # "far" is 500 m away, the ego track is excluded
    np.testing.assert_allclose(s.inputs.agents.boxes[0], [10.0, 3.0, 1.0, 0.7, 0.7, 1.8, 0.3], atol=1e-5)
    assert s.inputs.agents.types == ["PEDESTRIAN"]
    np.testing.assert_allclose(s.targets.agent_futures[0, :, :2], np.tile([10.0, 3.0], (12, 1)), atol=1e-4)
    last = samples[-1]  # step 45 of 80: agent futures beyond step 79 are masked
    assert last.targets.agent_future_masks[0].tolist() == [45 + 5 * k < 80 for k in range(1, 13)]
    types = Counter(s.inputs.map.types)
    assert types == {"lane_centerline": 1, "road_edge": 1, "ped_crossing": 1}  # NaN line dropped
    lane = s.inputs.map.points[s.inputs.map.types.index("lane_centerline")]
    np.testing.assert_allclose(lane[[0, -1]], [[-50.0, 0.0], [50.0, 0.0]], atol=1e-3)  # clipped to the ROI, direction kept
    edge = s.inputs.map.points[s.inputs.map.types.index("road_edge")]
    np.testing.assert_allclose(edge[:, 1], -8.0, atol=1e-3)


# ------------------------------------------------------------------------------ bad input
def test_nan_positions_are_counted(tmp_path):
    data = circle_scenario(n=80)
    data["tracks"]["ego"]["state"]["heading"][10] = np.nan  # keyframe 10; future of 0 and 5; history of 15
    data["tracks"]["ego"]["state"]["position"][50] = np.nan  # future of keyframes 20 ... 45
    data["tracks"]["near"]["state"]["position"][0:3, 0] = np.nan
    report = BuildReport()
    samples = build_scene(data, tmp_path / "sd_scene-0001.pkl", BuildOptions(), report)
    assert [s.sample_id for s in samples] == ["scene-0001_15"]
    assert samples[0].inputs.ego_history_mask.tolist() == [False, True, True, False]
    kf = {k.step: k for k in report.skips if k.kind == "keyframe" and "log end" not in k.reason}
    assert sorted(kf) == [0, 5, 10, 20, 25, 30, 35, 40, 45, 50]  # 50: its own position is NaN
    assert "non-finite at step 10" in kf[10].reason and "tracks['ego'].state" in kf[10].reason
    assert kf[10].file.endswith("sd_scene-0001.pkl")
    assert all("step 10)" in kf[t].reason for t in (0, 5)) and all("step 50)" in kf[t].reason for t in range(20, 50, 5))
    agent = [k for k in report.skips if k.kind == "agent"]
    assert len(agent) == 1 and "'near'" in agent[0].reason and "position" in agent[0].reason
    assert "near" in samples[0].inputs.agents.ids  # only its NaN steps 0..2 were dropped
    assert report.reason_counts()["map: non-finite feature"] == 1


@pytest.mark.parametrize("n, expected", [(30, 0), (31, 1)])
def test_short_scene_is_a_counted_skip(tmp_path, n, expected):
    report = BuildReport()
    samples = build_scene(circle_scenario(n=n), tmp_path / "short.pkl", BuildOptions(), report)
    assert len(samples) == expected
    if expected == 0:
        assert [k.kind for k in report.skips] == ["scene"] and "30 steps < 31" in report.skips[0].reason


class Custom:  # a class a restricted unpickler must refuse
    pass


def test_bad_files_raise_clear_errors(tmp_path):
    lst = write_pickle(tmp_path / "list.pkl", [1, 2, 3])
    with pytest.raises(ScenarioFormatError, match=r"list\.pkl.*top level is list"):
        load_scenario(lst)
    data = circle_scenario()
    del data["tracks"]
    no_tracks = write_pickle(tmp_path / "no_tracks.pkl", data)
    with pytest.raises(ScenarioFormatError, match=r"no_tracks\.pkl.*missing field scenario\['tracks'\]"):
        load_scenario(no_tracks)
    data = circle_scenario()
    data["tracks"]["ego"]["state"]["heading"] = data["tracks"]["ego"]["state"]["heading"][:10]
    with pytest.raises(ScenarioFormatError, match=r"state\['heading'\] has shape \(10,\)"):
        load_scenario(write_pickle(tmp_path / "short_heading.pkl", data))
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*'os\.system'"):
        load_scenario(evil)
    custom = write_pickle(tmp_path / "custom.pkl", {"metadata": {}, "tracks": {"x": Custom()}})
    with pytest.raises(UnsafePickleError, match=r"test_scenarionet_builder\.Custom"):
        load_scenario(custom)


def test_folder_build_skips_broken_files_unless_strict(tmp_path):
    write_pickle(tmp_path / "sd_a_scene-0001.pkl", circle_scenario())
    write_pickle(tmp_path / "sd_b_broken.pkl", {"metadata": {"sdc_id": "ego"}})
    (tmp_path / "sd_c_evil.pkl").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    (tmp_path / "sd_d_truncated.pkl").write_bytes(pickle.dumps(circle_scenario())[:100])
    samples, report = build_folder(tmp_path, progress=False)
    assert len(samples) == 10 and report.files_seen == 4
    files = {k.file.rsplit("/", 1)[-1]: k for k in report.skips if k.kind == "file"}
    assert set(files) == {"sd_b_broken.pkl", "sd_c_evil.pkl", "sd_d_truncated.pkl"}
    assert "tracks" in files["sd_b_broken.pkl"].reason and "os.system" in files["sd_c_evil.pkl"].reason
    with pytest.raises(ScenarioFormatError):
        build_folder(tmp_path, strict=True, progress=False)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        build_folder(tmp_path / "nope", progress=False)
    assert str(tmp_path / "nope") in str(err.value) and GET_DATA_HELP.splitlines()[0] in str(err.value)
    with pytest.raises(FileNotFoundError, match="no ScenarioNet"):
        build_folder(tmp_path, progress=False)
