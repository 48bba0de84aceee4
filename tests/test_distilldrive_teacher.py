"""DistillDrive planning teacher: training signal (through PlanningTeacherTrainer), privileged inputs,
save/load, loss variants, DQN switch, the training config's validation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers_distilldrive import synthetic_samples, tiny_teacher, train_teacher

from dsdrive.distilldrive import PlanningTeacher
from dsdrive.distilldrive.teacher_inputs import build_teacher_batch, status10
from dsdrive.distilldrive.teacher_evaluation import evaluate_teacher, predict_teacher
from dsdrive.planners.distilldrive_teacher import PlanningTeacherPlanner
from dsdrive.data.types import COMMANDS, Camera


class _NoCameraInputs:
    """Wraps PlanningInputs; reading a forbidden field (cameras by default) fails the test."""

    def __init__(self, inner, forbidden=("cameras",)):
        self._inner = inner
        self.FORBIDDEN = forbidden

    def __getattr__(self, name):
        if name in self.FORBIDDEN:
            raise AssertionError(f"the planning teacher read inputs.{name}")
        return getattr(self._inner, name)


def test_every_trainable_parameter_changes_after_two_steps():
    torch.manual_seed(0)
    samples = synthetic_samples(8)
    model = tiny_teacher(samples, use_cvae=True, dqn_weight=1.0, cls_variant="distribution")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("dqn.") for n in before) and any(n.startswith("cvae.") for n in before)
    train_teacher(model, samples, steps=2, batch_size=8, lr=1e-2, weight_decay=0.0)  # wd 0: only gradients can move a parameter
    unchanged = [n for n, p in model.named_parameters() if torch.equal(before[n], p.detach())]
    assert not unchanged, f"parameters unchanged after two steps: {unchanged}"


@pytest.mark.parametrize("use_ego_history", [True, False])
def test_teacher_never_reads_cameras(use_ego_history):
    samples = synthetic_samples(4)
    cam = Camera("CAM_FRONT", "/nonexistent.jpg", np.eye(3, dtype=np.float32), np.eye(4, dtype=np.float32))
    forbidden = ("cameras",) if use_ego_history else ("cameras", "ego_history", "ego_history_mask")
    for s in samples:
        s.inputs.cameras = [cam]
        s.inputs = _NoCameraInputs(s.inputs, forbidden)
    model = tiny_teacher(synthetic_samples(4), use_ego_history=use_ego_history).eval()
    with pytest.raises(AssertionError, match="cameras"):
        _ = samples[0].inputs.cameras  # the trap works
    batch = build_teacher_batch(samples, **model.config.batch_kwargs())
    out = model.select(batch)
    assert out["waypoints"].shape == (4, 6, 3) and torch.isfinite(out["waypoints"]).all()
    if not use_ego_history:
        assert not hasattr(model, "temp_attn") and batch.ego_history.abs().sum() == 0


def test_ego_history_drives_the_temporal_attention():
    samples = synthetic_samples(4)
    model = tiny_teacher(samples).eval()
    ref = model(build_teacher_batch(samples))["plan_queries"]
    for s in samples:
        s.inputs.ego_history = s.inputs.ego_history * 2.0 - 1.0
    assert not torch.allclose(model(build_teacher_batch(samples))["plan_queries"], ref)


def test_ego_status_is_a_target_not_an_input():
    samples = synthetic_samples(6)
    model = tiny_teacher(samples).eval()
    ref = model(build_teacher_batch(samples))
    changed = [dataclasses.replace(s, inputs=dataclasses.replace(s.inputs, ego_status=s.inputs.ego_status + 5.0)) for s in samples]
    batch = build_teacher_batch(changed)
    out = model(batch)
    for key in ("plan_queries", "plan_logits", "plan_waypoints"):
        torch.testing.assert_close(out[key], ref[key])
    assert not torch.equal(batch.status, build_teacher_batch(samples).status)


def test_status10_layout_and_mask():
    status = np.array([9.0, 0.5, 1.0, -0.2, 0.1, 0.03], np.float32)  # vx, vy, ax, ay, yaw_rate, steering
    mask = np.array([True, True, False, False, True, False])
    s10, m10 = status10(status, mask)
    np.testing.assert_allclose(s10, [1.0, -0.2, 0, 0, 0, 0.1, 9.0, 0.5, 0, 0.03])
    assert m10.tolist() == [False, False, False, False, False, True, True, True, False, False]


@pytest.mark.parametrize("variant", ["label", "distribution"])
def test_loss_variants_decrease_on_tiny_overfit(variant):
    torch.manual_seed(0)
    samples = synthetic_samples(4, seed=3)
    model = tiny_teacher(samples, cls_variant=variant)
    history = train_teacher(model, samples, steps=20, batch_size=4, lr=1e-2)
    assert [h["step"] for h in history] == list(range(1, 21))
    first, last = history[0], history[-1]
    assert last["plan_cls"] < first["plan_cls"]
    assert last["plan_cls"] + last["plan_reg"] < 0.5 * (first["plan_cls"] + first["plan_reg"]), (first, last)
    assert last["loss"] < 0.8 * first["loss"], (first, last)


def test_dqn_is_switchable():
    samples = synthetic_samples(4)
    off = tiny_teacher(samples, dqn_weight=0.0)
    assert off.dqn is None and not any("dqn" in k for k in off.state_dict())
    _, logs = off.compute_loss(build_teacher_batch(samples))
    assert "dqn" not in logs
    on = tiny_teacher(samples, dqn_weight=1.0)
    assert on.dqn is not None and on.dqn.reward_weights.shape == (6,)
    _, logs = on.compute_loss(build_teacher_batch(samples))
    assert logs["dqn"] > 0


def test_save_load_round_trip_and_privileged_planner(tmp_path):
    samples = synthetic_samples(5)
    model = tiny_teacher(samples, use_cvae=True).eval()
    model.save_pretrained(tmp_path)
    loaded = PlanningTeacher.from_pretrained(str(tmp_path)).eval()
    batch = build_teacher_batch(samples)
    a, b = model(batch), loaded(batch)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    planner = PlanningTeacherPlanner(tmp_path)
    assert planner.privileged
    with pytest.raises(TypeError, match="privileged"):
        planner.compute_trajectory(samples[0].inputs)
    np.testing.assert_allclose(planner.compute_trajectories_privileged(samples), predict_teacher(model, samples), atol=1e-5)
    config = json.loads((tmp_path / "config.json").read_text())
    config["use_cvae"] = False  # weights now carry keys the config's model lacks
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        PlanningTeacherPlanner(tmp_path)


def test_select_uses_the_commands_modes():
    samples = synthetic_samples(6)
    model = tiny_teacher(samples).eval()
    batch = build_teacher_batch(samples)
    out = model(batch)
    sel = model.select(batch, out, rescore=False)
    for i, cmd in enumerate(batch.command.tolist()):
        assert cmd < len(COMMANDS)
        expected = out["plan_waypoints"][i, cmd * 6 + int(sel["mode"][i])]
        torch.testing.assert_close(sel["waypoints"][i, :, :2], expected)
        assert int(sel["mode"][i]) == int(out["plan_logits"][i, cmd * 6:(cmd + 1) * 6].argmax())


def test_trainer_evaluation_is_the_open_loop_metric_and_decays_every_parameter(tmp_path):
    from dsdrive.training.planning_teacher_config import PlanningTeacherTrainingConfig
    from dsdrive.training.planning_teacher_trainer import PlanningTeacherTrainer

    samples = synthetic_samples(8)
    model = tiny_teacher(samples, dqn_weight=1.0)
    args = PlanningTeacherTrainingConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, use_cpu=True,
                                         disable_tqdm=True, per_device_eval_batch_size=3)
    trainer = PlanningTeacherTrainer(model=model, args=args, train_dataset=samples[:4], eval_dataset=samples[4:])
    metrics = trainer.evaluate()
    expected = evaluate_teacher(model, samples[4:])["metrics"]["ALL"]
    assert metrics["eval_num_open_loop"] == 4
    assert metrics["eval_l2_avg"] == pytest.approx(expected["stp3"]["L2"]["avg"], abs=1e-4)
    assert metrics["eval_l2_3s"] == pytest.approx(expected["stp3"]["L2"]["3s"], abs=1e-4)
    assert metrics["eval_collision_avg"] == pytest.approx(expected["stp3"]["collision"]["avg"], abs=1e-4)
    assert np.isfinite(metrics["eval_loss"]) and metrics["eval_plan_reg"] > 0 and "eval_dqn" in metrics
    decay = set(trainer.get_decay_parameter_names(model))
    assert decay == {n for n, _ in model.named_parameters()} and any(n.endswith("bias") for n in decay)  # DistillDrive decays all


@pytest.mark.parametrize("field, value, match", [("num_heads", 3, "hidden_dim"), ("cls_variant", "soft", "cls_variant"),
                                                  ("map_classes", "lane_divider,curb", "map_classes"), ("dqn_weight", -1.0, "dqn_weight"),
                                                  ("dropout", 1.0, "dropout"), ("max_steps", 0, "max_steps")])
def test_training_config_rejects_bad_fields(tmp_path, field, value, match):
    from dsdrive.training.planning_teacher_config import PlanningTeacherTrainingConfig

    with pytest.raises(ValueError, match=f"{match}="):
        PlanningTeacherTrainingConfig(output_dir=str(tmp_path), **{field: value})
    cfg = PlanningTeacherTrainingConfig(output_dir=str(tmp_path))
    assert (cfg.max_steps, cfg.learning_rate, cfg.weight_decay, cfg.max_grad_norm, str(cfg.lr_scheduler_type)) == \
        (300, 6e-4, 1e-3, 25.0, "SchedulerType.COSINE")
