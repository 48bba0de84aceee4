"""PDM-Closed (dsdrive.planners.pdm_closed) and its annotator: synthetic roads (a stopped car ahead,
a curve, an obstacle partly in the lane, a fork), the cautious label settings (the logged speed
band, a longer IDM headway and gap, a limit below the current speed), real scenes (drivable area in a turn, PDMS beside
the logged future and constant velocity, the PDM score's PDM-Closed progress reference), the
annotator on a state without a logged future, and a closed-loop smoke run (slow)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dsdrive.annotation.meta_action import meta_action_from_trajectory
from dsdrive.annotation.schema import Annotation
from dsdrive.constants import EGO_WIDTH_M
from dsdrive.data.types import MAP_POINTS, Agents, MapPolylines, PlanningInputs
from dsdrive.evaluation.closed_loop.reactive_traffic import IDMParams, idm_acceleration
from dsdrive.planners.pdm_centerline import route_centerline
from dsdrive.planners.pdm_closed import EGO_FRONT_M, LOG_SPEED_FLOOR_MPS, PDM_IDM, PDMClosedPlanner, log_speed_band
from dsdrive.planners.registry import load_planner

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nuscenes-mini-scenarionet"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")


def _line(points: np.ndarray) -> np.ndarray:
    from dsdrive.geometry import resample_polyline

    return resample_polyline(np.asarray(points, np.float64), MAP_POINTS).astype(np.float32)


def straight_road(length: float = 100.0) -> MapPolylines:
    """One lane along +x (centre y = 0), a lane to its left (y = 3.5), road edges at y = -2 and 5.5."""
    x = np.linspace(-10.0, length, 50)
    lines = [np.stack([x, y + 0 * x], 1) for y in (0.0, 3.5, -2.0, 5.5)]
    return MapPolylines(["lane_centerline", "lane_centerline", "road_edge", "road_edge"], np.stack([_line(p) for p in lines]))


def inputs(speed: float, map_: MapPolylines, agents: list[tuple] = (), command: str = "STRAIGHT") -> PlanningInputs:
    """Ego-frame inputs: ego at ``speed`` m/s along +x; agents (type, x, y, length, width, yaw, vx, vy)."""
    boxes = np.array([[x, y, 0.0, l, w, 1.5, yaw] for _, x, y, l, w, yaw, _, _ in agents], np.float32).reshape(-1, 7)
    vel = np.array([[vx, vy] for *_, vx, vy in agents], np.float32).reshape(-1, 2)
    return PlanningInputs("synthetic_0", "synthetic", np.zeros((4, 3), np.float32), np.zeros(4, bool),
                          np.array([speed, 0, 0, 0, 0, 0], np.float32), np.array([True, True, False, False, False, False]),
                          command, Agents([f"a{i}" for i in range(len(agents))], [a[0] for a in agents], boxes, vel), map_)


# ------------------------------------------------------------------ synthetic roads
def test_brakes_behind_a_stopped_lead_vehicle_and_stops_before_it():
    lead_x, lead_len = 25.0, 4.6  # 20 m bumper to bumper at 10 m/s
    res = PDMClosedPlanner().plan(inputs(10.0, straight_road(), [("VEHICLE", lead_x, 0.0, lead_len, 2.0, 0.0, 0.0, 0.0)]),
                                  np.array([[0.0, 0.0], [80.0, 0.0]]))
    best = res.proposals[res.best]
    states = best.states  # 4 s, 10 Hz, ego frame
    assert best.nc == 1.0 and best.leader == "VEHICLE a0"
    assert states[-1, 3] < 1.5 and np.all(np.diff(states[10:, 3]) <= 1e-6), "not braking to a stand within 4 s"
    assert states[:, 0].max() + EGO_FRONT_M < lead_x - lead_len / 2 - 1.0, "closer than s0 = 1 m to the lead vehicle's rear"
    assert np.all(np.diff(res.waypoints[:, 0]) >= -1e-3) and np.abs(res.waypoints[:, 1]).max() < 0.3
    assert res.waypoints[-1, 0] < 10.0 * 3.0 - 5.0  # clearly slower than constant velocity
    free = PDMClosedPlanner().plan(inputs(10.0, straight_road()), np.array([[0.0, 0.0], [80.0, 0.0]]))
    assert free.waypoints[-1, 0] > 30.0 and free.proposals[free.best].leader is None  # no car: keeps going, speeds up


def test_follows_a_curved_centreline():
    radius, speed = 40.0, 8.0
    ang = np.linspace(-0.25, 2.0, 60)
    arc = np.stack([radius * np.sin(ang), radius * (1 - np.cos(ang))], 1)  # left curve through the origin, heading +x
    edges = [np.stack([(radius + 2.0) * np.sin(ang), radius - (radius + 2.0) * np.cos(ang)], 1),
             np.stack([(radius - 5.5) * np.sin(ang), radius - (radius - 5.5) * np.cos(ang)], 1)]
    map_ = MapPolylines(["lane_centerline", "road_edge", "road_edge"], np.stack([_line(arc), *(_line(e) for e in edges)]))
    res = PDMClosedPlanner().plan(inputs(speed, map_), arc[arc[:, 0] >= 0])
    dist_to_circle = np.abs(np.hypot(res.waypoints[:, 0], res.waypoints[:, 1] - radius) - radius)
    assert dist_to_circle.max() < 0.3, dist_to_circle
    assert res.proposals[res.best].dac == 1.0 and res.proposals[res.best].offset == 0.0
    assert res.waypoints[-1, 1] > 5.0 and res.waypoints[-1, 2] > 0.4  # it turned left with the road


def test_offsets_around_an_obstacle_partly_in_the_lane():
    # a stopped van 20 m ahead, 1.6 m right of the lane centre: 0.3 m of it in the ego's path
    van = ("VEHICLE", 20.0, -1.6, 5.0, 2.0, 0.0, 0.0, 0.0)
    assert 0.5 * EGO_WIDTH_M > 1.6 - 1.0  # the van reaches into the ego's footprint on the centreline
    res = PDMClosedPlanner().plan(inputs(8.0, straight_road(), [van]), np.array([[0.0, 0.0], [80.0, 0.0]]))
    best = res.proposals[res.best]
    centre = [p for p in res.proposals if p.offset == 0.0 and p.speed > 0]
    assert all(p.leader == "VEHICLE a0" for p in centre)  # on the centreline the van is the IDM leader
    assert best.offset == 1.0 and best.nc == 1.0 and best.dac == 1.0 and best.leader is None
    assert res.waypoints[-1, 0] > 20.0 and res.waypoints[-1, 1] > 0.5  # passed it on the left
    no_room = MapPolylines(straight_road().types, straight_road().points.copy())
    no_room.points[3, :, 1] = 1.2  # left road edge moved to y = 1.2: no room to pass
    res = PDMClosedPlanner().plan(inputs(8.0, no_room, [van]), np.array([[0.0, 0.0], [80.0, 0.0]]))
    best = res.proposals[res.best]
    assert best.nc == 1.0 and best.states[:, 0].max() + EGO_FRONT_M < 20.0 - 2.5  # stops behind it instead


def test_lane_walk_takes_the_commanded_branch_of_a_fork():
    stem = np.stack([np.linspace(-10, 10, 20), np.zeros(20)], 1)
    ang = np.linspace(0, np.pi / 2, 30)
    left = np.stack([10 + 15 * np.sin(ang), 15 * (1 - np.cos(ang))], 1)
    right = left * [1, -1] + [0, 0]
    ahead = np.stack([np.linspace(10, 60, 30), np.zeros(30)], 1)
    map_ = MapPolylines(["lane_centerline"] * 4, np.stack([_line(p) for p in (stem, left, right, ahead)]))
    ends = {cmd: route_centerline(map_, None, cmd, 40.0).xy for cmd in ("LEFT", "RIGHT", "STRAIGHT")}
    assert all("lane walk" in route_centerline(map_, None, c, 40.0).source for c in ends)
    at = {cmd: xy[np.argmin(np.abs(xy[:, 0] - 24.0))] for cmd, xy in ends.items()}  # where the branches have parted
    assert at["LEFT"][1] > 5.0 and at["RIGHT"][1] < -5.0 and abs(at["STRAIGHT"][1]) < 0.5


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="command 'UTURN'"):
        route_centerline(straight_road(), None, "UTURN", 40.0)
    with pytest.raises(ValueError, match="non-finite"):
        route_centerline(straight_road(), np.array([[0.0, 0.0], [np.nan, 1.0], [5.0, 0.0]]), "STRAIGHT", 40.0)
    with pytest.raises(RuntimeError, match="set_world"):
        PDMClosedPlanner().plan_in_world(inputs(5.0, straight_road()), np.zeros(2), 0.0, 0.0)
    with pytest.raises(ValueError, match="speed_limit"):
        PDMClosedPlanner(speed_limit=0.0)


def test_registry_flags_and_the_shared_idm_law():
    p = load_planner("pdm_closed")
    assert isinstance(p, PDMClosedPlanner) and p.privileged and p.reads_world and p.name == "pdm_closed"
    prm = IDMParams(s0=1.0, headway=1.5, a_max=1.5, b=3.0, max_decel=6.0)
    assert idm_acceleration(5.0, 10.0, np.inf, 0.0, prm) == pytest.approx(1.5 * (1 - 0.5**4))
    assert idm_acceleration(10.0, 10.0, 5.0, 0.0, prm) == -6.0  # a stopped car 5 m ahead at 10 m/s: capped braking
    assert idm_acceleration(0.0, 10.0, 0.5, 0.0, prm) < 0.0  # stands closer than s0: does not start


def test_log_speed_band_follows_the_logged_speed_ahead():
    from dsdrive.data.world_state import Route

    t = np.arange(0.0, 12.0, 0.1)
    x = np.where(t < 6.0, 5.0 * t, 30.0 + 10.0 * (t - 6.0))  # 5 m/s for 6 s, then 10 m/s
    route = Route(np.stack([x, np.zeros_like(x)], 1), t)
    assert log_speed_band(route, 0, 0.1) == pytest.approx(5.5)  # next 4 s at 5 m/s, x 1.1
    assert log_speed_band(route, 0, 0.0, window_s=8.0) == pytest.approx(10.0)  # the window reaches the faster part
    assert log_speed_band(route, 40, 0.1) == pytest.approx(11.0)  # at 4 s: the next 4 s hold 10 m/s
    standing = Route(np.zeros((50, 2)) + [3.0, 1.0], t[:50])
    assert log_speed_band(standing, 10, 0.1) == LOG_SPEED_FLOOR_MPS  # a logged stand: the floor
    for bad in ({"i": 200, "margin": 0.1}, {"i": 0, "margin": -0.1}):
        with pytest.raises(ValueError, match="log_speed_band"):
            log_speed_band(route, **bad)


def test_cautious_settings_slow_the_plan_and_keep_a_longer_gap():
    road, route = straight_road(), np.array([[0.0, 0.0], [80.0, 0.0]])
    lead = [("VEHICLE", 30.0, 0.0, 4.6, 2.0, 0.0, 6.0, 0.0)]  # a car 25 m ahead at 6 m/s
    default, cautious = PDMClosedPlanner(), PDMClosedPlanner(idm=replace(PDM_IDM, headway=2.0, s0=2.0))
    gap = {}
    for name, p in (("default", default), ("cautious", cautious)):
        res = p.plan(inputs(10.0, road, lead), route)
        best = res.proposals[res.best]
        assert best.nc == 1.0 and best.leader == "VEHICLE a0"
        lead_rear = 30.0 - 2.3 + 6.0 * 0.1 * np.arange(len(best.states))
        gap[name] = float(np.min(lead_rear - best.states[:, 0] - EGO_FRONT_M))
    assert gap["cautious"] > gap["default"] + 1.0, gap  # headway 2 s / gap 2 m vs 1.5 s / 1 m
    # a given limit below the current speed: the plan slows to it (default: the current speed is kept as the limit)
    fast = default.plan(inputs(10.0, road), route)
    slow = default.plan(inputs(10.0, road), route, speed_limit=6.0)
    assert fast.proposals[fast.best].states[-1, 3] > 10.0 - 1e-6
    assert slow.proposals[slow.best].states[-1, 3] < 7.0 and slow.waypoints[-1, 0] < fast.waypoints[-1, 0] - 3.0
    with pytest.raises(ValueError, match="speed_limit"):
        default.plan(inputs(10.0, road), route, speed_limit=0.0)
    with pytest.raises(ValueError, match="log_speed_margin"):
        PDMClosedPlanner(log_speed_margin=-0.5)


def test_plan_in_world_aims_at_the_scenes_logged_speed():
    from dsdrive.data.world_state import Route

    t = np.arange(0.0, 20.0, 0.1)
    route = Route(np.stack([4.0 * t - 5.0, np.zeros_like(t)], 1), t)  # the human drove 4 m/s along +x
    ends = {}
    for margin in (None, 0.1):
        p = PDMClosedPlanner(log_speed_margin=margin)
        p.set_world(route, None)
        wp, _ = p.plan_in_world(inputs(4.0, straight_road()), np.zeros(2), 0.0, 1.25)
        ends[margin] = float(wp[-1, 0])
        assert p.world_speed_limit(route, 10) == (None if margin is None else pytest.approx(4.4))
    assert ends[0.1] < 4.4 * 3.0 + 0.1 and ends[None] > ends[0.1] + 1.0, ends  # 13.9 m/s limit: speeds up


# ------------------------------------------------------------------ real scenes
@pytest.fixture(scope="module")
def scene_0061():
    from data_builders.scenarionet import build_scene, load_scenario
    from dsdrive.evaluation.pdm_score import ScenarioLog

    path = DATA / "sd_nuscenes_v1.0-mini_scene-0061.pkl"
    data = load_scenario(path)
    return build_scene(data, path), ScenarioLog.from_scenario(data, path.name)


@needs_data
def test_stays_on_the_drivable_area_in_a_real_left_turn(scene_0061):
    """scene-0061 at 5 s and 8 s: in the left turn where constant velocity leaves the road (test_pdm_score)."""
    from dsdrive.evaluation.pdm_score import log_step_of, score_sample

    samples, log = scene_0061
    for sid in ("scene-0061_50", "scene-0061_80"):
        s = next(x for x in samples if x.sample_id == sid)
        plan = PDMClosedPlanner().compute_trajectories_privileged([s])[0]
        r = score_sample(log, log_step_of(s, log), plan)
        assert r["dac"] == 1.0 and r["nc"] == 1.0 and r["first_off_area_step"] is None, (sid, r)
        assert plan[-1, 2] > 0.3 and abs(plan[-1, 1] - s.targets.ego_future[-1, 1]) < 1.0  # turned left, as the route does


@needs_data
@pytest.mark.slow
def test_open_loop_pdms_beside_the_logged_future_and_constant_velocity(scene_0061):
    """All 33 samples of scene-0061 (a left turn): PDM-Closed scores within 0.1 of the logged future
    and far above constant velocity (measured: 0.927, 0.999, 0.507); with itself as the EP
    reference, the logged future's EP drops."""
    from dsdrive.evaluation.pdm_score import evaluate_planner, pdm_closed_reference
    from dsdrive.planners.constant_velocity import ConstantVelocityPlanner
    from dsdrive.planners.log_future import GroundTruthPlanner

    samples, log = scene_0061
    logs = {"scene-0061": log}
    pdms = {name: evaluate_planner(p, samples, logs)["aggregate"]["pdms"]
            for name, p in (("pdm", PDMClosedPlanner()), ("gt", GroundTruthPlanner()), ("cv", ConstantVelocityPlanner()))}
    assert pdms["pdm"] >= pdms["gt"] - 0.1 and pdms["pdm"] >= pdms["cv"] + 0.3, pdms
    ref = pdm_closed_reference(samples, logs)
    assert len(ref) == len(samples) and all(v >= 0.0 for v in ref.values())
    gt_log = evaluate_planner(GroundTruthPlanner(), samples, logs)["aggregate"]
    gt_pdm = evaluate_planner(GroundTruthPlanner(), samples, logs, reference=ref)["aggregate"]
    assert gt_pdm["ep"] <= gt_log["ep"] and gt_pdm["nc"] == gt_log["nc"]


@needs_data
def test_annotator_labels_a_state_without_a_logged_future(scene_0061):
    from dataclasses import replace

    from dsdrive.annotation.annotators import build_annotator

    samples, _ = scene_0061
    s = next(x for x in samples if x.sample_id == "scene-0061_50")
    blind = replace(s, targets=replace(s.targets, ego_future=np.full_like(s.targets.ego_future, np.nan),
                                       ego_future_mask=np.zeros(6, bool)))  # a closed-loop state: no logged future
    annotator = build_annotator("pdm-closed", argparse.Namespace(hindsight=None, batch_size=4, model=None))
    ann, = annotator.annotate([blind])
    assert isinstance(ann, Annotation), ann
    Annotation.model_validate(ann.model_dump())  # the schema holds
    plan = PDMClosedPlanner().compute_trajectory(s.inputs)  # the same plan: no route, the command's lanes
    assert ann.teacher == "pdm-closed" and ann.prompt_version == "pdm-closed/v1" and ann.hindsight is False
    np.testing.assert_allclose(np.array(ann.waypoints), plan[:, :2], atol=2e-3)
    assert ann.meta_action == meta_action_from_trajectory(plan[:, :2], s.inputs.speed)
    assert ann.explanation and ann.scene_summary.startswith("Ego moving") and ann.risks
    hind, = build_annotator("pdm-closed", argparse.Namespace(hindsight=True, batch_size=4)).annotate([s])
    assert hind.hindsight is True  # planned along the logged future, as in open loop:
    np.testing.assert_allclose(np.array(hind.waypoints), PDMClosedPlanner().compute_trajectories_privileged([s])[0][:, :2], atol=2e-3)


@needs_data
@pytest.mark.slow
def test_closed_loop_smoke_on_a_real_scene(tmp_path):
    """PDM-Closed drives the first 8 s of scene-0061 in MetaDrive (route and drivable area from the
    world): no collision, on the drivable area, an explanation at every plan."""
    from dsdrive.evaluation.closed_loop.metrics import scenario_metrics
    from dsdrive.evaluation.closed_loop.rollout import RolloutConfig, run_closed_loop
    from dsdrive.evaluation.closed_loop.scenario_index import prepare_working_copy

    work = prepare_working_copy(DATA, tmp_path / "scenarios", ["scene-0061"])
    sr, = run_closed_loop(work, PDMClosedPlanner(), RolloutConfig(max_steps=80), progress=False)
    m = scenario_metrics(sr)
    assert sr.status == "ok", sr.failure
    assert not (m["collision_vehicle"] or m["collision_pedestrian"] or m["collision_object"]) and m["dac"] == 1.0
    assert m["nc"] == 1.0 and m["ego_progress_m"] > 30.0
    assert len(sr.plans) == 16 and all(p.explanation["text"].startswith("PDM-Closed:") for p in sr.plans)
