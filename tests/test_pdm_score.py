"""The NAVSIM-style PDM score: the kinematic bicycle + LQR tracker, per-sample sub-scores on a real
scene (the logged future scores ~1, constant velocity lower, a plan into the car ahead NC 0, a
plan that jumps sideways off the road DAC 0), bad input (a sample the log does not match, a
NaN plan, no scenario, a bad checkpoint) and the ``dsdrive pdm-score`` command. The 8-scene run
is ``slow``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dsdrive.evaluation.pdm_score import (
    HORIZON_STEPS,
    SampleSkipped,
    ScenarioLog,
    evaluate_planner,
    log_step_of,
    main,
    score_sample,
)
from dsdrive.evaluation.trajectory_tracking import WHEELBASE_M, BicycleState, reference_from_plan, track
from dsdrive.planners.base import Planner
from dsdrive.planners.constant_velocity import ConstantVelocityPlanner
from dsdrive.planners.log_future import GroundTruthPlanner

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nuscenes-mini-scenarionet"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")
T = 0.5 * np.arange(7)


# ------------------------------------------------------------------ bicycle + LQR
def test_lqr_tracks_an_arc_a_stop_and_an_offset():
    v, radius = 8.0, 30.0
    ang = v * T / radius
    arc = np.stack([radius * np.sin(ang), radius * (1 - np.cos(ang))], 1)
    out = track(reference_from_plan(T, arc, ang, np.array([v, 0.0])), BicycleState(0, 0, 0, v, steer=np.arctan(WHEELBASE_M / radius)), 30)
    assert np.linalg.norm(out[::5, :2] - arc, axis=1).max() < 0.2 and abs(out[-1, 3] - v) < 0.2
    x = np.minimum(10 * T - 1.5 * T**2, 100 / 6)  # braking at 3 m/s^2 from 10 m/s
    out = track(reference_from_plan(T, np.stack([x, 0 * x], 1), 0 * x, np.array([10.0, 0.0])), BicycleState(0, 0, 0, 10.0), 30)
    assert np.abs(out[::5, 0] - x).max() < 0.5 and out[-1, 3] < 1.5 and (out[:, 3] >= 0).all()
    line = np.stack([v * T, np.zeros(7)], 1)
    out = track(reference_from_plan(T, line, np.zeros(7), np.array([v, 0.0])), BicycleState(0, 1.0, 0, v), 30)
    assert abs(out[-1, 1]) < 0.1 and abs(out[15, 1]) < 0.2  # a 1 m offset is gone within 1.5 s


def test_reference_rejects_bad_plans():
    with pytest.raises(ValueError, match="non-finite"):
        reference_from_plan(T, np.full((7, 2), np.nan), np.zeros(7), np.zeros(2))
    with pytest.raises(ValueError, match="start at 0"):
        reference_from_plan(T + 0.5, np.zeros((7, 2)), np.zeros(7), np.zeros(2))


# ------------------------------------------------------------------ per sample, real scene
@pytest.fixture(scope="module")
def scene_0061():
    from data_builders.scenarionet import build_scene, load_scenario

    path = DATA / "sd_nuscenes_v1.0-mini_scene-0061.pkl"
    data = load_scenario(path)
    return build_scene(data, path), ScenarioLog.from_scenario(data, path.name)


@needs_data
def test_logged_future_scores_one_and_bad_plans_lose(scene_0061):
    samples, log = scene_0061
    by_id = {s.sample_id: s for s in samples}
    gt = [score_sample(log, log_step_of(s, log), s.targets.ego_future)["pdms"] for s in samples]
    assert np.mean(gt) >= 0.95 and min(gt) >= 0.8
    turn = by_id["scene-0061_50"]  # in the left turn: constant velocity runs straight off the road
    cv = score_sample(log, 50, ConstantVelocityPlanner().compute_trajectory(turn.inputs))
    assert cv["dac"] == 0.0 and cv["pdms"] == 0.0 and cv["first_off_area_step"] is not None
    sideways = turn.targets.ego_future.copy()
    sideways[:, 1] -= 12.0  # 12 m to the right from +0.5 s on
    assert score_sample(log, 50, sideways)["dac"] == 0.0
    stop = score_sample(log, 50, np.zeros((6, 3)))  # braking to a stand from the logged speed
    assert stop["ep"] < 0.3 and stop["pdms"] < 0.7 and stop["progress_m"] < 0.3 * stop["reference_progress_m"]


@needs_data
def test_a_plan_into_the_car_ahead_is_a_collision():
    """scene-0757 at 0 s: a car parked 15 m ahead, 5.6 m to the right (at the kerb); a plan
    steering into it collides (NC 0) and the logged plan does not."""
    from data_builders.scenarionet import build_scene, load_scenario

    path = DATA / "sd_nuscenes_v1.0-mini_scene-0757.pkl"
    data = load_scenario(path)
    log = ScenarioLog.from_scenario(data, path.name)
    s = build_scene(data, path)[0]
    gt = score_sample(log, 0, s.targets.ego_future)
    assert gt["nc"] == 1.0 and gt["ttc"] == 1.0
    ahead = [(b[0], b[1], aid) for b, aid, t in zip(s.inputs.agents.boxes, s.inputs.agents.ids, s.inputs.agents.types)
             if t == "VEHICLE" and 3.0 < b[0] < 20.0 and abs(b[1]) < 6.0]
    assert ahead, "scene-0757 changed: no vehicle ahead of the ego at 0 s"
    x, y, aid = min(ahead)
    plan = np.stack([np.linspace(x / 6, x, 6), np.linspace(y / 6, y, 6), np.zeros(6)], 1)
    hit = score_sample(log, 0, plan)
    assert hit["nc"] == 0.0 and hit["pdms"] == 0.0 and aid in hit["collided_with"]


@needs_data
def test_bad_samples_are_skipped_with_a_reason_and_nan_plans_fail_alone(scene_0061):
    samples, log = scene_0061
    s = samples[3]
    wrong = type(s)(s.source, s.map_name, s.timestamp, s.inputs, type(s.targets)(s.targets.ego_future + 1.0, s.targets.ego_future_mask,
                                                                                 s.targets.agent_futures, s.targets.agent_future_masks))
    with pytest.raises(SampleSkipped, match="does not match the log at step 15"):
        log_step_of(wrong, log)
    late = ScenarioLog(**{**log.__dict__, "n": log_step_of(s, log) + HORIZON_STEPS})
    with pytest.raises(SampleSkipped, match="shorter than the horizon"):
        log_step_of(s, late)

    class NaNSometimes(Planner):
        name = "nan_sometimes"

        def compute_trajectory(self, inputs):
            wp = ConstantVelocityPlanner().compute_trajectory(inputs)
            if inputs.sample_id.endswith("_20"):
                wp[2, 0] = np.nan
            return wp

    res = evaluate_planner(NaNSometimes(), samples[:6] + [wrong], {"scene-0061": log})
    assert res["aggregate"]["n_scored"] == 5 and res["aggregate"]["n_failed"] == 1 and res["aggregate"]["n_skipped"] == 1
    assert res["failed"][0]["sample_id"] == "scene-0061_20" and "non-finite" in res["failed"][0]["reason"]
    assert "does not match" in res["skipped"][0]["reason"]
    assert next(p for p in res["samples"] if p["sample_id"] == "scene-0061_20")["pdms"] == 0.0
    gt = evaluate_planner(GroundTruthPlanner(), samples, {})
    assert gt["aggregate"]["n_skipped"] == len(samples) and "no scenario file for scene scene-0061" in gt["skipped"][0]["reason"]


# ------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from data_builders.scenarionet import build_scene, load_scenario
    from dsdrive.data.dataset import save_samples

    out = tmp_path_factory.mktemp("pdm") / "planning"
    samples = []
    for scene in ("scene-0061", "scene-1100"):
        path = DATA / f"sd_nuscenes_v1.0-mini_{scene}.pkl"
        samples += build_scene(load_scenario(path), path)
    save_samples(samples, out)
    (out / "build_report.json").write_text(json.dumps({"input": str(DATA)}))
    return out


@needs_data
def test_cli_ground_truth_scores_high_and_constant_velocity_lower(dataset, tmp_path, capsys):
    out = tmp_path / "pdm.json"
    assert main(["--data", str(dataset), "--planner", "ground_truth", "constant_velocity", "--scenes", "scene-0061", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    gt, cv = (report["planners"][k] for k in ("ground_truth", "constant_velocity"))
    assert report["scenarios"] == str(DATA) and report["horizon_s"] == 3.0 and gt["aggregate"]["n_scored"] == 33
    assert gt["aggregate"]["pdms"] >= 0.9
    assert cv["aggregate"]["pdms"] < gt["aggregate"]["pdms"] - 0.1 and cv["nontrivial"]["pdms"] < gt["nontrivial"]["pdms"] - 0.2
    md = out.with_suffix(".md").read_text()
    assert "| ground_truth | 33 | 0 | 0 |" in md and "DistillDrive 86.2" in md and "constant_velocity 20.6" in md


@needs_data
def test_cli_bad_input_one_line_errors(dataset, tmp_path, capsys):
    args = ["--data", str(dataset), "--scenes", "scene-1100", "--out", str(tmp_path / "x.json")]
    assert main([*args, "--planner", "student", "--checkpoint", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--checkpoint student=" in err and "no such folder" in err
    (tmp_path / "not_a_student").mkdir()
    (tmp_path / "not_a_student" / "config.json").write_text("{}")
    assert main([*args, "--planner", "student", "--checkpoint", str(tmp_path / "not_a_student")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a student checkpoint" in err and "not_a_student" in err
    empty = tmp_path / "scenarios"
    empty.mkdir()
    (empty / "sd_nuscenes_v1.0-mini_scene-0061.pkl").write_bytes((DATA / "sd_nuscenes_v1.0-mini_scene-0061.pkl").read_bytes())
    assert main([*args, "--planner", "ground_truth", "--scenarios", str(empty)]) == 0  # scene-1100's scenario is absent
    res = json.loads((tmp_path / "x.json").read_text())["planners"]["ground_truth"]
    assert res["aggregate"]["n_skipped"] == 34 and "no scenario file for scene scene-1100" in res["skipped"][0]["reason"]


def test_dsdrive_lists_pdm_score(capsys):
    from dsdrive.cli import SUBCOMMANDS, main as dsdrive_main

    assert SUBCOMMANDS["pdm-score"][:2] == ("dsdrive.evaluation.pdm_score", "main")
    assert dsdrive_main(["pdm-score", "--data", "/nonexistent", "--planner", "ground_truth", "--out", "/tmp/x.json"]) == 2
    assert "/nonexistent" in capsys.readouterr().err


@needs_data
@pytest.mark.slow
def test_all_real_scenes(tmp_path):
    """All 275 samples of the 8 scenes: ground_truth >= 0.95, constant velocity clearly lower."""
    from data_builders.scenarionet import build_folder
    from dsdrive.data.dataset import save_samples

    save_samples(build_folder(DATA, progress=False)[0], tmp_path / "planning")
    out = tmp_path / "pdm.json"
    assert main(["--data", str(tmp_path / "planning"), "--planner", "ground_truth", "constant_velocity", "--scenes", "all",
                 "--scenarios", str(DATA), "--out", str(out)]) == 0
    p = json.loads(out.read_text())["planners"]
    assert p["ground_truth"]["aggregate"]["n_scored"] == 275 and p["ground_truth"]["aggregate"]["pdms"] >= 0.95
    assert p["constant_velocity"]["aggregate"]["pdms"] < 0.93 and p["constant_velocity"]["nontrivial"]["pdms"] < 0.8
