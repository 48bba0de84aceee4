"""The camera student: a tiny Qwen2.5-VL backbone reading the real cameras of nuScenes sample 0061 (and
DriveLM keyframes), the shared planning / meta-action / reasoning heads, and the RiskHead on the
PV -> BEV lift. Gradients on both paths, what it may read, missing cameras, exact save / load, LoRA,
generation positions, and the distill recipe (tiny-vl, and the 3B QLoRA yaml on a tiny stand-in)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_student import one_thread  # noqa: F401
from helpers_vlm import DRIVELM, NUSCENES_INFO, drivelm_keyframe_sample, nuscenes_sample_0061

from dsdrive.annotation.annotators.rule import RuleAnnotator
from dsdrive.student import StudentModel, StudentProcessor
from dsdrive.student.lora import apply_lora, freeze_vision_tower, merge_lora
from dsdrive.student.tiny_vl import build_tiny_qwen_vl

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (NUSCENES_INFO.is_file() and DRIVELM.is_dir()), reason="real camera samples not found")]

ROOT = Path(__file__).resolve().parents[1]
PIXELS = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 12)  # 3 x 4 tokens per camera: fast


@pytest.fixture(scope="module")
def samples():
    s = nuscenes_sample_0061()
    s.annotation = RuleAnnotator().annotate([s])[0].model_dump(mode="json")
    return [s, drivelm_keyframe_sample(0)]


def camera_student(samples, scene_inputs="cameras", vision_tower="train", **kw):
    from dsdrive.student.tokenizer import student_corpus

    vl, proc = build_tiny_qwen_vl(None, corpus=student_corpus(samples), vocab_size=300, hidden_size=32, heads=2, kv_heads=2)
    model = StudentModel.from_backbone(vl, scene_inputs=scene_inputs, vision_tower=vision_tower, scene_dim=16, scene_layers=1,
                                       bev_height=16, bev_width=16, risk_heads=2, risk_points=2, lift_heights=[0.5, 1.5], **PIXELS, **kw)
    return model, StudentProcessor(proc.tokenizer, model.config, max_prompt_tokens=64, max_reasoning_tokens=48,
                                   image_processor=proc.image_processor)


@pytest.fixture(scope="module")
def student(samples):
    torch.manual_seed(0)
    return camera_student(samples)


def _nonzero(p):
    return p.grad is not None and bool(p.grad.abs().sum() > 0)


def test_every_parameter_on_the_lift_and_query_paths_gets_a_gradient(samples):
    model, proc = camera_student(samples)
    batch = proc(samples)
    assert "agents" not in batch and "map_points" not in batch  # a camera student builds no object input at all
    assert batch["camera_calibrated"].tolist() == [[True] * 6, [False] * 6]  # DriveLM: no calibration, not lifted
    visual = {n: p for n, p in model.named_parameters() if n.startswith("backbone.model.visual.")}
    assert len(visual) > 10

    def grads(*terms):
        model.zero_grad()
        out = model(**batch)
        sum(getattr(out, t) for t in terms).backward()
        return {n for n, p in model.named_parameters() if _nonzero(p)}

    # vision -> lift -> RiskHead
    got = grads("risk_l1")
    lift_path = set(visual) | {n for n, _ in model.named_parameters() if n.startswith(("bev_lift.", "risk_head."))}
    assert not lift_path - got, sorted(lift_path - got)[:5]
    assert not {n for n in got if n.startswith(("waypoint_head.", "planning_queries."))}  # the risk term reaches no planning head
    # vision -> LLM -> planning queries -> waypoint head
    got = grads("waypoint_l1", "mode_ce")
    query_path = set(visual) | {n for n, _ in model.named_parameters() if n.startswith(
        ("camera_embed.", "planning_queries.", "ego_encoder.", "scene_proj.", "backbone.model.language_model.layers."))}
    query_path |= {n for n, _ in model.named_parameters() if n.startswith("waypoint_head.") and "ego_proj" not in n and "gate" not in n}
    assert not query_path - got, sorted(query_path - got)[:5]
    assert not {n for n in got if n.startswith(("bev_lift.", "risk_head."))}
    # two AdamW steps on the whole loss, weight decay 0: every parameter moves (a dead branch would not)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    still = [n for n, p in model.named_parameters() if torch.equal(before[n], p.detach())]
    assert not still, still[:5]


def test_risk_map_reads_the_lifted_calibrated_images(student, samples):
    model, proc = student
    model.eval()
    batch = proc(samples[:1])
    out = model.plan(batch)
    bumped = {**batch, "pixel_values": batch["pixel_values"] + 0.5}
    changed = model.plan(bumped)
    assert not torch.allclose(out.risk_map, changed.risk_map)
    # without calibration the lift sees no camera: the risk map no longer depends on the pixels,
    # while the planning queries still read the vision tokens through the LLM
    blind = {**batch, "camera_calibrated": torch.zeros_like(batch["camera_calibrated"])}
    blind_bumped = {**blind, "pixel_values": bumped["pixel_values"]}
    torch.testing.assert_close(model.plan(blind).risk_map, model.plan(blind_bumped).risk_map)
    assert not torch.allclose(model.plan(blind).mode_waypoints, model.plan(blind_bumped).mode_waypoints)


def test_camera_student_never_reads_ground_truth_boxes(student, samples):
    model, proc = student
    model.eval()
    s = samples[0]
    assert len(s.inputs.agents) == 69
    emptied = dataclasses.replace(s.inputs, agents=type(s.inputs.agents).empty(), map=s.inputs.map)
    a, b = model.plan([s.inputs], proc), model.plan([emptied], proc)
    assert torch.equal(a.waypoints, b.waypoints) and torch.equal(a.risk_map, b.risk_map)
    # the 'both' student does read them
    both, bproc = camera_student(samples, scene_inputs="both")
    both.eval()
    assert "agents" in bproc([s.inputs])
    assert not torch.equal(both.plan([s.inputs], bproc).risk_map, both.plan([emptied], bproc).risk_map)


def test_missing_camera_is_an_error_or_a_mask(samples, student, tmp_path):
    model, proc = student
    s = samples[0].inputs
    no_back = dataclasses.replace(s, cameras=[c for c in s.cameras if c.name != "CAM_BACK"])
    with pytest.raises(ValueError, match=f"sample {s.sample_id}: camera CAM_BACK is missing"):
        proc([no_back])
    gone = dataclasses.replace(s, cameras=[dataclasses.replace(c, image_path=str(tmp_path / "nope.jpg")) if c.name == "CAM_FRONT" else c
                                           for c in s.cameras])
    with pytest.raises(FileNotFoundError, match=f"sample {s.sample_id}: camera CAM_FRONT image_path .*nope.jpg"):
        proc([gone])
    lenient, lproc = camera_student(samples, allow_missing_cameras=True)
    lenient.eval()
    batch = lproc([no_back, gone, s])
    assert batch["camera_mask"].tolist() == [[True, True, True, False, True, True], [False] + [True] * 5, [True] * 6]
    plan = lenient.plan(batch)
    assert torch.isfinite(plan.waypoints).all() and torch.isfinite(plan.risk_map).all()
    # a masked camera is not in the LLM sequence: the plan of a sample does not depend on its placeholder pixels
    one = lproc([no_back])
    k = int(one["image_grid_thw"][:3].prod(-1).sum())
    n = int(one["image_grid_thw"][3].prod())
    poked = one["pixel_values"].clone()
    poked[k : k + n] += 1.0
    torch.testing.assert_close(lenient.plan(one).waypoints, lenient.plan({**one, "pixel_values": poked}).waypoints)


def test_exact_save_load_round_trip_and_the_planner_plans_from_images(student, samples, tmp_path):
    from dsdrive.planners.registry import load_planner

    model, proc = student
    model.eval()
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    planner = load_planner("student", checkpoint=tmp_path)
    ref, new = model.state_dict(), planner.model.state_dict()
    assert ref.keys() == new.keys() and all(torch.equal(ref[k], new[k]) for k in ref)
    xs = [s.inputs for s in samples]
    a, b = model.plan(xs, proc), planner.plan(xs)
    assert torch.equal(a.waypoints, b.waypoints) and torch.equal(a.risk_map, b.risk_map)
    assert torch.equal(proc(xs)["pixel_values"], planner.processor(xs)["pixel_values"])
    traj = planner.compute_trajectories(xs)
    assert traj.shape == (2, 6, 3) and np.isfinite(traj).all()
    planner.max_new_tokens = 4
    _, explanation = planner.plan_and_explain(xs[0])
    assert explanation["risks"] and set(explanation["risks"][0]) == {"x", "y", "risk"}  # cells, not ground-truth agents


def test_greedy_reasoning_with_cache_matches_the_teacher_forced_forward(student, samples):
    """The KV-cache decoding continues the multimodal RoPE positions exactly as one forward over
    [images][ego][prompt][queries][reasoning] numbers them."""
    model, proc = student
    model.eval()
    batch = proc([s.inputs for s in samples])
    with torch.no_grad():
        embeds, mask, _, _, layout = model._prefix(batch)
        _, ids, scores = model.generate_reasoning(embeds, mask, 5, eos_token_id=-1, layout=layout, return_scores=True)
        out = model(**batch, reasoning_ids=ids, reasoning_mask=torch.ones_like(ids, dtype=torch.bool))
    assert ids.shape == (2, 5) and torch.equal(ids, model.explain(batch, max_new_tokens=5, eos_token_id=-1))
    torch.testing.assert_close(scores.float(), out.reasoning_logits, atol=1e-5, rtol=1e-5)


def test_lora_on_the_language_model_and_the_vision_tower(samples, tmp_path):
    model, proc = camera_student(samples, vision_tower="lora")
    pm = apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj", "gate_proj"))
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert any("language_model" in n and "q_proj.lora_A" in n for n in trainable)
    assert any("visual.blocks" in n and "qkv.lora_A" in n for n in trainable)
    assert not any("visual" in n and "mlp" in n for n in trainable)  # the LLM's MLP names never reach the vision tower
    for m in ("ego_encoder", "camera_embed", "bev_lift", "risk_head"):
        assert any(f"{m}.modules_to_save" in n for n in trainable), m
    batch = proc(samples)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}
    for _ in range(2):
        opt.zero_grad()
        pm(**batch).loss.backward()
        opt.step()
    still = [n for n, p in pm.named_parameters() if p.requires_grad and torch.equal(before[n], p.detach())]
    assert not still, still[:5]  # adapters and the fully trained copies all train (none is a dead branch)
    pm.eval()
    plan = pm.plan(batch).waypoints
    merged = merge_lora(pm)
    assert type(merged) is StudentModel
    torch.testing.assert_close(merged.plan(batch).waypoints, plan, atol=1e-5, rtol=1e-5)
    frozen, _ = camera_student(samples, vision_tower="frozen")
    assert freeze_vision_tower(frozen) > 0
    assert not any(p.requires_grad for n, p in frozen.named_parameters() if n.startswith("backbone.model.visual."))
    with pytest.raises(ValueError, match="vision_tower='train'"):
        apply_lora(camera_student(samples, vision_tower="train")[0])


def test_objects_student_keeps_its_inputs_and_config(samples):
    from dsdrive.student import StudentConfig

    cfg = StudentConfig()
    assert cfg.scene_inputs == "objects" and cfg.reads_objects and not cfg.reads_cameras
    with pytest.raises(ValueError, match="scene_inputs"):
        StudentConfig(scene_inputs="lidar")
    with pytest.raises(ValueError, match="cameras"):
        StudentConfig(cameras=["CAM_TOP"])
    model, _ = camera_student(samples)
    with pytest.raises(ValueError, match="image_processor"):
        StudentProcessor(_tok(), model.config)


def _tok():
    from dsdrive.student.tiny_vl import tiny_qwen_vl_tokenizer

    return tiny_qwen_vl_tokenizer()


# ----------------------------------------------------------------------------- the distill recipe
TINY_VL = ("tiny_hidden_size: 32\ntiny_layers: 1\ntiny_heads: 2\nscene_dim: 16\nscene_layers: 1\nbev_size: 16\nrisk_points: 2\n"
           "tokenizer_vocab_size: 300\nmax_prompt_tokens: 64\nmax_reasoning_tokens: 48\nmin_pixels: 3136\nmax_pixels: 9408\n"
           "lift_heights: 0.5,1.5\nper_device_train_batch_size: 1\nnum_threads: 1\ndisable_tqdm: true\nval_scenes: none\n")


@pytest.fixture(scope="module")
def camera_data(samples, tmp_path_factory):
    from dsdrive.data.dataset import save_samples

    d = tmp_path_factory.mktemp("camera") / "planning"
    save_samples(samples[:1], d)
    return d


def test_tiny_vl_recipe_trains_and_the_planner_plans_from_images(camera_data, samples, tmp_path):
    from dsdrive.planners.student import StudentPlanner
    from dsdrive.training import distill

    cfg = tmp_path / "small.yaml"
    cfg.write_text(TINY_VL)
    out = tmp_path / "ckpt"
    rc = distill.main(_merged_args(cfg, camera_data, out))
    assert rc == 0
    report = json.loads((out / "eval_heldout.json").read_text())
    losses = [h["loss"] for h in report["log_history"] if "loss" in h]
    assert len(losses) == 6 and losses[-1] < losses[0]
    planner = StudentPlanner(out)
    assert planner.model.config.scene_inputs == "cameras" and (out / "preprocessor_config.json").is_file()
    traj = planner.compute_trajectories([s.inputs for s in samples])  # the 0061 keyframe and a DriveLM keyframe
    assert traj.shape == (2, 6, 3) and np.isfinite(traj).all()


def _merged_args(small: Path, data: Path, out: Path) -> list[str]:
    """The tiny-vl recipe yaml with the small sizes of ``small`` laid over it (trl reads one --config)."""
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / "configs" / "tiny-vl" / "distill.yaml").read_text())
    recipe.update(yaml.safe_load(small.read_text()))
    merged = small.with_name("merged.yaml")
    merged.write_text(yaml.safe_dump(recipe))
    return ["--config", str(merged), "--data", str(data), "--output_dir", str(out), "--max_steps", "6", "--logging_steps", "1",
            "--learning_rate", "0.003", "--warmup_steps", "0"]


def test_qwen2_5_vl_3b_qlora_yaml_on_a_tiny_standin(camera_data, tmp_path):
    pytest.importorskip("bitsandbytes")
    from safetensors.torch import load_file

    from dsdrive.planners.student import StudentPlanner
    from dsdrive.training import distill

    bb = tmp_path / "qwen2.5-vl-standin"
    build_tiny_qwen_vl(bb, **PIXELS)
    out = tmp_path / "qlora"
    rc = distill.main(["--config", str(ROOT / "recipes" / "configs" / "qwen2.5-vl-3b" / "distill_qlora.yaml"), "--backbone_path", str(bb),
                       "--max_steps", "2", "--data", str(camera_data), "--output_dir", str(out), "--val_scenes", "none",
                       "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1", "--eval_strategy", "no",
                       "--save_strategy", "no", "--dataloader_num_workers", "0", "--learning_rate", "0.01", "--bf16", "false",
                       "--num_threads", "1", "--disable_tqdm", "true", "--max_prompt_tokens", "64", "--max_reasoning_tokens", "48",
                       "--min_pixels", str(PIXELS["min_pixels"]), "--max_pixels", str(PIXELS["max_pixels"]),
                       "--scene_dim", "16", "--bev_size", "16"])
    assert rc == 0
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32
    planner = StudentPlanner(out)  # the adapters merged into a full-precision copy: a plain camera StudentModel
    lm_q = planner.model.backbone.get_decoder().layers[0].self_attn.q_proj
    vis_qkv = planner.model.backbone.model.visual.blocks[0].attn.qkv
    assert type(lm_q) is torch.nn.Linear and lm_q.weight.dtype == torch.float32 and type(vis_qkv) is torch.nn.Linear
    base = load_file(bb / "model.safetensors")  # saved in the hub layout (model.layers.*, visual.*)
    assert not torch.equal(lm_q.weight.detach(), base["model.layers.0.self_attn.q_proj.weight"])
    assert not torch.equal(vis_qkv.weight.detach(), base["visual.blocks.0.attn.qkv.weight"])  # vision LoRA merged too
    traj = planner.compute_trajectories([nuscenes_sample_0061().inputs])
    assert traj.shape == (1, 6, 3) and np.isfinite(traj).all()


@pytest.mark.parametrize("kw, match", [
    (dict(scene_inputs="lidar"), "scene_inputs='lidar'"),
    (dict(scene_inputs="cameras", vision_tower="lora"), "vision_tower='lora' needs use_lora"),
    (dict(scene_inputs="cameras", vision_tower="train", use_lora=True), "vision_tower='train' cannot"),
    (dict(scene_inputs="cameras", cameras="CAM_FRONT,CAM_TOP"), "cameras='CAM_FRONT,CAM_TOP'"),
    (dict(scene_inputs="cameras", lift_heights="low,high"), "lift_heights='low,high'"),
    (dict(scene_inputs="cameras", min_pixels=5000, max_pixels=4000), "min_pixels=5000"),
])
def test_bad_camera_settings_fail_naming_field_and_value(tmp_path, kw, match):
    from dsdrive.training.distill_config import DistillConfig

    with pytest.raises(ValueError, match=match):
        DistillConfig(output_dir=str(tmp_path), **kw)
    ok = DistillConfig(output_dir=str(tmp_path), scene_inputs="cameras", cameras="CAM_FRONT,CAM_BACK", lift_heights="0.5,1.5")
    assert ok.student_config_kwargs()["cameras"] == ["CAM_FRONT", "CAM_BACK"] and ok.student_config_kwargs()["lift_heights"] == [0.5, 1.5]
