"""Reactive traffic: logged vehicles follow their logs unless the ego is in their way, then brake
(IDM). A synthetic follower against a stand-in for MetaDrive's traffic manager (fast), and the
real test in MetaDrive: on scene-0757 the ego stops in its lane and the car logged 12 m behind
it, which in replay drives into it, brakes instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsdrive.evaluation.closed_loop.reactive_traffic import IDMParams, ReactiveTraffic
from dsdrive.planners.base import Planner

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nuscenes-mini-scenarionet"


class _Obj:
    """Stands in for a MetaDrive object: MetaDrive's replay puts it at its logged pose each step."""

    def __init__(self):
        self.position, self.heading, self.speed = np.zeros(2), 0.0, 0.0

    def set_position(self, p):
        self.position = np.asarray(p, float)

    def set_heading_theta(self, h):
        self.heading = float(h)

    def set_velocity(self, direction, value):
        self.speed = float(value)

    def set_angular_velocity(self, w):
        pass


class _Env:
    def __init__(self, ids):
        tm = type("TM", (), {})()
        tm.spawned_objects = {f"obj_{i}": _Obj() for i in ids}
        tm.scenario_id_to_obj_id = {i: f"obj_{i}" for i in ids}
        self.engine = type("Engine", (), {"traffic_manager": tm})()


def _scenario(n=80, v=8.0):
    """A follower logged at 8 m/s along +x from x = -30 m (drives through x = 0 at 3.75 s) and a
    parked car; the ego is track 'ego'."""
    t = np.arange(n) * 0.1
    def track(kind, x, y):
        return {"type": kind, "state": {"position": np.stack([x, np.full(n, y), np.zeros(n)], 1), "heading": np.zeros(n),
                                         "valid": np.ones(n, bool), "length": np.full(n, 4.5), "width": np.full(n, 1.9)}}
    return {"metadata": {"sdc_id": "ego"}, "tracks": {"ego": track("VEHICLE", np.zeros(n), 0.0),
                                                       "follower": track("VEHICLE", -30.0 + v * t, 0.0),
                                                       "parked": track("VEHICLE", np.full(n, 20.0), 3.0)}}


def _run(ego_xy, n=80):
    scenario = _scenario(n)
    traffic = ReactiveTraffic.from_scenario(scenario)
    env = _Env(["follower", "parked"])
    obj = env.engine.traffic_manager.spawned_objects["obj_follower"]
    log = scenario["tracks"]["follower"]["state"]["position"][:, :2]
    xs, speeds = [], []
    for k in range(1, n):
        obj.set_position(log[k])  # MetaDrive's replay, then ours
        obj.speed = 8.0
        traffic.after_step(env, k, np.asarray(ego_xy, float), np.zeros(2), 4.5, 1.9)
        xs.append(obj.position[0])
        speeds.append(obj.speed)
    return traffic, np.asarray(xs), np.asarray(speeds), log[1:, 0]


def test_follower_brakes_for_a_stopped_ego_and_replays_otherwise():
    assert set(ReactiveTraffic.from_scenario(_scenario()).paths) == {"follower"}  # the parked car is not reactive
    traffic, xs, speeds, logged = _run([0.0, 0.0])
    gap = 0.0 - xs - 4.5  # ego centre at 0, both 4.5 m long
    assert gap.min() >= IDMParams().s0 - 1.0 and logged.max() > 0.0  # the log drives through the ego; the follower stops behind
    assert speeds[-1] < 0.1 and np.all(np.diff(xs) >= -1e-9)
    assert traffic.events[0]["agent_id"] == "follower" and "braked for the ego" in traffic.events[0]["detail"]
    assert traffic.lagging()["follower"] > 20.0
    traffic, xs, _, logged = _run([0.0, 6.0])  # the ego stands beside the lane: pure replay
    np.testing.assert_allclose(xs, logged)
    assert traffic.events == [] and traffic.lagging() == {}


pytestmark_real = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")


class StopPlanner(Planner):
    """Plans to stand where it is (the ego brakes to a stop in its lane)."""

    name = "stop"

    def compute_trajectory(self, inputs):
        return np.zeros((6, 3), np.float32)


@pytestmark_real
def test_real_follower_brakes_instead_of_driving_through():
    """scene-0757: vehicle 0c3833f7 is logged 11.7 m behind the ego at 5.6 m/s. With the ego
    stopping, replay drives it into the ego (a MetaDrive vehicle collision, not the ego's fault);
    reactive traffic brakes it to a stand behind the ego, and the row says so."""
    pytest.importorskip("metadrive")
    from dsdrive.evaluation.closed_loop.metrics import scenario_metrics
    from dsdrive.evaluation.closed_loop.rollout import RolloutConfig, run_closed_loop
    from dsdrive.evaluation.closed_loop.scenario_index import prepare_working_copy
    import tempfile

    follower = "0c3833f73f0e43288758cb87c9d2a4fe"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        wc = prepare_working_copy(DATA, tmp, scenes=["scene-0757"])
        for traffic in ("replay", "reactive"):
            (r,) = run_closed_loop(wc, StopPlanner(), RolloutConfig(traffic=traffic, max_steps=40, explain=False), progress=False)
            dist = [np.linalg.norm(a.xy[a.ids.index(follower)] - r.ego_xy[k]) for k, a in enumerate(r.agents) if follower in a.ids]
            speed = [np.linalg.norm(a.velocity[a.ids.index(follower)]) for a in r.agents if follower in a.ids]
            out[traffic] = (r, scenario_metrics(r), np.asarray(dist), np.asarray(speed))
    r, m, dist, speed = out["replay"]
    assert m["collision_vehicle"] and m["nc"] == 1.0 and dist.min() < 4.6  # rear-ended: not the ego's fault
    assert any(e["kind"] == "collision (vehicle)" and follower in e["detail"] for e in m["events"])
    r, m, dist, speed = out["reactive"]
    assert not m["collision_vehicle"] and dist.min() > 4.5 + 1.0 and speed[-1] < 0.2
    assert r.reactive_events[0]["agent_id"] == follower and "braked for the ego" in r.reactive_events[0]["detail"]
    assert any(e["kind"] == "traffic braked" for e in m["events"])
