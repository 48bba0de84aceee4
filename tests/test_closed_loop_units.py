"""Unit tests of the closed-loop pieces that need no simulator: assets detection, working copy,
adapter frames, controller tracking (with MetaDrive's measured actuator model), metric formulas
(DAC from a map, tracking error), report label placement, explanation normalisation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from dsdrive.evaluation.closed_loop import metadrive_assets
from dsdrive.data.world_state import Route
from dsdrive.evaluation.closed_loop.adapter import AgentState, EgoState, MapCache, ScenarioLog, build_planning_inputs
from dsdrive.evaluation.closed_loop.metrics import PDMS_WEIGHTS, aggregate, comfort_signals, scenario_metrics
from dsdrive.evaluation.closed_loop.controller import ControllerConfig, WaypointController, forward_lengths
from dsdrive.evaluation.drivable_area import DrivableArea
from dsdrive.evaluation.closed_loop.explain import describe_plan
from dsdrive.evaluation.closed_loop.rollout import CRASH_KEYS, PlanRecord, ScenarioRollout
from dsdrive.evaluation.closed_loop.scenario_index import MAPPING_FILE, SUMMARY_FILE, prepare_working_copy

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nuscenes-mini-scenarionet"


# ------------------------------------------------------------------ assets
def test_offline_asset_stub_created_and_detected(tmp_path, monkeypatch, capsys):
    pytest.importorskip("metadrive")
    fake = tmp_path / "metadrive" / "assets"
    monkeypatch.setattr(metadrive_assets, "metadrive_asset_dir", lambda: fake)
    import metadrive.pull_asset

    monkeypatch.setattr(metadrive.pull_asset, "pull_asset", lambda *a, **k: pytest.fail("must never download"))
    before = metadrive_assets.asset_status()
    assert not before.ready and before.found_version is None and not before.texture_present
    after = metadrive_assets.ensure_offline_assets()
    assert after.ready and after.stub
    assert (fake / "version.txt").read_text().strip() == after.expected_version
    assert fake.joinpath(*metadrive_assets.CHECKED_TEXTURE).is_file()
    assert "OFFLINE STUB" in capsys.readouterr().err


def test_real_assets_left_untouched(tmp_path, monkeypatch):
    pytest.importorskip("metadrive")
    from metadrive.version import VERSION

    fake = tmp_path / "assets"
    fake.joinpath(*metadrive_assets.CHECKED_TEXTURE[:-1]).mkdir(parents=True)
    fake.joinpath(*metadrive_assets.CHECKED_TEXTURE).write_bytes(b"jpeg")
    (fake / "version.txt").write_text(VERSION + "\n")
    monkeypatch.setattr(metadrive_assets, "metadrive_asset_dir", lambda: fake)
    st = metadrive_assets.ensure_offline_assets(quiet=True)
    assert st.ready and not st.stub and not (fake / metadrive_assets.STUB_MARKER).exists()


# ------------------------------------------------------------------ working copy
@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")
def test_working_copy_writes_index_outside_source(tmp_path):
    before = sorted(p.name for p in DATA.iterdir())
    wc = prepare_working_copy(DATA, tmp_path / "wc", scenes=["scene-0061", "scene-0655"])
    assert wc.scene_ids == ["scene-0061", "scene-0655"] and not wc.rejected
    summary = pickle.loads((tmp_path / "wc" / SUMMARY_FILE).read_bytes())
    mapping = pickle.loads((tmp_path / "wc" / MAPPING_FILE).read_bytes())
    assert set(summary) == set(mapping) == set(wc.files)
    assert summary[wc.files[0]]["sdc_id"] == "ego"
    assert sorted(p.name for p in DATA.iterdir()) == before  # source untouched


def test_working_copy_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no ScenarioNet scenario"):
        prepare_working_copy(empty, tmp_path / "wc")
    (empty / "sd_broken.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="every scenario .* was rejected: sd_broken.pkl"):
        prepare_working_copy(empty, tmp_path / "wc")
    with pytest.raises(ValueError, match="must differ"):
        prepare_working_copy(empty, empty)


# ------------------------------------------------------------------ adapter
def _ego(x, y, yaw, v=5.0):
    return EgoState(np.array([x, y], float), yaw, np.array([v * np.cos(yaw), v * np.sin(yaw)]))


NO_MAP = MapCache.from_scenario({"map_features": {}})


def _log(route_xy, route_t, track_z=None, route_z=None):
    return ScenarioLog(Route(route_xy, route_t), np.zeros(len(route_t)) if route_z is None else np.asarray(route_z, float), track_z or {})


def test_adapter_ego_frame_history_agents_command():
    yaw = np.pi / 2  # driving north in the simulator frame
    trace = [_ego(0.0, 0.5 * k, yaw) for k in range(25)]  # 10 Hz, 5 m/s
    agents = AgentState(["car", "far"], ["VEHICLE", "PEDESTRIAN"], np.array([[0.0, 22.0], [0.0, 200.0]]),
                        np.array([np.pi / 2, 0.0]), np.array([[4.0, 2.0, 1.5], [0.5, 0.5, 1.7]]), np.array([[0.0, 3.0], [0.0, 0.0]]))
    # the logged route: north at 5 m/s for 4.1 s, then west (a left turn); 3 s after now (2.4 s) the log is 6.5 m west
    steps = np.arange(100)
    route_xy = np.stack([-np.maximum(steps - 41, 0) * 0.5, np.minimum(steps, 41) * 0.5], 1)
    log = _log(route_xy, steps * 0.1, track_z={"car": np.full(100, 1.25)}, route_z=np.full(100, 0.5))
    x = build_planning_inputs("s_0", "s", trace, agents, NO_MAP, log)
    assert x.ego_history_mask.all()
    np.testing.assert_allclose(x.ego_history[:, 0], [-10.0, -7.5, -5.0, -2.5], atol=1e-5)  # behind = -x
    np.testing.assert_allclose(x.ego_history[:, 1:], 0.0, atol=1e-5)
    np.testing.assert_allclose(x.ego_status[:2], [5.0, 0.0], atol=1e-5)
    assert not x.ego_status_mask[5]  # steering unknown, as in the ScenarioNet builder
    assert x.agents.ids == ["car"]  # the far pedestrian is outside the 50 m ROI
    np.testing.assert_allclose(x.agents.boxes[0, [0, 1, 2, 6]], [10.0, 0.0, 0.75, 0.0], atol=1e-5)  # z: logged 1.25 - ego 0.5
    np.testing.assert_allclose(x.agents.velocities[0], [3.0, 0.0], atol=1e-5)
    assert x.command == "LEFT"
    assert build_planning_inputs("s_0", "s", trace[:6], agents, NO_MAP, log).command == "STRAIGHT"  # t = 0.5 s: the turn is 3.6 s ahead
    short = build_planning_inputs("s_0", "s", trace[:3], agents, NO_MAP, log)
    assert not short.ego_history_mask.any() and not short.ego_status_mask[2]


def test_adapter_heights_from_the_log():
    """Box z: the track's logged z at this step (nearest valid step), else resting on the ego's ground."""
    z = np.full(10, np.nan)
    z[7:] = 2.0
    log = _log([[0.0, 0.0], [1.0, 0.0]], [0.0, 0.1], track_z={"a": z})
    ag = AgentState(["a", "ghost"], ["VEHICLE", "VEHICLE"], np.array([[10.0, 0.0], [20.0, 0.0]]), np.zeros(2),
                    np.array([[4.0, 2.0, 1.6], [4.0, 2.0, 1.0]]), np.zeros((2, 2)))
    np.testing.assert_allclose(log.agent_z(ag, 3, ego_z=0.25), [2.0, 0.75])
    x = build_planning_inputs("s", "s", [_ego(0.0, 0.0, 0.0)], ag, NO_MAP, log)
    np.testing.assert_allclose(x.agents.boxes[:, 2], [2.0, 0.5])


# ------------------------------------------------------------------ controller
def _metadrive_like(xy, yaw, v, action, dt=0.1, wheelbase=2.47, max_steer=np.deg2rad(40)):
    """A kinematic car with MetaDrive's measured longitudinal response (+2.76 m/s^2 per unit
    throttle, -16.26 per unit brake, -0.36 at exactly 0)."""
    steer, u = action
    accel = 2.76 * u if u > 0 else (16.26 * u if u < 0 else -0.36)
    v = max(v + accel * dt, 0.0)
    yaw = yaw + v / wheelbase * np.tan(steer * max_steer) * dt
    return xy + v * dt * np.array([np.cos(yaw), np.sin(yaw)]), yaw, v


def _drive(plan_world_at, steps, xy=None, yaw=0.0, v=8.0):
    """Replan every 0.5 s from ``plan_world_at(t, xy, yaw)`` ((6, 2) simulator frame); returns the trace."""
    from dsdrive.geometry import global_to_ego

    ctrl, xy = WaypointController(), np.zeros(2) if xy is None else xy
    trace = [(xy.copy(), yaw, v)]
    for step in range(steps):
        t = step * 0.1
        if step % 5 == 0:
            ctrl.set_plan(global_to_ego(plan_world_at(t, xy, yaw), xy, yaw), xy, yaw, t)
        xy, yaw, v = _metadrive_like(xy, yaw, v, ctrl.act(xy, yaw, v, t))
        trace.append((xy.copy(), yaw, v))
    return trace


def test_controller_tracks_a_left_arc_and_a_stop():
    def arc(t, xy, yaw):  # a circle of radius 40 m (left) at 8 m/s, from the current pose
        s = 8.0 * 0.5 * np.arange(1, 7)
        centre = xy + 40.0 * np.array([-np.sin(yaw), np.cos(yaw)])
        ang = yaw - np.pi / 2 + s / 40.0
        return centre + 40.0 * np.stack([np.cos(ang), np.sin(ang)], 1)

    xy, yaw, v = _drive(arc, 60)[-1]
    assert abs(v - 8.0) < 0.5
    assert yaw > 1.0  # turned left about 8 m/s * 6 s / 40 m = 1.2 rad
    stop = WaypointController()
    stop.set_plan(np.zeros((6, 3)), np.zeros(2), 0.0, 0.0)
    assert stop.act(np.zeros(2), 0.0, 5.0, 0.0)[1] <= -ControllerConfig().stop_decel / ControllerConfig().decel_per_brake
    with pytest.raises(ValueError, match="finite"):
        stop.set_plan(np.full((6, 3), np.nan), np.zeros(2), 0.0, 0.0)


def test_controller_pulls_away_on_a_gentle_ramp_from_rest():
    """A plan that starts below stop_speed but accelerates (an IDM ramp from rest, replanned every
    0.5 s from wherever the car is) is not a stop: the car moves off. A plan that stays under
    stop_speed for the whole window is: the car is held."""
    ctrl, xy, yaw, v = WaypointController(), np.zeros(2), 0.0, 0.0
    for step in range(60):  # replan every 0.5 s: 0.5 m/s^2 from the car's current speed (the first ramp from rest)
        if step % 5 == 0:
            tt = 0.5 * np.arange(1, 7)
            ctrl.set_plan(np.stack([v * tt + 0.25 * tt**2, np.zeros(6), np.zeros(6)], 1), xy, yaw, step * 0.1)
        xy, yaw, v = _metadrive_like(xy, yaw, v, ctrl.act(xy, yaw, v, step * 0.1))
    assert v > 1.5 and xy[0] > 4.0  # ~0.5 m/s^2 for 6 s: 3 m/s, 9 m (braked at every replan it stays at 0)
    ctrl = WaypointController()
    creep = np.stack([0.05 * 0.5 * np.arange(1, 7), np.zeros(6), np.zeros(6)], 1)  # 0.05 m/s for 3 s: stands
    ctrl.set_plan(creep, np.zeros(2), 0.0, 0.0)
    assert ctrl.plan_stands(0.0) and ctrl.act(np.zeros(2), 0.0, 0.0, 0.0)[1] < 0
    ramp_plan = np.stack([0.25 * (0.5 * np.arange(1, 7)) ** 2, np.zeros(6), np.zeros(6)], 1)
    ctrl.set_plan(ramp_plan, np.zeros(2), 0.0, 0.0)
    assert ctrl.reference_speed(0.0) < ControllerConfig().stop_speed and not ctrl.plan_stands(0.0)
    assert ctrl.act(np.zeros(2), 0.0, 0.0, 0.0)[1] > 0


def test_controller_follows_a_timed_log_and_catches_up():
    """A log that brakes from 10 to 4 m/s then speeds up, handed as the logged future at each
    replanning step (log_waypoints): the car stays within 0.5 m of the logged place, and a car
    that starts 3 m behind closes the gap (the plan's timing, not only its speed, is tracked)."""
    t_log = np.arange(0, 12.1, 0.1)
    v_log = np.interp(t_log, [0, 2, 5, 8, 12], [10, 10, 4, 4, 9])
    x_log = np.concatenate([[0.0], np.cumsum(v_log[:-1] * 0.1)])

    def logged(t, xy, yaw):
        k = np.minimum(int(round(t / 0.1)) + 5 * np.arange(1, 7), len(x_log) - 1)
        return np.stack([x_log[k], np.zeros(6)], 1)

    trace = _drive(logged, 100, v=10.0)
    err = [abs(trace[k][0][0] - x_log[k]) for k in range(101)]
    assert max(err) < 0.5
    late = _drive(logged, 100, xy=np.array([-3.0, 0.0]), v=10.0)
    assert abs(late[-1][0][0] - x_log[100]) < 0.5 < abs(late[0][0][0] - x_log[0])


def test_controller_waits_for_a_plan_behind_and_ignores_jitter():
    """Waypoints behind the car (the log when the ego is ahead of it) mean 'wait', not 'reverse';
    centimetre jitter of a standing plan gives no steering."""
    assert forward_lengths(np.array([[0.0, 0.0], [-1.0, 0.0], [-1.0, 0.0], [2.0, 0.0]])).tolist() == [0.0, 0.0, 3.0]
    ctrl = WaypointController()
    ctrl.set_plan(np.stack([np.full(6, -1.2), np.zeros(6), np.zeros(6)], 1), np.zeros(2), 0.0, 0.0)
    assert ctrl.reference_speed(0.0) == 0.0 and ctrl.act(np.zeros(2), 0.0, 0.0, 0.0)[1] < 0.0
    rng = np.random.default_rng(0)
    jitter = np.concatenate([[[0.8, 0.0], [1.0, 0.0]], [1.0, 0.0] + rng.normal(0, 0.02, (4, 2))])
    ctrl.set_plan(np.concatenate([jitter, np.zeros((6, 1))], 1), np.zeros(2), 0.0, 0.0)
    assert abs(ctrl.act(np.zeros(2), 0.0, 1.5, 0.0)[0]) < 0.05


# ------------------------------------------------------------------ metrics
def _rollout(speed=5.0, steps=50, agents_at=None, brake_at=None, decel=6.0):
    t = np.arange(steps + 1) * 0.1
    v = np.full(steps + 1, speed)
    if brake_at is not None:
        v[brake_at:] = np.maximum(speed - decel * (t[brake_at:] - t[brake_at]), 0.0)
    x = np.concatenate([[0.0], np.cumsum(v[:-1] * 0.1)])
    sr = ScenarioRollout("s", "f.pkl", "test")
    sr.ego_xy = np.stack([x, np.zeros_like(x)], 1)
    sr.ego_yaw = np.zeros(steps + 1)
    sr.ego_vel = np.stack([v, np.zeros_like(v)], 1)
    sr.log_xy = np.stack([np.arange(steps + 1) * speed * 0.1, np.zeros(steps + 1)], 1)
    sr.log_yaw = np.zeros(steps + 1)
    sr.log_valid = np.ones(steps + 1, bool)
    sr.flags = {k: np.zeros(steps + 1, bool) for k in CRASH_KEYS}
    sr.md_route_completion = np.linspace(0, 1, steps + 1)
    sr.agents = [agents_at(s) if agents_at else AgentState.empty() for s in range(steps + 1)]
    sr.plans = [PlanRecord(0, 0.0, "STRAIGHT", [[0, 0, 0]] * 6, [[0, 0]] * 6, 1.0, {"consistent": None})]
    sr.drivable_area = ROAD
    return sr


ROAD = DrivableArea.from_parts([], [np.array([[-20.0, -4.0], [400.0, -4.0], [400.0, 4.0], [-20.0, 4.0]])], [])
"""A straight road 8 m wide along +x (lane polygon)."""


def test_metrics_clean_drive_scores_one():
    m = scenario_metrics(_rollout())
    assert (m["nc"], m["dac"], m["ttc"], m["comfort"], m["ep"], m["pdms"]) == (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert m["arrival"] and m["events"] == [] and not m["off_road"] and not m["route_departure"]


def test_metrics_dac_from_the_map_and_route_departure_apart():
    """Leaving the road surface zeroes DAC and PDMS (off-road); MetaDrive's > 4 m from the route
    is route departure, reported apart and not in PDMS; without a map DAC and PDMS are None,
    with the reason in notes."""
    sr = _rollout()
    sr.ego_xy[30:, 1] = np.linspace(0.0, 5.0, len(sr.ego_xy) - 30)  # drifts 5 m left: off the 8 m road
    m = scenario_metrics(sr)
    assert m["dac"] == 0.0 and m["off_road"] and m["pdms"] == 0.0
    assert any(e["kind"] == "off drivable area" for e in m["events"])
    sr = _rollout()
    sr.flags["out_of_road"][40:] = True
    m = scenario_metrics(sr)
    assert m["route_departure"] and not m["off_road"] and m["pdms"] == 1.0
    sr = _rollout()
    sr.drivable_area, sr.notes = None, ["f.pkl: no drivable area: field 'map_features' is empty"]
    m = scenario_metrics(sr)
    assert m["dac"] is None and m["pdms"] is None and m["off_road"] is None and "no drivable area" in m["notes"][0]
    agg = aggregate([m, scenario_metrics(_rollout())], [])
    assert agg["pdms"] == 1.0 and agg["dac"] == 1.0  # the unscored scenario is left out of the means


def test_metrics_tracking_error_against_the_plan():
    """Every 0.5 s the plan asks for (5, 0.6) m/s from where the ego is; the ego drives (4, 0) m/s:
    0.5 s after each plan it is (1, 0.6) m/s x 0.5 s off, split along/across the plan's heading;
    against the log (5 m/s along x) it falls 1 m behind per second."""
    sr = _rollout()
    sr.ego_xy = np.stack([np.arange(51) * 0.4, np.zeros(51)], 1)
    sr.plans = [PlanRecord(k, k * 0.1, "STRAIGHT", [], (sr.ego_xy[k] + np.outer(0.5 * np.arange(1, 7), [5.0, 0.6])).tolist(),
                           1.0, {"consistent": None}) for k in range(0, 50, 5)]
    m = scenario_metrics(sr)
    h = np.arctan2(0.6, 5.0)
    assert m["tracking_lon_max"] == pytest.approx(0.5 * (np.cos(h) + 0.6 * np.sin(h)), abs=1e-6)
    assert m["tracking_lat_max"] == pytest.approx(0.5 * abs(np.sin(h) - 0.6 * np.cos(h)), abs=1e-6)
    assert m["log_dev_lon_max"] == pytest.approx(5.0, abs=1e-6) and m["log_dev_lat_max"] == pytest.approx(0.0, abs=1e-9)


def test_metrics_collision_kinds_and_at_fault():
    def car_ahead(s):  # a stopped car 15 m ahead: the ego (5 m/s) reaches it at ~2.2 s
        return AgentState(["c"], ["VEHICLE"], np.array([[15.0, 0.0]]), np.zeros(1), np.array([[4.0, 2.0, 1.5]]), np.zeros((1, 2)))

    m = scenario_metrics(_rollout(agents_at=car_ahead))
    assert m["nc"] == 0.0 and m["ttc"] == 0.0 and m["pdms"] == 0.0
    assert any(e["kind"] == "at-fault overlap" for e in m["events"])

    def cone_ahead(s):
        return AgentState(["k"], ["TRAFFIC_CONE"], np.array([[15.0, 0.0]]), np.zeros(1), np.array([[0.5, 0.5, 1.0]]), np.zeros((1, 2)))

    m = scenario_metrics(_rollout(agents_at=cone_ahead))
    assert m["nc"] == 0.5 and m["dac"] == 1.0
    expected = 0.5 * (PDMS_WEIGHTS["ep"] * m["ep"] + PDMS_WEIGHTS["c"] * m["comfort"]) / sum(PDMS_WEIGHTS.values())
    assert m["pdms"] == pytest.approx(expected)

    def rear_ender(s):  # a car driving into the ego from behind is not the ego's fault
        return AgentState(["r"], ["VEHICLE"], np.array([[s * 0.5 - 4.2, 0.0]]), np.zeros(1), np.array([[4.0, 2.0, 1.5]]), np.array([[5.0, 0.0]]))

    assert scenario_metrics(_rollout(agents_at=rear_ender))["nc"] == 1.0


def test_metrics_hard_braking_and_progress():
    m = scenario_metrics(_rollout(speed=15.0, steps=60, brake_at=20, decel=6.0))  # 6 m/s^2 for 2.5 s
    assert m["comfort"] == 0.0 and any(e["kind"] == "hard braking" for e in m["events"])
    assert m["ep"] < 0.7  # stopped after ~19 m of braking while the expert kept going
    assert scenario_metrics(_rollout(speed=15.0, steps=60, brake_at=20, decel=2.0))["comfort"] == 1.0
    sig = comfort_signals(np.stack([np.arange(30) * 0.5, np.zeros(30)], 1), np.zeros(30))
    np.testing.assert_allclose(sig["lon_accel"], 0.0, atol=1e-6)


def test_aggregate_failed_and_rejected():
    ok = scenario_metrics(_rollout())
    failed = scenario_metrics(_rollout()) | {"status": "failed", "pdms": 0.0, "arrival": False}
    rejected = {"scene_id": "x", "status": "rejected", "failure": "bad"}
    agg = aggregate([ok, failed, rejected], [1.0, 3.0])
    assert (agg["ran"], agg["failed"], agg["rejected"]) == (2, 1, 1)
    assert agg["pdms"] == pytest.approx(0.5) and agg["latency_ms_p50"] == pytest.approx(2.0)


# ------------------------------------------------------------------ report
def test_report_event_labels_do_not_overlap():
    """Two events at the same place (a collision during hard braking) and a cluster of four: every
    label box is apart from every other on the rendered figure."""
    from dsdrive.evaluation.closed_loop.report import bev_figure

    sr = _rollout()
    events = [{"step": 20, "t": 2.0, "kind": "collision (vehicle)"}, {"step": 20, "t": 2.0, "kind": "hard braking"},
              {"step": 21, "t": 2.1, "kind": "at-fault overlap"}, {"step": 22, "t": 2.2, "kind": "off drivable area"},
              {"step": 45, "t": 4.5, "kind": "traffic braked"}]
    fig, labels = bev_figure(sr, {"events": events})
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in labels]
    assert len(boxes) == 5
    assert not any(boxes[i].overlaps(boxes[j]) for i in range(5) for j in range(i + 1, 5))
    assert [a.get_text() for a in labels][:2] == ["collision (vehicle) (2.0 s)", "hard braking (2.0 s)"]


# ------------------------------------------------------------------ explanations
def test_describe_plan_auto_and_stated():
    wp = np.stack([np.arange(1, 7) * 2.5, np.zeros(6), np.zeros(6)], 1)  # 5 m/s straight
    auto = describe_plan(wp, 5.0)
    assert auto["source"] == "auto" and auto["implied_meta_action"] == "MOVE FORWARD with CONSTANT"
    assert "MOVE FORWARD" in auto["text"] and auto["consistent"] is None
    head_only = describe_plan(wp, 5.0, {"explanation": "clear road", "meta_action": {"behaviour": "MOVE FORWARD", "speed": "CONSTANT"}})
    assert head_only["consistent"] is None and head_only["stated_in_text"] is None  # a head's meta-action never enters the metric
    stated = describe_plan(wp, 5.0, {"explanation": "clear road\nPlan: STOP.", "meta_action": {"behaviour": "MOVE FORWARD", "speed": "CONSTANT"},
                                     "risks": [{"agent_id": "a", "risk": 0.9, "rank": 1}], "mode_scores": np.array([0.2, 0.8])})
    assert stated["stated_in_text"] == "STOP" and stated["consistent"] is False and stated["top_risk"][0]["agent_id"] == "a" and stated["mode_scores"] == [0.2, 0.8]


def test_call_planner_explains_only_when_asked():
    """``RolloutConfig.explain=False`` drives with compute_trajectory only (no generation)."""
    from dsdrive.evaluation.closed_loop.rollout import _call_planner

    class Explaining:
        calls: list = []

        def compute_trajectory(self, inputs):
            self.calls.append("plan")
            return np.zeros((6, 3), np.float32)

        def plan_and_explain(self, inputs):
            self.calls.append("explain")
            return np.zeros((6, 3), np.float32), {"reasoning": "Plan: STOP."}

    p = Explaining()
    _, expl, _ = _call_planner(p, None, explain=False)
    assert expl is None and p.calls == ["plan"]
    _, expl, _ = _call_planner(p, None, explain=True)
    assert expl == {"reasoning": "Plan: STOP."} and p.calls == ["plan", "explain"]
