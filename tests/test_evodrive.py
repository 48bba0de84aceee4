"""EvoDriveVLA's distillation on the text-trajectory VLA (arXiv 2603.09465), on the tiny Qwen2.5-VL and the
real cameras of nuScenes sample 0061: every switch off gives the baseline's loss exactly; each term
is what its formula says (logit KD = T^2 KL, zero against oneself; hidden SmoothL1; L_enc zero at the
anchor and weighted as written); the oracle prompt reads the future the student never sees; the
coarse-to-fine insertion; the four soft-target candidates and their pick; bad settings fail naming
the field; the three-stage recipe runs, resumes and plans (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_student import one_thread  # noqa: F401
from helpers_vlm import DRIVELM, NUSCENES_INFO, nuscenes_sample_0061

from dsdrive.annotation.annotators.rule import RuleAnnotator
from dsdrive.student.text_trajectory_vla import TextTrajectoryProcessor, TextTrajectorySettings, format_trajectory
from dsdrive.training.evodrive_config import EvoDriveConfig
from dsdrive.training.evodrive_trainer import EvoDriveTrainer, evodrive_collator
from dsdrive.training.oracle_teacher import REFINE_PREFIX, OracleProcessor, OracleTeacherTrainer, future_ego_states, refine_batch
from dsdrive.training.soft_targets import CANDIDATES, EvoDriveItems, build_soft_targets, load_soft_targets, sample_soft_target
from dsdrive.training.text_trajectory_trainer import TextTrajectoryItems, TextTrajectoryTrainer

ROOT = Path(__file__).resolve().parents[1]
PIXELS = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 12)
SMALL = dict(tiny_hidden_size=32, tiny_layers=1, tiny_heads=2, tokenizer_vocab_size=300, **PIXELS)
real_data = pytest.mark.skipif(not (NUSCENES_INFO.is_file() and DRIVELM.is_dir()), reason="real camera samples not found")
pytestmark = [pytest.mark.usefixtures("one_thread"), real_data]


@pytest.fixture(scope="module")
def sample():
    s = nuscenes_sample_0061()
    s.annotation = RuleAnnotator().annotate([s])[0].model_dump(mode="json")
    return s


def vla(sample, seed=0):
    from dsdrive.student.text_trajectory_vla import split_digits
    from dsdrive.student.tiny_vl import build_tiny_qwen_vl
    from dsdrive.student.tokenizer import student_corpus

    corpus = student_corpus([sample]) + [format_trajectory(sample.targets.ego_future)]
    model, proc = build_tiny_qwen_vl(None, corpus=corpus, vocab_size=300, hidden_size=32, heads=2, kv_heads=2, layers=1, seed=seed, **PIXELS)
    split_digits(proc.tokenizer)
    return model, TextTrajectoryProcessor(proc.tokenizer, proc.image_processor, TextTrajectorySettings(**PIXELS, max_new_tokens=8))


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), max_steps=2, learning_rate=1e-2, weight_decay=0.0, warmup_steps=0, use_lora=False, vision_tower="train",
                per_device_train_batch_size=1, use_cpu=True, report_to="none", logging_steps=1, save_strategy="no", disable_tqdm=True, **SMALL)
    return EvoDriveConfig(**{**base, **kw})


def soft_for(model, proc, sample, **kw):
    oracle = OracleProcessor.from_text_trajectory(proc)
    return {"samples": {sample.sample_id: sample_soft_target(model, oracle, sample, **kw)}}


def batch_of(trainer, items):
    return trainer._prepare_inputs(trainer.data_collator(items))


# ----------------------------------------------------------------------------- switches off == baseline
def test_every_switch_off_is_the_baseline_loss_exactly(sample, tmp_path):
    model, proc = vla(sample)
    soft = soft_for(model, proc, sample, mc_samples=2)
    items = EvoDriveItems(TextTrajectoryItems([sample], proc).items, [sample], soft)  # soft targets present but unused
    off = EvoDriveTrainer(model=model, args=config(tmp_path), train_dataset=items, data_collator=evodrive_collator(proc))
    base = TextTrajectoryTrainer(model=model, args=config(tmp_path), train_dataset=items, data_collator=proc.collate)
    model.train()
    torch.manual_seed(0)
    a = off.compute_loss(model, batch_of(off, items.items))
    torch.manual_seed(0)
    b = base.compute_loss(model, batch_of(base, items.items))
    assert torch.equal(a, b)
    # switches on with zero weights: the distilling path's CE is the baseline's (same VLM pass, lm_head on the window)
    on = EvoDriveTrainer(model=model, args=config(tmp_path, logit_kd=True, hidden_kd=True, logit_kd_weight=0.0, hidden_kd_weight=0.0,
                                                  soft_targets="x"), train_dataset=items, data_collator=evodrive_collator(proc))
    c = on.compute_loss(model, batch_of(on, items.items))
    torch.testing.assert_close(c, b, atol=1e-6, rtol=1e-6)
    assert on._terms["train"]["logit_kd"] and on._terms["train"]["hidden_kd"]


def test_oracle_trainer_without_refinement_is_the_baseline_loss(sample, tmp_path):
    model, proc = vla(sample)
    oracle = OracleProcessor.from_text_trajectory(proc)
    items = TextTrajectoryItems([sample], oracle)
    t0 = OracleTeacherTrainer(model=model, args=config(tmp_path), train_dataset=items, data_collator=oracle.collate, refine_prob=0.0)
    base = TextTrajectoryTrainer(model=model, args=config(tmp_path), train_dataset=items, data_collator=oracle.collate)
    model.train()
    assert torch.equal(t0.compute_loss(model, batch_of(t0, items.items)), base.compute_loss(model, batch_of(base, items.items)))
    t1 = OracleTeacherTrainer(model=model, args=config(tmp_path), train_dataset=items, data_collator=oracle.collate, refine_prob=1.0,
                              tokenizer=oracle.tokenizer)
    refined = t1.compute_loss(model, batch_of(t1, items.items))
    assert t1._terms["train"]["refined_fraction"] == [1.0] and torch.isfinite(refined) and not torch.equal(refined, t0.compute_loss(
        model, batch_of(t0, items.items)))


# ----------------------------------------------------------------------------- each term
def test_logit_kd_is_t2_kl_and_zero_against_itself(sample, tmp_path):
    model, proc = vla(sample)
    model.eval()
    teacher = vla(sample, seed=1)[0].eval()  # same tokenizer (same corpus), other weights
    own = soft_for(teacher, proc, sample, mc_samples=0)
    items = EvoDriveItems(TextTrajectoryItems([sample], proc).items, [sample], own)
    args = config(tmp_path, logit_kd=True, hidden_kd=True, soft_targets="x")
    tr = EvoDriveTrainer(model=model, args=args, train_dataset=items, data_collator=evodrive_collator(proc))
    # a "teacher" that is the student itself, seeing the student's prompt: both terms vanish
    oracle_prompt = OracleProcessor.from_text_trajectory(proc).oracle_prompt(sample)
    same = {"samples": {sample.sample_id: dict(own["samples"][sample.sample_id])}}
    b = batch_of(tr, items.items)
    from dsdrive.training.soft_targets import answer_hidden

    with torch.no_grad():
        h, t = answer_hidden(model, {k: v for k, v in b.items() if not k.startswith("teacher_")})
    m = t[0] != -100
    z = model.lm_head(h[0][m])
    same["samples"][sample.sample_id].update(ids=None, logprobs=torch.log_softmax(z, -1), hidden=h[0][m].clone())
    items_same = EvoDriveItems(TextTrajectoryItems([sample], proc).items, [sample], same)
    tr.compute_loss(model, batch_of(tr, items_same.items))
    assert tr._terms["eval"]["logit_kd"][-1] == pytest.approx(0.0, abs=1e-6)
    assert tr._terms["eval"]["hidden_kd"][-1] == pytest.approx(0.0, abs=1e-10)
    # against another model's distribution on the oracle prompt: T^2 * mean_token KL(p_T || p_S) at T = 5, by hand
    assert "Privileged future" in oracle_prompt
    tr.compute_loss(model, batch_of(tr, items.items))
    tlp = own["samples"][sample.sample_id]["logprobs"]
    pt = torch.softmax(tlp / 5.0, -1)
    kl = (pt * (torch.log_softmax(tlp / 5.0, -1) - torch.log_softmax(z / 5.0, -1))).sum(-1).mean() * 25.0
    assert tr._terms["eval"]["logit_kd"][-1] == pytest.approx(float(kl), rel=1e-4)
    assert tr._terms["eval"]["logit_kd"][-1] > 0 and tr._terms["eval"]["hidden_kd"][-1] > 0


def test_anchor_loss_is_zero_at_the_anchor_and_weighted_as_written(sample, tmp_path):
    from dsdrive.student.anchor_former import SelfAnchor, anchor_loss

    s, a = torch.randn(5, 8), torch.randn(5, 8)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    per = (a - s).pow(2).mean(-1)
    assert float(anchor_loss(s, a, w)) == pytest.approx(float((w * per).sum() / w.sum()), rel=1e-6)
    assert float(anchor_loss(s, a, torch.full((5,), 0.7))) == pytest.approx(float(per.mean()), rel=1e-6)
    with pytest.raises(ValueError, match=r"student \(5, 8\), anchor \(4, 8\)"):
        anchor_loss(s, a[:4], w)
    model, proc = vla(sample)
    first = {k: v.clone() for k, v in model.model.language_model.layers[0].state_dict().items()}
    anchor = SelfAnchor(model, 2.0)
    assert all(not p.requires_grad for p in anchor.anchor.parameters())
    assert all(p.requires_grad for p in anchor.former.parameters())
    items = TextTrajectoryItems([sample], proc).items
    args = config(tmp_path, self_anchor=True)
    tr = EvoDriveTrainer(model=model, args=args, train_dataset=items, data_collator=evodrive_collator(proc), self_anchor=anchor)
    model.train()
    loss = tr.compute_loss(model, batch_of(tr, items))
    assert tr._terms["train"]["anchor_enc"] == [0.0]  # the student's tower is the anchor before training
    tr.create_optimizer()
    assert any(p is anchor.former.query for g in tr.optimizer.param_groups for p in g["params"])
    with torch.no_grad():
        for p in model.model.visual.merger.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.zero_grad()
    loss = tr.compute_loss(model, batch_of(tr, items))
    enc = tr._terms["train"]["anchor_enc"][-1]
    assert enc > 0
    loss.backward()
    assert model.model.visual.merger.mlp[0].weight.grad.abs().sum() > 0  # L_enc pulls the student's tower
    assert anchor.former.ranker.weight.grad.abs().sum() > 0  # and trains the ranker
    for k, v in model.model.language_model.layers[0].state_dict().items():  # the AnchorFormer's layer is a copy
        assert torch.equal(v, first[k])
    # ranker at zero: every weight 0.5, so L_enc is the plain mean over regions at first
    with torch.no_grad():
        w = anchor.former(torch.randn(7, 32), torch.randn(3, 32))
    assert torch.allclose(w, torch.full((7,), 0.5))


# ----------------------------------------------------------------------------- oracle and refinement
def test_oracle_prompt_reads_the_future_the_student_never_sees(sample):
    model, proc = vla(sample)
    oracle = OracleProcessor.from_text_trajectory(proc)
    states = future_ego_states(sample)
    xy = np.concatenate([np.zeros((1, 2)), sample.targets.ego_future[:, :2]])
    v = np.linalg.norm(np.diff(xy, axis=0), axis=1) / 0.5
    assert [s[0] for s in states] == [1.0, 2.0, 3.0]
    np.testing.assert_allclose([s[1] for s in states], v[[1, 3, 5]], rtol=1e-6)
    prompt = oracle.oracle_prompt(sample)
    assert prompt.startswith(proc.prompt_text(sample.inputs)) and f"speed {states[0][1]:.1f} m/s" in prompt
    assert "Future camera frames: none in this sample" in prompt
    assert "Privileged" not in proc.tokenizer.decode(proc(([sample]))["input_ids"][0])
    assert "Privileged" in proc.tokenizer.decode(oracle([sample])["input_ids"][0])
    with pytest.raises(TypeError, match="needs the whole PlanningSample"):
        oracle([sample.inputs])


def test_refinement_inserts_the_coarse_answer_at_the_end_of_the_user_turn(sample):
    model, proc = vla(sample)
    tok = proc.tokenizer
    b = proc([sample, sample])
    prefix = tok(REFINE_PREFIX, add_special_tokens=False)["input_ids"]
    coarse = tok("[(1.00,0.00)]", add_special_tokens=False)["input_ids"]
    r = refine_batch(b, [coarse, None], prefix, tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id)
    t0, t1 = tok.decode(r["input_ids"][0][r["attention_mask"][0].bool()]), tok.decode(r["input_ids"][1][r["attention_mask"][1].bool()])
    assert t1 == tok.decode(b["input_ids"][1])  # untouched row
    assert (REFINE_PREFIX + "[(1.00,0.00)]<|im_end|>\n<|im_start|>assistant\n") in t0
    assert torch.equal(r["labels"][0][r["labels"][0] != -100], b["labels"][0][b["labels"][0] != -100])  # same answer, at the end
    assert int(r["labels"][0, -1]) == tok.eos_token_id and torch.equal(r["pixel_values"], b["pixel_values"])


# ----------------------------------------------------------------------------- soft targets
def test_soft_targets_pick_the_candidate_of_least_cross_entropy(sample, tmp_path):
    model, proc = vla(sample)
    oracle = OracleProcessor.from_text_trajectory(proc)
    t = sample_soft_target(model, oracle, sample, mc_samples=10, mc_dropout=0.1, gen=torch.Generator().manual_seed(3))
    assert len(t["ce"]) == 4 and t["candidate"] == int(np.argmin(t["ce"]))
    assert t["ce"][1] <= t["ce"][0] + 0.5 and np.isfinite(t["ce"]).all()
    a = len(t["answer_ids"])
    assert t["logprobs"].shape == (a, len(proc.tokenizer)) and t["hidden"].shape == (a, 32) and t["ids"] is None
    assert torch.allclose(t["logprobs"].exp().sum(-1), torch.ones(a), atol=1e-5)
    again = sample_soft_target(model, oracle, sample, mc_samples=10, mc_dropout=0.1, gen=torch.Generator().manual_seed(3))
    assert again["ce"] == t["ce"] and torch.equal(again["logprobs"], t["logprobs"])  # seeded: reproducible
    none = sample_soft_target(model, oracle, sample, mc_samples=0)
    assert np.isnan(none["ce"][1]) and np.isnan(none["ce"][3]) and none["candidate"] in (0, 2)
    top = sample_soft_target(model, oracle, sample, mc_samples=0, top_k=16)
    assert top["ids"].shape == (a, 16) and top["logprobs"].shape == (a, 16)
    summary = build_soft_targets(model, oracle, [sample], tmp_path / "soft", mc_samples=2, seed=1, meta={"teacher": "t"})
    assert sum(summary["picked"].values()) == 1 and set(summary["picked"]) == set(CANDIDATES)
    data = load_soft_targets(tmp_path / "soft", proc.tokenizer)
    assert sample.sample_id in data["samples"]
    other, other_proc = vla(sample, seed=1)
    other_proc.tokenizer.add_tokens(["<extra>"])
    with pytest.raises(ValueError, match="tokenizer_fingerprint"):
        load_soft_targets(tmp_path / "soft", other_proc.tokenizer)
    with pytest.raises(FileNotFoundError, match="soft_targets.pt: missing"):
        load_soft_targets(tmp_path)


@pytest.mark.parametrize("kw,match", [
    (dict(logit_kd_weight=-0.1), "logit_kd_weight=-0.1"), (dict(kd_temperature=0.0), "kd_temperature=0.0"),
    (dict(refine_prob=1.5), "refine_prob=1.5"), (dict(mc_dropout=1.0), "mc_dropout=1.0"), (dict(mc_samples=-1), "mc_samples=-1"),
    (dict(soft_target_top_k=-2), "soft_target_top_k=-2"), (dict(anchor_temperature=-1.0), "anchor_temperature=-1.0")])
def test_bad_settings_fail_naming_field_and_value(tmp_path, kw, match):
    with pytest.raises(ValueError, match=f"EvoDriveConfig: {match}"):
        config(tmp_path, **kw)


def test_kd_without_soft_targets_fails_naming_the_switch(sample, tmp_path):
    model, proc = vla(sample)
    items = TextTrajectoryItems([sample], proc).items
    tr = EvoDriveTrainer(model=model, args=config(tmp_path, logit_kd=True), train_dataset=items, data_collator=evodrive_collator(proc))
    with pytest.raises(ValueError, match="logit_kd=True.*no soft targets"):
        tr.compute_loss(model, batch_of(tr, items))
    with pytest.raises(ValueError, match="self_anchor is on but no SelfAnchor"):
        EvoDriveTrainer(model=model, args=config(tmp_path, self_anchor=True), train_dataset=items, data_collator=evodrive_collator(proc))


# ----------------------------------------------------------------------------- the recipe end to end
@pytest.mark.slow
def test_recipe_trains_the_oracle_builds_soft_targets_trains_the_student_and_resumes(sample, tmp_path, capsys):
    import yaml

    from dsdrive.data.dataset import save_samples
    from dsdrive.planners.registry import load_planner
    from dsdrive.training import evodrive

    save_samples([sample], tmp_path / "data")
    recipe = yaml.safe_load((ROOT / "recipes" / "configs" / "tiny-vl" / "evodrive.yaml").read_text())
    recipe.update({**SMALL, "max_new_tokens": 8, "num_threads": 1, "disable_tqdm": True, "mc_samples": 3})
    cfg = tmp_path / "evodrive.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "evo"
    argv = ["--config", str(cfg), "--data", str(tmp_path / "data"), "--output_dir", str(out), "--max_steps", "3", "--warmup_steps", "0",
            "--logging_steps", "1"]
    assert evodrive.main(argv) == 0
    summary = json.loads((out / "soft_targets" / "soft_targets.json").read_text())
    assert summary["num_samples"] == 1 and summary["mc_samples"] == 3
    oracle = json.loads((out / "teacher" / "oracle.json").read_text())
    assert any("refined_fraction" in h for h in oracle["log_history"])
    report = json.loads((out / "student" / "eval_heldout.json").read_text())
    logged = [h for h in report["log_history"] if "trajectory_ce" in h and "train_runtime" not in h]
    assert len(logged) == 3 and all({"logit_kd", "hidden_kd", "anchor_enc"} <= set(h) for h in logged)
    capsys.readouterr()
    assert evodrive.main(argv) == 0
    printed = capsys.readouterr().out
    assert all(f"stage {k}" in printed and "skipped" in printed for k in (1, 2, 3))
    planner = load_planner("text_trajectory_vla", checkpoint=out / "student")
    traj = planner.compute_trajectories([sample.inputs])
    assert traj.shape == (1, 6, 3) and np.isfinite(traj).all()
