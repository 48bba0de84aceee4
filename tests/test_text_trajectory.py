"""The text-trajectory VLA baseline (GPT-Driver / EvoDriveVLA waypoints as text) on the camera student's
tiny Qwen2.5-VL and the real cameras of nuScenes sample 0061: the text format round-trips, the
processor reads the camera student's pixels and prompt, two training steps move every trainable
parameter, losses accumulate exactly, the recipe trains and plans, save / load is exact, QLoRA keeps
the embeddings in bf16, and bad settings fail naming the field."""

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
from dsdrive.geometry import trajectory_yaw
from dsdrive.student.text_trajectory_vla import (
    TextTrajectoryProcessor,
    TextTrajectorySettings,
    TextTrajectoryVLA,
    format_trajectory,
    parse_trajectory,
)
from dsdrive.training.text_trajectory_config import TextTrajectoryConfig
from dsdrive.training.text_trajectory_trainer import TextTrajectoryItems, TextTrajectoryTrainer, answer_window, trajectory_token_ce

ROOT = Path(__file__).resolve().parents[1]
PIXELS = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 12)  # 3 x 4 tokens per camera: fast
SMALL = dict(tiny_hidden_size=32, tiny_layers=1, tiny_heads=2, tokenizer_vocab_size=300, **PIXELS)
real_data = pytest.mark.skipif(not (NUSCENES_INFO.is_file() and DRIVELM.is_dir()), reason="real camera samples not found")
pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- text format
def test_trajectory_text_round_trips_to_a_centimetre():
    rng = np.random.default_rng(0)
    trajs = [rng.uniform(-99, 99, (6, 2)) for _ in range(200)] + [np.zeros((6, 2)), np.full((6, 2), -0.004)]
    for xy in trajs:
        text = format_trajectory(xy)
        back = parse_trajectory(text)
        assert back is not None and back.shape == (6, 3) and back.dtype == np.float32, text
        np.testing.assert_allclose(back[:, :2], xy, atol=0.005 + 1e-4)
        np.testing.assert_allclose(back[:, 2], trajectory_yaw(back[:, :2].astype(np.float64)), atol=1e-6)
    assert format_trajectory(np.full((6, 2), -0.004)) == "[" + ",".join(["(0.00,0.00)"] * 6) + "]"  # no -0.00
    text = format_trajectory(np.column_stack([np.arange(1, 7) * 4.5, np.linspace(0, -1.25, 6), np.zeros(6)]))  # heading column ignored
    assert text == "[(4.50,0.00),(9.00,-0.25),(13.50,-0.50),(18.00,-0.75),(22.50,-1.00),(27.00,-1.25)]"
    assert parse_trajectory(f"Plan: {text}<|im_end|> trailing") is not None  # the first bracketed list counts


@pytest.mark.parametrize("text", ["", "go straight", "[(1.0,2.0)]", "[" + ",".join(["(1,2)"] * 7) + "]", "[(1,2),(3,4),(5,6)",
                                  "[(1,2),(3,4),(5,6),(7,8),(9,10),(x,1)]", "(1,2),(3,4),(5,6),(7,8),(9,10),(11,12)"])
def test_a_bad_answer_is_a_parse_failure(text):
    assert parse_trajectory(text) is None


def test_bad_waypoints_cannot_be_formatted():
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        format_trajectory(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        format_trajectory(np.array([[np.nan, 0.0]] * 6))
    with pytest.raises(FileNotFoundError, match="trajectory/v99.jinja"):
        format_trajectory(np.zeros((6, 2)), version="v99")


# ----------------------------------------------------------------------------- processor and model
@pytest.fixture(scope="module")
def samples():
    s = nuscenes_sample_0061()
    s.annotation = RuleAnnotator().annotate([s])[0].model_dump(mode="json")
    return [s, drivelm_keyframe_sample(0)]


def tiny_vla(samples, seed=0):
    from dsdrive.student.text_trajectory_vla import split_digits
    from dsdrive.student.tiny_vl import build_tiny_qwen_vl
    from dsdrive.student.tokenizer import student_corpus

    corpus = student_corpus(samples) + [format_trajectory(samples[0].targets.ego_future)]
    vl, proc = build_tiny_qwen_vl(None, corpus=corpus, vocab_size=300, hidden_size=32, heads=2, kv_heads=2, layers=1, seed=seed, **PIXELS)
    split_digits(proc.tokenizer)
    return vl, TextTrajectoryProcessor(proc.tokenizer, proc.image_processor, TextTrajectorySettings(**PIXELS, max_new_tokens=8))


@real_data
def test_processor_reads_the_camera_students_pixels_and_prompt(samples):
    from dsdrive.student import StudentModel, StudentProcessor

    vl, tp = tiny_vla(samples)
    student = StudentModel.from_backbone(vl, scene_inputs="cameras", scene_dim=16, bev_height=16, bev_width=16, risk_heads=2, risk_points=2,
                                         **PIXELS)
    sp = StudentProcessor(tp.tokenizer, student.config, 256, 64, image_processor=tp.image_processor)
    xs = [s.inputs for s in samples]
    tb, sb = tp(samples[:1]), sp(xs)
    assert torch.equal(tp(xs)["pixel_values"], sb["pixel_values"]) and torch.equal(tp(xs)["image_grid_thw"], sb["image_grid_thw"])
    pad = tp.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((tb["input_ids"] == pad).sum()) == int(tb["image_grid_thw"].prod(-1).sum()) // 4  # one pad per merged token
    text = tp.tokenizer.decode(tb["input_ids"][0])
    assert tp.prompt_text(samples[0].inputs) in text and all(f"{c}:<|vision_start|>" in text for c in tp.settings.cameras)
    answer = tb["labels"][0][tb["labels"][0] != -100]
    assert tp.tokenizer.decode(answer) == format_trajectory(samples[0].targets.ego_future) + "<|im_end|>"
    assert int(tb["labels"][0, -1]) == tp.tokenizer.eos_token_id  # left-padded: every answer ends the row
    with pytest.raises(ValueError, match="ego_future_mask"):
        tp(samples[1:])  # DriveLM: no future, no target
    s = samples[0].inputs
    no_back = dataclasses.replace(s, cameras=[c for c in s.cameras if c.name != "CAM_BACK"])
    with pytest.raises(ValueError, match=f"sample {s.sample_id}: camera CAM_BACK is missing"):
        tp([no_back])
    lenient = TextTrajectoryProcessor(tp.tokenizer, tp.image_processor, TextTrajectorySettings(**PIXELS, allow_missing_cameras=True))
    b = lenient([no_back])
    assert b["image_grid_thw"].shape[0] == 5 and "CAM_BACK:" not in lenient.tokenizer.decode(b["input_ids"][0])
    assert int((b["input_ids"] == pad).sum()) == int(b["image_grid_thw"].prod(-1).sum()) // 4


def _train_config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), max_steps=2, learning_rate=1e-2, weight_decay=0.0, warmup_steps=0, lora_dropout=0.0,
                per_device_train_batch_size=1, use_cpu=True, report_to="none", logging_steps=1, save_strategy="no", disable_tqdm=True, **SMALL)
    return TextTrajectoryConfig(**{**base, **kw})


@real_data
@pytest.mark.parametrize("kw", [dict(use_lora=True, vision_tower="lora"), dict(use_lora=False, vision_tower="train")])
def test_two_steps_move_every_trainable_parameter(samples, tmp_path, kw):
    from dsdrive.training.text_trajectory import apply_vla_lora, build_vla

    args = _train_config(tmp_path, **kw)
    model, proc = build_vla(args, samples[:1])
    if args.use_lora:
        model = apply_vla_lora(model, args)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    if args.use_lora:
        assert trainable and all("lora_" in n for n in trainable)
        assert any("visual.blocks" in n and "qkv.lora_A" in n for n in trainable)
        assert not any("visual" in n and "mlp" in n for n in trainable)  # the LLM's MLP names never reach the vision tower
    else:
        assert len(trainable) == sum(1 for _ in model.parameters())
    trainer = TextTrajectoryTrainer(model=model, args=args, train_dataset=TextTrajectoryItems(samples[:1], proc), data_collator=proc.collate)
    trainer.train()
    still = [n for n, p in model.named_parameters() if n in trainable and torch.equal(trainable[n], p.detach())]
    assert not still, still[:5]
    losses = [h["trajectory_ce"] for h in trainer.state.log_history if "trajectory_ce" in h and "train_runtime" not in h]
    assert len(losses) == 2 and all(np.isfinite(losses))


@real_data
def test_loss_accumulates_exactly_over_left_padded_micro_batches(samples):
    """Batch 2 x 1 == batch 1 x 2 (gradient accumulation): the sum over the count of label tokens,
    and left padding changes no logit (the rope positions skip the pads)."""
    vl, tp = tiny_vla(samples)
    short = dataclasses.replace(samples[0], targets=dataclasses.replace(samples[0].targets, ego_future=samples[0].targets.ego_future * 0.1))
    pair = [samples[0], short]
    assert len(tp.encode_sample(pair[0])["answer_ids"]) != len(tp.encode_sample(pair[1])["answer_ids"])

    def grads(batches, n_items):
        vl.zero_grad()
        for b in batches:
            k = answer_window(b["labels"])
            out = vl(**{k_: v for k_, v in b.items() if k_ != "labels"}, logits_to_keep=k)
            trajectory_token_ce(out.logits, b["labels"][:, -k:], n_items)[0].backward()
        return {n: p.grad.clone() for n, p in vl.named_parameters() if p.grad is not None}

    full = tp(pair)
    n = int((full["labels"][:, 1:] != -100).sum())
    a, b = grads([full], n), grads([tp(pair[:1]), tp(pair[1:])], n)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- recipe, planner, save / load
TINY_OVERLAY = {**SMALL, "max_new_tokens": 8, "per_device_train_batch_size": 1, "num_threads": 1, "disable_tqdm": True, "val_scenes": "none"}


@pytest.fixture(scope="module")
def camera_data(samples, tmp_path_factory):
    from dsdrive.data.dataset import save_samples

    d = tmp_path_factory.mktemp("camera")
    save_samples(samples, d / "planning")  # 0061 (future) + a DriveLM keyframe (skipped: no future)
    return d / "planning"


def _recipe_args(tmp_path, data, out, **extra) -> list[str]:
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / "configs" / "tiny-vl" / "text_trajectory.yaml").read_text())
    recipe.update({**TINY_OVERLAY, **extra})
    cfg = tmp_path / "merged.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    return ["--config", str(cfg), "--data", str(data), "--output_dir", str(out), "--max_steps", "3", "--logging_steps", "1",
            "--warmup_steps", "0"]


@real_data
def test_tiny_vl_recipe_trains_and_the_planner_plans_from_the_real_cameras(camera_data, samples, tmp_path, capsys):
    from dsdrive.planners.registry import load_planner
    from dsdrive.training import text_trajectory

    out = tmp_path / "ckpt"
    assert text_trajectory.main(_recipe_args(tmp_path, camera_data, out)) == 0
    assert "1 samples of" in capsys.readouterr().out  # the DriveLM keyframe has no future: counted and skipped
    report = json.loads((out / "eval_heldout.json").read_text())
    assert len([h for h in report["log_history"] if "trajectory_ce" in h and "train_runtime" not in h]) == 3
    planner = load_planner("text_trajectory_vla", checkpoint=out)
    xs = [s.inputs for s in samples]
    traj = planner.compute_trajectories(xs)
    assert traj.shape == (2, 6, 3) and traj.dtype == np.float32 and np.isfinite(traj).all()
    raw = planner.vla.plan(xs)
    stats = planner.parse_stats
    assert stats["planned"] == 2 and stats["parse_failures"] == int((~raw.parsed).sum())
    assert stats["parse_failure_rate"] == stats["parse_failures"] / 2 and len(stats["failures"]) == stats["parse_failures"]
    for i in np.flatnonzero(~raw.parsed):  # a failed parse gets the constant-velocity plan of its inputs
        np.testing.assert_allclose(traj[i], planner.fallback.compute_trajectory(xs[i]))


@real_data
def test_exact_save_load_round_trip(samples, tmp_path):
    from dsdrive.planners.registry import load_planner
    from dsdrive.training.text_trajectory import apply_vla_lora, build_vla

    args = _train_config(tmp_path)
    model, proc = build_vla(args, samples[:1])
    model = apply_vla_lora(model, args)
    TextTrajectoryTrainer(model=model, args=args, train_dataset=TextTrajectoryItems(samples[:1], proc), data_collator=proc.collate).train()
    vla = TextTrajectoryVLA(model.merge_and_unload().eval(), proc)
    vla.save_pretrained(tmp_path / "ckpt")
    planner = load_planner("text_trajectory_vla", checkpoint=tmp_path / "ckpt")
    ref, new = vla.model.state_dict(), planner.vla.model.state_dict()
    assert ref.keys() == new.keys() and all(torch.equal(ref[k], new[k]) for k in ref)
    assert planner.vla.processor.settings == proc.settings
    xs = [s.inputs for s in samples]
    assert torch.equal(vla.processor(xs)["input_ids"], planner.vla.processor(xs)["input_ids"])
    assert torch.equal(vla.plan(xs).ids, planner.vla.plan(xs).ids)


@real_data
def test_overfitted_baseline_writes_the_future_and_the_planner_parses_it(samples, tmp_path):
    """Fully fine-tuned on the one 0061 keyframe, greedy decoding reproduces its future as text: the
    parse path (not the fallback) gives the plan, to the 0.01 m of the format."""
    from dsdrive.planners.text_trajectory import TextTrajectoryPlanner
    from dsdrive.training.text_trajectory import build_vla

    args = _train_config(tmp_path, use_lora=False, vision_tower="train", max_steps=60, learning_rate=1e-2, max_new_tokens=96,
                         tiny_hidden_size=64, tiny_heads=4)
    model, proc = build_vla(args, samples[:1])
    TextTrajectoryTrainer(model=model, args=args, train_dataset=TextTrajectoryItems(samples[:1], proc), data_collator=proc.collate).train()
    TextTrajectoryVLA(model.eval(), proc).save_pretrained(tmp_path / "ckpt")
    planner = TextTrajectoryPlanner(tmp_path / "ckpt")
    traj = planner.compute_trajectories([samples[0].inputs])
    assert planner.parse_stats["parse_failures"] == 0, planner.parse_stats
    future = samples[0].targets.ego_future
    np.testing.assert_allclose(traj[0, :, :2], future[:, :2], atol=0.005 + 1e-4)
    np.testing.assert_allclose(traj[0, :, 2], trajectory_yaw(np.round(future[:, :2].astype(np.float64), 2)), atol=1e-5)


@real_data
def test_qlora_recipe_on_a_tiny_standin_keeps_embeddings_bf16_and_exports_full_precision(camera_data, samples, tmp_path):
    pytest.importorskip("bitsandbytes")
    from dsdrive.planners.text_trajectory import TextTrajectoryPlanner
    from dsdrive.student.backbone import load_backbone
    from dsdrive.student.lora import prepare_kbit_model
    from dsdrive.student.tiny_vl import build_tiny_qwen_vl
    from dsdrive.training import text_trajectory

    bb = tmp_path / "standin"
    build_tiny_qwen_vl(bb, **PIXELS)
    q = load_backbone(bb, quantization="4bit")
    kept = prepare_kbit_model(q, q)
    emb = q.get_input_embeddings().weight
    assert kept == emb.numel() + q.get_output_embeddings().weight.numel() and emb.dtype == torch.bfloat16  # untied: both kept
    assert all(p.dtype == torch.float32 for n, p in q.named_parameters() if "norm" in n)
    out = tmp_path / "qlora"
    assert text_trajectory.main(_recipe_args(tmp_path, camera_data, out, backbone_path=str(bb), quantization="4bit", use_lora=True,
                                                  vision_tower="lora")) == 0
    assert (out / "adapter" / "adapter_config.json").is_file()
    planner = TextTrajectoryPlanner(out)
    q_proj = planner.vla.model.model.language_model.layers[0].self_attn.q_proj
    assert type(q_proj) is torch.nn.Linear and q_proj.weight.dtype == torch.float32  # merged into a full-precision reload
    assert np.isfinite(planner.compute_trajectories([samples[0].inputs])).all()


def test_student_qlora_keeps_the_tied_embedding_bf16(tmp_path):
    """The object-token student's QLoRA (issue 16): the tied 4-bit-model embedding stays bf16 and frozen,
    the norms go to fp32, and the loss still trains every adapter and head."""
    pytest.importorskip("bitsandbytes")
    from helpers_student import make_samples, tiny_student

    from dsdrive.student import StudentModel
    from dsdrive.student.backbone import build_tiny_backbone, load_backbone
    from dsdrive.student.lora import apply_lora

    _, proc = tiny_student()
    build_tiny_backbone(proc.tokenizer, tmp_path / "bb", hidden_size=64, layers=1, tie_word_embeddings=True)
    bb = load_backbone(tmp_path / "bb", quantization="4bit")
    cfg = proc.config
    pm = apply_lora(StudentModel.from_backbone(bb, scene_dim=cfg.scene_dim, scene_heads=cfg.scene_heads, scene_layers=1, max_agents=cfg.max_agents,
                                               max_map=cfg.max_map, bev_height=cfg.bev_height, bev_width=cfg.bev_width, risk_heads=2,
                                               risk_points=2), r=4, alpha=8, quantization="4bit")
    emb = pm.get_base_model().backbone.get_input_embeddings().weight
    assert emb.dtype == torch.bfloat16 and not emb.requires_grad and emb is pm.get_base_model().backbone.get_output_embeddings().weight
    out = pm(**proc(make_samples(4)))
    out.loss.backward()
    assert torch.isfinite(out.loss.detach()) and out.reasoning_ce is not None
    assert all(p.grad is not None for p in pm.parameters() if p.requires_grad)


@pytest.mark.parametrize("kw, match", [
    (dict(vision_tower="lora", use_lora=False), "vision_tower='lora' needs use_lora"),
    (dict(vision_tower="train", use_lora=True), "vision_tower='train' cannot"),
    (dict(quantization="4bit", use_lora=False), "quantization='4bit' needs use_lora"),
    (dict(quantization="2bit"), "quantization='2bit'"),
    (dict(cameras="CAM_FRONT,CAM_TOP"), "cameras=\\['CAM_FRONT', 'CAM_TOP'\\]"),
    (dict(min_pixels=5000, max_pixels=4000), "min_pixels=5000"),
    (dict(lora_target_modules=" , "), "lora_target_modules"),
    (dict(backbone_path="/nonexistent/vlm"), "backbone_path='/nonexistent/vlm'"),
])
def test_bad_settings_fail_naming_field_and_value(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        TextTrajectoryConfig(output_dir=str(tmp_path), **kw)
