"""``waypoint_prior: idm_modes``: each mode of the student is one lane-IDM proposal at its own target
speed (PDM-Closed's proposal set from the planning inputs alone) plus a residual. The proposals
order by speed on a free lane and stop behind a standing car at every target; the untrained head
plans the proposals with equal scores; the processor adds them; the model trains through them.
Also the two input-only planners built on the same priors (``lane_following``, ``lane_idm``)."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from helpers_student import make_sample, one_thread  # noqa: F401
from test_student_ego_ablation import reference_case
from test_student_lane_idm_prior import lane_inputs

from dsdrive.data.types import Agents
from dsdrive.planners.registry import load_planner
from dsdrive.student import StudentConfig
from dsdrive.student.lane_prior import idm_mode_targets, lane_following_prior, lane_idm_prior, lane_idm_proposals
from dsdrive.student.processing_student import StudentProcessor
from dsdrive.student.tokenizer import build_tokenizer
from dsdrive.student.waypoint_head import WaypointHead


def test_targets_span_the_stop_to_the_top_speed():
    assert idm_mode_targets(6) == (0.0, 3.0, 6.0, 9.0, 12.0, 15.0)
    with pytest.raises(ValueError, match="num_modes 1"):
        idm_mode_targets(1)


def test_proposals_order_by_target_on_a_free_lane_and_stop_behind_a_standing_car():
    inp = lane_inputs(6.0)
    props = lane_idm_proposals(inp, idm_mode_targets(6))
    assert props.shape == (6, 6, 2) and props.dtype == np.float32
    assert np.all(np.diff(props[:, -1, 0]) > 0)  # faster target, further at 3 s
    assert np.allclose(props[..., 1], 0.0, atol=1e-4)  # all on the lane (y = 0)
    assert props[0, -1, 0] < 6.0 * 3.0 / 2 + 0.5  # the stop proposal brakes
    np.testing.assert_allclose(lane_idm_proposals(inp, (6.0,))[0], lane_idm_prior(inp, min_speed=0.0), atol=1e-5)
    car = Agents(["car"], ["VEHICLE"], np.array([[22.0, 0.0, 0.0, 4.5, 1.9, 1.6, 0.0]], np.float32), np.zeros((1, 2), np.float32))
    blocked = lane_idm_proposals(lane_inputs(6.0, car), idm_mode_targets(6))
    assert np.all(blocked[:, -1, 0] < 22.0 - 2.25 - 1.0)  # every target stays behind the car's rear
    with pytest.raises(ValueError, match="targets"):
        lane_idm_proposals(inp, (3.0, -1.0))


def test_untrained_head_plans_the_proposals_with_equal_scores():
    torch.manual_seed(0)
    head = WaypointHead(32, 3, 6, 6, 2.0, 0.9, prior="idm_modes")
    ego = torch.cat([torch.tensor([[7.0, 0.3, 0.5, 0.0, 0.2, 0.0]]), torch.ones(1, 5), torch.zeros(1, 1), torch.zeros(1, 12), torch.zeros(1, 4)], 1)
    props = torch.randn(1, 6, 6, 2)
    wp, logits = head(torch.randn(1, 18, 32), torch.randn(3, 6, 6, 2), ego, idm_prior=props)
    assert wp.shape == (1, 3, 6, 6, 2)
    assert torch.allclose(wp, props[:, None].expand_as(wp))
    assert torch.all(logits == 0)
    with pytest.raises(ValueError, match=r"idm_prior has shape \(1, 6, 2\)"):
        head(torch.randn(1, 18, 32), torch.randn(3, 6, 6, 2), ego, idm_prior=torch.randn(1, 6, 2))


def test_processor_adds_one_proposal_per_mode():
    tok = build_tokenizer([make_sample("s0")], vocab_size=300)
    s1, s2 = make_sample("s1", speed=0.0), make_sample("s2", speed=8.0)
    batch = StudentProcessor(tok, StudentConfig(waypoint_prior="idm_modes"))([s1, s2])
    assert batch["idm_prior"].shape == (2, 6, 6, 2) and "lane_prior" not in batch
    np.testing.assert_allclose(batch["idm_prior"][1].numpy(), lane_idm_proposals(s2.inputs, idm_mode_targets(6)), atol=1e-6)


def test_student_trains_through_the_proposals(one_thread):  # noqa: F811
    model, batch = reference_case(waypoint_prior="idm_modes")
    props = torch.randn(2, 6, 6, 2)
    plan = model.plan({**batch, "idm_prior": props})
    assert torch.allclose(plan.waypoints[..., :2], props[:, 0], atol=1e-5)  # equal scores: the first mode
    model.train()
    gt = props[:, 4] + 0.5
    out = model(**batch, idm_prior=props, ego_future=torch.cat([gt, torch.zeros(2, 6, 1)], -1),
                ego_future_mask=torch.ones(2, 6, dtype=torch.bool))
    out.loss.backward()
    assert float(out.waypoint_l1.detach()) <= 0.5 + 1e-4  # the best mode is at most the 0.5 m shift away
    head = model.waypoint_head
    assert head.cls.weight.grad.abs().sum() > 0 and head.reg.weight.grad.abs().sum() > 0


def test_lane_planners_plan_their_priors():
    inp = lane_inputs(5.0)
    lane = load_planner("lane_following").compute_trajectory(inp)
    idm = load_planner("lane_idm", min_speed=0.0).compute_trajectory(inp)
    assert lane.shape == idm.shape == (6, 3)
    np.testing.assert_allclose(lane[:, :2], lane_following_prior(inp), atol=1e-6)
    np.testing.assert_allclose(idm[:, :2], lane_idm_prior(inp, min_speed=0.0), atol=1e-6)
    assert np.allclose(lane[:, 2], 0.0, atol=1e-4)  # heading along the straight lane
