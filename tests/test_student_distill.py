"""DistillTrainer, DistillConfig and the recipes/distill.py command line on tiny models."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers_student import make_samples, tiny_student, one_thread  # noqa: F401

from dsdrive.data.dataset import save_samples
from dsdrive.training.distill_config import DistillConfig
from dsdrive.training.distill_trainer import LOSS_TERMS, DistillTrainer, EncodedSamples
from dsdrive.student import StudentDataCollator

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "distill.py"


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1,
                save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    return DistillConfig(**{**base, **kw})


def test_trainer_two_steps_change_every_parameter_and_log_terms(tmp_path):
    model, proc = tiny_student()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = DistillTrainer(model=model, args=_args(tmp_path), train_dataset=EncodedSamples(make_samples(8), proc),
                             data_collator=StudentDataCollator(proc))
    trainer.train()
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(before[n], p.detach())]
    assert not unchanged, unchanged
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2 and all(k in logged[0] for k in LOSS_TERMS)
    ev = trainer.evaluate(EncodedSamples(make_samples(4), proc))
    assert all(f"eval_{k}" in ev for k in LOSS_TERMS) and ev["eval_loss"] > 0


def test_distill_config_validation(tmp_path):
    with pytest.raises(ValueError, match="use_lora"):
        _args(tmp_path, quantization="4bit")
    cfg = _args(tmp_path, meta_action_ce_weight=0.0)
    assert cfg.student_config_kwargs()["use_meta_action_head"] is False and cfg.loss_weights()["risk_l1"] == 1.0


def test_recipe_cli_trains_saves_and_evaluates(tmp_path, monkeypatch):
    samples = make_samples(12)
    for i, s in enumerate(samples):
        s.inputs.scene_id = f"scene-{i % 3}"
    save_samples(samples, tmp_path / "data")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tiny_hidden_size: 32\ntiny_layers: 1\nscene_dim: 16\nscene_layers: 1\nbev_size: 16\nrisk_points: 2\n"
                   "tokenizer_vocab_size: 300\nmax_steps: 2\nper_device_train_batch_size: 4\nreport_to: none\nsave_strategy: 'no'\n")
    spec = importlib.util.spec_from_file_location("distill_recipe", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, recipe)  # dataclasses resolve annotations through it
    spec.loader.exec_module(recipe)
    out = tmp_path / "ckpt"
    rc = recipe.main(["--config", str(cfg), "--data", str(tmp_path / "data"), "--output_dir", str(out), "--val_scenes", "scene-2",
                      "--use_lora", "true", "--lora_r", "2", "--use_cpu", "true"])
    assert rc == 0 and (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()
    report = json.loads((out / "eval_heldout.json").read_text())
    assert report["val_scenes"] == ["scene-2"] and report["open_loop"]["num_evaluated"] == 4
    from dsdrive.planners.student import StudentPlanner

    planner = StudentPlanner(out)
    assert planner.model.config.backbone_config["hidden_size"] == 32  # merged LoRA -> plain student
    assert planner.compute_trajectory(samples[0].inputs).shape == (6, 3)


def test_train_data_option_never_trains_on_held_out_scenes(tmp_path, monkeypatch):
    samples = make_samples(6)
    for i, s in enumerate(samples):
        s.inputs.scene_id = f"scene-{i % 3}"
    save_samples(samples, tmp_path / "data")
    dense = make_samples(12)  # a denser copy of the same scenes, the held-out one included
    for i, s in enumerate(dense):
        s.inputs.scene_id = f"scene-{i % 3}"
        s.inputs.sample_id = f"dense-{i}"
    save_samples(dense, tmp_path / "dense")
    spec = importlib.util.spec_from_file_location("distill_recipe", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, recipe)
    spec.loader.exec_module(recipe)
    script = recipe.ScriptArguments(data=str(tmp_path / "data"), train_data=str(tmp_path / "dense"), val_scenes="scene-2")
    train, heldout, train_ids, val_ids = recipe.load_training_data(script, _args(tmp_path))
    assert len(train) == 8 and all(s.sample_id.startswith("dense-") and s.scene_id != "scene-2" for s in train)
    assert train_ids == ["scene-0", "scene-1"] and len(heldout) == 2 and all(s.scene_id == "scene-2" for s in heldout)
    with pytest.raises(ValueError, match="no training sample"):
        recipe.load_training_data(recipe.ScriptArguments(data=str(tmp_path / "data"), train_data=str(tmp_path / "dense"),
                                                         val_scenes="scene-0,scene-1,scene-2"), _args(tmp_path))
