"""The student's kinematic waypoint prior (``StudentConfig.waypoint_prior = "kinematic"``, issue 10 goal 8):
the untrained head plans the uniform blend of constant velocity, CTRV and lane following; the CTRV
rollout and the lane prior match the planners they restate; ``cv_gate`` (the default) adds no key or
parameter; the lane prior is a processor feature read from the inputs only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers_student import make_inputs, make_sample, one_thread  # noqa: F401
from test_student_ego_ablation import reference_case

from dsdrive.data.types import MapPolylines
from dsdrive.planners.constant_velocity import ConstantTurnRatePlanner, ConstantVelocityPlanner
from dsdrive.student import StudentConfig
from dsdrive.student.lane_prior import lane_following_prior
from dsdrive.student.processing_student import SceneFeaturizer
from dsdrive.student.waypoint_head import WaypointHead, constant_velocity_rollout, ctrv_rollout, ego_trend


def _ego(inputs) -> torch.Tensor:
    return torch.from_numpy(SceneFeaturizer.ego_features(inputs)["ego"])[None]


def test_ctrv_rollout_equals_the_ctrv_planner():
    for yaw_rate, vy in ((0.0, 0.0), (0.3, 0.4), (-0.15, -0.2)):
        inp = make_inputs(speed=8.0)
        inp = dataclasses.replace(inp, ego_status=np.array([8.0, vy, 0, 0, yaw_rate, 0], np.float32))
        want = ConstantTurnRatePlanner().compute_trajectory(inp)[:, :2]
        np.testing.assert_allclose(ctrv_rollout(_ego(inp))[0].numpy(), want, atol=1e-4)
    # yaw rate unmeasured: from the last history heading (as the planner)
    inp = dataclasses.replace(make_inputs(speed=5.0), ego_status_mask=np.array([1, 1, 1, 1, 0, 0], bool))
    inp.ego_history[-1, 2] = -0.1  # the ego turned left by 0.1 rad over the last 0.5 s
    want = ConstantTurnRatePlanner().compute_trajectory(inp)[:, :2]
    got = ctrv_rollout(_ego(inp))[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert got[-1, 1] > 0.5  # turning left


def test_ego_trend_reads_the_history_speeds():
    inp = make_inputs(speed=6.0)  # history at 6 m/s, evenly spaced
    trend = ego_trend(_ego(inp))[0]
    np.testing.assert_allclose(trend[:8].reshape(4, 2)[:, 0].numpy(), 0.6, atol=1e-5)
    np.testing.assert_allclose(trend[8:].numpy(), 1.0)
    inp = dataclasses.replace(inp, ego_history_mask=np.array([0, 0, 1, 1], bool))
    trend = ego_trend(_ego(inp))[0]
    assert trend[8:].tolist() == [0.0, 0.0, 1.0, 1.0] and trend[:4].abs().sum() == 0


def test_lane_prior_follows_a_bending_lane_and_is_cv_on_a_straight_one():
    straight = make_inputs(speed=6.0)
    np.testing.assert_allclose(lane_following_prior(straight), ConstantVelocityPlanner().compute_trajectory(straight)[:, :2], atol=0.05)
    # a lane curving left with radius 40 m through the ego
    th = np.linspace(-0.3, 1.2, 20)
    lane = np.stack([40 * np.sin(th), 40 * (1 - np.cos(th))], -1).astype(np.float32)
    bend = dataclasses.replace(straight, map=MapPolylines(["lane_centerline"], lane[None]), command="LEFT")
    xy = lane_following_prior(bend)
    arc = np.hypot(*np.diff(np.vstack([[0, 0], xy]), axis=0).T).sum()
    assert xy[-1, 1] > 2.0 and abs(arc - 18.0) < 0.5  # 3 s at 6 m/s along the bend
    np.testing.assert_allclose(np.hypot(xy[:, 0], xy[:, 1] - 40.0), 40.0, atol=0.3)  # on the lane
    with pytest.raises(ValueError, match="command"):
        lane_following_prior(dataclasses.replace(straight, command="U-TURN"))


def test_untrained_kinematic_head_plans_the_prior_blend():
    torch.manual_seed(0)
    head = WaypointHead(32, 3, 6, 6, 2.0, 0.9, prior="kinematic")
    ego = torch.cat([torch.tensor([[7.0, 0.3, 0.5, 0.0, 0.2, 0.0]]), torch.ones(1, 5), torch.zeros(1, 1), torch.zeros(1, 12), torch.zeros(1, 4)], 1)
    lane = torch.randn(1, 6, 2)
    wp, logits = head(torch.randn(1, 18, 32), torch.randn(3, 6, 6, 2), ego, lane_prior=lane)
    want = (constant_velocity_rollout(ego) + ctrv_rollout(ego) + lane) / 3
    assert torch.allclose(wp, want[:, None, None].expand_as(wp), atol=1e-6)
    assert torch.all(logits == 0)
    # without a lane prior the CTRV rollout takes its place; without ego it is anchors + offsets
    wp2, _ = head(torch.randn(1, 18, 32), torch.randn(3, 6, 6, 2), ego)
    assert torch.allclose(wp2[0, 0, 0], (constant_velocity_rollout(ego) + 2 * ctrv_rollout(ego))[0] / 3, atol=1e-6)
    anchors = torch.randn(3, 6, 6, 2)
    assert torch.allclose(head(torch.randn(1, 18, 32), anchors)[0], anchors[None])
    with pytest.raises(ValueError, match="prior"):
        WaypointHead(32, 3, 6, 6, prior="lane")
    with pytest.raises(ValueError, match="waypoint_prior"):
        StudentConfig(waypoint_prior="ctra")


def test_kinematic_student_plan_and_loss(one_thread):  # noqa: F811
    model, batch = reference_case(waypoint_prior="kinematic", plan_selection="expected")
    lane = torch.randn(2, 6, 2)
    plan = model.plan({**batch, "lane_prior": lane})
    want = (constant_velocity_rollout(batch["ego"]) + ctrv_rollout(batch["ego"]) + lane) / 3
    assert torch.allclose(plan.waypoints[..., :2], want, atol=1e-5)
    # trainable: one step moves the plan towards the future
    future = torch.cat([want + 1.0, torch.zeros(2, 6, 1)], -1)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        out = model(**batch, lane_prior=lane, ego_future=future, ego_future_mask=torch.ones(2, 6, dtype=torch.bool))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.waypoint_l1))
    assert losses[0] == pytest.approx(1.0, abs=1e-4) and losses[-1] < losses[0]


def test_default_prior_adds_no_parameter_and_no_batch_key(tmp_path):
    base, _ = reference_case()
    names = {n for n, _ in base.named_parameters()}
    assert not any("prior_blend" in n for n in names) and base.waypoint_head.ego_proj.in_features == 10
    kin, _ = reference_case(waypoint_prior="kinematic")
    assert "waypoint_head.prior_blend" in {n for n, _ in kin.named_parameters()}
    from dsdrive.student.processing_student import StudentProcessor
    from dsdrive.student.tokenizer import build_tokenizer

    tok = build_tokenizer([make_sample("s0")], vocab_size=300)
    s = make_sample("s1", speed=5.0)
    assert "lane_prior" not in StudentProcessor(tok, StudentConfig())([s])
    batch = StudentProcessor(tok, StudentConfig(waypoint_prior="kinematic"))([s, make_sample("s2", speed=8.0)])
    assert batch["lane_prior"].shape == (2, 6, 2)
    np.testing.assert_allclose(batch["lane_prior"][1].numpy(), lane_following_prior(make_inputs("s2", speed=8.0)), atol=1e-6)


def test_prior_blend_fit_finds_the_prior_that_explains_the_futures():
    """Futures that follow the lane prior for LEFT and CTRV for STRAIGHT: the fitted blend weights them."""
    torch.manual_seed(0)
    head = WaypointHead(16, 3, 6, 6, prior="kinematic")
    n = 64
    ego = torch.zeros(n, 28)
    ego[:, 0], ego[:, 4], ego[:, 6:11] = torch.rand(n) * 10 + 2, torch.randn(n) * 0.2, 1.0
    lane = ctrv_rollout(ego) + torch.randn(n, 6, 2)
    command = torch.arange(n) % 2 * 2  # LEFT (0) and STRAIGHT (2)
    future = torch.where((command == 0)[:, None, None], lane, ctrv_rollout(ego))
    fit = head.fit_prior_blend(ego, command, future, torch.ones(n, 6, dtype=torch.bool), lane)
    assert fit["l2_fitted"] < 0.2 * fit["l2_uniform"]
    assert fit["weights"][0][2] > 0.8 and fit["weights"][2][1] > 0.8
    assert fit["weights"][1] == pytest.approx([1 / 3] * 3, abs=1e-3)  # RIGHT: no sample, stays uniform
    with pytest.raises(ValueError, match="not one of"):
        WaypointHead(16, 3, 6, 6).fit_prior_blend(ego, command, future, torch.ones(n, 6, dtype=torch.bool))
