"""Benchmark the camera student against the text-trajectory VLA baseline on the SAME VLM (one run).

Run as:
    python eval/bench_camera_student.py                                     # tiny-vl recipe shape, 1 thread, CPU
    python eval/bench_camera_student.py --only memory --shape qwen2.5-vl-3b-reduced   # QLoRA vs bf16 LoRA, CPU
    python eval/bench_camera_student.py --only memory --shape qwen2.5-vl-3b --device cuda --batch_size 2   # on a GPU

Data: the real six-camera scene-0061 keyframe of ``../shared/data/nuscenes-sample-0061``
(:func:`data_builders.nuscenes_sample.nuscenes_sample_0061`, labelled by the rule annotator; its
future gives the trajectory text) and, for ``--samples`` > 1, DriveLM keyframes (images only; their
decoded length is the 0061 trajectory's).

Shapes (random weights: speed and memory, not quality; the tokenizer is the tiny byte-level BPE with
digits split one per token as Qwen's, :func:`dsdrive.student.text_trajectory_vla.split_digits`):
``tiny`` = the tiny-vl recipe's Qwen2.5-VL (text hidden 64 x 2 layers, 4 / 2 KV heads; vision 2
blocks, hidden 32; 16-64 vision tokens per camera); ``qwen2.5-vl-3b`` = Qwen2.5-VL-3B-Instruct's
published config (text hidden 2048 x 36 layers, 16 / 2 KV heads, FFN 11,008, vocabulary 151,936,
tied; vision 32 blocks, hidden 1280, 16 heads, FFN 3,420, full attention in blocks 7/15/23/31) at the
3B recipe's 64-256 tokens per camera; ``qwen2.5-vl-3b-reduced`` = the 3B widths with 4 of 36 text
layers, 4 of 32 vision blocks and the vocabulary cut in the same proportion (16,882), so the
embedding-to-layers ratio of the 3B is kept, at the tiny recipe's pixel budget (a CPU-sized shape).

Prints, as ratios measured in this run, each on one line with its configuration (shape, cameras and
pixels, batch, sequence lengths, threads, device), then the whole report as JSON:

(a) latency: the camera student's ``plan()`` (one forward over [images][ego][prompt][queries] plus
    the heads and the PV -> BEV lift) vs the baseline's text decoding (the VLM's ``generate``: the
    same pixel values, the same prompt in the chat layout of
    :class:`~dsdrive.student.text_trajectory_vla.TextTrajectoryProcessor`, greedy, KV cache, exactly as
    many new tokens as the formatted trajectory has: min_new_tokens = max_new_tokens); batch 1.
    Timed interleaved with a third side, ``plan(risk_map=False)``: the same plan without the PV ->
    BEV lift and the RiskHead, whose map a trajectory never reads (``StudentPlanner.compute_trajectories``).
(b) training step: one camera distillation step (all heads and losses, vision tower trained) vs one
    plain SFT step of the same VLM on the same images and prompt (the baseline's loss,
    :func:`~dsdrive.training.text_trajectory_trainer.trajectory_token_ce`; answer = the reasoning
    text then the trajectory text, ``--sft_answer``), full fine-tuning fp32, one AdamW over all
    parameters (an SFT step updates the VLM only).
(c) peak memory of a camera distillation step, QLoRA (4-bit NF4 backbone, embeddings bf16) vs bf16
    LoRA, each in its own subprocess with the 3B recipe's settings (LoRA r 16 / alpha 32 on the
    language model's q, k, v, o, gate, up, down and the vision blocks' qkv / proj; gradient
    checkpointing; bf16 autocast, the recipe's ``bf16: true``; AdamW; heads of
    recipes/configs/qwen2.5-vl-3b/distill_qlora.yaml): two steps, the
    peak of the second. CPU: the resident-set high-water mark reset before that step minus the
    resident set before loading, freed heap handed back (``malloc_trim``) before both readings and
    every block over 128 KiB mapped on its own (:data:`MALLOC_ENV`; ``eval/bench_student.py``'s
    method); CUDA:
    ``torch.cuda.max_memory_allocated``.

The two sides of each timing ratio run interleaved (A B A B ..., after one warm-up of each); the
medians and the median of the per-pair ratios are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_student import interleaved, paired, ratio_stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"""LoRA targets of recipes/configs/qwen2.5-vl-3b/distill_qlora.yaml."""
TINY_PIXELS = (28 * 28 * 16, 28 * 28 * 64)
SHAPES = {
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, vocab=0, tied=False, v_depth=2, v_hidden=32, v_heads=2, v_ffn=64,
                 v_full=[1], pixels=TINY_PIXELS, scene_dim=64, max_prompt_tokens=256, max_reasoning_tokens=192),
    "qwen2.5-vl-3b": dict(hidden=2048, layers=36, heads=16, kv_heads=2, ffn=11008, vocab=151936, tied=True, v_depth=32, v_hidden=1280,
                          v_heads=16, v_ffn=3420, v_full=[7, 15, 23, 31], pixels=(28 * 28 * 64, 28 * 28 * 256), scene_dim=128,
                          max_prompt_tokens=384, max_reasoning_tokens=256),
    "qwen2.5-vl-3b-reduced": dict(hidden=2048, layers=4, heads=16, kv_heads=2, ffn=11008, vocab=151936 * 4 // 36, tied=True, v_depth=4,
                                  v_hidden=1280, v_heads=16, v_ffn=3420, v_full=[3], pixels=TINY_PIXELS, scene_dim=128,
                                  max_prompt_tokens=384, max_reasoning_tokens=256),
}
"""VLM shape, pixel budget and student head settings per ``--shape`` (vocab 0: the BPE's own size)."""


def describe(s: dict, n_params: float) -> str:
    return (f"Qwen2.5-VL text {s['hidden']} x {s['layers']} layers ({s['heads']} / {s['kv_heads']} KV heads, FFN {s['ffn']}, "
            f"vocab {s['vocab'] or 'BPE'}{' tied' if s['tied'] else ''}), vision {s['v_depth']} blocks x {s['v_hidden']}; "
            f"{n_params / 1e6:.1f} M params")


def real_samples(n: int):
    """The rule-annotated 0061 keyframe, then ``n - 1`` DriveLM keyframes (images only)."""
    from data_builders.drivelm import keyframe_planning_sample
    from data_builders.nuscenes_sample import nuscenes_sample_0061
    from dsdrive.annotation.annotators.rule import RuleAnnotator

    s = nuscenes_sample_0061()
    s.annotation = RuleAnnotator().annotate([s])[0].model_dump(mode="json")
    return [s] + [keyframe_planning_sample(i) for i in range(n - 1)]


def build_vlm(shape: dict, samples, seed: int = 0, dtype=torch.float32):
    """(Qwen2_5_VLForConditionalGeneration of ``shape`` with random weights, tokenizer, image processor)."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor

    from dsdrive.student.text_trajectory_vla import format_trajectory, split_digits
    from dsdrive.student.tiny_vl import SPECIAL_TOKENS, tiny_qwen_vl_config, tiny_qwen_vl_tokenizer
    from dsdrive.student.tokenizer import student_corpus

    tok = split_digits(tiny_qwen_vl_tokenizer(student_corpus(samples) + [format_trajectory(samples[0].targets.ego_future)], 1024))
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    cfg = tiny_qwen_vl_config(max(shape["vocab"], len(tok)), ids, hidden_size=shape["hidden"], layers=shape["layers"], heads=shape["heads"],
                              kv_heads=shape["kv_heads"], vision_hidden_size=shape["v_hidden"], vision_depth=shape["v_depth"],
                              vision_heads=shape["v_heads"], max_positions=32768)
    cfg.text_config.intermediate_size = shape["ffn"]
    cfg.vision_config.intermediate_size = shape["v_ffn"]
    cfg.vision_config.fullatt_block_indexes = list(shape["v_full"])
    cfg.tie_word_embeddings = cfg.text_config.tie_word_embeddings = shape["tied"]
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype).eval()
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    lo, hi = shape["pixels"]
    return model, tok, Qwen2VLImageProcessor(min_pixels=lo, max_pixels=hi)


def students(vlm, tok, image_processor, shape: dict, samples, cameras: list[str]):
    """(camera StudentModel on ``vlm``, its StudentProcessor, the TextTrajectoryVLA on the same ``vlm``)."""
    from dsdrive.distilldrive.planning_vocabulary import PlanningVocabulary
    from dsdrive.student import StudentModel, StudentProcessor
    from dsdrive.student.text_trajectory_vla import TextTrajectoryProcessor, TextTrajectorySettings, TextTrajectoryVLA

    lo, hi = shape["pixels"]
    student = StudentModel.from_backbone(vlm, vocabulary=PlanningVocabulary.fit(samples[:1], seed=0), scene_inputs="cameras", cameras=cameras,
                                         vision_tower="train", min_pixels=lo, max_pixels=hi, scene_dim=shape["scene_dim"], scene_layers=2,
                                         bev_height=32, bev_width=32)
    sproc = StudentProcessor(tok, student.config, shape["max_prompt_tokens"], shape["max_reasoning_tokens"], image_processor=image_processor)
    tproc = TextTrajectoryProcessor(tok, image_processor, TextTrajectorySettings(cameras, lo, hi))
    return student, sproc, TextTrajectoryVLA(vlm, tproc)


def bench_latency(student, sproc, vla, samples, reps: int, n_new: int) -> dict:
    student.eval()
    rows = []
    for s in samples:
        sb, tb = sproc([s.inputs]), vla.processor([s.inputs])
        if not torch.equal(sb["pixel_values"], tb["pixel_values"]):
            raise RuntimeError(f"sample {s.sample_id}: the two sides read different pixels")
        got = vla.generate(tb, max_new_tokens=n_new, min_new_tokens=n_new).shape[1]
        if got != n_new:
            raise RuntimeError(f"text decoding made {got} tokens, not {n_new}")
        if not torch.equal(student.plan(sb).waypoints, student.plan(sb, risk_map=False).waypoints):
            raise RuntimeError("plan(risk_map=False) changed the waypoints")
        tp, tl, tt = interleaved([lambda: student.plan(sb), lambda: student.plan(sb, risk_map=False),
                                  lambda: vla.generate(tb, max_new_tokens=n_new, min_new_tokens=n_new)], reps)
        merge = student.backbone.config.vision_config.spatial_merge_size
        vision = int(sb["image_grid_thw"].prod(-1).sum()) // merge**2
        plan_len = vision + 2 * int(sb["camera_mask"].sum()) + 1 + int(sb["prompt_mask"].sum()) + student.config.num_queries
        rows.append((ratio_stats(tp, tt), plan_len, int(tb["input_ids"].shape[1]), vision, ratio_stats(tl, tt)))
    return {"plan_ms": statistics.median(r[0]["a_ms"] for r in rows), "text_decode_ms": statistics.median(r[0]["b_ms"] for r in rows),
            "ratio_text_over_plan": statistics.median(r[0]["ratio"] for r in rows), "samples": len(rows), "trajectory_tokens": n_new,
            "plan_no_risk_ms": statistics.median(r[4]["a_ms"] for r in rows),
            "ratio_text_over_plan_no_risk": statistics.median(r[4]["ratio"] for r in rows),
            "plan_sequence_median": statistics.median(r[1] for r in rows), "text_prompt_median": statistics.median(r[2] for r in rows),
            "vision_tokens_median": statistics.median(r[3] for r in rows)}


def sft_answer(sample, kind: str) -> str:
    from dsdrive.annotation.reasoning import render_reasoning
    from dsdrive.student.text_trajectory_vla import format_trajectory

    traj = format_trajectory(sample.targets.ego_future)
    return {"reasoning": render_reasoning(sample.annotation), "trajectory": traj,
            "reasoning+trajectory": render_reasoning(sample.annotation) + "\n" + traj}[kind]


def bench_step(student, sproc, vla, sample, reps: int, batch_size: int, kind: str) -> dict:
    import numpy as np

    from dsdrive.training.text_trajectory_trainer import answer_window, trajectory_token_ce

    student.train()
    dev = vla.device
    batch = {k: v.to(dev) for k, v in sproc([sample] * batch_size).items()}
    tok = vla.processor.tokenizer
    item = vla.processor.encode_inputs(sample.inputs)
    item["answer_ids"] = np.asarray(tok(sft_answer(sample, kind), add_special_tokens=False)["input_ids"] + [tok.eos_token_id], np.int64)
    sft = {k: v.to(dev) for k, v in vla.processor.collate([item] * batch_size).items()}
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
    keep = answer_window(sft["labels"])
    vlm = student.backbone

    def distill_step():
        opt.zero_grad(set_to_none=True)
        student(**batch).loss.backward()
        opt.step()

    def sft_step():  # grads of the VLM only: AdamW skips the heads (grad None)
        opt.zero_grad(set_to_none=True)
        out = vlm(**{k: v for k, v in sft.items() if k != "labels"}, logits_to_keep=keep)
        trajectory_token_ce(out.logits, sft["labels"][:, -keep:])[0].backward()
        opt.step()

    ts, td = paired(sft_step, distill_step, reps)
    st = ratio_stats(ts, td)
    merge = vlm.config.vision_config.spatial_merge_size
    vision = int(batch["image_grid_thw"][: len(sample.inputs.cameras)].prod(-1).sum()) // merge**2
    return {"distill_step_ms": st["b_ms"], "sft_step_ms": st["a_ms"], "ratio_distill_over_sft": st["ratio"], "batch_size": batch_size,
            "sft_seq_len": int(sft["input_ids"].shape[1]), "sft_answer_tokens": len(item["answer_ids"]),
            "distill_seq_len": vision + 2 * len(sample.inputs.cameras) + 1 + int(batch["prompt_mask"][0].sum()) + student.config.num_queries
            + int(batch["reasoning_mask"][0].sum()), "reasoning_tokens": int(batch["reasoning_mask"][0].sum())}


MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
"""glibc: every block over 128 KiB gets its own mapping, unmapped when freed, so the resident set
follows the live memory (with glibc's default, freed heap stays resident by chance: +-200 MiB
between runs of the 0.5B memory bench)."""
MEM_CHILD = r"""
import ctypes, gc, json, sys, torch
torch.set_num_threads({threads})
libc = ctypes.CDLL("libc.so.6")
def trim(_):  # garbage and freed heap back to the system: load-time transients must not count
    gc.collect()
    libc.malloc_trim(0)
sys.path.insert(0, {root!r}); sys.path.insert(0, {eval_dir!r})
from transformers import AutoImageProcessor, AutoTokenizer
from bench_camera_student import real_samples
from dsdrive.student import StudentModel, StudentProcessor
from dsdrive.student.backbone import load_backbone
from dsdrive.student.lora import apply_lora

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {{field}}")

samples = real_samples(1) * {bs}
tok = AutoTokenizer.from_pretrained({bb!r}); ip = AutoImageProcessor.from_pretrained({bb!r})
cuda = {device!r} == "cuda"
trim(0)
base = rss("VmRSS:")
q = {quant!r}
backbone = load_backbone({bb!r}, quantization=q, dtype=torch.bfloat16)
foot = backbone.get_memory_footprint()
model = StudentModel.from_backbone(backbone, **{student_kw!r})
if cuda: model = model.to(backbone.device if q else "cuda")
model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={{"use_reentrant": False}})
model = apply_lora(model, 16, 32, 0.05, {targets!r}, q)
model.train()
proc = StudentProcessor(tok, model.config, {max_prompt}, {max_reasoning}, image_processor=ip)
batch = {{k: v.to(model.device) if torch.is_tensor(v) else v for k, v in proc(samples).items()}}
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled={autocast!r}):  # the recipe's bf16: true
        loss = model(**batch).loss
    loss.backward()
    opt.step()
step()
if cuda:
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
else:
    trim(0)
    open("/proc/self/clear_refs", "w").write("5")
step()
peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss("VmHWM:") - base
emb = model.get_base_model().backbone.get_input_embeddings().weight
print(json.dumps({{"peak_mib": peak, "backbone_footprint_mib": foot / 2**20, "device": "cuda" if cuda else "cpu", "embedding_dtype": str(emb.dtype),
                   "trainable_M": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
                   "vision_tokens": int(batch["image_grid_thw"].prod(-1).sum()) // 4 // len(samples),
                   "text_tokens": int(batch["prompt_ids"].shape[1] + batch["reasoning_ids"].shape[1])}}))
"""


def bench_memory(shape: dict, cameras: list[str], batch_size: int, threads: int, device: str, timeout: int, autocast: bool = True) -> dict:
    samples = real_samples(1)
    lo, hi = shape["pixels"]
    kw = dict(scene_inputs="cameras", cameras=cameras, vision_tower="lora", min_pixels=lo, max_pixels=hi, scene_dim=shape["scene_dim"],
              scene_layers=2, bev_height=32, bev_width=32, risk_layers=1, risk_points=4)
    res = {"lora": f"r 16, alpha 32 on {','.join(LORA_TARGETS)} + vision qkv,proj", "batch_size": batch_size, "gradient_checkpointing": True,
           "autocast_bf16": autocast}
    with tempfile.TemporaryDirectory() as d:
        vlm, tok, ip = build_vlm(shape, samples, dtype=torch.bfloat16)
        res["params_M"] = sum(p.numel() for p in vlm.parameters()) / 1e6
        vlm.save_pretrained(d)
        tok.save_pretrained(d)
        ip.save_pretrained(d)
        del vlm
        for name, q in (("bf16_lora", None), ("qlora_4bit", "4bit")):
            code = MEM_CHILD.format(root=str(ROOT), eval_dir=str(ROOT / "eval"), bs=batch_size, bb=d, quant=q, threads=threads, device=device,
                                    student_kw=kw, targets=LORA_TARGETS, max_prompt=shape["max_prompt_tokens"],
                                    max_reasoning=shape["max_reasoning_tokens"], autocast=autocast)
            try:
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                                     env={**os.environ, "OMP_NUM_THREADS": str(threads), **MALLOC_ENV})
            except subprocess.TimeoutExpired:
                res[name] = {"error": f"timed out after {timeout} s"}
                continue
            if out.returncode != 0:
                res[name] = {"error": out.stderr[-1200:]}
                continue
            res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    if "peak_mib" in res.get("bf16_lora", {}) and "peak_mib" in res.get("qlora_4bit", {}):
        res["ratio_qlora_over_bf16_peak"] = res["qlora_4bit"]["peak_mib"] / res["bf16_lora"]["peak_mib"]
        res["ratio_qlora_over_bf16_backbone"] = res["qlora_4bit"]["backbone_footprint_mib"] / res["bf16_lora"]["backbone_footprint_mib"]
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="latency,step,memory", help="comma-separated: latency, step, memory")
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--memory_shape", default="qwen2.5-vl-3b-reduced", choices=sorted(SHAPES), help="shape of the memory part")
    p.add_argument("--cameras", default="CAM_FRONT,CAM_FRONT_RIGHT,CAM_FRONT_LEFT,CAM_BACK,CAM_BACK_LEFT,CAM_BACK_RIGHT")
    p.add_argument("--samples", type=int, default=2, help="latency: the 0061 keyframe + DriveLM keyframes, batch 1 each")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of each side (interleaved)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: latency/step on the GPU, memory by max_memory_allocated")
    p.add_argument("--sft_answer", default="reasoning+trajectory", choices=["reasoning", "trajectory", "reasoning+trajectory"])
    p.add_argument("--memory_timeout", type=int, default=3000, help="seconds per memory subprocess")
    p.add_argument("--no_autocast", action="store_true", help="memory: no bf16 autocast (the 3B recipe has bf16: true)")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    torch.set_num_threads(a.threads)
    cameras = [c for c in a.cameras.split(",") if c]
    only = set(a.only.split(","))
    env = (f"{a.threads} thread(s), {a.device}, torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    samples = real_samples(max(1, a.samples))
    report, lines = {"environment": env, "cameras": cameras}, []
    if only & {"latency", "step"}:
        from dsdrive.student.text_trajectory_vla import format_trajectory

        shape = SHAPES[a.shape]
        vlm, tok, ip = build_vlm(shape, samples)
        student, sproc, vla = students(vlm, tok, ip, shape, samples, cameras)
        student.to(a.device)
        desc = describe(shape, sum(p.numel() for p in vlm.parameters()))
        cams = f"{len(cameras)} cameras at {shape['pixels'][0]}-{shape['pixels'][1]} pixels each"
        report["latency_step_shape"] = {"name": a.shape, "description": desc, "images": cams}
        if "latency" in only:
            n_new = len(tok(format_trajectory(samples[0].targets.ego_future), add_special_tokens=False)["input_ids"])
            r = report["latency"] = bench_latency(student, sproc, vla, samples, a.reps, n_new)
            cfg_txt = (f"[{a.shape}: {desc}; {cams}, {r['vision_tokens_median']:.0f} vision tokens; batch 1; "
                       f"plan sequence {r['plan_sequence_median']:.0f} tokens (images + ego + prompt + 18 queries); text: prompt "
                       f"{r['text_prompt_median']:.0f} tokens + {n_new} generated (the formatted trajectory), greedy, KV cache; "
                       f"median of {r['samples']} samples x {a.reps} reps; {env}]")
            lines.append(f"camera plan() vs text decoding: text {r['ratio_text_over_plan']:.2f}x slower ({r['plan_ms']:.1f} vs "
                         f"{r['text_decode_ms']:.1f} ms) " + cfg_txt)
            lines.append(f"camera plan(risk_map=False) vs text decoding: text {r['ratio_text_over_plan_no_risk']:.2f}x slower "
                         f"({r['plan_no_risk_ms']:.1f} vs {r['text_decode_ms']:.1f} ms; same waypoints, no PV -> BEV lift / RiskHead) " + cfg_txt)
        if "step" in only:
            r = report["train_step"] = bench_step(student, sproc, vla, samples[0], a.reps, a.batch_size, a.sft_answer)
            lines.append(f"camera distill step / plain SFT step: {r['ratio_distill_over_sft']:.2f}x ({r['distill_step_ms']:.0f} vs "
                         f"{r['sft_step_ms']:.0f} ms) [{a.shape}: {desc}; {cams}; batch {a.batch_size}; distill sequence {r['distill_seq_len']} "
                         f"tokens ({r['reasoning_tokens']} reasoning), SFT sequence {r['sft_seq_len']} ({r['sft_answer_tokens']} answer tokens: "
                         f"{a.sft_answer}); full fine-tuning fp32, vision tower trained, AdamW; {a.reps} reps; {env}]")
        del student, vlm
    if "memory" in only:
        shape = SHAPES[a.memory_shape]
        r = report["memory"] = bench_memory(shape, cameras, a.batch_size, a.threads, a.device, a.memory_timeout, not a.no_autocast)
        cams = f"{len(cameras)} cameras at {shape['pixels'][0]}-{shape['pixels'][1]} pixels each"
        if "ratio_qlora_over_bf16_peak" in r:
            q, f = r["qlora_4bit"], r["bf16_lora"]
            lines.append(f"QLoRA 4-bit / bf16 LoRA camera distill-step peak memory: {r['ratio_qlora_over_bf16_peak']:.2f}x ({q['peak_mib']:.0f} vs "
                         f"{f['peak_mib']:.0f} MiB; backbone {r['ratio_qlora_over_bf16_backbone']:.2f}x, {q['backbone_footprint_mib']:.0f} vs "
                         f"{f['backbone_footprint_mib']:.0f} MiB) [{a.memory_shape}: {describe(shape, r['params_M'] * 1e6)}; {cams}, "
                         f"{f['vision_tokens']} vision tokens + {f['text_tokens']} text tokens + ego + 18 queries per sample; batch {a.batch_size}; "
                         f"LoRA {r['lora']}; gradient checkpointing on; bf16 autocast {'on' if r['autocast_bf16'] else 'off'}; "
                         f"embeddings {q['embedding_dtype']} under QLoRA; {q['device']}; {env}]")
        else:
            lines.append(f"memory: a subprocess failed: {json.dumps({k: v for k, v in r.items() if isinstance(v, dict)})[:1500]}")
    report["machine"] = platform.platform()
    print("\n".join(lines))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
