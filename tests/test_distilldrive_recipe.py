"""The planning-teacher stage (``dsdrive planning-teacher`` / recipes/planning_teacher.py: TrlParser, YAML +
flag overrides, transformers.Trainer with resume), open-loop evaluation of the privileged teacher
planner, and the teacher's batch builder on a real nuScenes-mini scene."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_distilldrive import synthetic_samples

from dsdrive.data.dataset import save_samples
from dsdrive.distilldrive import PlanningTeacher
from dsdrive.distilldrive.teacher_inputs import build_teacher_batch
from dsdrive.evaluation.open_loop import evaluate_planner
from dsdrive.planners.registry import load_planner
from dsdrive.distilldrive.planning_vocabulary import PlanningVocabulary

ROOT = Path(__file__).resolve().parents[1]
REAL_SCENE = ROOT.parent / "shared" / "data" / "nuscenes-mini-scenarionet" / "sd_nuscenes_v1.0-mini_scene-0061.pkl"


def _recipe():
    spec = importlib.util.spec_from_file_location("recipe_planning_teacher", ROOT / "recipes" / "planning_teacher.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher")
    samples = synthetic_samples(16)
    save_samples(samples, tmp / "data")
    out = tmp / "ckpt"
    assert _recipe().main(_argv(tmp / "data", out)) == 0
    return out, samples


def _argv(data, out, *extra) -> list[str]:
    return ["--config", str(ROOT / "recipes/configs/planning_teacher/train_distribution.yaml"),
            "--data", str(data), "--output_dir", str(out), "--val_scenes", "synthetic-3", "--use_cpu", "true", "--disable_tqdm", "true",
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--hidden_dim", "16", "--num_heads", "2", "--ffn_dim", "32",
            "--pos_feats", "4", "--num_layers", "1", *extra]


def test_recipe_writes_checkpoint_vocabularies_and_heldout_eval(trained):
    out, _ = trained
    for name in ("config.json", "model.safetensors", "planning_vocabulary.json", "motion_vocabulary.json", "train_log.json", "eval_heldout.json"):
        assert (out / name).is_file(), name
    model = PlanningTeacher.from_pretrained(str(out))
    assert model.config.hidden_dim == 16 and model.config.cls_variant == "distribution" and model.dqn is not None  # flags override YAML
    np.testing.assert_allclose(model.plan_anchors.numpy(), PlanningVocabulary.load(out).anchors)
    log = json.loads((out / "train_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [1, 2] and all(np.isfinite(h["loss"]) for h in log["history"])
    assert all(h["plan_reg"] > 0 and "dqn" in h for h in log["history"])  # every loss term is logged
    assert log["args"]["weight_decay"] == 1e-3 and log["args"]["max_grad_norm"] == 25.0 and log["args"]["learning_rate"] == 1e-3  # YAML
    report = json.loads((out / "eval_heldout.json").read_text())
    assert report["val_scenes"] == ["synthetic-3"] and report["rescored"]["num_evaluated"] == 4
    assert report["eval_metrics"]["eval_l2_avg"] == pytest.approx(report["rescored"]["metrics"]["ALL"]["stp3"]["L2"]["avg"], abs=1e-4)


def test_resume_from_checkpoint_matches_an_uninterrupted_run(trained, tmp_path):
    _, samples = trained
    data = tmp_path / "data"
    save_samples(samples, data)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    four = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]
    assert _recipe().main(_argv(data, full, *four)) == 0
    ckpt = full / "checkpoint-2"
    assert (ckpt / "optimizer.pt").is_file() and (ckpt / "scheduler.pt").is_file() and (ckpt / "trainer_state.json").is_file()
    assert _recipe().main(_argv(data, resumed, *four, "--resume_from_checkpoint", str(ckpt))) == 0
    assert not (resumed / "checkpoint-2").exists() and (resumed / "checkpoint-4").is_dir()  # steps 1-2 came from the checkpoint
    log = json.loads((resumed / "train_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [1, 2, 3, 4]  # the restored trainer state carries the first two
    a = PlanningTeacher.from_pretrained(str(full)).state_dict()
    b = PlanningTeacher.from_pretrained(str(resumed)).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    at_two = PlanningTeacher.from_pretrained(str(ckpt)).state_dict()
    assert any(not torch.equal(a[k], at_two[k]) for k in a)  # steps 3-4 did train


def test_stage_cli_help_and_config_errors(capsys):
    from dsdrive.cli import main as cli

    with pytest.raises(SystemExit) as exit_:
        cli(["planning-teacher", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "dsdrive planning-teacher" in out and "--cls_variant" in out and "--resume_from_checkpoint" in out
    with pytest.raises(ValueError, match="cls_variant='soft'"):
        _recipe().main(["--config", str(ROOT / "recipes/configs/planning_teacher/train_label.yaml"), "--cls_variant", "soft"])


def test_open_loop_runs_the_privileged_teacher_on_whole_samples(trained):
    out, samples = trained
    planner = load_planner("planning_teacher", out)
    heldout = [s for s in samples if s.scene_id == "synthetic-3"]
    res = evaluate_planner(planner, heldout, progress=False)
    assert res["privileged"] is True and res["num_evaluated"] == 4
    recipe_eval = json.loads((out / "eval_heldout.json").read_text())["rescored"]["metrics"]["ALL"]
    assert res["metrics"]["ALL"]["stp3"]["L2"]["avg"] == pytest.approx(recipe_eval["stp3"]["L2"]["avg"], abs=1e-5)


@pytest.mark.skipif(not REAL_SCENE.is_file(), reason=f"real ScenarioNet scene not found at {REAL_SCENE}")
def test_batch_builder_on_a_real_scene():
    from data_builders.scenarionet import build_scene, load_scenario

    samples = build_scene(load_scenario(REAL_SCENE), REAL_SCENE)[:4]
    batch = build_teacher_batch(samples)
    real = batch.agent_mask
    assert real.any() and real.sum(1).max() <= 150
    assert (batch.agent_pos[real].norm(dim=-1) <= 55.0).all()
    assert batch.map_mask.any() and batch.map_mask.sum(1).max() <= 50
    assert torch.isfinite(batch.agent_steps).all() and torch.isfinite(batch.map_segments).all()
    assert batch.status_mask[:, 6].all()  # vx is measured in nuScenes-mini
    # every real agent's t = 0 token is valid and moving agents' velocities match their first GT offset
    assert (batch.agent_steps[..., 0, 8][real] == 1).all()


@pytest.mark.slow
def test_two_process_gloo_accelerate_launch_with_dqn(trained, tmp_path):
    """DDP over gloo with the DQN loss on (its Q-network runs twice outside forward: static graph)."""
    import os
    import subprocess

    _, samples = trained
    save_samples(samples, tmp_path / "data")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "recipes/accelerate_configs/cpu_ddp_gloo.yaml"),
           "--main_process_port", "29541", str(ROOT / "recipes/planning_teacher.py"), *_argv(tmp_path / "data", out, "--num_threads", "1")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    log = json.loads((out / "train_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [1, 2] and all("dqn" in h for h in log["history"])
    assert json.loads((out / "eval_heldout.json").read_text())["rescored"]["num_evaluated"] == 4
