"""Smoke tests of ``eval/bench_camera_student.py`` (tests/test_benchmarks.py style): it runs in a tiny
configuration on the real 0061 cameras, exits 0 and prints its configuration next to each ratio (no
timing is asserted: these machines are shared)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers_vlm import DRIVELM, NUSCENES_INFO

EVAL = Path(__file__).resolve().parents[1] / "eval"
sys.path.insert(0, str(EVAL))
pytestmark = pytest.mark.skipif(not (NUSCENES_INFO.exists() and DRIVELM.exists()), reason=f"real data absent: {NUSCENES_INFO} / {DRIVELM}")


def _report(out: str) -> dict:
    return json.loads(out[out.index("\n{") + 1:])


def test_bench_camera_student_latency_and_step(capsys):
    import bench_camera_student

    argv = ["--only", "latency,step", "--samples", "1", "--reps", "1", "--cameras", "CAM_FRONT,CAM_BACK"]
    assert bench_camera_student.main(argv) == 0
    out = capsys.readouterr().out
    plan, lean, step = out.splitlines()[:3]
    assert plan.startswith("camera plan() vs text decoding: text ") and "text 64 x 2 layers" in plan
    assert lean.startswith("camera plan(risk_map=False) vs text decoding: text ") and "100 vision tokens" in lean
    for part in ("2 cameras at 12544-50176 pixels each", "100 vision tokens", "batch 1", "generated (the formatted trajectory)",
                 "greedy, KV cache", "1 thread(s), cpu"):
        assert part in plan, part
    assert step.startswith("camera distill step / plain SFT step: ") and "reasoning+trajectory" in step and "vision tower trained" in step
    rep = _report(out)
    lat = rep["latency"]
    assert lat["ratio_text_over_plan"] > 0 and lat["samples"] == 1 and lat["vision_tokens_median"] == 100
    assert lat["ratio_text_over_plan_no_risk"] > 0 and lat["plan_no_risk_ms"] > 0
    assert lat["trajectory_tokens"] > 60  # digits one token each, as Qwen's tokenizer: ~13 per waypoint
    assert rep["train_step"]["sft_answer_tokens"] > rep["train_step"]["reasoning_tokens"]  # reasoning + trajectory + eos


def test_bench_camera_student_shapes():
    import bench_camera_student

    s = bench_camera_student.SHAPES["qwen2.5-vl-3b"]
    # Qwen2.5-VL-3B-Instruct's published config
    assert (s["hidden"], s["layers"], s["heads"], s["kv_heads"], s["ffn"], s["vocab"], s["tied"]) == (2048, 36, 16, 2, 11008, 151936, True)
    assert (s["v_depth"], s["v_hidden"], s["v_heads"], s["v_ffn"], s["v_full"]) == (32, 1280, 16, 3420, [7, 15, 23, 31])
    r = bench_camera_student.SHAPES["qwen2.5-vl-3b-reduced"]
    assert r["vocab"] / s["vocab"] == pytest.approx(r["layers"] / s["layers"], rel=1e-3)  # the embedding-to-layers ratio of the 3B


@pytest.mark.slow
def test_bench_camera_student_memory(capsys):
    import bench_camera_student

    assert bench_camera_student.main(["--only", "memory", "--memory_shape", "tiny", "--cameras", "CAM_FRONT"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("QLoRA 4-bit / bf16 LoRA camera distill-step peak memory: ") and "gradient checkpointing on" in out
    rep = _report(out)["memory"]
    assert rep["bf16_lora"]["peak_mib"] > 0 and rep["qlora_4bit"]["peak_mib"] > 0 and rep["qlora_4bit"]["embedding_dtype"] == "torch.bfloat16"
