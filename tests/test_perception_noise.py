"""The perception noise model (:mod:`dsdrive.data.perception_noise`): identity, seeding, measured
statistics (position / heading / velocity noise, range-dependent misses, ghost boxes, latency),
inputs never mutated, config errors; and its three users: the open-loop / PDM-score tables
(``--perception-noise none default``: ground-truth and noisy rows in one table, collisions
against the true agents), the closed loop (noise on the planner's inputs, the simulator's truth
untouched) and training-time augmentation (a fresh draw per epoch)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from helpers_open_loop import make_sample, straight_line

from dsdrive.cli import main as dsdrive_main
from dsdrive.data.dataset import save_samples
from dsdrive.data.perception_noise import (
    FALSE_POSITIVE_CLASSES,
    GROUND_TRUTH_LABEL,
    PRESETS,
    PRIVILEGED_LABEL,
    PerceptionNoiseConfig,
    PerceptionNoiseItems,
    apply_perception_noise,
    config_from_dict,
    load_perception_noise,
    perceived,
    perception_rng,
    perception_settings,
)
from dsdrive.data.types import AGENT_TYPES, Agents, PlanningInputs
from dsdrive.evaluation.metrics.planning import evaluate_trajectories, summarize_by_command
from dsdrive.planners.base import Planner, plan_samples

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nuscenes-mini-scenarionet"
VAL = ("scene-0655", "scene-1077")


def ring_inputs(n: int = 40, radius: float = 20.0, speed: float = 0.0, sample_id: str = "s0") -> PlanningInputs:
    """Inputs with ``n`` vehicles on a circle of ``radius`` m around the ego, all moving along +x at ``speed``."""
    ang = np.linspace(-np.pi, np.pi, n, endpoint=False)
    boxes = np.column_stack([radius * np.cos(ang), radius * np.sin(ang), np.full(n, 0.8), np.full(n, 4.5), np.full(n, 1.9),
                             np.full(n, 1.6), np.zeros(n)]).astype(np.float32)
    vel = np.column_stack([np.full(n, speed), np.zeros(n)]).astype(np.float32)
    inputs = make_sample(straight_line(5.0), sample_id=sample_id).inputs
    inputs.agents = Agents([f"a{i}" for i in range(n)], ["VEHICLE"] * n, boxes, vel)
    return inputs


def only(**fields) -> PerceptionNoiseConfig:
    return PerceptionNoiseConfig(name="test", **fields)


# ---------------------------------------------------------------- the model
def test_identity_config_returns_an_exact_copy():
    inputs = ring_inputs(12, speed=3.0)
    for cfg in (PRESETS["none"], only(), only(miss_prob_max=0.0, miss_prob_at_0m=0.5)):
        assert cfg.is_identity and cfg.label == GROUND_TRUTH_LABEL
        out = apply_perception_noise(inputs, cfg, perception_rng(0, "x"))
        assert out is not inputs and out.agents is not inputs.agents and out.agents.boxes is not inputs.agents.boxes
        assert out.agents.ids == inputs.agents.ids and out.agents.types == inputs.agents.types
        np.testing.assert_array_equal(out.agents.boxes, inputs.agents.boxes)
        np.testing.assert_array_equal(out.agents.velocities, inputs.agents.velocities)
        assert out.map is inputs.map and out.command == inputs.command and out.sample_id == inputs.sample_id
        assert perceived(inputs, cfg) is inputs and perceived(inputs, None) is inputs


def test_seeded_reproducible_and_independent_of_order():
    cfg = PRESETS["heavy"]
    many = [ring_inputs(30, speed=4.0, sample_id=f"s{i}") for i in range(6)]
    forward = [perceived(x, cfg) for x in many]
    backward = [perceived(x, cfg) for x in reversed(many)][::-1]
    for a, b in zip(forward, backward):
        assert a.agents.ids == b.agents.ids
        np.testing.assert_array_equal(a.agents.boxes, b.agents.boxes)
    # different samples, or another seed, give another draw
    assert not np.array_equal(forward[0].agents.boxes[:5], forward[1].agents.boxes[:5])
    other = perceived(many[0], cfg.model_copy(update={"seed": 1}))
    assert other.agents.ids != forward[0].agents.ids or not np.array_equal(other.agents.boxes, forward[0].agents.boxes)
    # the generator is a function of its keys only (stable hash, not Python's salted hash)
    assert perception_rng(3, "scene-0655", 10).integers(1 << 30) == perception_rng(3, "scene-0655", 10).integers(1 << 30)
    assert perception_rng(3, "scene-0655", 10).integers(1 << 30) != perception_rng(3, "scene-0655", 15).integers(1 << 30)


def test_position_heading_and_velocity_noise_have_the_configured_std():
    cfg = only(position_std_m=0.5, heading_std_rad=0.2, velocity_std_mps=0.3)
    inputs = ring_inputs(50, speed=2.0)
    dxy, dyaw, dv = [], [], []
    for k in range(80):
        out = apply_perception_noise(inputs, cfg, perception_rng(0, k))
        idx = [int(i[1:]) for i in out.agents.ids]  # re-sorted by range: match by id
        dxy.append(out.agents.boxes[:, :2] - inputs.agents.boxes[idx, :2])
        dyaw.append(out.agents.boxes[:, 6] - inputs.agents.boxes[idx, 6])
        dv.append(out.agents.velocities - inputs.agents.velocities[idx])
        np.testing.assert_array_equal(out.agents.boxes[:, 2:6], inputs.agents.boxes[idx, 2:6])  # z, size untouched
    dxy, dyaw, dv = np.concatenate(dxy), np.concatenate(dyaw), np.concatenate(dv)  # 4000 draws each
    assert len(dxy) == 4000
    np.testing.assert_allclose(dxy.std(0), [0.5, 0.5], rtol=0.06)
    np.testing.assert_allclose(dyaw.std(), 0.2, rtol=0.06)
    np.testing.assert_allclose(dv.std(0), [0.3, 0.3], rtol=0.06)
    assert abs(dxy.mean()) < 0.03 and abs(dv.mean()) < 0.02


def test_misses_grow_with_range_as_configured():
    cfg = only(miss_prob_at_0m=0.05, miss_prob_per_m=0.01, miss_prob_max=0.6)
    rates = {}
    for r in (5.0, 25.0, 80.0):
        inputs = ring_inputs(40, radius=r)
        kept = [len(apply_perception_noise(inputs, cfg, perception_rng(0, r, k)).agents) for k in range(100)]
        rates[r] = 1 - np.mean(kept) / 40  # 4000 agents per range
    np.testing.assert_allclose([rates[5.0], rates[25.0], rates[80.0]], [0.10, 0.30, 0.60], atol=0.03)  # 0.85 capped at 0.6
    assert rates[5.0] < rates[25.0] < rates[80.0]


def test_false_positives_lie_in_the_roi_with_valid_types_and_sizes():
    cfg = only(false_positives_per_sample=3.0, false_positive_min_range_m=4.0, false_positive_max_range_m=40.0)
    inputs = ring_inputs(5, radius=10.0)
    counts, ghosts = [], []
    for k in range(300):
        out = apply_perception_noise(inputs, cfg, perception_rng(0, k))
        fp = [i for i, a in enumerate(out.agents.ids) if a.startswith("fp")]
        assert len(set(out.agents.ids)) == len(out.agents.ids) and len(out.agents) == 5 + len(fp)
        counts.append(len(fp))
        ghosts += [(out.agents.types[i], out.agents.boxes[i]) for i in fp]
        rng_ = np.hypot(out.agents.boxes[:, 0], out.agents.boxes[:, 1])
        assert np.all(np.diff(rng_) >= 0)  # nearest first, as planning_inputs_from_world gives them
    assert abs(np.mean(counts) - 3.0) < 0.25 and np.var(counts) > 2.0  # Poisson(3)
    r = np.array([np.hypot(*b[:2]) for _, b in ghosts])
    assert r.min() >= 4.0 and r.max() <= 40.0 and np.median(r) > 25  # uniform in area: median ~ 29 m
    types = {t for t, _ in ghosts}
    assert types <= set(AGENT_TYPES) and types == set(FALSE_POSITIVE_CLASSES)
    for t, b in ghosts:
        typical = np.array(FALSE_POSITIVE_CLASSES[t][1])
        assert np.all(np.abs(b[3:6] / typical - 1) <= 0.1 + 1e-6)
        assert b[2] == pytest.approx(b[5] / 2, abs=1e-5)  # on the real agents' ground: their z - h/2 = 0.8 - 1.6/2 = 0


def test_latency_rewinds_each_agent_along_its_velocity():
    inputs = ring_inputs(8, radius=15.0, speed=10.0)
    inputs.agents.velocities[3] = [-4.0, 2.0]
    out = apply_perception_noise(inputs, only(latency_s=0.3), perception_rng(0, "lat"))
    idx = [int(i[1:]) for i in out.agents.ids]
    expected = inputs.agents.boxes[idx, :2] - 0.3 * inputs.agents.velocities[idx]
    np.testing.assert_allclose(out.agents.boxes[:, :2], expected, atol=1e-5)
    np.testing.assert_allclose(out.agents.boxes[out.agents.ids.index("a3"), :2], inputs.agents.boxes[3, :2] + [1.2, -0.6], atol=1e-5)
    np.testing.assert_array_equal(out.agents.velocities, inputs.agents.velocities[idx])


def test_inputs_are_never_mutated():
    inputs = ring_inputs(30, speed=6.0)
    before = copy.deepcopy(inputs)
    for k in range(5):
        perceived(inputs, PRESETS["heavy"], k)
    assert inputs.agents.ids == before.agents.ids and inputs.agents.types == before.agents.types
    for name in ("boxes", "velocities"):
        np.testing.assert_array_equal(getattr(inputs.agents, name), getattr(before.agents, name))
    np.testing.assert_array_equal(inputs.ego_status, before.ego_status)
    np.testing.assert_array_equal(inputs.ego_history, before.ego_history)


@pytest.mark.parametrize("fields, match", [
    ({"position_std_m": -0.1}, r"field 'position_std_m' = -0.1: Input should be greater than or equal to 0"),
    ({"miss_prob_at_0m": 1.5}, r"field 'miss_prob_at_0m' = 1.5: Input should be less than or equal to 1"),
    ({"miss_prob_max": -0.2}, r"field 'miss_prob_max' = -0.2"),
    ({"velocity_std_mps": float("nan")}, r"field 'velocity_std_mps' = nan"),
    ({"latency_s": 9}, r"field 'latency_s' = 9"),
    ({"false_positive_min_range_m": 60}, r"false_positive_min_range_m = 60.0 must be below false_positive_max_range_m = 50.0"),
    ({"postion_std_m": 1.0}, r"field 'postion_std_m' = 1.0: Extra inputs are not permitted"),
    ({"preset": "medium"}, r"field 'preset' = 'medium', expected one of \['default', 'heavy', 'none'\]"),
])
def test_bad_config_values_fail_naming_field_and_value(fields, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(fields)


def test_yaml_files_and_preset_names(tmp_path):
    good = tmp_path / "lidar.yaml"
    good.write_text("preset: default\nposition_std_m: 0.2\nlatency_s: 0.05\n")
    cfg = load_perception_noise(str(good))
    assert cfg.name == "lidar" and cfg.position_std_m == 0.2 and cfg.heading_std_rad == PRESETS["default"].heading_std_rad
    assert cfg.label == "noisy perception (lidar)" and load_perception_noise("default") is PRESETS["default"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("heading_std_rad: -1\n")
    with pytest.raises(ValueError, match=rf"{bad}: field 'heading_std_rad' = -1"):
        load_perception_noise(str(bad))
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_perception_noise(str(tmp_path / "list.yaml"))
    with pytest.raises(ValueError, match=r"'loud': expected one of \['default', 'heavy', 'none'\] or an existing .yaml file"):
        load_perception_noise("loud")
    with pytest.raises(ValueError, match="same label"):
        perception_settings(["none", "none"])


def test_default_preset_follows_the_published_detector_errors():
    """The default preset's Gaussian stds reproduce BEVFormer's nuScenes-test mean TP errors (mATE
    0.582 m, mAOE 0.375 rad, mAVE 0.378 m/s) when measured as those metrics are defined."""
    cfg = only(**{k: getattr(PRESETS["default"], k) for k in ("position_std_m", "heading_std_rad", "velocity_std_mps")})
    inputs = ring_inputs(50)
    dxy, dyaw, dv = [], [], []
    for k in range(60):
        out = apply_perception_noise(inputs, cfg, perception_rng(1, k))
        idx = [int(i[1:]) for i in out.agents.ids]
        dxy.append(np.hypot(*(out.agents.boxes[:, :2] - inputs.agents.boxes[idx, :2]).T))
        dyaw.append(np.abs(out.agents.boxes[:, 6] - inputs.agents.boxes[idx, 6]))
        dv.append(np.hypot(*(out.agents.velocities - inputs.agents.velocities[idx]).T))
    np.testing.assert_allclose([np.concatenate(dxy).mean(), np.concatenate(dyaw).mean(), np.concatenate(dv).mean()],
                               [0.582, 0.375, 0.378], rtol=0.05)


# ---------------------------------------------------------------- open loop / PDM score
class BrakeForAgentsPlanner(Planner):
    """Drives on at the current speed unless an agent is within 2 m of the lane ahead (< 30 m): then it stops."""

    name = "constant_velocity"  # stands in for a registry name in the CLI

    def compute_trajectory(self, inputs):
        b = inputs.agents.boxes
        blocked = bool(np.any((b[:, 0] > 0) & (b[:, 0] < 30) & (np.abs(b[:, 1]) < 2.0)))
        v = 0.0 if blocked else inputs.speed
        t = 0.5 * np.arange(1, 7)
        return np.stack([v * t, np.zeros(6), np.zeros(6)], 1).astype(np.float32)


@pytest.fixture(scope="module")
def real_val_data(tmp_path_factory):
    """Planning samples of the two held-out real scenes (ScenarioNet nuScenes-mini)."""
    from data_builders.scenarionet import build_scene, load_scenario

    files = [SHARED / f"sd_nuscenes_v1.0-mini_{s}.pkl" for s in VAL]
    if not all(f.is_file() for f in files):
        pytest.skip(f"real nuScenes-mini ScenarioNet scenes absent under {SHARED}")
    samples = [s for f in files for s in build_scene(load_scenario(f), f)]
    d = tmp_path_factory.mktemp("real") / "planning"
    save_samples(samples, d)
    return d, samples


def test_open_loop_cli_writes_ground_truth_and_noisy_rows_in_one_table(real_val_data, tmp_path, capsys):
    data, _ = real_val_data
    out = tmp_path / "ol.json"
    code = dsdrive_main(["open-loop", "--data", str(data), "--planner", "constant_velocity", "ground_truth",
                         "--perception-noise", "none", "default", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    rows = report["planners"]
    assert list(rows) == ["constant_velocity [ground-truth perception]", "constant_velocity [noisy perception (default)]", "ground_truth"]
    assert [r["perception"] for r in rows.values()] == [GROUND_TRUTH_LABEL, "noisy perception (default)", PRIVILEGED_LABEL]
    assert {r["planner"] for r in rows.values()} == {"constant_velocity", "ground_truth"}
    assert set(report["perception_noise"]) == {GROUND_TRUTH_LABEL, "noisy perception (default)"}
    assert report["perception_noise"]["noisy perception (default)"]["position_std_m"] == PRESETS["default"].position_std_m
    md = out.with_suffix(".md").read_text()
    for label in (GROUND_TRUTH_LABEL, "noisy perception (default)"):
        assert md.count(f"| constant_velocity | {label} | ALL | 70 |") == 2  # ST-P3 and UniAD tables
    assert md.count(f"| ground_truth (privileged) | {PRIVILEGED_LABEL} | ALL | 70 |") == 2
    assert "scored against the true agents" in md
    # constant velocity reads no agent: noise cannot change its figures
    m = [rows[k]["metrics"]["ALL"]["stp3"]["L2"]["avg"] for k in list(rows)[:2]]
    assert m[0] == m[1]


def test_noisy_rows_plan_on_perceived_agents_and_score_on_true_ones(real_val_data, tmp_path, monkeypatch):
    """A planner that reads agents: its noisy row is what it plans from perceived inputs, scored
    against the true agent futures (not the perceived ones)."""
    import dsdrive.evaluation.open_loop as ol

    data, samples = real_val_data
    monkeypatch.setattr(ol, "load_planner", lambda name, ckpt: BrakeForAgentsPlanner())
    heavy = PRESETS["heavy"].model_copy(update={"false_positives_per_sample": 6.0, "false_positive_max_range_m": 30.0})
    cfg_file = tmp_path / "ghosts.yaml"
    cfg_file.write_text(json.dumps(heavy.model_dump() | {"name": "ghosts"}))
    args = ol.build_parser().parse_args(["--data", str(data), "--planner", "constant_velocity", "--perception-noise", "none",
                                         str(cfg_file), "--out", str(tmp_path / "x.json")])
    run = ol.run_open_loop(args)
    gt, noisy = run.report["planners"].values()
    scored = [s for s in run.samples if s.targets.ego_future_mask.all()]
    pred = plan_samples(BrakeForAgentsPlanner(), [s for s in scored], progress=False)
    noisy_pred = np.stack([BrakeForAgentsPlanner().compute_trajectory(perceived(s.inputs, load_perception_noise(str(cfg_file))))
                           for s in scored])
    assert not np.array_equal(pred, noisy_pred)  # ghosts in the lane stop the ego, missed cars no longer do
    for entry, p in ((gt, pred), (noisy, noisy_pred)):
        expect = summarize_by_command(evaluate_trajectories(p, scored))["ALL"]["stp3"]
        assert entry["metrics"]["ALL"]["stp3"]["L2"] == expect["L2"]
        assert entry["metrics"]["ALL"]["stp3"]["collision"] == expect["collision"]
    assert noisy["metrics"]["ALL"]["stp3"]["L2"]["avg"] != gt["metrics"]["ALL"]["stp3"]["L2"]["avg"]


def test_pdm_score_takes_the_same_flag(real_val_data, tmp_path, capsys):
    data, _ = real_val_data
    out = tmp_path / "pdm.json"
    code = dsdrive_main(["pdm-score", "--data", str(data), "--planner", "constant_velocity", "--scenes", VAL[0],
                         "--scenarios", str(SHARED), "--perception-noise", "none", "heavy", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = json.loads(out.read_text())["planners"]
    assert [r["perception"] for r in rows.values()] == [GROUND_TRUTH_LABEL, "noisy perception (heavy)"]
    assert "| constant_velocity [noisy perception (heavy)] |" in out.with_suffix(".md").read_text()


# ---------------------------------------------------------------- closed loop
def test_closed_loop_runs_per_perception_setting():
    from dsdrive.evaluation.closed_loop.cli import perception_runs
    from dsdrive.evaluation.closed_loop.rollout import RolloutConfig
    from dsdrive.planners.log_future import LogWaypointsPlanner

    settings = perception_settings(["none", "default"])
    runs = list(perception_runs(["log_replay", "log_waypoints", "constant_velocity"], settings,
                                {"log_replay": None, "log_waypoints": LogWaypointsPlanner(), "constant_velocity": object()},
                                RolloutConfig(max_steps=7)))
    assert [(n, row, lab) for n, row, _, lab in runs] == [
        ("log_replay", "log_replay", PRIVILEGED_LABEL), ("log_waypoints", "log_waypoints", PRIVILEGED_LABEL),
        ("constant_velocity", "constant_velocity [ground-truth perception]", GROUND_TRUTH_LABEL),
        ("constant_velocity", "constant_velocity [noisy perception (default)]", "noisy perception (default)")]
    assert [c.perception_noise for _, _, c, _ in runs] == [None, None, settings[0], settings[1]]
    assert all(c.max_steps == 7 for _, _, c, _ in runs)


class RecordingPlanner(Planner):
    """Drives straight at 5 m/s whatever it sees, and keeps every input it was given."""

    name = "recording"

    def __init__(self):
        self.seen: list[PlanningInputs] = []

    def compute_trajectory(self, inputs):
        self.seen.append(inputs)
        return np.stack([2.5 * np.arange(1, 7), np.zeros(6), np.zeros(6)], 1)


def test_closed_loop_planner_sees_noise_the_simulator_does_not(tmp_path):
    """Same ego path under both settings (the planner ignores what it sees), so the adapter builds the
    same true inputs: the noisy run's planner got exactly ``perceived(true, cfg, scene, step)``, while
    the recorded agents and the metrics are the simulator's truth in both runs."""
    pytest.importorskip("metadrive")
    from dsdrive.evaluation.closed_loop.metrics import scenario_metrics
    from dsdrive.evaluation.closed_loop.rollout import RolloutConfig, run_closed_loop
    from dsdrive.evaluation.closed_loop.scenario_index import prepare_working_copy

    if not (SHARED / f"sd_nuscenes_v1.0-mini_{VAL[0]}.pkl").is_file():
        pytest.skip("real scene absent")
    work = prepare_working_copy(SHARED, tmp_path / "work", [VAL[0]])
    cfg = PRESETS["default"]
    runs = {}
    for name, noise in (("gt", None), ("noisy", cfg)):
        planner = RecordingPlanner()
        (sr,) = run_closed_loop(work, planner, RolloutConfig(max_steps=16, explain=False, perception_noise=noise), progress=False)
        runs[name] = (planner.seen, sr)
    (gt_seen, gt_sr), (noisy_seen, noisy_sr) = runs["gt"], runs["noisy"]
    assert len(gt_seen) == len(noisy_seen) == 4 and gt_sr.status == noisy_sr.status == "ok"
    for step, (true, seen) in zip((0, 5, 10, 15), zip(gt_seen, noisy_seen)):
        expect = perceived(true, cfg, VAL[0], step)
        assert seen.agents.ids == expect.agents.ids and seen.agents.ids != true.agents.ids
        np.testing.assert_array_equal(seen.agents.boxes, expect.agents.boxes)
    np.testing.assert_array_equal(gt_sr.ego_xy, noisy_sr.ego_xy)
    for a, b in zip(gt_sr.agents, noisy_sr.agents):
        assert a.ids == b.ids and np.array_equal(a.xy, b.xy)
    m_gt, m_noisy = scenario_metrics(gt_sr), scenario_metrics(noisy_sr)
    assert m_gt["nc"] == m_noisy["nc"] and m_gt["route_completion"] == m_noisy["route_completion"]


# ---------------------------------------------------------------- training-time augmentation
def test_training_items_draw_fresh_noise_each_epoch_and_keep_targets():
    from helpers_student import make_samples

    samples = make_samples(4)
    clean = [{"agents": s.inputs.agents.boxes.copy(), "ego_future": s.targets.ego_future, "teacher_plan_queries": np.ones(3)}
             for s in samples]
    cfg = only(position_std_m=1.0, seed=5)
    items = PerceptionNoiseItems(samples, clean, lambda x: {"agents": x.agents.boxes}, cfg)
    e0 = [items[i]["agents"] for i in range(4)]
    assert all(np.array_equal(a, items[i]["agents"]) for i, a in enumerate(e0))  # same epoch: same draw
    items.set_epoch(1)
    e1 = [items[i]["agents"] for i in range(4)]
    assert not any(np.array_equal(a, b) for a, b in zip(e0, e1))
    for i in range(4):
        assert items[i]["ego_future"] is clean[i]["ego_future"] and "teacher_plan_queries" in items[i]
        np.testing.assert_array_equal(clean[i]["agents"], samples[i].inputs.agents.boxes)
    with pytest.raises(ValueError, match="4 samples but 3 items"):
        PerceptionNoiseItems(samples, clean[:3], lambda x: {}, cfg)


def test_distill_with_perception_noise_trains_on_a_new_draw_per_epoch(tmp_path, monkeypatch):
    from helpers_student import make_samples

    from dsdrive.training import distill

    seen: list[tuple[int, int, bytes]] = []

    class Recording(distill.PerceptionNoiseItems):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            seen.append((self.epoch, i, item["agents"].tobytes()))
            return item

    monkeypatch.setattr(distill, "PerceptionNoiseItems", Recording)
    samples = make_samples(12)
    for i, s in enumerate(samples):
        s.inputs.scene_id = f"scene-{i % 3}"
    save_samples(samples, tmp_path / "data")
    tiny = ["--tiny_hidden_size", "32", "--tiny_layers", "1", "--tiny_heads", "2", "--scene_dim", "16", "--scene_layers", "1",
            "--bev_size", "16", "--risk_points", "2", "--tokenizer_vocab_size", "300", "--max_prompt_tokens", "96",
            "--max_reasoning_tokens", "64", "--per_device_train_batch_size", "4", "--report_to", "none", "--use_cpu", "true",
            "--num_threads", "1", "--disable_tqdm", "true", "--val_scenes", "scene-2", "--eval_open_loop", "false",
            "--save_strategy", "no"]
    rc = distill.main(["--data", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"), "--max_steps", "4",
                       "--perception_noise", "default", *tiny])
    assert rc == 0
    epochs = {e for e, _, _ in seen}
    assert epochs == {0, 1} and len(seen) == 16  # 8 training samples, 2 batches of 4 per epoch, 2 epochs
    first = {i: a for e, i, a in seen if e == 0}
    second = {i: a for e, i, a in seen if e == 1}
    assert first.keys() == second.keys() and any(first[i] != second[i] for i in first)
    with pytest.raises(ValueError, match=r"perception_noise='loud'"):
        distill.main(["--data", str(tmp_path / "data"), "--output_dir", str(tmp_path / "o2"), "--perception_noise", "loud", *tiny])
