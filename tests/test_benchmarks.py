"""Smoke tests of the benchmark scripts in ``eval/``: each runs in a tiny configuration, exits 0 and
prints its configuration next to its figures (no timing is asserted: these machines are shared)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers_annotate import make_dataset
from helpers_vlm import DRIVELM, NUSCENES_INFO

from dsdrive.annotation.annotate import main as annotate_main
from dsdrive.annotation.annotate import merge_main

EVAL = Path(__file__).resolve().parents[1] / "eval"
sys.path.insert(0, str(EVAL))


@pytest.fixture(scope="module")
def annotated(tmp_path_factory) -> Path:
    """A small annotated planning dataset (synthetic samples, rule annotator, merged)."""
    d = tmp_path_factory.mktemp("bench_data")
    make_dataset(d / "planning", 8)
    assert annotate_main(["--teacher", "rule", "--data", str(d / "planning"), "--out", str(d / "ann")]) == 0
    assert merge_main(["--data", str(d / "planning"), "--annotations", str(d / "ann"), "--out", str(d / "annotated")]) == 0
    return d


def _report(out: str) -> dict:
    return json.loads(out[out.index("{"):])


def test_bench_student_latency_and_step(annotated, capsys):
    import bench_student

    argv = ["--data", str(annotated / "annotated"), "--only", "latency,step", "--hidden", "32", "--layers", "1", "--heads", "2",
            "--samples", "1", "--batch_size", "2", "--reps", "1", "--topk", "3"]
    assert bench_student.main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    plan, lean, step, kd = lines[:4]
    assert plan.startswith("plan() vs text decoding: text ") and "Qwen2 hidden 32 x 1 layers" in plan
    assert "batch 1" in plan and "generated tokens" in plan and "1 thread(s), cpu" in plan
    assert lean.startswith("plan(risk_map=False) vs text decoding: text ") and "same waypoints" in lean and "batch 1" in lean
    assert step.startswith("distill step / SFT step: ") and "batch 2" in step and "SFT sequence" in step
    assert kd.startswith("distill step with token KD / SFT step: ") and "top-3 of a vocabulary of" in kd and "forward_kl" in kd
    assert "batch 2" in kd and "1 thread(s), cpu" in kd
    rep = _report(out)
    assert rep["latency"]["ratio_text_over_plan"] > 0 and rep["latency"]["trajectory_tokens_median"] > 0
    assert rep["latency"]["ratio_text_over_plan_no_risk"] > 0
    assert rep["train_step"]["distill_seq_len"] > rep["train_step"]["sft_seq_len"]  # scene tokens + 18 queries on top
    assert rep["train_step"]["ratio_distill_token_kd_over_sft"] > 0 and rep["train_step"]["token_kd"]["top_k"] == 3


def test_bench_student_cpu_clock(annotated, capsys):
    import bench_student

    argv = ["--data", str(annotated / "annotated"), "--only", "latency", "--hidden", "32", "--layers", "1", "--heads", "2",
            "--samples", "1", "--reps", "1", "--clock", "cpu"]
    try:
        assert bench_student.main(argv) == 0
    finally:
        bench_student.clock = bench_student.CLOCKS["wall"]  # module state: later tests time the wall
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("plan() vs text decoding: text ") and "CPU seconds, not wall" in lines[0]
    assert lines[1].startswith("plan(risk_map=False) vs text decoding: text ")


def test_synthetic_topk_has_the_cache_layout():
    import math

    import bench_student
    import torch

    from dsdrive.training.token_kd import sparse_topk_kd

    ids = torch.tensor([[5, 7, 0], [1, 2, 3]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    t = bench_student.synthetic_topk(ids, mask, vocab=10, k=4)
    assert t["teacher_topk_ids"].shape == (2, 3, 4) and t["teacher_topk_logprobs"].shape == (2, 3, 4)
    assert torch.equal(t["teacher_topk_ids"][..., 0], ids)  # the written token is the teacher's top-1
    assert all(len(set(row.tolist())) == 4 for row in t["teacher_topk_ids"].reshape(-1, 4))  # distinct candidates
    assert bool((t["teacher_topk_ids"] < 10).all() and (t["teacher_topk_ids"] >= 0).all())
    lp = t["teacher_topk_logprobs"]
    assert bool((lp[..., :-1] >= lp[..., 1:]).all())  # sorted descending
    torch.testing.assert_close(lp.exp().sum(-1), torch.full((2, 3), 0.9))  # a 10 % tail outside the top-k
    assert torch.equal(t["teacher_token_mask"], mask)
    kd = sparse_topk_kd(torch.randn(2, 3, 10), t["teacher_topk_ids"], lp, t["teacher_token_mask"])
    assert math.isfinite(float(kd)) and float(kd) > 0
    with pytest.raises(ValueError, match="--topk 11"):
        bench_student.synthetic_topk(ids, mask, vocab=10, k=11)


def test_bench_student_shapes():
    import argparse

    import bench_student

    big = bench_student.shape_of(argparse.Namespace(shape="qwen2.5-0.5b", hidden=None, layers=None, heads=None))
    tok = type("Tok", (), {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "__len__": lambda self: 1024})()
    cfg = bench_student.backbone_config(big, tok)
    # Qwen2.5-0.5B's published config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size,
            cfg.vocab_size, cfg.tie_word_embeddings) == (896, 24, 14, 2, 4864, 151936, True)
    assert cfg.rope_parameters["rope_theta"] == 1e6


@pytest.mark.slow
def test_bench_student_memory(annotated, capsys):
    import bench_student

    argv = ["--data", str(annotated / "annotated"), "--only", "memory", "--hidden", "64", "--layers", "2", "--heads", "2",
            "--batch_size", "2"]
    assert bench_student.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("QLoRA 4-bit / fp32 LoRA training-step peak memory: ") and "gradient checkpointing on" in out
    rep = _report(out)
    assert rep["memory"]["fp32_lora"]["peak_mib"] > 0 and rep["memory"]["qlora_4bit"]["peak_mib"] > 0


@pytest.mark.skipif(not (NUSCENES_INFO.exists() and DRIVELM.exists()), reason=f"real data absent: {NUSCENES_INFO} / {DRIVELM}")
def test_bench_vlm_batching(capsys):
    import bench_vlm_batching

    argv = ["--samples", "3", "--batch-sizes", "1,2", "--max-new-tokens", "2", "--repeats", "1", "--variants", "batched,stock"]
    assert bench_vlm_batching.main(argv) == 0
    out = capsys.readouterr().out
    config = next(line for line in out.splitlines() if line.startswith("config: "))
    for part in ("Qwen2.5-VL text hidden 64 x 2 layers", "3 samples x 6 images", "vision tokens per image", "prompt tokens",
                 "2 new tokens", "1 torch thread(s)", "device cpu"):
        assert part in config, part
    rows = [line.split("|") for line in out.splitlines() if line.strip().startswith(("batched", "stock"))]
    assert [(r[0].strip(), int(r[1])) for r in rows] == [("batched", 1), ("batched", 2), ("stock", 1), ("stock", 2)]
    assert all(float(r[2]) > 0 for r in rows)


def test_bench_openai_concurrency(annotated, capsys):
    import bench_openai_concurrency

    argv = ["--data", str(annotated / "planning"), "--samples", "5", "--concurrency", "1,3", "--latency", "0.01", "--drop-every", "3",
            "--repeats", "1", "--backoff", "0.01", "--batch-size", "4", "--shard-size", "2"]
    assert bench_openai_concurrency.main(argv) == 0
    out = capsys.readouterr().out
    assert "latency 0.01 s, drops the connection of 1 request in 3" in out and "--batch-size 4" in out
    rows = {int(r.split("|")[0]): r.split("|") for r in out.splitlines() if r.strip()[:1].isdigit()}
    assert set(rows) == {1, 3}
    for r in rows.values():
        assert (int(r[-2]), int(r[-1])) == (0, 0)  # nothing lost, nothing doubled
        assert int(r[-3].split(":")[1].split("/")[2]) >= 1  # the server dropped connections
    assert "every sample has exactly one record" in out


def test_bench_metrics(capsys):
    import bench_metrics

    assert bench_metrics.main(["--synthetic", "20", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config: data none") and "numpy" in out
    assert "synthetic (GT + 1.5 m noise): 20 samples" in out and "mismatched: 0 of" in out


def test_bench_teacher_student(tmp_path, capsys):
    import bench_teacher_student
    from helpers_distilldrive import synthetic_samples, tiny_teacher

    tiny_teacher(synthetic_samples(6)).save_pretrained(tmp_path / "teacher")
    argv = ["--teacher", str(tmp_path / "teacher"), "--num-samples", "6", "--batch-sizes", "1,3", "--repeats", "1"]
    assert bench_teacher_student.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("config: 6 samples of synthetic data") and "1 torch thread(s)" in out and "device cpu" in out
    assert "student: not measured" in out and out.count("not measured") >= 3


def test_run_benchmarks_lists_every_row(capsys):
    import run_benchmarks

    assert run_benchmarks.main(["--list"]) == 0
    out = capsys.readouterr().out
    for row in run_benchmarks.ROWS:
        assert row.name in out
    assert ".venv/bin/python eval/bench_student.py --shape qwen2.5-0.5b --only step --batch_size 1 --reps 1" in out
    assert "closed-loop-student is skipped without --student-checkpoint" in out
    with pytest.raises(SystemExit):
        run_benchmarks.main(["--rows", "no-such-row", "--list"])


def test_run_benchmarks_figure_lines():
    import run_benchmarks

    out = ("plan() vs text decoding: text 7.76x slower (34.3 vs 258 ms) [Qwen2 hidden 256 x 4 layers; batch 1]\n"
           "noise line\n"
           " batched |     8 |      5.12 |      2.24x | 0.00\n"
           "{\n  \"ratio\": 1.0x\n}\n")
    assert run_benchmarks.figure_lines(out, run_benchmarks.RATIO) == ["plan() vs text decoding: text 7.76x slower (34.3 vs 258 ms)",
                                                                        "batched | 8 | 5.12 | 2.24x | 0.00"]
    assert run_benchmarks.figure_lines(out, r"^\s*(batched|stock) \|") == ["batched | 8 | 5.12 | 2.24x | 0.00"]


def test_run_benchmarks_runs_rows_and_writes_the_summary(tmp_path, monkeypatch, capsys):
    import run_benchmarks

    rows = [run_benchmarks.Row("ok", "-c \"print('a / b: 2.50x (1 vs 2 ms) [config]'); print('{{'); print('}}')\"", run_benchmarks.RATIO, 0.1),
            run_benchmarks.Row("fails", "-c \"import sys; print('half'); sys.exit(3)\"", run_benchmarks.RATIO, 0.1),
            run_benchmarks.Row("needs-student", "-c pass --x {student}", run_benchmarks.RATIO, 0.1)]
    monkeypatch.setattr(run_benchmarks, "ROWS", rows)
    assert run_benchmarks.main(["--out", str(tmp_path)]) == 1  # one row failed
    out = capsys.readouterr().out
    summary = (tmp_path / "summary.md").read_text()
    assert "| ok | a / b: 2.50x (1 vs 2 ms) | `.venv/bin/python -c" in summary
    assert "| fails | (no figure line; exit 3, see fails.log) |" in summary
    assert "| needs-student | skipped: needs --student-checkpoint" in summary
    assert (tmp_path / "fails.log").read_text() == "half\n"
    rep = json.loads((tmp_path / "summary.json").read_text())
    assert [r["row"] for r in rep["rows"]] == ["ok", "fails", "needs-student"]
    assert rep["rows"][0]["rc"] == 0 and rep["rows"][0]["wall_s"] > 0 and rep["rows"][0]["load_start"] >= 0
    assert "total wall" in out


def test_profile_student_plan(annotated, capsys, tmp_path):
    import profile_student_plan

    argv = ["--data", str(annotated / "annotated"), "--hidden", "32", "--layers", "1", "--heads", "2", "--reps", "1",
            "--out", str(tmp_path / "parts.json")]
    assert profile_student_plan.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("Qwen2 hidden 32 x 1 layers") and "thread CPU ms" in out and "text / plan(risk_map=False)" in out
    parts = json.loads((tmp_path / "parts.json").read_text())["parts_ms"]
    assert set(parts) >= {"plan", "plan_no_risk", "llm_forward_plan_seq", "bev_splat_conv", "risk_head", "text_decode"}
    assert all(v >= 0 for v in parts.values())
