"""``StudentModel.plan(risk_map=False)``: the same plan without the BEV and the RiskHead.

What a trajectory never reads (the scene's BEV splat and convolutions, a camera student's PV -> BEV
lift, the RiskHead) is skipped; every other output must be bit-identical to the full ``plan()``,
for plan-first and reasoning-first students, for object and camera inputs, and through
``StudentPlanner.compute_trajectories`` (which open- and closed-loop evaluation call)."""

from __future__ import annotations

import pytest
import torch
from helpers_student import make_samples, one_thread, tiny_student  # noqa: F401

from dsdrive.student.modeling_student import SCENE_KEYS

pytestmark = pytest.mark.usefixtures("one_thread")

FIELDS = ("waypoints", "mode_waypoints", "mode_scores", "best_mode", "meta_action_logits")


def _assert_same_plan(full, lean):
    for f in FIELDS:
        a, b = getattr(full, f), getattr(lean, f)
        assert (a is None) == (b is None), f
        if a is not None:
            assert torch.equal(a, b), f"{f} differs with risk_map=False"
    assert full.risk_map is not None and lean.risk_map is None


@pytest.mark.parametrize("order", ["plan_first", "reasoning_first"])
def test_plan_without_risk_map_is_the_same_plan(order):
    samples = make_samples(4)
    model, proc = tiny_student(sequence_order=order, max_new_tokens=6)
    model.eval()
    batch = proc([s.inputs for s in samples])  # batch 4: padded agents, map and prompts
    full, lean = model.plan(batch), model.plan(batch, risk_map=False)
    _assert_same_plan(full, lean)
    assert full.waypoints.shape == (4, 6, 3) and full.risk_map.shape == (4, 16, 16)


def test_plan_and_explain_without_risk_map_keeps_plan_and_reasoning():
    model, proc = tiny_student()
    model.eval()
    batch = proc([s.inputs for s in make_samples(2)])
    (full, ids), (lean, ids_lean) = (model.plan_and_explain(batch, max_new_tokens=5),
                                     model.plan_and_explain(batch, max_new_tokens=5, risk_map=False))
    _assert_same_plan(full, lean)
    assert torch.equal(ids, ids_lean)


def test_scene_encoder_without_bev_gives_the_same_tokens():
    model, proc = tiny_student()
    model.eval()
    batch = proc([s.inputs for s in make_samples(3)])
    with torch.no_grad():
        tokens, mask, bev = model.scene_encoder(*(batch[k] for k in SCENE_KEYS))
        tokens2, mask2, bev2 = model.scene_encoder(*(batch[k] for k in SCENE_KEYS), with_bev=False)
    assert torch.equal(tokens, tokens2) and torch.equal(mask, mask2)
    assert bev.shape == (3, 16, 16, 16) and bev2 is None


def test_training_forward_still_builds_the_risk_map():
    model, proc = tiny_student()
    out = model(**proc(make_samples(2)))
    assert out.risk_map is not None and out.risk_l1 is not None


def test_student_planner_trajectories_equal_the_full_plan(tmp_path):
    from dsdrive.planners.student import StudentPlanner

    model, proc = tiny_student()
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    planner = StudentPlanner(tmp_path)
    inputs = [s.inputs for s in make_samples(3)]
    full = planner.plan(inputs)
    traj = planner.compute_trajectories(inputs)
    assert traj.dtype.name == "float32" and traj.shape == (3, 6, 3)
    assert (traj == full.waypoints.float().numpy()).all()
    assert planner.plan(inputs, risk_map=False).risk_map is None
    assert planner.risk_map(inputs[0]).shape == (16, 16)  # the risk map is still there for whoever asks


def test_camera_student_plan_without_risk_map_skips_the_lift():
    from helpers_vlm import DRIVELM, NUSCENES_INFO, drivelm_keyframe_sample, nuscenes_sample_0061

    if not (NUSCENES_INFO.is_file() and DRIVELM.is_dir()):
        pytest.skip("real camera samples not found")
    from dsdrive.student import StudentModel, StudentProcessor
    from dsdrive.student.tiny_vl import build_tiny_qwen_vl
    from dsdrive.student.tokenizer import student_corpus

    samples = [nuscenes_sample_0061(), drivelm_keyframe_sample(0)]
    torch.manual_seed(0)
    vl, vproc = build_tiny_qwen_vl(None, corpus=student_corpus(samples), vocab_size=300, hidden_size=32, heads=2, kv_heads=2)
    model = StudentModel.from_backbone(vl, scene_inputs="both", scene_dim=16, scene_layers=1, bev_height=16, bev_width=16,
                                       risk_heads=2, risk_points=2, lift_heights=[0.5, 1.5], min_pixels=28 * 28 * 4,
                                       max_pixels=28 * 28 * 12).eval()
    proc = StudentProcessor(vproc.tokenizer, model.config, max_prompt_tokens=64, max_reasoning_tokens=48,
                            image_processor=vproc.image_processor)
    batch = proc([s.inputs for s in samples])
    calls = []
    handle = model.bev_lift.register_forward_hook(lambda *a: calls.append(1))
    full = model.plan(batch)
    lean = model.plan(batch, risk_map=False)
    handle.remove()
    _assert_same_plan(full, lean)
    assert len(calls) == 1  # the lift ran for the full plan only
