"""Baseline planners: constant velocity / turn rate, the ego-status MLP (trained through
transformers.Trainer, ``dsdrive ego-mlp``), and the name registry. Out-of-range behaviour of every
planner: tests/test_planner_robustness.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers_open_loop import make_sample, straight_line

from dsdrive.data.dataset import save_samples
from dsdrive.evaluation.metrics.synthetic import arc_trajectory, random_samples
from dsdrive.planners.constant_velocity import ConstantTurnRatePlanner, ConstantVelocityPlanner
from dsdrive.planners.ego_mlp import (
    FEATURE_DIM,
    EgoMLPConfig,
    EgoMLPPlanner,
    EgoStatusMLP,
    constant_velocity_waypoints,
    ego_features,
)
from dsdrive.planners.registry import load_planner, needs_checkpoint, planner_names
from dsdrive.training.ego_mlp import train_ego_mlp, train_ego_mlp_on_split
from dsdrive.data.splits import DEFAULT_VAL_SCENES
from dsdrive.data.types import FUTURE_STEPS


def test_constant_velocity_from_ego_status():
    s = make_sample(straight_line(1.0), ego_status=[4.0, 1.0, 0, 0, 0.3, 0])
    traj = ConstantVelocityPlanner().compute_trajectory(s.inputs)
    t = 0.5 * np.arange(1, 7)
    np.testing.assert_allclose(traj[:, 0], 4.0 * t, atol=1e-6)
    np.testing.assert_allclose(traj[:, 1], 1.0 * t, atol=1e-6)
    np.testing.assert_allclose(traj[:, 2], math.atan2(1.0, 4.0), atol=1e-6)  # the yaw rate is ignored


def test_constant_velocity_falls_back_to_history_then_zero():
    hist = np.array([[-8, 0, 0], [-6, 0, 0], [-4, 0, 0], [-1.5, -0.5, 0]], np.float32)
    s = make_sample(straight_line(1.0), ego_status=[np.nan] * 6, ego_status_mask=[False] * 6, ego_history=hist)
    traj = ConstantVelocityPlanner().compute_trajectory(s.inputs)
    np.testing.assert_allclose(traj[0, :2], [1.5, 0.5], atol=1e-6)  # (0 - (-1.5, -0.5)) / 0.5 s * 0.5 s
    s.inputs.ego_history_mask[:] = False
    assert not ConstantVelocityPlanner().compute_trajectory(s.inputs).any()


def test_constant_turn_rate_follows_the_arc():
    speed, yaw_rate = 8.0, 0.2
    s = make_sample(straight_line(1.0), ego_status=[speed, 0, 0, 0, yaw_rate, 0])
    traj = ConstantTurnRatePlanner().compute_trajectory(s.inputs)
    np.testing.assert_allclose(traj, arc_trajectory(speed, yaw_rate, 0.5 * np.arange(1, 7)), atol=1e-5)
    s.inputs.ego_status[4] = 0.0
    np.testing.assert_allclose(ConstantTurnRatePlanner().compute_trajectory(s.inputs), ConstantVelocityPlanner().compute_trajectory(s.inputs), atol=1e-6)


def test_ego_features_zero_masked_fields_and_encode_command():
    s = make_sample(straight_line(2.0), ego_status=[3.0, 0.1, np.nan, 0, 0, 0], ego_status_mask=[True, True, False, True, True, False], command="RIGHT")
    f = ego_features(s.inputs)
    assert f.shape == (FEATURE_DIM,) and np.isfinite(f).all()
    assert f[2] == 0.0 and f[6 + 2] == 0.0 and f[6] == 1.0
    np.testing.assert_array_equal(f[-3:], [0.0, 1.0, 0.0])  # COMMANDS = LEFT, RIGHT, STRAIGHT
    s.inputs.command = "UTURN"
    with pytest.raises(ValueError, match="UTURN"):
        ego_features(s.inputs)


SMALL = dict(hidden_dim=32, epochs=30, batch_size=16)


def test_ego_mlp_training_is_deterministic_and_fits():
    samples = random_samples(96, seed=2)
    a = train_ego_mlp(samples, EgoMLPConfig(**SMALL), progress=False)
    b = train_ego_mlp(samples, EgoMLPConfig(**SMALL), progress=False)
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    gt = np.stack([s.targets.ego_future for s in samples])
    fitted = np.abs(a.compute_trajectories([s.inputs for s in samples]) - gt).mean()
    torch.manual_seed(0)
    untrained = EgoMLPPlanner(type(a.model)(EgoMLPConfig(**SMALL)), EgoMLPConfig(**SMALL))
    assert fitted < 0.5 * np.abs(untrained.compute_trajectories([s.inputs for s in samples]) - gt).mean()
    cv = np.abs(ConstantVelocityPlanner().compute_trajectories([s.inputs for s in samples]) - gt).mean()
    assert fitted < cv  # the learned correction beats the constant-velocity rollout it starts from
    assert a.config.num_train_samples == 96 and 0 < a.config.final_train_loss < 1.0
    c = train_ego_mlp(samples, EgoMLPConfig(**{**SMALL, "epochs": 1}, seed=1), progress=False)
    assert not torch.equal(c.model.net[0].weight, a.model.net[0].weight)


def test_ego_mlp_trainer_moves_every_parameter(tmp_path):
    from transformers import TrainingArguments

    from dsdrive.training.ego_mlp import EgoMLPTrainer, IndexCollator

    samples = random_samples(16, seed=5)
    feats = torch.from_numpy(np.stack([ego_features(s.inputs) for s in samples]))
    target = torch.from_numpy(np.stack([s.targets.ego_future for s in samples]).astype(np.float32))
    torch.manual_seed(0)
    model = EgoStatusMLP(EgoMLPConfig(hidden_dim=16))
    model.fit_normalisation(feats)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, learning_rate=1e-2,
                             weight_decay=0.0, use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True, report_to="none")
    trainer = EgoMLPTrainer(model=model, args=args, train_dataset=list(range(16)),
                            data_collator=IndexCollator(features=feats, target=target, mask=torch.ones(16, 6)))
    trainer.train()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(before[n], p.detach())]
    assert not unchanged, unchanged  # weight decay 0: only the gradient can have moved them
    assert set(trainer.get_decay_parameter_names(model)) == set(before)  # biases decay too, as before the Trainer


def test_constant_velocity_residual_matches_the_constant_velocity_planner():
    cases = [make_sample(straight_line(1.0), ego_status=[4.0, 1.0, 0, 0, 0.3, 0])]
    hist = np.array([[-8, 0, 0], [-6, 0, 0], [-4, 0, 0], [-1.5, -0.5, 0]], np.float32)
    cases.append(make_sample(straight_line(1.0), ego_status=[np.nan] * 6, ego_status_mask=[False] * 6, ego_history=hist))
    feats = torch.from_numpy(np.stack([ego_features(s.inputs) for s in cases]))
    expected = ConstantVelocityPlanner().compute_trajectories([s.inputs for s in cases])
    np.testing.assert_allclose(constant_velocity_waypoints(feats).numpy(), expected, atol=1e-5)


def test_ego_mlp_stage_cli(tmp_path, capsys):
    from dsdrive.cli import main as cli

    with pytest.raises(SystemExit) as exit_:
        cli(["ego-mlp", "--help"])
    assert exit_.value.code == 0 and "dsdrive ego-mlp" in capsys.readouterr().out
    samples = random_samples(24, seed=6, num_scenes=3)
    save_samples(samples, tmp_path / "data")
    assert cli(["ego-mlp", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "ckpt"), "--val-scenes", "synthetic-2",
                "--epochs", "2", "--hidden-dim", "8", "--absolute", "--no-progress"]) == 0
    planner = load_planner("ego_mlp", tmp_path / "ckpt")
    assert planner.config.trained_on_scenes == ["synthetic-0", "synthetic-1"] and planner.config.cv_residual is False
    assert planner.config.hidden_dim == 8 and planner.config.epochs == 2


def test_ego_mlp_save_load_round_trip(tmp_path):
    samples = random_samples(32, seed=3)
    planner = train_ego_mlp(samples, EgoMLPConfig(**SMALL), progress=False)
    planner.save(tmp_path / "ckpt")
    loaded = load_planner("ego_mlp", tmp_path / "ckpt")
    inputs = [s.inputs for s in samples]
    np.testing.assert_array_equal(loaded.compute_trajectories(inputs), planner.compute_trajectories(inputs))
    assert loaded.compute_trajectory(inputs[0]).shape == (FUTURE_STEPS, 3)
    assert loaded.config == planner.config
    (tmp_path / "ckpt" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        EgoMLPPlanner.load(tmp_path / "ckpt")


def test_ego_mlp_trains_on_training_scenes_only(tmp_path):
    samples = random_samples(60, seed=4, num_scenes=4)
    names = ["scene-a", DEFAULT_VAL_SCENES[0], "scene-b", DEFAULT_VAL_SCENES[1]]
    for s in samples:
        s.inputs.scene_id = names[int(s.inputs.scene_id.rsplit("-", 1)[1])]
    save_samples(samples, tmp_path / "data")
    planner = train_ego_mlp_on_split(tmp_path / "data", EgoMLPConfig(**SMALL), progress=False)
    assert planner.config.trained_on_scenes == ["scene-a", "scene-b"]
    assert planner.config.num_train_samples == 30


def test_registry():
    assert {"constant_velocity", "constant_turn_rate", "ego_mlp"} <= set(planner_names())
    assert isinstance(load_planner("constant_velocity"), ConstantVelocityPlanner)
    assert needs_checkpoint("ego_mlp") and not needs_checkpoint("constant_velocity")
    with pytest.raises(ValueError, match="--checkpoint"):
        load_planner("ego_mlp")
    with pytest.raises(ValueError, match="takes no checkpoint"):
        load_planner("constant_velocity", "/tmp/x")
    with pytest.raises(KeyError, match="known planners"):
        load_planner("nonexistent")
