"""The planning-teacher recipe (TrlParser, YAML + flag overrides), open-loop evaluation of the
privileged teacher planner, and the teacher's batch builder on a real nuScenes-mini scene."""

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
    argv = ["--config", str(ROOT / "recipes/configs/planning_teacher/train_distribution.yaml"),
            "--data", str(tmp / "data"), "--output_dir", str(out), "--val_scenes", "synthetic-3",
            "--max_steps", "2", "--batch_size", "4", "--hidden_dim", "16", "--num_heads", "2", "--ffn_dim", "32",
            "--pos_feats", "4", "--num_layers", "1"]
    assert _recipe().main(argv) == 0
    return out, samples


def test_recipe_writes_checkpoint_vocabularies_and_heldout_eval(trained):
    out, _ = trained
    for name in ("config.json", "model.safetensors", "planning_vocabulary.json", "motion_vocabulary.json", "train_log.json", "eval_heldout.json"):
        assert (out / name).is_file(), name
    model = PlanningTeacher.from_pretrained(str(out))
    assert model.config.hidden_dim == 16 and model.config.cls_variant == "distribution" and model.dqn is not None  # flags override YAML
    np.testing.assert_allclose(model.plan_anchors.numpy(), PlanningVocabulary.load(out).anchors)
    log = json.loads((out / "train_log.json").read_text())
    assert len(log["history"]) == 2 and all(np.isfinite(h["loss"]) for h in log["history"])
    report = json.loads((out / "eval_heldout.json").read_text())
    assert report["val_scenes"] == ["synthetic-3"] and report["rescored"]["num_evaluated"] == 4


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
