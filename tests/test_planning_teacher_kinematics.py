"""The planning teacher's own kinematics (dsdrive.distilldrive.kinematic_prior): rollouts equal the
kinematic planners, the untrained teacher plans its prior, status becomes an input only when asked,
expected-plan selection, config validation, and a 60 m/s probe stays physical."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers_distilldrive import synthetic_samples, tiny_teacher, train_teacher

from dsdrive.distilldrive.kinematic_prior import kinematic_features, kinematic_rollout
from dsdrive.distilldrive.planning_teacher import PlanningTeacherConfig
from dsdrive.distilldrive.teacher_inputs import build_teacher_batch
from dsdrive.planners.constant_velocity import ConstantTurnRatePlanner, ConstantVelocityPlanner
from dsdrive.training.planning_teacher_config import PlanningTeacherTrainingConfig


def _with_status(samples, rng):
    """Samples with random measured vx, vy, yaw rate (yaw rate masked in) so CTRV really turns."""
    out = []
    for s in samples:
        st = np.array(s.inputs.ego_status, np.float32)
        st[0], st[1], st[4] = rng.uniform(0, 15), rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3)
        mask = np.array(s.inputs.ego_status_mask, bool)
        mask[[0, 1, 4]] = True
        out.append(dataclasses.replace(s, inputs=dataclasses.replace(s.inputs, ego_status=st, ego_status_mask=mask)))
    return out


@pytest.mark.parametrize("kind,planner", [("cv", ConstantVelocityPlanner()), ("ctrv", ConstantTurnRatePlanner())])
def test_rollout_equals_the_kinematic_planner(kind, planner):
    samples = _with_status(synthetic_samples(8), np.random.default_rng(0))
    batch = build_teacher_batch(samples)
    got = kinematic_rollout(kind, batch.status, batch.status_mask, batch.ego_history).numpy()
    ref = np.stack([planner.compute_trajectory(s.inputs) for s in samples])[..., :2]
    assert np.abs(ref).max() > 5.0  # not a trivial all-zero comparison
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_rollout_falls_back_to_history_then_zero_and_rejects_unknown_kind():
    samples = synthetic_samples(3)
    batch = build_teacher_batch(samples)
    mask = batch.status_mask.clone()
    mask[:, 6:8] = False  # vx, vy unmeasured -> finite difference of the -0.5 s pose
    hist = batch.ego_history.clone()
    hist[0, -1] = torch.tensor([-4.0, 0.5, 1.0, 0.0, 1.0])
    hist[1, -1, 4] = 0.0  # no valid pose either -> standing still
    got = kinematic_rollout("cv", batch.status, mask, hist)
    torch.testing.assert_close(got[0, 0], torch.tensor([4.0, -0.5]))
    assert got[1].abs().max() == 0
    with pytest.raises(ValueError, match="kind 'ctra'"):
        kinematic_rollout("ctra", batch.status, mask, hist)


def test_untrained_teacher_with_the_prior_plans_the_rollout():
    samples = _with_status(synthetic_samples(6), np.random.default_rng(1))
    model = tiny_teacher(samples, kinematic_prior="ctrv", ego_kinematics=True).eval()
    batch = build_teacher_batch(samples, **model.config.batch_kwargs())
    out = model(batch)
    prior = kinematic_rollout("ctrv", batch.status, batch.status_mask, batch.ego_history)
    torch.testing.assert_close(out["plan_waypoints"], prior[:, None].expand_as(out["plan_waypoints"]), atol=1e-4, rtol=0)
    torch.testing.assert_close(model.select(batch, out, rescore=False)["waypoints"][..., :2], prior, atol=1e-4, rtol=0)


def test_prior_gate_below_one_keeps_the_modes_apart():
    samples = _with_status(synthetic_samples(6), np.random.default_rng(2))
    model = tiny_teacher(samples, kinematic_prior="cv", prior_gate=0.5).eval()
    batch = build_teacher_batch(samples)
    wp = model(batch)["plan_waypoints"]
    prior = kinematic_rollout("cv", batch.status, batch.status_mask, batch.ego_history)[:, None]
    anchors = model.plan_anchors.reshape(1, -1, 6, 2)
    torch.testing.assert_close(wp, 0.5 * (anchors + prior).expand_as(wp), atol=1e-4, rtol=0)


def test_ego_status_is_an_input_only_with_ego_kinematics():
    samples = synthetic_samples(6)
    faster = [dataclasses.replace(s, inputs=dataclasses.replace(s.inputs, ego_status=s.inputs.ego_status + 5.0)) for s in samples]
    for flag in (False, True):
        model = tiny_teacher(samples, ego_kinematics=flag).eval()
        a = model(build_teacher_batch(samples))["plan_queries"]
        b = model(build_teacher_batch(faster))["plan_queries"]
        assert torch.allclose(a, b) != flag, f"ego_kinematics={flag}"


def test_kinematic_features_zero_unmeasured_values():
    status, mask = torch.zeros(1, 10), torch.zeros(1, 10, dtype=torch.bool)
    status[0, 6], status[0, 5], mask[0, 6] = 20.0, 0.3, True  # vx measured, yaw rate not
    f = kinematic_features(status, mask)
    assert f.shape == (1, 10)
    assert f[0, :5].tolist() == [2.0, 0.0, 0.0, 0.0, 0.0] and f[0, 5:].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_expected_selection_is_the_softmax_weighted_mean_of_the_command_modes():
    samples = _with_status(synthetic_samples(6), np.random.default_rng(3))
    model = tiny_teacher(samples, kinematic_prior="ctrv", prior_gate=0.5, plan_selection="expected")
    train_teacher(model, samples, steps=3, batch_size=6, lr=1e-2)
    batch = build_teacher_batch(samples)
    out = model(batch)
    sel = model.select(batch, out, rescore=False)
    rows = torch.arange(len(samples))
    logits = out["plan_logits"].view(-1, 3, 6)[rows, batch.command]
    trajs = out["plan_waypoints"].view(-1, 3, 6, 6, 2)[rows, batch.command]
    want = (logits.softmax(-1)[..., None, None] * trajs).sum(1)
    torch.testing.assert_close(sel["waypoints"][..., :2], want)
    assert (sel["mode"] == logits.argmax(-1)).all()


def test_training_moves_the_residual_away_from_the_prior():
    samples = _with_status(synthetic_samples(8), np.random.default_rng(4))
    model = tiny_teacher(samples, kinematic_prior="ctrv", ego_kinematics=True)
    log = train_teacher(model, samples, steps=20, batch_size=8, lr=1e-2)
    assert log[-1]["plan_reg"] < log[0]["plan_reg"]
    assert model.plan_reg[-1].weight.abs().sum() > 0


@pytest.mark.parametrize("field,value,match", [
    ("kinematic_prior", "ctra", "kinematic_prior"), ("prior_gate", 1.5, "prior_gate"), ("plan_selection", "mean", "plan_selection"),
    ("status_weight", -1.0, "status_weight"),
])
def test_training_config_rejects_bad_kinematic_fields(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=f"{match}={value!r}"):
        PlanningTeacherTrainingConfig(output_dir=str(tmp_path), **{field: value})


@pytest.mark.parametrize("field,value", [("kinematic_prior", "ctra"), ("prior_gate", -0.1), ("plan_selection", "mean")])
def test_model_config_rejects_bad_kinematic_fields(field, value):
    with pytest.raises(ValueError, match=field):
        PlanningTeacherConfig(**{field: value})


def test_defaults_are_the_published_teacher():
    c = PlanningTeacherConfig()
    assert (c.ego_kinematics, c.kinematic_prior, c.plan_selection) == (False, "none", "argmax")
    model = tiny_teacher(synthetic_samples(4))
    assert not hasattr(model, "kinematics_mlp")


def test_extreme_speed_plan_stays_physical():
    """60 m/s: the prior teacher neither brakes harder than 10 m/s^2 nor exceeds v t + a t^2 / 2 (+2 m)."""
    samples = _with_status(synthetic_samples(8), np.random.default_rng(5))
    model = tiny_teacher(samples, kinematic_prior="ctrv", ego_kinematics=True)
    train_teacher(model, samples, steps=5, batch_size=8, lr=3e-3)
    s = samples[0]
    st = np.array(s.inputs.ego_status, np.float32)
    st[0], st[1], st[4] = 60.0, 0.0, 0.0
    fast = dataclasses.replace(s, inputs=dataclasses.replace(s.inputs, ego_status=st))
    wp = model.select(build_teacher_batch([fast], **model.config.batch_kwargs()))["waypoints"][0, :, :2].numpy()
    t = 0.5 * np.arange(1, 7)
    dist = np.hypot(*wp.T)
    assert np.isfinite(wp).all()
    assert (dist >= 60.0 * t - 5.0 * t**2 - 2.0).all() and (dist <= 60.0 * t + 5.0 * t**2 + 2.0).all(), dist.round(1)
