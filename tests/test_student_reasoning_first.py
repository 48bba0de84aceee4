"""Reasoning-first student (``StudentConfig.sequence_order``): [scene][prompt][reasoning][queries].

The queries read the reasoning (and only in this order), padding never reaches a query, training
moves every parameter, save/load is exact, plan() generates and then plans (deterministically, and
equal to the teacher-forced forward over the generated reasoning), and the distill stage trains one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_student import make_inputs, make_samples, tiny_student, one_thread  # noqa: F401

from dsdrive.data.dataset import save_samples
from dsdrive.student import StudentConfig, StudentModel
from dsdrive.student.modeling_student import until_first_eos

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rf():
    model, proc = tiny_student(sequence_order="reasoning_first", max_new_tokens=6)
    return model.eval(), proc


def _perturbed(batch, row: int, col: int):
    out = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
    out["reasoning_ids"][row, col] = (out["reasoning_ids"][row, col] + 1) % 300
    return out


@pytest.mark.parametrize("order", ["plan_first", "reasoning_first"])
def test_queries_read_the_reasoning_only_when_it_comes_first(order):
    model, proc = tiny_student(sequence_order=order)
    model.eval()
    batch = proc(make_samples(3)[:2])
    assert bool(batch["reasoning_mask"][0, 3])
    with torch.no_grad():
        a, b = model(**batch), model(**_perturbed(batch, 0, 3))
    if order == "reasoning_first":
        assert (a.waypoints[0] - b.waypoints[0]).abs().max() > 1e-6
        assert (a.query_states[0] - b.query_states[0]).abs().max() > 1e-6
        torch.testing.assert_close(a.waypoints[1], b.waypoints[1], rtol=0, atol=1e-6)  # rows stay apart
    else:  # causal: the queries come before the reasoning
        torch.testing.assert_close(a.waypoints, b.waypoints, rtol=0, atol=0)
        torch.testing.assert_close(a.mode_logits, b.mode_logits, rtol=0, atol=0)


def test_padding_a_batch_does_not_change_a_row(rf):
    model, proc = rf
    samples = make_samples(3)
    first, other = proc.encode_sample(samples[0]), proc.encode_sample(samples[1])
    other["prompt_ids"] = np.concatenate([other["prompt_ids"], other["prompt_ids"][:7]])  # a longer prompt
    alone = proc([first])
    batch = proc([first, other])  # other prompt and reasoning lengths -> pads in row 0
    pad = torch.full((2, 9), proc.tokenizer.pad_token_id)
    batch["reasoning_ids"] = torch.cat([batch["reasoning_ids"], pad], 1)
    batch["reasoning_mask"] = torch.cat([batch["reasoning_mask"], torch.zeros(2, 9, dtype=torch.bool)], 1)
    assert not bool(batch["prompt_mask"].all()) and not bool(batch["reasoning_mask"][0].all())
    with torch.no_grad():
        one, two = model(**alone), model(**batch)
    for k in ("waypoints", "mode_logits", "query_states", "meta_action_logits"):
        torch.testing.assert_close(getattr(two, k)[0], getattr(one, k)[0], atol=1e-5, rtol=1e-5)
    r = alone["reasoning_ids"].shape[1]
    torch.testing.assert_close(two.reasoning_logits[0, :r], one.reasoning_logits[0], atol=1e-4, rtol=1e-4)


def test_first_reasoning_token_is_read_at_the_last_real_prompt_token(rf):
    model, proc = rf
    a, b = (proc.encode_sample(s) for s in make_samples(2))
    b["prompt_ids"] = b["prompt_ids"][:-5]  # row 1's prompt is shorter
    batch = proc([a, b])
    short = int(batch["prompt_mask"].sum(1).argmin())
    assert not bool(batch["prompt_mask"][short].all())  # that row's prompt is right-padded
    with torch.no_grad():
        out = model(**batch)
        _, ids = model.plan_and_explain({k: v for k, v in batch.items()}, max_new_tokens=1, eos_token_id=-1)
    # greedy = argmax of the teacher-forced logits at j = 0
    assert torch.equal(out.reasoning_logits[:, 0].argmax(-1), ids[:, 0])


def test_two_steps_change_every_trainable_parameter():
    model, proc = tiny_student(sequence_order="reasoning_first")
    model.train()
    batch = proc(make_samples(6))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)  # no decay: a change means a gradient
    for _ in range(2):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(before[n], p.detach())]
    assert not unchanged, unchanged


def test_save_load_exact_round_trip(tmp_path, rf):
    model, proc = rf
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["sequence_order"] == "reasoning_first"
    loaded = StudentModel.from_pretrained(tmp_path, local_files_only=True).eval()
    assert loaded.config.reasoning_first and loaded.config.max_new_tokens == 6
    batch = proc(make_samples(4))
    a, b = model.plan(batch), loaded.plan(batch)
    for k in ("waypoints", "mode_waypoints", "mode_scores", "risk_map"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).loss, loaded(**batch).loss, rtol=0, atol=0)


def _teacher_forced(model, proc, xs, ids, eos):
    batch = proc(xs)
    batch["reasoning_ids"], batch["reasoning_mask"] = ids, until_first_eos(ids, eos)
    with torch.no_grad():
        return model(**batch)


def test_plan_generates_then_plans_deterministically(rf):
    model, proc = rf
    xs = [make_inputs("a"), make_inputs("b", speed=2.0, n_agents=1)]
    calls = []
    handle = model.backbone.get_decoder().register_forward_hook(lambda *a: calls.append(1))
    try:
        p1 = model.plan(xs, proc)
    finally:
        handle.remove()
    assert len(calls) > 2  # prefix, generated tokens, then the queries: not one forward pass
    p2 = model.plan(xs, proc)
    torch.testing.assert_close(p1.waypoints, p2.waypoints, rtol=0, atol=0)
    both, ids = model.plan_and_explain(xs, proc)
    torch.testing.assert_close(both.waypoints, p1.waypoints, rtol=0, atol=0)
    assert ids.shape[0] == 2 and ids.shape[1] <= model.config.max_new_tokens
    eos = model.backbone.config.eos_token_id
    tf = _teacher_forced(model, proc, xs, ids, eos)
    torch.testing.assert_close(tf.query_states, _query_states(model, proc, xs, None, eos), atol=1e-5, rtol=1e-5)


def _query_states(model, proc, xs, max_new_tokens, eos):
    grabbed = []
    handle = model.waypoint_head.register_forward_hook(lambda m, args, out: grabbed.append(args[0]))
    try:
        model.plan_and_explain(xs, proc, max_new_tokens=max_new_tokens, eos_token_id=eos)
    finally:
        handle.remove()
    return grabbed[-1]


@pytest.mark.parametrize("case", ["one_row_stops", "rows_stop_apart"])
def test_plan_reads_the_reasoning_up_to_each_rows_eos(rf, case):
    """The queries appended to the KV cache equal the teacher-forced forward over the generated
    reasoning cut at each row's first eos (later ids masked), whether or not every row stopped."""
    model, proc = rf
    xs = [make_inputs("a"), make_inputs("b", speed=2.0, n_agents=1)]
    if case == "one_row_stops":
        xs = xs[:1]
    _, free = model.plan_and_explain(xs, proc, max_new_tokens=6, eos_token_id=-1)
    # an "eos" that row 0 generates at step j, and the other row never: row 0 stops, the other goes on
    j = next(j for j in range(1, 5) if int(free[0, j]) not in free[0, :j].tolist() + free[1:].flatten().tolist())
    eos = int(free[0, j])
    _, ids = model.plan_and_explain(xs, proc, max_new_tokens=6, eos_token_id=eos)
    keep = until_first_eos(ids, eos)
    assert int(keep[0].sum()) == j + 1
    assert ids.shape[1] == (j + 1 if case == "one_row_stops" else 6)  # rows_stop_apart: row 0 has ids after its eos
    tf = _teacher_forced(model, proc, xs, ids, eos)
    torch.testing.assert_close(_query_states(model, proc, xs, 6, eos), tf.query_states, atol=1e-5, rtol=1e-5)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="sequence_order"):
        StudentConfig(sequence_order="queries_last")
    with pytest.raises(ValueError, match="max_new_tokens"):
        StudentConfig(max_new_tokens=0)
    assert StudentConfig().sequence_order == "plan_first"


def test_distill_cli_trains_a_reasoning_first_student(tmp_path):
    from dsdrive.planners.student import StudentPlanner
    from dsdrive.training import distill

    samples = make_samples(9)
    for i, s in enumerate(samples):
        s.inputs.scene_id = f"scene-{i % 3}"
    save_samples(samples, tmp_path / "data")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tiny_hidden_size: 32\ntiny_layers: 1\nscene_dim: 16\nscene_layers: 1\nbev_size: 16\nrisk_points: 2\n"
                   "tokenizer_vocab_size: 300\nmax_steps: 2\nper_device_train_batch_size: 4\nreport_to: none\nsave_strategy: 'no'\n"
                   "max_reasoning_tokens: 24\ndisable_tqdm: true\n")
    out = tmp_path / "ckpt"
    rc = distill.main(["--config", str(cfg), "--data", str(tmp_path / "data"), "--output_dir", str(out), "--val_scenes", "scene-2",
                       "--use_cpu", "true", "--sequence_order", "reasoning_first"])
    assert rc == 0
    report = json.loads((out / "eval_heldout.json").read_text())
    assert report["open_loop"]["num_evaluated"] == 3
    planner = StudentPlanner(out)
    assert planner.model.config.reasoning_first and planner.max_new_tokens == 24
    xs = [s.inputs for s in samples[2::3]]
    wp = planner.compute_trajectories(xs)
    out_, texts = planner.plan_and_explain_batch(xs)
    assert wp.shape == (3, 6, 3) and len(texts) == 3
    torch.testing.assert_close(torch.from_numpy(wp), out_.waypoints.float(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="sequence_order"):
        distill.main(["--config", str(cfg), "--data", str(tmp_path / "data"), "--output_dir", str(out), "--sequence_order", "last"])


def test_bench_student_times_the_reasoning_first_plan(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
    import bench_student

    save_samples(make_samples(4), tmp_path / "data")
    argv = ["--data", str(tmp_path / "data"), "--only", "latency", "--hidden", "32", "--layers", "1", "--heads", "2",
            "--samples", "1", "--reps", "1", "--sequence-order", "reasoning_first"]
    assert bench_student.main(argv) == 0
    out = capsys.readouterr().out
    line = out.splitlines()[1]
    assert line.startswith("reasoning-first plan() vs plan-first plan(): ") and "reasoning tokens generated" in line
    rep = json.loads(out[out.index("{"):])["latency_reasoning_first"]
    assert rep["reasoning_tokens_median"] > 1 and rep["ratio_reasoning_first_over_plan_first"] > 0


def test_camera_student_reasoning_first_plans_from_its_generated_reasoning():
    """Multimodal RoPE positions: the queries appended after generation equal the teacher-forced
    forward over the same reasoning (real camera sample 0061 + a DriveLM keyframe)."""
    from helpers_vlm import DRIVELM, NUSCENES_INFO, drivelm_keyframe_sample, nuscenes_sample_0061

    if not (NUSCENES_INFO.is_file() and DRIVELM.is_dir()):
        pytest.skip("real camera samples not found")
    from dsdrive.annotation.annotators.rule import RuleAnnotator
    from dsdrive.student import StudentProcessor
    from dsdrive.student.tiny_vl import build_tiny_qwen_vl
    from dsdrive.student.tokenizer import student_corpus

    s = nuscenes_sample_0061()
    s.annotation = RuleAnnotator().annotate([s])[0].model_dump(mode="json")
    samples = [s, drivelm_keyframe_sample(0)]
    torch.manual_seed(0)
    vl, vproc = build_tiny_qwen_vl(None, corpus=student_corpus(samples), vocab_size=300, hidden_size=32, heads=2, kv_heads=2)
    model = StudentModel.from_backbone(vl, scene_inputs="cameras", scene_dim=16, scene_layers=1, bev_height=16, bev_width=16,
                                       risk_heads=2, risk_points=2, lift_heights=[0.5, 1.5], min_pixels=28 * 28 * 4,
                                       max_pixels=28 * 28 * 12, sequence_order="reasoning_first", max_new_tokens=5).eval()
    proc = StudentProcessor(vproc.tokenizer, model.config, max_prompt_tokens=64, max_reasoning_tokens=48,
                            image_processor=vproc.image_processor)
    xs = [x.inputs for x in samples]
    grabbed = []
    handle = model.waypoint_head.register_forward_hook(lambda m, args, out: grabbed.append(args[0]))
    try:
        _, ids = model.plan_and_explain(xs, proc, eos_token_id=-1)
    finally:
        handle.remove()
    batch = proc(xs)
    batch["reasoning_ids"], batch["reasoning_mask"] = ids, torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        tf = model(**batch)
    torch.testing.assert_close(grabbed[-1], tf.query_states, atol=1e-5, rtol=1e-5)
