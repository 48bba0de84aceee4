"""LoRA / QLoRA on the student (peft), the StudentPlanner, the registry, and a real-data run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_student import REAL_DIR, make_inputs, make_samples, tiny_student, one_thread  # noqa: F401
from peft import PeftModel

from dsdrive.student import StudentModel
from dsdrive.student.backbone import build_tiny_backbone, load_backbone
from dsdrive.student.lora import FULL_TRAIN_MODULES, apply_lora, merge_lora

pytestmark = pytest.mark.usefixtures("one_thread")


def _steps(model, batch, n=2):
    # weight decay 0: decay alone would move every weight, so "changed" means "received a gradient"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    for _ in range(n):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()


def test_lora_trains_adapters_and_heads_and_round_trips(tmp_path):
    model, proc = tiny_student(planning_cvae=True)  # every FULL_TRAIN_MODULES entry present
    base_q = model.backbone.get_decoder().layers[0].self_attn.q_proj.weight.detach().clone()
    pm = apply_lora(model, r=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and all(("lora_" in n) or ("modules_to_save" in n) for n in trainable)
    for m in FULL_TRAIN_MODULES:
        assert any(f"{m}.modules_to_save" in n for n in trainable), m
    batch = proc(make_samples(6))
    before = {n: p.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}
    _steps(pm, batch)
    assert not [n for n, p in pm.named_parameters() if p.requires_grad and torch.equal(before[n], p.detach())]
    torch.testing.assert_close(pm.base_model.model.backbone.get_decoder().layers[0].self_attn.q_proj.base_layer.weight, base_q)
    pm.eval()
    plan = pm.plan(batch).waypoints
    # an adapter checkpoint restores adapters AND the fully trained heads
    pm.save_pretrained(tmp_path / "adapter")
    fresh, _ = tiny_student(planning_cvae=True)
    restored = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    torch.testing.assert_close(restored.plan(batch).waypoints, plan)
    # merged export is a plain StudentModel that reloads exactly
    merged = merge_lora(pm)
    assert type(merged) is StudentModel
    torch.testing.assert_close(merged.plan(batch).waypoints, plan, atol=1e-5, rtol=1e-5)
    merged.save_pretrained(tmp_path / "merged")
    torch.testing.assert_close(StudentModel.from_pretrained(tmp_path / "merged").plan(batch).waypoints, merged.plan(batch).waypoints)
    with pytest.raises(ValueError, match="target_modules"):
        apply_lora(tiny_student()[0], target_modules=("nope",))


def test_qlora_4bit_backbone(tmp_path):
    pytest.importorskip("bitsandbytes")
    _, proc = tiny_student()
    build_tiny_backbone(proc.tokenizer, tmp_path / "bb", hidden_size=64, layers=1)
    cfg = proc.config
    kw = dict(scene_dim=cfg.scene_dim, scene_heads=cfg.scene_heads, scene_layers=1, max_agents=cfg.max_agents, max_map=cfg.max_map,
              bev_height=cfg.bev_height, bev_width=cfg.bev_width, risk_heads=2, risk_points=2)
    with pytest.raises(ValueError, match="not quantized"):
        apply_lora(StudentModel.from_backbone(load_backbone(tmp_path / "bb"), **kw), quantization="4bit")
    bb = load_backbone(tmp_path / "bb", quantization="4bit")
    assert "4bit" in type(bb.get_decoder().layers[0].self_attn.q_proj).__name__
    pm = apply_lora(StudentModel.from_backbone(bb, **kw), r=4, alpha=8, quantization="4bit")
    batch = proc(make_samples(4))
    out = pm(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss.detach())
    assert all(p.grad is not None for p in pm.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model, proc = tiny_student()
    d = tmp_path_factory.mktemp("student")
    model.save_pretrained(d)
    proc.save_pretrained(d)
    return d, model, proc


def test_student_planner_and_registry(checkpoint):
    from dsdrive.planners.registry import load_planner
    from dsdrive.planners.student import StudentPlanner

    d, model, proc = checkpoint
    planner = load_planner("student", checkpoint=d)
    assert isinstance(planner, StudentPlanner) and planner.name == "student"
    xs = [make_inputs("a"), make_inputs("b", speed=3.0, n_agents=0)]
    traj = planner.compute_trajectories(xs)
    assert traj.shape == (2, 6, 3) and traj.dtype == np.float32
    np.testing.assert_allclose(traj, model.eval().plan(xs, proc).waypoints.numpy(), atol=1e-5)
    np.testing.assert_allclose(planner.compute_trajectory(xs[0]), traj[0], atol=1e-5)
    planner.max_new_tokens = 6
    out, texts = planner.plan_and_explain_batch(xs)
    np.testing.assert_allclose(out.waypoints.numpy(), traj, atol=1e-5)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    wp, explanation = planner.plan_and_explain(xs[0])
    np.testing.assert_allclose(wp, traj[0], atol=1e-5)
    assert explanation["reasoning"] == texts[0]
    # the reasoning's Plan line when readable, else the meta-action head (random weights: usually the head)
    assert explanation["meta_action_source"] in {"reasoning", "meta-action head"}
    assert explanation["meta_action"] is not None
    assert len(explanation["mode_scores"]) == 6 and abs(sum(explanation["mode_scores"]) - 1.0) < 1e-3
    assert len(explanation["risks"]) <= 3 and all(0.0 <= r["risk"] <= 1.0 for r in explanation["risks"])
    assert {r["agent_id"] for r in explanation["risks"]} <= set(xs[0].agents.ids)
    assert isinstance(planner.explain(xs[0]), str)
    assert planner.risk_map(xs[0]).shape == (model.config.bev_height, model.config.bev_width)
    with pytest.raises(FileNotFoundError):
        StudentPlanner(d / "nope")


@pytest.mark.skipif(not REAL_DIR.is_dir(), reason=f"real ScenarioNet data not found at {REAL_DIR}")
def test_student_on_real_scenarionet_samples():
    from data_builders.scenarionet import build_scene, load_scenario

    path = REAL_DIR / "sd_nuscenes_v1.0-mini_scene-0061.pkl"
    samples = build_scene(load_scenario(path), path)[:6]
    model, proc = tiny_student(samples)
    batch = proc(samples)
    assert batch["agents_mask"].any() and batch["map_mask"].any()
    out = model(**batch)
    assert torch.isfinite(out.loss.detach()) and out.reasoning_ce is not None
    plan = model.plan([s.inputs for s in samples], proc)
    assert plan.waypoints.shape == (6, 6, 3) and torch.isfinite(plan.waypoints).all()


def test_stated_meta_action_parses_the_plan_line():
    from dsdrive.annotation.schema import MetaAction
    from dsdrive.evaluation.metrics.reasoning_consistency import parse_stated_meta_action
    from dsdrive.planners.student import meta_action_from_index

    def stated_meta_action(text):
        m = parse_stated_meta_action(text)
        return None if m is None else str(m)

    for m in (MetaAction(behaviour="TURN LEFT", speed="DECELERATION"), MetaAction(behaviour="STOP", speed="CONSTANT")):
        assert meta_action_from_index(m.index) == str(m)

    assert stated_meta_action("Scene: x.\nPlan: TURN LEFT with DECELERATION.\nWhy: y.") == "TURN LEFT with DECELERATION"
    assert stated_meta_action("Plan: STOP.") == "STOP"
    assert stated_meta_action("Plan: MOVE FORWARD with QUICK DECELERATION.") == "MOVE FORWARD with QUICK DECELERATION"
    assert stated_meta_action("Plan: fly away.") is None
    assert stated_meta_action("no plan line") is None
