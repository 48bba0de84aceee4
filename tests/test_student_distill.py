"""DistillTrainer, DistillConfig and the distill stage (:mod:`dsdrive.training.distill`: ``dsdrive distill``,
``recipes/distill.py``) on tiny models: training, export, evaluation and the held-out scene split."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_student import make_samples, tiny_student, one_thread  # noqa: F401

from dsdrive.data.dataset import save_samples
from dsdrive.training import distill
from dsdrive.training.distill_config import DistillConfig
from dsdrive.training.distill_trainer import LOSS_TERMS, DistillTrainer, EncodedSamples
from dsdrive.student import StudentDataCollator

pytestmark = pytest.mark.usefixtures("one_thread")


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1,
                save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    return DistillConfig(**{**base, **kw})


def test_gradient_accumulation_averages_the_micro_batches(tmp_path):
    """Batch 1 x 2 accumulation (plain SGD, no clipping) steps by the mean of the two micro-batch
    gradients, as the model's per-batch-mean loss requires (not by their sum). The student's batches
    carry no ``labels`` key, so the Trainer passes ``num_items_in_batch=None`` and divides by the
    accumulation steps itself."""
    model, proc = tiny_student()
    samples = make_samples(2)
    collate = StudentDataCollator(proc)
    encoded = EncodedSamples(samples, proc)
    model.zero_grad()
    for i in range(2):
        (model(**collate([encoded[i]])).loss / 2).backward()
    lr = 0.05
    expected = {n: (p.detach() - lr * p.grad).clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad()
    trainer = DistillTrainer(model=model, args=_args(tmp_path, max_steps=1, per_device_train_batch_size=1, gradient_accumulation_steps=2,
                                                     optim="sgd", learning_rate=lr, max_grad_norm=0.0, lr_scheduler_type="constant"),
                             train_dataset=encoded, data_collator=collate)
    trainer.train()
    worst = max(float((p.detach() - expected[n]).abs().max()) for n, p in model.named_parameters() if n in expected)
    assert worst < 1e-5, worst


def test_trainer_two_steps_change_every_parameter_and_log_terms(tmp_path):
    model, proc = tiny_student(planning_cvae=True)  # every loss term, the VAE op's KL included
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = DistillTrainer(model=model, args=_args(tmp_path), train_dataset=EncodedSamples(make_samples(8), proc),
                             data_collator=StudentDataCollator(proc))
    trainer.train()
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(before[n], p.detach())]
    assert not unchanged, unchanged
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2 and all(k in logged[0] for k in LOSS_TERMS)
    ev = trainer.evaluate(EncodedSamples(make_samples(4), proc))
    # evaluation samples the prior: no posterior, no KL term
    assert all(f"eval_{k}" in ev for k in LOSS_TERMS if k != "cvae_kl") and "eval_cvae_kl" not in ev and ev["eval_loss"] > 0


def test_distill_config_validation(tmp_path):
    with pytest.raises(ValueError, match="use_lora"):
        _args(tmp_path, quantization="4bit")
    cfg = _args(tmp_path, meta_action_ce_weight=0.0)
    assert cfg.student_config_kwargs()["use_meta_action_head"] is False and cfg.loss_weights()["risk_l1"] == 1.0


def test_recipe_cli_trains_saves_and_evaluates(tmp_path, capsys):
    samples = make_samples(12)
    for i, s in enumerate(samples):
        s.inputs.scene_id = f"scene-{i % 3}"
    save_samples(samples, tmp_path / "data")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tiny_hidden_size: 32\ntiny_layers: 1\nscene_dim: 16\nscene_layers: 1\nbev_size: 16\nrisk_points: 2\n"
                   "tokenizer_vocab_size: 300\nmax_steps: 2\nper_device_train_batch_size: 4\nreport_to: none\nsave_strategy: 'no'\n")
    out = tmp_path / "ckpt"
    rc = distill.main(["--config", str(cfg), "--data", str(tmp_path / "data"), "--output_dir", str(out), "--val_scenes", "scene-2",
                      "--use_lora", "true", "--lora_r", "2", "--use_cpu", "true"])
    assert rc == 0 and (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()
    report = json.loads((out / "eval_heldout.json").read_text())
    assert report["val_scenes"] == ["scene-2"] and report["open_loop"]["num_evaluated"] == 4
    assert report["train_scenes"] == ["scene-0", "scene-1"] and report["num_train_samples"] == 8
    printed = capsys.readouterr().out
    assert "training: 8 samples (8 annotated) from 2 scenes ['scene-0', 'scene-1']" in printed
    assert "held out: 4 samples from 1 scenes ['scene-2']" in printed
    from dsdrive.planners.student import StudentPlanner

    planner = StudentPlanner(out)
    assert planner.model.config.backbone_config["hidden_size"] == 32  # merged LoRA -> plain student
    assert planner.compute_trajectory(samples[0].inputs).shape == (6, 3)


def test_train_data_option_never_trains_on_held_out_scenes(tmp_path):
    samples = make_samples(6)
    for i, s in enumerate(samples):
        s.inputs.scene_id = f"scene-{i % 3}"
    save_samples(samples, tmp_path / "data")
    dense = make_samples(12)  # a denser copy of the same scenes, the held-out one included
    for i, s in enumerate(dense):
        s.inputs.scene_id = f"scene-{i % 3}"
        s.inputs.sample_id = f"dense-{i}"
    save_samples(dense, tmp_path / "dense")
    script = distill.ScriptArguments(data=str(tmp_path / "data"), train_data=str(tmp_path / "dense"), val_scenes="scene-2")
    train, heldout, train_ids, val_ids = distill.load_training_data(script, _args(tmp_path))
    assert len(train) == 8 and all(s.sample_id.startswith("dense-") and s.scene_id != "scene-2" for s in train)
    assert train_ids == ["scene-0", "scene-1"] and len(heldout) == 2 and all(s.scene_id == "scene-2" for s in heldout)
    with pytest.raises(ValueError, match="no training sample"):
        distill.load_training_data(distill.ScriptArguments(data=str(tmp_path / "data"), train_data=str(tmp_path / "dense"),
                                                          val_scenes="scene-0,scene-1,scene-2"), _args(tmp_path))


def _three_scene_data(path, n=6):
    samples = make_samples(n)
    for i, s in enumerate(samples):
        s.inputs.scene_id = f"scene-{i % 3}"
    save_samples(samples, path)
    return path


def test_held_out_scenes_must_be_in_the_data_no_substitute_split(tmp_path):
    data = str(_three_scene_data(tmp_path / "data"))
    present = r"\['scene-0', 'scene-1', 'scene-2'\]"
    # the default held-out scenes (nuScenes) are absent: an error naming folder, scenes expected and present, and the way out
    with pytest.raises(ValueError, match=rf"{data}.*none of the held-out scenes \['scene-0655', 'scene-1077'\].*{present}.*--val_scenes none"):
        distill.load_training_data(distill.ScriptArguments(data=data), _args(tmp_path))
    with pytest.raises(ValueError, match=rf"held-out scenes \['scene-9'\] \(of \['scene-2', 'scene-9'\]\) are not in the data.*{present}"):
        distill.load_training_data(distill.ScriptArguments(data=data, val_scenes="scene-2,scene-9"), _args(tmp_path))
    with pytest.raises(ValueError, match="'none' cannot be combined"):
        distill.load_training_data(distill.ScriptArguments(data=data, val_scenes="none,scene-2"), _args(tmp_path))
    with pytest.raises(ValueError, match="holds out no scene.*eval_strategy='steps'.*--eval_strategy no"):
        distill.load_training_data(distill.ScriptArguments(data=data, val_scenes="none"), _args(tmp_path, eval_strategy="steps"))
    train, heldout, train_ids, val_ids = distill.load_training_data(distill.ScriptArguments(data=data, val_scenes="none"), _args(tmp_path))
    assert len(train) == 6 and heldout == [] and train_ids == ["scene-0", "scene-1", "scene-2"] and val_ids == []


def test_val_scenes_none_trains_on_every_scene_and_evaluates_nothing(tmp_path, capsys):
    from dsdrive.cli import main as dsdrive_main

    data = _three_scene_data(tmp_path / "data")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tiny_hidden_size: 32\ntiny_layers: 1\ntiny_heads: 2\nscene_dim: 16\nscene_layers: 1\nbev_size: 16\nrisk_points: 2\n"
                   "tokenizer_vocab_size: 300\nmax_prompt_tokens: 96\nmax_reasoning_tokens: 64\nmax_steps: 1\n"
                   "per_device_train_batch_size: 4\nreport_to: none\nsave_strategy: 'no'\nuse_cpu: true\ndisable_tqdm: true\n")
    out = tmp_path / "ckpt"
    assert dsdrive_main(["distill", "--config", str(cfg), "--data", str(data), "--output_dir", str(out), "--val_scenes", "none"]) == 0
    report = json.loads((out / "eval_heldout.json").read_text())
    assert report["train_scenes"] == ["scene-0", "scene-1", "scene-2"] and report["num_train_samples"] == 6
    assert report["val_scenes"] == [] and report["num_heldout_samples"] == 0
    assert report["eval_losses"] == {} and "open_loop" not in report
    printed = capsys.readouterr().out
    assert "training: 6 samples (4 annotated) from 3 scenes" in printed and "held out: no scene (--val_scenes none)" in printed
    assert (out / "model.safetensors").is_file()
