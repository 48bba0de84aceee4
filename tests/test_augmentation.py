"""More samples from the same logs (issue 10, item 1): every vehicle as ego (LAV), the provenance
tags, left-right mirroring, and that evaluation and the distill split use them right."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from data_builders import build
from data_builders.scenarionet import BuildOptions, BuildReport, build_scene, load_scenario
from dsdrive.data.dataset import load_dataset_dir, load_samples, save_dataset_atomic, save_samples
from dsdrive.data.map_index import MapIndex
from dsdrive.data.mirror import MIRROR_SUFFIX, mirror_sample
from dsdrive.data.types import PlanningSample, command_from_future
from dsdrive.data.world_state import AgentState, EgoTrack, Route, WorldState, planning_inputs_from_world
from dsdrive.geometry import global_to_ego, wrap_angle
from helpers_scenarionet import REAL_DIR, _track, circle_scenario, needs_real_data, write_pickle

ATOL = 1e-5


def assert_same_sample(a: PlanningSample, b: PlanningSample) -> None:
    """Bit-identical inputs, targets and tags."""
    assert (a.sample_id, a.scene_id, a.source, a.map_name, a.timestamp) == (b.sample_id, b.scene_id, b.source, b.map_name, b.timestamp)
    assert (a.ego_source, a.ego_track_id, a.mirrored, a.annotation) == (b.ego_source, b.ego_track_id, b.mirrored, b.annotation)
    ai, bi = a.inputs, b.inputs
    assert ai.command == bi.command and ai.agents.ids == bi.agents.ids and ai.agents.types == bi.agents.types
    assert ai.map.types == bi.map.types
    for x, y in [(ai.ego_history, bi.ego_history), (ai.ego_history_mask, bi.ego_history_mask), (ai.ego_status, bi.ego_status),
                 (ai.ego_status_mask, bi.ego_status_mask), (ai.agents.boxes, bi.agents.boxes), (ai.agents.velocities, bi.agents.velocities),
                 (ai.map.points, bi.map.points), (a.targets.ego_future, b.targets.ego_future),
                 (a.targets.ego_future_mask, b.targets.ego_future_mask), (a.targets.agent_futures, b.targets.agent_futures),
                 (a.targets.agent_future_masks, b.targets.agent_future_masks)]:
        np.testing.assert_array_equal(x, y, err_msg=a.sample_id)


def scene_with_vehicles(n: int = 80, ego_lw=(4.5, 1.9)) -> dict:
    """The circle scenario plus a vehicle ``mover`` driving +x at 2 m/s from step 5 to the end
    (box bottom on the ground: centre z = height / 2), a vehicle ``late`` valid only from step 40,
    and the static vehicle ``far`` (parked) and pedestrian ``near`` of the circle scenario."""
    data = circle_scenario(n=n)
    ego = data["tracks"]["ego"]["state"]
    ego["length"][:], ego["width"][:] = ego_lw
    start = ego["position"][0, :2]
    t = np.arange(n) * 0.1
    pos = np.stack([start[0] - 20.0 + 2.0 * t, np.full(n, start[1] + 15.0), np.full(n, 0.8)], -1)
    valid = (np.arange(n) >= 5).astype(float)
    data["tracks"]["mover"] = _track(pos, np.zeros(n), np.tile([2.0, 0.0], (n, 1)), valid, "VEHICLE", (4.0, 1.8, 1.6))
    late = np.tile([start[0] + 30.0, start[1] - 10.0, 0.8], (n, 1))
    late[:, 0] += 3.0 * t
    data["tracks"]["late"] = _track(late, np.zeros(n), np.tile([3.0, 0.0], (n, 1)), (np.arange(n) >= 40).astype(float), "VEHICLE")
    return data


# ------------------------------------------------------------------------------ agents as ego
def test_agent_as_ego_closed_form_and_recorded_ego_as_agent(tmp_path):
    data = scene_with_vehicles(ego_lw=(1.9, 4.5))  # length/width stored swapped, as ScenarioNet's nuScenes ego
    report = BuildReport()
    samples = build_scene(data, tmp_path / "sd_scene-0001.pkl", BuildOptions(agents_as_ego=True), report)
    recorded = [s for s in samples if s.ego_source == "recorded_ego"]
    agent = [s for s in samples if s.ego_source == "agent"]
    assert [s.sample_id for s in recorded] == [f"scene-0001_{t}" for t in range(0, 50, 5)]
    assert {s.ego_track_id for s in recorded} == {"ego"} and not any(s.mirrored for s in samples)
    # mover: valid 5..79, full window (-20 ... +30 steps) at keyframes 25 ... 45; "late" never has 2 s of history
    # before +3 s runs out; "far" is parked (not kept by default); "near" is a pedestrian
    assert [s.sample_id for s in agent] == [f"scene-0001_{t}_agent-mover" for t in range(25, 50, 5)]
    assert report.agent_ego["scene-0001"] == {"vehicle_keyframes": 16 + 15 + 8, "no_full_window": 10 + 10 + 8,
                                              "parked_candidates": 6, "parked_kept": 0, "parked_skipped": 6, "samples": 5}
    for s in agent:
        assert s.ego_track_id == "mover" and s.inputs.command == "STRAIGHT" == command_from_future(s.targets.ego_future)
        np.testing.assert_allclose(s.targets.ego_future, np.stack([np.arange(1, 7), np.zeros(6), np.zeros(6)], -1), atol=1e-5)
        np.testing.assert_allclose(s.inputs.ego_history, [[-4.0, 0, 0], [-3.0, 0, 0], [-2.0, 0, 0], [-1.0, 0, 0]], atol=1e-5)
        np.testing.assert_allclose(s.inputs.ego_status, [2.0, 0, 0, 0, 0, 0], atol=1e-5)
        assert s.inputs.ego_status_mask.tolist() == [True] * 5 + [False]  # no CAN bus: steering masked
        assert "mover" not in s.inputs.agents.ids
        t = int(s.sample_id.split("_")[1])
        # the recorded ego is an agent: its logged box (length >= width), z = ego ground + h/2 - mover ground (0)
        k = s.inputs.agents.ids.index("ego")
        ego = data["tracks"]["ego"]["state"]
        mover = data["tracks"]["mover"]["state"]
        xy = global_to_ego(ego["position"][t, :2][None], mover["position"][t, :2], 0.0)[0]
        np.testing.assert_allclose(s.inputs.agents.boxes[k], [*xy, 0.8, 4.5, 1.9, 1.6, wrap_angle(ego["heading"][t])], atol=1e-4)
        assert s.inputs.agents.types[k] == "VEHICLE"
        fut = global_to_ego(ego["position"][t + 5 : t + 61 : 5, :2], mover["position"][t, :2], 0.0)
        mask = s.targets.agent_future_masks[k]
        assert mask.tolist() == [t + 5 * j < 80 for j in range(1, 13)]
        np.testing.assert_allclose(s.targets.agent_futures[k, mask, :2], fut[: mask.sum()], atol=1e-4)


@pytest.mark.parametrize("fraction, kept", [(0.0, 0), (0.5, 3), (1.0, 6)])
def test_parked_policy(tmp_path, fraction, kept):
    report = BuildReport()
    samples = build_scene(scene_with_vehicles(), tmp_path / "sd_scene-0001.pkl", BuildOptions(agents_as_ego=True, parked_fraction=fraction),
                          report)
    parked = [s for s in samples if s.ego_track_id == "far"]
    counts = report.agent_ego["scene-0001"]
    assert len(parked) == counts["parked_kept"] == kept and counts["parked_skipped"] == 6 - kept and counts["samples"] == 5 + kept
    for s in parked:  # a parked vehicle's sample: it stays where it is
        assert np.abs(s.targets.ego_future[:, :2]).max() < 1e-4 and s.inputs.command == "STRAIGHT"
    # a looser threshold makes the slow mover (2 m/s x 5 s = 10 m) parked too
    report = BuildReport()
    build_scene(scene_with_vehicles(), tmp_path / "sd_scene-0001.pkl", BuildOptions(agents_as_ego=True, parked_motion_m=11.0), report)
    assert report.agent_ego["scene-0001"]["parked_candidates"] == 11 and report.agent_ego["scene-0001"]["samples"] == 0
    with pytest.raises(ValueError, match="parked_fraction = 1.5"):
        BuildOptions(parked_fraction=1.5)


@needs_real_data
def test_real_agent_sample_equals_the_feature_path():
    """Each agent-as-ego sample of a real scene equals planning_inputs_from_world fed that track
    as the ego (built here from the raw log), with the recorded ego among its agents."""
    path = next(REAL_DIR.glob("*scene-1077.pkl"))
    scenario = load_scenario(path)
    samples = build_scene(scenario, path, BuildOptions(agents_as_ego=True))
    agent = [s for s in samples if s.ego_source == "agent"]
    assert len(agent) > 100 and len({s.sample_id for s in samples}) == len(samples)
    tracks, ts = scenario["tracks"], scenario["metadata"]["ts"] - scenario["metadata"]["ts"][0]
    n_with_ego = 0
    for s in agent[::7]:
        t, tid = int(s.sample_id.split("_")[1]), s.ego_track_id
        st = tracks[tid]["state"]
        assert st["valid"][t - 20 : t + 31].all() and tracks[tid]["type"] == "VEHICLE"
        z = st["position"][t, 2] - st["height"][t, 0] / 2
        track = EgoTrack(0.1, st["position"][: t + 1, :2], st["heading"][: t + 1], z, st["velocity"][: t + 1],
                         st["valid"][: t + 1].astype(bool), timestamps=ts[: t + 1])
        others = [(k, tr) for k, tr in tracks.items() if k not in (tid, "ego") and tr["state"]["valid"][t]] + [("ego", tracks["ego"])]
        def col(key, k, tr):
            return tr["state"][key][t]
        ego_st = tracks["ego"]["state"]
        lwh = [[col("length", *o)[0], col("width", *o)[0], col("height", *o)[0]] for o in others[:-1]]
        lwh.append([max(ego_st["length"][t, 0], ego_st["width"][t, 0]), min(ego_st["length"][t, 0], ego_st["width"][t, 0]),
                    ego_st["height"][t, 0]])
        zs = [col("position", *o)[2] for o in others[:-1]] + [ego_st["position"][t, 2] + ego_st["height"][t, 0] / 2]
        types = [tr["type"] if tr["type"] in ("VEHICLE", "PEDESTRIAN", "CYCLIST", "TRAFFIC_CONE", "TRAFFIC_BARRIER") else "OTHER"
                 for _, tr in others]
        agents = AgentState([k for k, _ in others], types, [col("position", *o)[:2] for o in others], [col("heading", *o) for o in others],
                            lwh, [col("velocity", *o) for o in others], z=zs)
        ok = np.flatnonzero(st["valid"].astype(bool))
        world = WorldState(s.sample_id, "scene-1077", track, agents, Route(st["position"][ok, :2], ok * 0.1),
                           MapIndex.from_features(scenario["map_features"]))
        ref = planning_inputs_from_world(world)
        assert ref.command == s.inputs.command == command_from_future(s.targets.ego_future), s.sample_id
        assert ref.agents.ids == s.inputs.agents.ids and ref.map.types == s.inputs.map.types
        for x, y in [(ref.ego_history, s.inputs.ego_history), (ref.ego_status, s.inputs.ego_status), (ref.agents.boxes, s.inputs.agents.boxes),
                     (ref.agents.velocities, s.inputs.agents.velocities), (ref.map.points, s.inputs.map.points)]:
            np.testing.assert_allclose(x, y, atol=ATOL, err_msg=s.sample_id)
        assert ref.ego_status_mask.tolist() == s.inputs.ego_status_mask.tolist() == [True] * 5 + [False]
        fut = global_to_ego(st["position"][t + 5 : t + 31 : 5, :2], st["position"][t, :2], st["heading"][t])
        np.testing.assert_allclose(s.targets.ego_future[:, :2], fut, atol=1e-3)
        n_with_ego += "ego" in s.inputs.agents.ids
    assert n_with_ego > 5


# ------------------------------------------------------------------------------ mirroring
def test_mirroring_twice_is_identity_and_left_becomes_right(tmp_path):
    left = build_scene(scene_with_vehicles(), tmp_path / "sd_scene-0001.pkl", BuildOptions(agents_as_ego=True, parked_fraction=1.0))
    right = build_scene(circle_scenario(clockwise=True), tmp_path / "sd_scene-0001.pkl")
    assert len(left) > 10 and {s.inputs.command for s in left if s.ego_source == "recorded_ego"} == {"LEFT"}
    for s in left:
        m = mirror_sample(s)
        assert m.mirrored and m.sample_id == s.sample_id + MIRROR_SUFFIX and m.ego_source == s.ego_source
        assert m.inputs.command == {"LEFT": "RIGHT", "RIGHT": "LEFT", "STRAIGHT": "STRAIGHT"}[s.inputs.command]
        assert m.inputs.command == command_from_future(m.targets.ego_future)
        np.testing.assert_array_equal(m.inputs.agents.boxes[:, 1], -s.inputs.agents.boxes[:, 1])
        np.testing.assert_array_equal(m.inputs.map.points[..., 1], -s.inputs.map.points[..., 1])
        np.testing.assert_array_equal(m.targets.agent_futures[..., 2], -s.targets.agent_futures[..., 2])
        assert_same_sample(mirror_sample(m), s)
    # the mirror of the counter-clockwise circle is the clockwise circle (ego history, status, future, command)
    for s, r in zip([s for s in left if s.ego_source == "recorded_ego"], right):
        m = mirror_sample(s)
        assert m.inputs.command == r.inputs.command == "RIGHT"
        np.testing.assert_allclose(m.targets.ego_future, r.targets.ego_future, atol=1e-5)
        np.testing.assert_allclose(m.inputs.ego_history, r.inputs.ego_history, atol=1e-5)
        np.testing.assert_allclose(m.inputs.ego_status, r.inputs.ego_status, atol=1e-5)
        assert m.inputs.ego_status_mask.tolist() == r.inputs.ego_status_mask.tolist()


def test_mirror_refuses_annotated_samples_and_bad_tags(tmp_path):
    s = build_scene(circle_scenario(), tmp_path / "sd_scene-0001.pkl")[0]
    s.annotation = {"reasoning": "turn left"}
    with pytest.raises(ValueError, match="scene-0001_0.*annotation.*before annotating"):
        mirror_sample(s)
    with pytest.raises(ValueError, match="ego_source.*'teacher'"):
        PlanningSample(s.source, s.map_name, 0.0, s.inputs, s.targets, ego_source="teacher")


@needs_real_data
def test_real_mirror_identity_and_options_combined():
    path = next(REAL_DIR.glob("*scene-0061.pkl"))
    scenario = load_scenario(path)
    base = build_scene(scenario, path)
    both = build_scene(scenario, path, BuildOptions(agents_as_ego=True, mirror=True))
    assert len(both) == 2 * len(build_scene(scenario, path, BuildOptions(agents_as_ego=True)))
    assert len({s.sample_id for s in both}) == len(both)
    originals = [s for s in both if not s.augmented]
    assert len(originals) == len(base)
    for a, b in zip(originals, base):  # the recorded-ego samples are unchanged by the options
        assert_same_sample(a, b)
    for s, m in zip(both[::2], both[1::2]):
        assert m.mirrored and not s.mirrored and m.sample_id == s.sample_id + MIRROR_SUFFIX
        assert_same_sample(mirror_sample(m), s)
    counts = Counter((s.ego_source, s.mirrored, s.inputs.command) for s in both)
    assert counts[("recorded_ego", True, "RIGHT")] == counts[("recorded_ego", False, "LEFT")] > 0


# ------------------------------------------------------------------------------ tags on disk
def test_tags_survive_save_load_and_old_datasets_default(tmp_path):
    samples = build_scene(scene_with_vehicles(), tmp_path / "sd_scene-0001.pkl", BuildOptions(agents_as_ego=True, mirror=True))
    save_samples(samples, tmp_path / "ds")
    back = load_samples(tmp_path / "ds")
    for a, b in zip(samples, back, strict=True):
        assert_same_sample(a, b)
    original = load_samples(tmp_path / "ds", augmented=False)
    assert [s.sample_id for s in original] == [s.sample_id for s in samples if not s.augmented] and len(original) == 10
    old = load_dataset_dir(tmp_path / "ds").remove_columns(["ego_source", "ego_track_id", "mirrored"])
    save_dataset_atomic(old, tmp_path / "old")
    back = load_samples(tmp_path / "old", augmented=False)
    assert len(back) == len(samples) and all(s.ego_source == "recorded_ego" and not s.mirrored and s.ego_track_id == "" for s in back)


# ------------------------------------------------------------------------------ build CLI, open loop, distill split
def _augmented_folder(tmp_path):
    src = tmp_path / "scenes"
    for i in (1, 2, 3):
        data = scene_with_vehicles()
        data["id"] = data["metadata"]["id"] = data["metadata"]["scenario_id"] = f"scene-000{i}"
        write_pickle(src / f"sd_scene-000{i}.pkl", data)
    out = tmp_path / "planning"
    assert build.main(["--input", str(src), "--out", str(out), "--agents-as-ego", "--mirror", "--parked-fraction", "0.5", "--no-progress"]) == 0
    return out


def test_build_cli_report_counts(tmp_path, capsys):
    out = _augmented_folder(tmp_path)
    report = json.loads((out / "build_report.json").read_text())
    samples = load_samples(out)
    assert report["samples"] == len(samples) == 3 * 2 * (10 + 5 + 3)
    rows = {(r["scene_id"], r["command"], r["ego_source"], r["mirrored"]): r["samples"] for r in report["sample_counts"]}
    assert rows[("scene-0002", "LEFT", "recorded_ego", False)] == rows[("scene-0002", "RIGHT", "recorded_ego", True)] == 10
    assert rows[("scene-0002", "STRAIGHT", "agent", True)] == 8
    assert sum(rows.values()) == len(samples)
    assert report["commands_per_subset"]["recorded_ego mirrored"] == {"RIGHT": 30}
    assert report["agent_ego"]["scene-0003"]["parked_skipped"] == 3 and report["options"]["parked_fraction"] == 0.5
    printed = capsys.readouterr().out
    assert "agent mirrored" in printed and "parked 18 (kept 9, skipped 9)" in printed
    assert build.main(["--input", str(tmp_path / "scenes"), "--out", str(tmp_path / "x"), "--parked-fraction", "2"]) == 2


def test_open_loop_scores_only_recorded_ego_unless_asked(tmp_path, capsys):
    from dsdrive.evaluation.open_loop import main as open_loop_main

    data = _augmented_folder(tmp_path)
    capsys.readouterr()
    assert open_loop_main(["--data", str(data), "--planner", "constant_velocity", "--scenes", "all", "--out", str(tmp_path / "ol.json")]) == 0
    report = json.loads((tmp_path / "ol.json").read_text())
    assert report["num_samples"] == 30 and report["num_augmented_excluded"] == 108 - 30 and not report["include_augmented"]
    assert report["planners"]["constant_velocity"]["metrics"]["ALL"]["num_samples"] == 30
    assert "left out 78 augmented samples" in capsys.readouterr().out
    assert open_loop_main(["--data", str(data), "--planner", "constant_velocity", "--scenes", "scene-0001", "--include-augmented",
                           "--out", str(tmp_path / "ol2.json")]) == 0
    report = json.loads((tmp_path / "ol2.json").read_text())
    assert report["num_samples"] == 36 and report["num_augmented_excluded"] == 0


def test_distill_split_never_trains_on_held_out_scenes(tmp_path):
    from dsdrive.training import distill
    from dsdrive.training.distill_config import DistillConfig

    data = _augmented_folder(tmp_path)
    args = DistillConfig(output_dir=str(tmp_path / "o"), report_to="none", use_cpu=True, reasoning_ce_weight=0.0, risk_l1_weight=0.0)
    script = distill.ScriptArguments(data=str(data), val_scenes="scene-0002")
    train, heldout, train_ids, val_ids = distill.load_training_data(script, args)
    assert train_ids == ["scene-0001", "scene-0003"] and val_ids == ["scene-0002"]
    assert len(train) == 72 and {s.scene_id for s in train} == {"scene-0001", "scene-0003"}
    assert Counter((s.ego_source, s.mirrored) for s in train) == {("recorded_ego", False): 20, ("recorded_ego", True): 20,
                                                                  ("agent", False): 16, ("agent", True): 16}
    assert len(heldout) == 10 and all(s.scene_id == "scene-0002" and not s.augmented for s in heldout)
    script = distill.ScriptArguments(data=str(data), train_data=str(data), val_scenes="scene-0002")
    train, *_ = distill.load_training_data(script, args)
    assert len(train) == 72 and "scene-0002" not in {s.scene_id for s in train}
