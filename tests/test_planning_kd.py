"""Planning KD in student training (dsdrive.training.planning_kd): cache -> batch -> DistillTrainer KD terms,
gradients reaching every parameter incl. the adapter, weights 0 == plain loss, the student never
seeing teacher tensors or the future, and recipes/distill.py with a tiny teacher checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_distilldrive import tiny_teacher
from helpers_student import make_samples, one_thread, tiny_student  # noqa: F401
from safetensors.torch import load_file

from dsdrive.data.dataset import save_samples
from dsdrive.training.distill_config import DistillConfig
from dsdrive.training.distill_trainer import LOSS_TERMS, DistillTrainer, EncodedSamples
from dsdrive.distilldrive.teacher_cache import build_teacher_cache, teacher_outputs
from dsdrive.training.planning_kd import (
    ADAPTER_FILE,
    KD_TERMS,
    TEACHER_BATCH_KEYS,
    VALID_KEY,
    KDDataCollator,
    attach_planning_kd,
    attach_teacher_outputs,
    planning_kd_terms,
    pop_teacher_outputs,
)
from dsdrive.student import StudentDataCollator

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TEACHER_DIM = 16  # helpers_distilldrive.tiny_config


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1,
                save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    return DistillConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(samples, tiny teacher (eval), its cache) on 8 student-test samples."""
    samples = make_samples(8)
    torch.manual_seed(0)
    teacher = tiny_teacher(samples).eval()
    cache = build_teacher_cache(teacher, samples, tmp_path_factory.mktemp("kd") / "cache", batch_size=4)
    return samples, teacher, cache


def _kd_student(setup, fw=0.5, klw=0.5, rw=0.5, **student_kw):
    samples, _, cache = setup
    model, proc = tiny_student(**student_kw)
    data = EncodedSamples(samples, proc)
    assert attach_teacher_outputs(data.items, [s.sample_id for s in samples], cache) == len(samples)
    torch.manual_seed(1)
    attach_planning_kd(model, TEACHER_DIM, fw, klw, rw)
    return model, proc, data


def test_two_kd_steps_change_every_parameter_incl_adapter_and_log_kd_terms(setup, tmp_path):
    model, proc, data = _kd_student(setup, planning_cvae=True)  # DistillDrive's student: KD + the VAE op
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert {"planning_kd.adapter.weight", "planning_kd.adapter.bias"} <= set(before)
    trainer = DistillTrainer(model=model, args=_args(tmp_path), train_dataset=data, data_collator=KDDataCollator(StudentDataCollator(proc)))
    trainer.train()
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(before[n], p.detach())]
    assert not unchanged, unchanged
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2 and all(k in h for h in logged for k in (*LOSS_TERMS, *KD_TERMS))
    assert all(logged[0][k] > 0 for k in KD_TERMS)


def test_kd_with_zero_weights_trains_exactly_like_the_plain_loss(setup, tmp_path):
    samples = setup[0]
    runs = []
    for kd in (False, True):
        if kd:
            model, proc, data = _kd_student(setup, 0.0, 0.0, 0.0)
            collator = KDDataCollator(StudentDataCollator(proc))
        else:
            model, proc = tiny_student()
            data, collator = EncodedSamples(samples, proc), StudentDataCollator(proc)
        trainer = DistillTrainer(model=model, args=_args(tmp_path / str(kd)), train_dataset=data, data_collator=collator)
        trainer.train()
        runs.append((model, [h["loss"] for h in trainer.state.log_history if "loss" in h]))
    (plain, plain_loss), (kd_model, kd_loss) = runs
    assert plain_loss == kd_loss
    kd_params = dict(kd_model.named_parameters())
    for n, p in plain.named_parameters():
        assert torch.equal(p, kd_params[n]), n


def test_kd_trainer_reads_the_cached_teacher_values(setup, tmp_path):
    samples, teacher, cache = setup
    model, proc, data = _kd_student(setup)
    model.eval()
    ids = [s.sample_id for s in samples[:4]]
    batch = KDDataCollator(StudentDataCollator(proc))(data.items[:4])
    cached, online = cache.get(ids), teacher_outputs(teacher, samples[:4])
    for ck, bk in TEACHER_BATCH_KEYS.items():  # the batch carries the cache, and the cache equals the teacher run online
        assert torch.equal(batch[bk], cached[ck].float()) and torch.allclose(cached[ck], online[ck], atol=1e-6)
    assert batch[VALID_KEY].all()
    trainer = DistillTrainer(model=model, args=_args(tmp_path), data_collator=KDDataCollator(StudentDataCollator(proc)))
    seen = []
    forward = model.forward
    model.forward = lambda **kw: (seen.append(sorted(kw)), forward(**kw))[1]
    with torch.no_grad():
        trainer.compute_loss(model, dict(batch))
    assert seen and not set(seen[0]) & {*TEACHER_BATCH_KEYS.values(), VALID_KEY}  # popped before the student's forward
    got = {k: v[-1] for k, v in trainer._terms["eval"].items()}
    with torch.no_grad():
        inputs = dict(batch)
        pop_teacher_outputs(inputs)
        out = forward(**inputs)
        ref = model.planning_kd(out.query_states, cached["plan_queries"], out.mode_logits.flatten(1), cached["plan_logits"],
                                out.waypoints.flatten(1, 2), cached["plan_waypoints"])
    for k in ("feature", "mode_kl", "regression"):
        assert got[f"kd_{k}"] == pytest.approx(float(ref[k]), rel=1e-5)
    # another teacher value -> another KD loss: the terms really come from the batch
    shifted = dict(batch)
    shifted[TEACHER_BATCH_KEYS["plan_queries"]] = batch[TEACHER_BATCH_KEYS["plan_queries"]] + 1.0
    with torch.no_grad():
        trainer.compute_loss(model, shifted)
    assert trainer._terms["eval"]["kd_feature"][-1] > got["kd_feature"] + 0.1


def test_kd_terms_shapes_and_invalid_rows(setup):
    model, proc, data = _kd_student(setup)
    batch = KDDataCollator(StudentDataCollator(proc))([data.items[0], {k: v for k, v in data.items[1].items() if not k.startswith("teacher_")}])
    assert batch[VALID_KEY].tolist() == [True, False] and batch[TEACHER_BATCH_KEYS["plan_queries"]].shape == (2, 18, TEACHER_DIM)
    teacher = pop_teacher_outputs(batch)
    out = model(**batch)
    assert out.query_states.shape == (2, 18, 32) and out.mode_logits.flatten(1).shape == (2, 18)
    both = planning_kd_terms(model, out, teacher)
    assert torch.isfinite(both["total"]) and both["total"] > 0
    # the invalid row is ignored: changing its teacher tensors leaves the terms unchanged
    teacher2 = {k: v.clone() for k, v in teacher.items()}
    teacher2[TEACHER_BATCH_KEYS["plan_queries"]][1] += 5.0
    assert torch.equal(planning_kd_terms(model, out, teacher2)["total"], both["total"])


def test_student_inputs_carry_no_future_and_kd_needs_a_kd_module(setup):
    """Student side of 'no future ground truth in inputs': the encoded inputs do not depend on the targets."""
    samples = setup[0]
    model, proc = tiny_student()
    s = samples[0]
    a = proc.encode_inputs(s.inputs)
    s.targets.ego_future[:] += 7.0  # another future, same inputs
    try:
        b = proc.encode_inputs(s.inputs)
        full = proc.encode_sample(s)
    finally:
        s.targets.ego_future[:] -= 7.0
    assert a.keys() == b.keys() and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
    assert set(full) - set(a) <= {"ego_future", "ego_future_mask", "meta_action", "risk_target", "risk_valid", "reasoning_ids"}
    batch = StudentDataCollator(proc)([full])
    with pytest.raises(ValueError, match="planning_kd"):
        planning_kd_terms(model, model(**batch), {TEACHER_BATCH_KEYS["plan_queries"]: torch.zeros(1, 18, TEACHER_DIM)})


@pytest.mark.parametrize("kw,match", [(dict(kd_feature_weight=-1.0), "kd_feature_weight=-1.0"),
                                      (dict(kd_mode_kl_weight=float("nan")), "kd_mode_kl_weight"),
                                      (dict(planning_kd_teacher="/nonexistent/teacher"), "planning_kd_teacher='/nonexistent/teacher'")])
def test_kd_config_validation(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _args(tmp_path, **kw)


def test_recipe_subprocess_with_a_tiny_teacher_checkpoint(tmp_path):
    samples = make_samples(12)
    for i, s in enumerate(samples):
        s.inputs.scene_id = f"scene-{i % 3}"
    save_samples(samples, tmp_path / "data")
    torch.manual_seed(0)
    teacher = tiny_teacher(samples)  # vocabulary on all 12 samples: differs from the student's (8 training samples)
    teacher.save_pretrained(tmp_path / "teacher")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tiny_hidden_size: 32\ntiny_layers: 1\ntiny_heads: 2\nscene_dim: 16\nscene_layers: 1\nbev_size: 16\nrisk_points: 2\n"
                   "tokenizer_vocab_size: 300\nmax_prompt_tokens: 96\nmax_reasoning_tokens: 64\nper_device_train_batch_size: 4\n"
                   "learning_rate: 0.01\nlogging_steps: 1\nreport_to: none\nuse_cpu: true\nnum_threads: 1\ndisable_tqdm: true\n"
                   "val_scenes: scene-2\neval_open_loop: false\nsave_strategy: 'no'\n")
    out = tmp_path / "student"
    cmd = [sys.executable, str(ROOT / "recipes" / "distill.py"), "--config", str(cfg), "--data", str(tmp_path / "data"), "--output_dir", str(out),
           "--max_steps", "2", "--planning_kd_teacher", str(tmp_path / "teacher"), "--planning_kd_cache", str(tmp_path / "cache"),
           "--kd_mode_kl_weight", "0.5", "--kd_regression_weight", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "planning KD" in res.stdout and "8/8 training samples" in res.stdout and "replaced by" in res.stdout
    assert json.loads((tmp_path / "cache" / "index.json").read_text())["num_samples"] == 8  # training scenes only
    logged = [h for h in json.loads((out / "eval_heldout.json").read_text())["log_history"] if "loss" in h]
    assert len(logged) == 2 and all(h[k] > 0 for h in logged for k in KD_TERMS)
    weights = load_file(str(out / "model.safetensors"))
    assert not [k for k in weights if "planning_kd" in k]  # dropped at export ...
    assert load_file(str(out / ADAPTER_FILE))["adapter.weight"].shape == (TEACHER_DIM, 32)  # ... saved beside it
    assert torch.allclose(weights["anchors"], teacher.plan_anchors)  # the teacher's vocabulary: 1:1 query pairing
    from dsdrive.planners.student import StudentPlanner

    traj = StudentPlanner(out).compute_trajectories([s.inputs for s in samples[:2]])
    assert traj.shape == (2, 6, 3) and np.isfinite(traj).all()


def test_kd_config_is_the_tiny_config_plus_kd():
    """recipes/configs/tiny/distill_kd.yaml must stay tiny/distill.yaml + the KD switches, so the
    with/without-KD comparison trains the same student."""
    import yaml

    configs = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "tiny"
    base = yaml.safe_load((configs / "distill.yaml").read_text())
    kd = yaml.safe_load((configs / "distill_kd.yaml").read_text())
    kd_keys = {"planning_kd_teacher", "planning_kd_cache", "kd_feature_weight", "kd_mode_kl_weight", "kd_regression_weight"}
    assert kd_keys <= set(kd) and kd["kd_feature_weight"] > 0
    assert {k: v for k, v in kd.items() if k not in kd_keys | {"output_dir"}} == {k: v for k, v in base.items() if k != "output_dir"}
