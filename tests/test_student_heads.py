"""Waypoint head's constant-velocity gate and ego kinematics; RiskHead input dependence and its
non-saturating loss (the L1-only map collapsed to 0 everywhere)."""

from __future__ import annotations

import math

import pytest
import torch

from helpers_student import one_thread  # noqa: F401

from dsdrive.student.risk_head import RISK_PRIOR_LOGIT, RiskHead, risk_l1_loss
from dsdrive.student.waypoint_head import STATUS_SCALE, WaypointHead, constant_velocity_rollout, ego_kinematics

pytestmark = pytest.mark.usefixtures("one_thread")


def _ego(vx: float, vy: float, b: int = 2) -> torch.Tensor:
    """(b, 28) ego vectors: status (vx, vy, ax, ay, yaw rate, steering) + their 6 masks (all set)."""
    ego = torch.zeros(b, 28)
    ego[:, :6] = torch.tensor([vx, vy, 1.5, -0.6, 0.25, 0.1])
    ego[:, 6:12] = 1.0
    return ego


def test_constant_velocity_rollout_and_missing_velocity():
    ego = _ego(8.0, -1.0)
    cv = constant_velocity_rollout(ego, 6, 0.5)
    assert cv.shape == (2, 6, 2)
    torch.testing.assert_close(cv[0, :, 0], 8.0 * 0.5 * torch.arange(1, 7.0))
    torch.testing.assert_close(cv[0, -1], torch.tensor([24.0, -3.0]))
    ego[:, 6:8] = 0.0  # velocity unknown -> no motion assumed
    assert constant_velocity_rollout(ego).abs().sum() == 0


def test_ego_kinematics_scaling_and_masks():
    ego = _ego(10.0, -5.0)
    k = ego_kinematics(ego)
    assert k.shape == (2, 10)
    want = torch.tensor([10.0, -5.0, 1.5, -0.6, 0.25, 0.1]) / torch.tensor(STATUS_SCALE)
    torch.testing.assert_close(k[0, :6], want)
    torch.testing.assert_close(k[0, 6:], torch.ones(4))
    ego[:, 8] = 0.0  # ax missing: value zeroed and mask 0
    k = ego_kinematics(ego)
    assert float(k[0, 2]) == 0.0 and float(k[0, 8]) == 0.0


def test_gate_one_and_zero_offsets_give_the_constant_velocity_rollout():
    torch.manual_seed(0)
    head = WaypointHead(16, 3, 6, 6, offset_scale=2.0, gate_init=0.5)
    with torch.no_grad():
        head.reg.weight.zero_()
        head.reg.bias.zero_()
        head.gate.fill_(50.0)  # sigmoid -> 1
    anchors = torch.randn(3, 6, 6, 2) * 5
    ego = _ego(6.0, 0.5)
    wp, logits = head(torch.randn(2, 18, 16), anchors, ego)
    assert wp.shape == (2, 3, 6, 6, 2) and logits.shape == (2, 3, 6)
    cv = constant_velocity_rollout(ego)
    torch.testing.assert_close(wp, cv[:, None, None].expand_as(wp))
    with torch.no_grad():
        head.gate.fill_(-50.0)  # sigmoid -> 0: the anchors themselves
    wp, _ = head(torch.randn(2, 18, 16), anchors, ego)
    torch.testing.assert_close(wp, anchors[None].expand_as(wp))


def test_gate_init_is_the_initial_pull():
    head = WaypointHead(16, 3, 6, 6, gate_init=0.9)
    torch.testing.assert_close(torch.sigmoid(head.gate), torch.full_like(head.gate, 0.9))
    assert not WaypointHead(16, 3, 6, 6, gate_init=0.0).gate_enabled


def test_mode_prior_prefers_the_anchor_nearest_the_cv_rollout():
    head = WaypointHead(16, 1, 2, 6)
    with torch.no_grad():
        head.cls.weight.zero_()
        head.cls.bias.zero_()
    cv = constant_velocity_rollout(_ego(5.0, 0.0, b=1))[0]
    anchors = torch.stack([cv, cv * 0.2])[None]  # mode 0 = the CV rollout, mode 1 much slower
    _, logits = head(torch.randn(1, 2, 16), anchors, _ego(5.0, 0.0, b=1))
    assert float(logits[0, 0, 0].detach()) > float(logits[0, 0, 1].detach())


def test_risk_head_starts_at_background_and_varies_with_input():
    torch.manual_seed(0)
    head = RiskHead(16, 8, 8, layers=1, heads=4, points=2)
    bev = torch.zeros(2, 16, 8, 8)
    bev[0, :, 2:4, 3:5] = torch.randn(16, 2, 2) * 3  # an "agent" in sample 0 only
    risk = head(bev)
    assert risk.shape == (2, 8, 8) and bool(((risk > 0) & (risk < 1)).all())
    assert float(risk[1].mean()) == pytest.approx(1 / (1 + math.exp(-RISK_PRIOR_LOGIT)), rel=0.2)
    assert float((risk[0] - risk[1]).abs().max()) > 1e-3
    torch.testing.assert_close(head(bev, return_logits=True).sigmoid(), risk)


def test_risk_loss_with_logits_does_not_vanish_when_saturated():
    target = torch.zeros(1, 8, 8)
    target[0, 3, 3] = 0.8
    logits = torch.full((1, 8, 8), -15.0, requires_grad=True)  # collapsed map: sigmoid ~ 3e-7
    risk_l1_loss(torch.sigmoid(logits), target, footprint_weight=1.0).backward()
    l1_grad = float(logits.grad[0, 3, 3])
    logits.grad = None
    risk_l1_loss(torch.sigmoid(logits), target, footprint_weight=1.0, logits=logits).backward()
    bce_grad = float(logits.grad[0, 3, 3])
    assert abs(l1_grad) < 1e-5 and bce_grad < -0.1  # the footprint is pulled up only with logits
    assert float(logits.grad[0, 0, 0]) >= 0  # background still pushed down (or left)


def test_risk_head_fits_footprints_in_a_few_steps():
    torch.manual_seed(0)
    head = RiskHead(8, 8, 8, layers=1, heads=2, points=2)
    bev = torch.randn(4, 8, 8, 8)
    target = (bev[:, 0] > 1.0).float() * 0.7  # risk where feature 0 is high
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(60):
        logits = head(bev, return_logits=True)
        loss = risk_l1_loss(torch.sigmoid(logits), target, footprint_weight=1.0, logits=logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    risk = head(bev).detach()
    fp = target > 0
    assert float(risk[fp].mean()) > 0.3 > float(risk[~fp].mean())


def test_expected_plan_selection_is_the_score_weighted_mode_mean():
    from helpers_student import make_inputs, tiny_student

    model, proc = tiny_student()
    model.eval()
    inputs = [make_inputs("a"), make_inputs("b", speed=3.0, lateral=2.0)]
    best = model.plan(inputs, proc)
    model.config.plan_selection = "expected"
    exp = model.plan(inputs, proc)
    torch.testing.assert_close(exp.mode_waypoints, best.mode_waypoints)
    want = (exp.mode_scores[..., None, None] * exp.mode_waypoints[..., :2]).sum(1)
    torch.testing.assert_close(exp.waypoints[..., :2], want)
    assert exp.waypoints.shape == (2, 6, 3)
    from dsdrive.student import StudentConfig

    with pytest.raises(ValueError, match="plan_selection"):
        StudentConfig(plan_selection="mean")
