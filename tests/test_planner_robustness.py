"""Every planner stays finite and physically plausible on inputs outside its training range.

Training set: random arcs (``dsdrive.evaluation.metrics.synthetic``) with the RIGHT command removed,
speeds 0-15 m/s, only VEHICLE agents, no map, ``ax`` and ``vy`` always 0 and steering never
measured. Probes, built from one in-range STRAIGHT sample at 8 m/s:

* ``unseen_command``: command RIGHT;
* ``zero_variance``: every input that is constant in training takes a new value: ax = 6 m/s^2 and a
  measured steering of 0.5 rad, pedestrian and cyclist agents, map polylines;
* ``extreme_speed``: 60 m/s (ego status and a history 30 m per 0.5 s).

Bound (ego frame, x forward, y left, metres): every waypoint is finite and its distance from the
ego at time t is at most ``v t + A_MAX t^2 / 2 + MARGIN`` (v the probe's speed, A_MAX = 10 m/s^2,
about 1 g, more than tyres give). The pre-fix ego-status MLP planned ~650 m for an unseen command.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dsdrive.data.types import AGENT_FUTURE_STEPS, Agents, MapPolylines, PlanningInputs, PlanningSample, PlanningTargets
from dsdrive.evaluation.metrics.synthetic import arc_trajectory, random_samples
from dsdrive.planners.constant_velocity import ConstantVelocityPlanner
from dsdrive.planners.ego_mlp import EgoMLPConfig, EgoMLPPlanner, EgoStatusMLP, ego_features
from dsdrive.training.ego_mlp import train_ego_mlp

A_MAX = 10.0
"""m/s^2: no car brakes or accelerates harder than about 1 g."""
MARGIN = 2.0
"""m of slack on the kinematic envelope."""
T = 0.5 * np.arange(1, 7)
BASE_SPEED, EXTREME_SPEED = 8.0, 60.0
CASES = ("unseen_command", "zero_variance", "extreme_speed")
PLANNERS = ("constant_velocity", "ego_mlp", "planning_teacher", "student")


@pytest.fixture(scope="module")
def train_samples() -> list[PlanningSample]:
    samples = [s for s in random_samples(160, seed=7) if s.inputs.command != "RIGHT"]
    assert {s.inputs.command for s in samples} == {"LEFT", "STRAIGHT"}
    assert max(float(s.inputs.ego_status[0]) for s in samples) < 15.0
    return samples


def probe(speed: float, command: str = "STRAIGHT", sample_id: str = "probe") -> PlanningSample:
    """An in-range-looking sample (two vehicles, no map) driving straight at ``speed`` m/s."""
    hist = arc_trajectory(speed, 0.0, -0.5 * np.arange(4, 0, -1)).astype(np.float32)
    future = arc_trajectory(speed, 0.0, T).astype(np.float32)
    boxes = np.array([[25.0, 0.0, 0.0, 4.5, 1.9, 1.6, 0.0], [12.0, 4.0, 0.0, 4.5, 1.9, 1.6, 0.3]], np.float32)
    vel = np.array([[5.0, 0.0], [0.0, 0.0]], np.float32)
    agent_t = 0.5 * np.arange(1, AGENT_FUTURE_STEPS + 1)
    fut = np.zeros((2, AGENT_FUTURE_STEPS, 3), np.float32)
    fut[0, :, 0] = 25.0 + 5.0 * agent_t
    fut[1, :, :2] = boxes[1, :2]
    fut[1, :, 2] = 0.3
    inputs = PlanningInputs(
        sample_id=sample_id, scene_id="probe", ego_history=hist, ego_history_mask=np.ones(4, bool),
        ego_status=np.array([speed, 0, 0, 0, 0, 0], np.float32), ego_status_mask=np.array([True, True, True, False, True, False]),
        command=command, agents=Agents(["lead", "parked"], ["VEHICLE", "VEHICLE"], boxes, vel), map=MapPolylines.empty(),
    )
    return PlanningSample("probe", "probe-map", 0.0, inputs, PlanningTargets(future, np.ones(6, bool), fut, np.ones((2, AGENT_FUTURE_STEPS), bool)))


def out_of_range(case: str) -> tuple[PlanningSample, float]:
    """(probe sample, its speed in m/s) for one case (see the module docstring)."""
    if case == "unseen_command":
        return probe(BASE_SPEED, command="RIGHT", sample_id=case), BASE_SPEED
    if case == "extreme_speed":
        return probe(EXTREME_SPEED, sample_id=case), EXTREME_SPEED
    s = probe(BASE_SPEED, sample_id=case)
    status = s.inputs.ego_status.copy()
    status[2], status[5] = 6.0, 0.5  # ax, steering
    xs = np.linspace(-10, 50, 20, dtype=np.float32)
    lines = np.stack([np.stack([xs, np.full(20, y, np.float32)], -1) for y in (1.75, -1.75, 5.25)])
    inputs = dataclasses.replace(
        s.inputs, ego_status=status, ego_status_mask=np.ones(6, bool),
        agents=dataclasses.replace(s.inputs.agents, types=["PEDESTRIAN", "CYCLIST"]),
        map=MapPolylines(["lane_divider", "road_edge", "lane_centerline"], lines),
    )
    return dataclasses.replace(s, inputs=inputs), BASE_SPEED


def assert_plausible(traj: np.ndarray, speed: float, what: str) -> None:
    """(6, 3) waypoints finite and inside the kinematic envelope of the module docstring."""
    assert traj.shape == (6, 3), what
    assert np.isfinite(traj).all(), f"{what}: non-finite waypoints {traj}"
    dist = np.hypot(traj[:, 0], traj[:, 1])
    bound = speed * T + 0.5 * A_MAX * T**2 + MARGIN
    assert (dist <= bound).all(), f"{what}: waypoint distances {dist.round(1)} m exceed {bound.round(1)} m"


@pytest.fixture(scope="module")
def ego_mlp(train_samples) -> EgoMLPPlanner:
    return train_ego_mlp(train_samples, EgoMLPConfig(hidden_dim=64, epochs=40, batch_size=32), progress=False)


@pytest.fixture(scope="module")
def planners(train_samples, ego_mlp, tmp_path_factory):
    """name -> function(list of samples) -> (B, 6, 3) waypoints."""
    from helpers_distilldrive import tiny_teacher, train_teacher
    from helpers_student import tiny_student

    from dsdrive.planners.distilldrive_teacher import PlanningTeacherPlanner
    from dsdrive.planners.student import StudentPlanner

    torch.manual_seed(0)
    teacher = tiny_teacher(train_samples)
    train_teacher(teacher, train_samples, steps=10, batch_size=16, lr=3e-3)
    teacher_dir = tmp_path_factory.mktemp("teacher")
    teacher.save_pretrained(teacher_dir)
    teacher_planner = PlanningTeacherPlanner(teacher_dir)
    model, processor = tiny_student(train_samples[:24])
    student_dir = tmp_path_factory.mktemp("student")
    model.save_pretrained(student_dir)
    processor.save_pretrained(student_dir)
    student = StudentPlanner(student_dir)
    cv = ConstantVelocityPlanner()
    return {
        "constant_velocity": lambda batch: cv.compute_trajectories([s.inputs for s in batch]),
        "ego_mlp": lambda batch: ego_mlp.compute_trajectories([s.inputs for s in batch]),
        "planning_teacher": teacher_planner.compute_trajectories_privileged,
        "student": lambda batch: student.compute_trajectories([s.inputs for s in batch]),
    }


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", PLANNERS)
def test_planner_stays_plausible_out_of_range(planners, name, case):
    sample, speed = out_of_range(case)
    in_range = probe(BASE_SPEED)
    trajs = planners[name]([in_range, sample])
    assert_plausible(trajs[0], BASE_SPEED, f"{name} in range")
    assert_plausible(trajs[1], speed, f"{name} {case}")


_NO_SPEED_CUE = "planning_teacher: ego status is not an input (DistillDrive); its 60 m/s history is far outside the sine-embedded " \
    "range, it plans ~24 m in 3 s. Fix belongs in dsdrive/distilldrive/planning_teacher.py"
_HALF_GATE = "student: the waypoint head pulls modes only part-way (gate 0.5 at init) to the constant-velocity rollout, " \
    "~108 m in 3 s at 60 m/s. Fix belongs in dsdrive/student/waypoint_head.py"


@pytest.mark.parametrize("name", [
    "constant_velocity", "ego_mlp",
    pytest.param("planning_teacher", marks=pytest.mark.xfail(strict=True, reason=_NO_SPEED_CUE)),
    pytest.param("student", marks=pytest.mark.xfail(strict=True, reason=_HALF_GATE)),
])
def test_extreme_speed_plan_cannot_brake_harder_than_physics(planners, name):
    """At 60 m/s no car stops faster than A_MAX allows: ``|p(t)| >= v t - A_MAX t^2 / 2 - MARGIN``.
    The ego MLP meets it through its constant-velocity residual (a clamped absolute-waypoint MLP
    plans ~40 m in 3 s)."""
    sample, speed = out_of_range("extreme_speed")
    dist = np.hypot(*planners[name]([sample])[0][:, :2].T)
    assert (dist >= speed * T - 0.5 * A_MAX * T**2 - MARGIN).all(), f"{name}: {dist.round(1)} m"


def test_ego_mlp_unseen_command_is_read_as_no_command(ego_mlp, train_samples):
    """RIGHT (never trained) plans as the training-average command, not as a 1000-sigma input."""
    right = ego_features(out_of_range("unseen_command")[0].inputs)
    mean_cmd = right.copy()
    mean_cmd[-3:] = ego_mlp.model.feature_mean[-3:].numpy()
    with torch.no_grad():
        a, b = ego_mlp.model(torch.from_numpy(np.stack([right, mean_cmd])))
    torch.testing.assert_close(a, b)
    assert ego_mlp.model.feature_max[-3:].tolist() == [1.0, 0.0, 1.0]  # LEFT, RIGHT, STRAIGHT seen in training


def test_ego_mlp_zero_variance_feature_is_ignored(ego_mlp):
    """Features constant in training (steering, its mask, vy, ax) have scale 0: changing them alone
    does not move the learned correction."""
    base = ego_features(probe(BASE_SPEED).inputs)
    odd = base.copy()
    odd[[2, 5, 11]] = [6.0, 0.5, 1.0]  # ax, steering, steering mask
    with torch.no_grad():
        z = ego_mlp.model.normalise(torch.from_numpy(np.stack([base, odd])))
    torch.testing.assert_close(z[0], z[1])
    assert (ego_mlp.model.feature_std[[1, 2, 5, 11]] == 0).all()


def test_ego_mlp_old_checkpoint_loads_and_stays_sane(ego_mlp, tmp_path):
    """A checkpoint from before the fix (absolute waypoints, std floored at 1e-3, no min / max)
    loads, and its zero-variance features (the unseen command's column among them) are ignored."""
    cfg = EgoMLPConfig(hidden_dim=64, cv_residual=False)
    old = EgoStatusMLP(cfg)
    state = {k: v for k, v in old.state_dict().items() if k not in ("feature_min", "feature_max")}
    state["feature_std"] = ego_mlp.model.feature_std.clamp_min(1e-3)
    state["feature_mean"] = ego_mlp.model.feature_mean.clone()
    planner = EgoMLPPlanner(old, cfg)
    planner.save(tmp_path)
    torch.save(state, tmp_path / "model.pt")
    raw = (tmp_path / "config.json").read_text().replace('"cv_residual": false, ', "")
    (tmp_path / "config.json").write_text(raw)
    loaded = EgoMLPPlanner.load(tmp_path)
    assert loaded.config.cv_residual is False and (loaded.model.feature_std[[1, 2, 5, 11]] == 0).all()
    sample, speed = out_of_range("unseen_command")
    assert_plausible(loaded.compute_trajectory(sample.inputs), speed, "old ego_mlp checkpoint, unseen command")
