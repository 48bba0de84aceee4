"""Benchmark the student against text-decoding and plain-SFT baselines on the SAME backbone (one run).

Run as:
    python eval/bench_student.py                                   # all three, real data, 1 thread
    python eval/bench_student.py --only latency,step --hidden 384 --layers 6
    python eval/bench_student.py --only memory --mem_hidden 896 --mem_layers 24 --mem_vocab 151936   # Qwen2.5-0.5B shape

Prints, as ratios measured in this run (random weights: speed and memory, not quality):

(a) latency: ``StudentModel.plan()`` (one forward over [scene][prompt][queries]) vs decoding the
    same trajectory as text "[(x1,y1),...,(x6,y6)]" (GPT-Driver / EvoDriveVLA style) with
    ``backbone.generate`` (greedy, KV cache) after the same prompt, forcing exactly as many new
    tokens as the tokenised trajectory string has (min_new_tokens = max_new_tokens); batch 1.
(b) training step: one distillation step (all heads + the five losses, AdamW) vs one plain SFT
    step (LM loss on the reasoning text only, backbone only), same backbone and batch.
(c) peak memory: QLoRA (4-bit NF4 backbone + LoRA) vs fp32 LoRA, one training step each on a
    Qwen2 built from a config (~0.1 B parameters by default), each in its own subprocess; peak RSS
    (``resource.getrusage``) above the post-import baseline on CPU, ``torch.cuda.max_memory_allocated``
    on CUDA; plus the model's ``get_memory_footprint()``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from dsdrive.data.dataset import load_samples
from dsdrive.distilldrive.planning_vocabulary import PlanningVocabulary
from dsdrive.student import StudentModel, StudentProcessor
from dsdrive.student.backbone import tiny_qwen2_config
from dsdrive.student.tokenizer import build_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _median_s(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def build(samples, hidden: int, layers: int, heads: int, vocab: int = 0, tok_vocab: int = 1024, seed: int = 0):
    """(student, processor) on a random Qwen2 backbone (hidden x layers) with a BPE trained on ``samples``."""
    tok = build_tokenizer(samples, vocab_size=tok_vocab)
    cfg = tiny_qwen2_config(max(vocab, len(tok)), hidden_size=hidden, layers=layers, heads=heads, kv_heads=max(1, heads // 2),
                            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = StudentModel.from_backbone(AutoModelForCausalLM.from_config(cfg), vocabulary=PlanningVocabulary.fit(samples, seed=seed),
                                       scene_dim=64, scene_layers=2, bev_height=32, bev_width=32)
    return model, StudentProcessor(tok, model.config, 256, 192)


def trajectory_text(sample) -> str:
    """GPT-Driver style waypoint string of the ground-truth future, metres, 2 decimals."""
    return "[" + ",".join(f"({x:.2f},{y:.2f})" for x, y in sample.targets.ego_future[:, :2]) + "]"


def bench_latency(model, proc, samples, reps: int) -> dict:
    model.eval()
    rows = []
    for s in samples:
        batch = proc([s.inputs])
        n_new = len(proc.tokenizer(trajectory_text(s), add_special_tokens=False)["input_ids"])
        ids, mask = batch["prompt_ids"], batch["prompt_mask"]
        plan_s = _median_s(lambda: model.plan(batch), reps)
        with torch.no_grad():
            gen = lambda: model.backbone.generate(input_ids=ids, attention_mask=mask, do_sample=False, min_new_tokens=n_new,  # noqa: E731
                                                  max_new_tokens=n_new, pad_token_id=proc.tokenizer.pad_token_id, use_cache=True)
            out = gen()
            text_s = _median_s(gen, reps, warmup=0)
        assert out.shape[1] - ids.shape[1] == n_new
        rows.append((plan_s, text_s, n_new, int(mask.sum())))
    plan_s = statistics.median(r[0] for r in rows)
    text_s = statistics.median(r[1] for r in rows)
    return {"plan_ms": 1e3 * plan_s, "text_decode_ms": 1e3 * text_s, "ratio_text_over_plan": text_s / plan_s,
            "trajectory_tokens_median": statistics.median(r[2] for r in rows), "prompt_tokens_median": statistics.median(r[3] for r in rows)}


def bench_step(model, proc, samples, reps: int, batch_size: int) -> dict:
    model.train()
    batch = proc(samples[:batch_size])
    opt_d = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def distill_step():
        opt_d.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        opt_d.step()

    ids = torch.cat([batch["prompt_ids"], batch["reasoning_ids"]], 1)
    att = torch.cat([batch["prompt_mask"], batch["reasoning_mask"]], 1).long()
    labels = torch.cat([torch.full_like(batch["prompt_ids"], -100), batch["reasoning_ids"].masked_fill(~batch["reasoning_mask"].bool(), -100)], 1)
    bb = model.backbone
    opt_s = torch.optim.AdamW(bb.parameters(), lr=1e-5)

    def sft_step():
        opt_s.zero_grad(set_to_none=True)
        bb(input_ids=ids, attention_mask=att, labels=labels).loss.backward()
        opt_s.step()

    d = _median_s(distill_step, reps)
    s = _median_s(sft_step, reps)
    return {"distill_step_ms": 1e3 * d, "sft_step_ms": 1e3 * s, "ratio_distill_over_sft": d / s, "batch_size": batch_size,
            "sft_seq_len": ids.shape[1]}


MEM_CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from dsdrive.data.dataset import load_samples
from dsdrive.student import StudentModel, StudentProcessor
from dsdrive.student.backbone import load_backbone
from dsdrive.student.lora import apply_lora
from transformers import AutoTokenizer
samples = load_samples({data!r})[:{bs}]
tok = AutoTokenizer.from_pretrained({bb!r})
cuda = torch.cuda.is_available()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
q = {quant!r}
backbone = load_backbone({bb!r}, quantization=q)
model = StudentModel.from_backbone(backbone, scene_dim=64, scene_layers=2, bev_height=32, bev_width=32)
if cuda and q is None: model = model.cuda()
if cuda and q is not None: model = model.to(backbone.device)
foot = backbone.get_memory_footprint()
model = apply_lora(model, 16, 32, 0.0, ["q_proj", "k_proj", "v_proj", "o_proj"], q)
if cuda: torch.cuda.reset_peak_memory_stats()
proc = StudentProcessor(tok, model.config, 256, 192)
batch = {{k: v.to(model.device) if torch.is_tensor(v) else v for k, v in proc(samples).items()}}
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
model(**batch).loss.backward(); opt.step()
peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps({{"peak_mib": peak, "backbone_footprint_mib": foot / 2**20, "device": "cuda" if cuda else "cpu"}}))
"""


def bench_memory(data: str, hidden: int, layers: int, vocab: int, batch_size: int) -> dict:
    tok = build_tokenizer(load_samples(data), vocab_size=1024)
    cfg = tiny_qwen2_config(max(vocab, len(tok)), hidden_size=hidden, layers=layers, heads=max(1, hidden // 64), kv_heads=max(1, hidden // 128),
                            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    cfg.intermediate_size = int(hidden * 8 / 3) // 64 * 64
    res = {}
    with tempfile.TemporaryDirectory() as d:
        m = AutoModelForCausalLM.from_config(cfg)
        res["params_M"] = sum(p.numel() for p in m.parameters()) / 1e6
        m.save_pretrained(d)
        tok.save_pretrained(d)
        del m
        for name, q in (("fp32_lora", None), ("qlora_4bit", "4bit")):
            code = MEM_CHILD.format(root=str(ROOT), data=data, bs=batch_size, bb=d, quant=q)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if out.returncode != 0:
                res[name] = {"error": out.stderr[-800:]}
                continue
            res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    if "peak_mib" in res.get("fp32_lora", {}) and "peak_mib" in res.get("qlora_4bit", {}):
        res["ratio_qlora_over_fp32_peak"] = res["qlora_4bit"]["peak_mib"] / res["fp32_lora"]["peak_mib"]
        res["ratio_qlora_over_fp32_backbone"] = res["qlora_4bit"]["backbone_footprint_mib"] / res["fp32_lora"]["backbone_footprint_mib"]
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="outputs/main/planning_annotated")
    p.add_argument("--only", default="latency,step,memory", help="comma-separated: latency, step, memory")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--samples", type=int, default=4, help="samples timed for latency (batch 1 each)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--mem_hidden", type=int, default=768)
    p.add_argument("--mem_layers", type=int, default=12)
    p.add_argument("--mem_vocab", type=int, default=32000)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    samples = [s for s in load_samples(a.data) if s.annotation][: max(a.samples, a.batch_size)]
    only = set(a.only.split(","))
    report = {}
    if only & {"latency", "step"}:
        model, proc = build(samples, a.hidden, a.layers, a.heads)
        report["backbone"] = f"Qwen2 hidden {a.hidden} x {a.layers} layers, {sum(p.numel() for p in model.backbone.parameters()) / 1e6:.1f} M params"
        if "latency" in only:
            report["latency"] = bench_latency(model, proc, samples[: a.samples], a.reps)
        if "step" in only:
            report["train_step"] = bench_step(model, proc, samples, a.reps, a.batch_size)
    if "memory" in only:
        report["memory"] = bench_memory(a.data, a.mem_hidden, a.mem_layers, a.mem_vocab, a.batch_size)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
