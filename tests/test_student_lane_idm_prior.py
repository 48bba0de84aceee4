"""The lane-IDM prior of the student (``waypoint_prior: kinematic_idm``): PDM-Closed's IDM along the
command's lane, read from the planning inputs only. It holds the speed on a free lane, brakes for a
standing leader, leaves a stop only with a positive ``min_speed``; the untrained head plans the
uniform blend of the four priors; the processor adds the ``idm_prior`` key only for this prior."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers_student import make_inputs, make_sample, one_thread  # noqa: F401
from test_student_ego_ablation import reference_case

from dsdrive.data.types import Agents, MapPolylines
from dsdrive.student import StudentConfig
from dsdrive.student.lane_prior import lane_following_prior, lane_idm_prior
from dsdrive.student.processing_student import StudentProcessor
from dsdrive.student.tokenizer import build_tokenizer
from dsdrive.student.waypoint_head import WaypointHead, constant_velocity_rollout, ctrv_rollout
from dsdrive.training.distill_config import DistillConfig

LANE = MapPolylines(["lane_centerline"], np.stack([np.linspace(-20, 120, 60), np.zeros(60)], -1).astype(np.float32)[None])
NO_AGENTS = Agents([], [], np.zeros((0, 7), np.float32), np.zeros((0, 2), np.float32))


def lane_inputs(speed: float, agents: Agents = NO_AGENTS):
    return dataclasses.replace(make_inputs(speed=speed), map=LANE, agents=agents, command="STRAIGHT")


def test_free_lane_holds_the_speed_like_the_lane_prior():
    inp = lane_inputs(8.0)
    np.testing.assert_allclose(lane_idm_prior(inp, min_speed=0.0), lane_following_prior(inp), atol=0.05)
    assert lane_idm_prior(inp).dtype == np.float32 and lane_idm_prior(inp).shape == (6, 2)


def test_brakes_for_a_standing_leader_on_the_lane():
    car = Agents(["car"], ["VEHICLE"], np.array([[25.0, 0.0, 0.0, 4.5, 1.9, 1.6, 0.0]], np.float32), np.zeros((1, 2), np.float32))
    xy = lane_idm_prior(lane_inputs(10.0, car))
    free = lane_idm_prior(lane_inputs(10.0))
    assert xy[-1, 0] < free[-1, 0] - 8.0  # slows well below 10 m/s over 3 s
    assert xy[-1, 0] < 25.0 - 2.25 - 2.0  # and stays behind the car's rear
    assert np.all(np.diff(xy[:, 0]) >= -1e-4)  # never reverses


def test_pulls_away_from_a_stop_only_with_a_target_speed():
    stopped = dataclasses.replace(lane_inputs(0.0), ego_history=np.zeros((4, 3), np.float32))
    assert abs(lane_idm_prior(stopped, min_speed=0.0)[-1, 0]) < 0.05
    assert lane_idm_prior(stopped, min_speed=3.0)[-1, 0] > 2.0
    with pytest.raises(ValueError, match="min_speed -1"):
        lane_idm_prior(stopped, min_speed=-1.0)
    with pytest.raises(ValueError, match="command"):
        lane_idm_prior(dataclasses.replace(stopped, command="U-TURN"))


def test_untrained_head_plans_the_mean_of_the_four_priors():
    torch.manual_seed(0)
    head = WaypointHead(32, 3, 6, 6, 2.0, 0.9, prior="kinematic_idm")
    assert head.prior_blend.shape == (3, 4, 6, 2)
    ego = torch.cat([torch.tensor([[7.0, 0.3, 0.5, 0.0, 0.2, 0.0]]), torch.ones(1, 5), torch.zeros(1, 1), torch.zeros(1, 12), torch.zeros(1, 4)], 1)
    lane, idm = torch.randn(1, 6, 2), torch.randn(1, 6, 2)
    wp, _ = head(torch.randn(1, 18, 32), torch.randn(3, 6, 6, 2), ego, lane_prior=lane, idm_prior=idm)
    want = (constant_velocity_rollout(ego) + ctrv_rollout(ego) + lane + idm) / 4
    assert torch.allclose(wp, want[:, None, None].expand_as(wp), atol=1e-6)
    wp2, _ = head(torch.randn(1, 18, 32), torch.randn(3, 6, 6, 2), ego, lane_prior=lane)  # no IDM prior: the lane prior twice
    assert torch.allclose(wp2[0, 0, 0], ((constant_velocity_rollout(ego) + ctrv_rollout(ego) + 2 * lane) / 4)[0], atol=1e-6)


def test_student_plans_and_trains_with_the_idm_prior(one_thread):  # noqa: F811
    model, batch = reference_case(waypoint_prior="kinematic_idm", plan_selection="expected")
    lane, idm = torch.randn(2, 6, 2), torch.randn(2, 6, 2)
    plan = model.plan({**batch, "lane_prior": lane, "idm_prior": idm})
    want = (constant_velocity_rollout(batch["ego"]) + ctrv_rollout(batch["ego"]) + lane + idm) / 4
    assert torch.allclose(plan.waypoints[..., :2], want, atol=1e-5)
    model.train()
    out = model(**batch, lane_prior=lane, idm_prior=idm, ego_future=torch.cat([want + 1.0, torch.zeros(2, 6, 1)], -1),
                ego_future_mask=torch.ones(2, 6, dtype=torch.bool))
    out.loss.backward()
    assert float(out.waypoint_l1.detach()) == pytest.approx(1.0, abs=1e-4)
    assert model.waypoint_head.prior_blend.grad is not None and model.waypoint_head.prior_blend.grad.abs().sum() > 0


def test_processor_adds_the_idm_prior_with_the_configured_target():
    tok = build_tokenizer([make_sample("s0")], vocab_size=300)
    s1, s2 = make_sample("s1", speed=0.0), make_sample("s2", speed=8.0)
    assert "idm_prior" not in StudentProcessor(tok, StudentConfig(waypoint_prior="kinematic"))([s1])
    batch = StudentProcessor(tok, StudentConfig(waypoint_prior="kinematic_idm", idm_prior_min_speed=4.0))([s1, s2])
    assert batch["idm_prior"].shape == (2, 6, 2) and batch["lane_prior"].shape == (2, 6, 2)
    np.testing.assert_allclose(batch["idm_prior"][0].numpy(), lane_idm_prior(s1.inputs, min_speed=4.0), atol=1e-6)
    np.testing.assert_allclose(batch["idm_prior"][1].numpy(), lane_idm_prior(s2.inputs, min_speed=4.0), atol=1e-6)


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="idm_prior_min_speed"):
        StudentConfig(waypoint_prior="kinematic_idm", idm_prior_min_speed=-1.0)
    with pytest.raises(ValueError, match="waypoint_prior"):
        DistillConfig(waypoint_prior="idm")
    with pytest.raises(ValueError, match="idm_prior_min_speed"):
        DistillConfig(waypoint_prior="kinematic_idm", idm_prior_min_speed=-0.5)
    assert DistillConfig(waypoint_prior="kinematic_idm").student_config_kwargs()["idm_prior_min_speed"] == 3.0


def test_head_learning_rate_scale_splits_the_optimizer_groups(tmp_path, one_thread):  # noqa: F811
    from helpers_student import tiny_student

    from dsdrive.training.distill_trainer import DistillTrainer

    model, proc = tiny_student(waypoint_prior="kinematic_idm")
    common = dict(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True, max_steps=1, learning_rate=1e-3)
    head = {id(p) for n, p in model.named_parameters() if "waypoint_head." in n}
    opt = DistillTrainer(model=model, args=DistillConfig(**common, head_learning_rate_scale=10.0), data_collator=proc.collate).create_optimizer()
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= head and g["lr"] == pytest.approx(1e-2) or not ids & head and g["lr"] == pytest.approx(1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in model.parameters())
    assert any(id(model.waypoint_head.prior_blend) in {id(p) for p in g["params"]} and g["lr"] == pytest.approx(1e-2) for g in opt.param_groups)
    plain = DistillTrainer(model=model, args=DistillConfig(**common), data_collator=proc.collate).create_optimizer()
    assert {g["lr"] for g in plain.param_groups} == {1e-3}
    with pytest.raises(ValueError, match="head_learning_rate_scale"):
        DistillConfig(**common, head_learning_rate_scale=0.0)
