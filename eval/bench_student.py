"""Benchmark the student against text-decoding and plain-SFT baselines on the SAME backbone (one run).

Run as:
    python eval/bench_student.py --only latency,step                       # tiny shape (Qwen2 256 x 4), 1 thread
    python eval/bench_student.py --shape qwen2.5-0.5b --only latency,step  # Qwen2.5-0.5B shape, random weights
    python eval/bench_student.py --shape qwen2.5-0.5b --only memory        # QLoRA vs fp32 LoRA, recipe settings
    python eval/bench_student.py --data outputs/main/planning_annotated    # your annotated dataset
    python eval/bench_student.py --only latency --sequence-order reasoning_first   # + reasoning-first plan() cost
    python eval/bench_student.py --shape qwen2.5-0.5b --only step --batch_size 1 --topk 20       # distill (+ token KD) vs SFT

Data: ``--data`` (an annotated planning dataset: ``dsdrive build`` + ``dsdrive annotate`` +
``dsdrive merge``); when the folder does not exist the same three stages run first on the
ScenarioNet nuScenes-mini scenes of ``../shared/data`` with the rule annotator (about 15 s) into a
temporary folder, so the command works on a fresh clone.

Shapes (random weights: speed and memory, not quality): ``tiny`` = the Qwen2 of the tiny recipe
(hidden 256, 4 layers, 4 heads / 2 KV heads, FFN 512, the 1,024-token BPE trained on the samples,
scene encoder 64 wide); ``qwen2.5-0.5b`` = Qwen2.5-0.5B's config (hidden 896, 24 layers, 14 heads /
2 KV heads, FFN 4,864, vocabulary 151,936, tied embeddings, 494 M parameters) with the student
heads of ``recipes/configs/qwen2.5-0.5b/distill_qlora.yaml`` (scene encoder 128 wide, prompt <= 384
and reasoning <= 256 tokens). ``--hidden/--layers/--heads`` override a shape.

Prints, as ratios measured in this run, each on one line with its full configuration (backbone
shape, batch, sequence lengths, threads, device), then the whole report as JSON:

(a) latency: ``StudentModel.plan()`` (one forward over [scene][prompt][queries]) vs decoding the
    same trajectory as text "[(x1,y1),...,(x6,y6)]" (GPT-Driver / EvoDriveVLA style) with
    ``backbone.generate`` (greedy, KV cache) after the same prompt, forcing exactly as many new
    tokens as the tokenised trajectory string has (min_new_tokens = max_new_tokens); batch 1.
    Timed interleaved with a third side, ``plan(risk_map=False)``: the same forward without the
    BEV splat and the RiskHead, whose map a trajectory never reads (what
    ``StudentPlanner.compute_trajectories``, i.e. open-loop and closed-loop evaluation, runs);
    the text side is unchanged (same prompt, same model, KV cache on). With
    ``--sequence-order reasoning_first`` also: ``plan()`` of the same student (same weights)
    with the reasoning-first layout, which generates the reasoning before reading the queries,
    forced to as many tokens as the sample's annotator reasoning has (random weights emit no eos),
    vs the plan-first ``plan()``; batch 1.
(b) training step: one distillation step (all heads + the five losses) vs one plain SFT step (LM
    loss on the reasoning text only, backbone only), same backbone, batch and AdamW (one optimizer
    over all parameters, so its state is shared: an SFT step updates the backbone only); and,
    interleaved with both, the distillation step WITH token-level KD as ``DistillTrainer`` adds it
    (:func:`dsdrive.training.token_kd.token_kd_term` with ``DistillConfig``'s defaults: sparse
    top-k forward KL, T 1, renormalised over the top-k, weight 1) from a synthetic cached top-k of
    the shape an annotator writes (``--topk`` candidates per reasoning token: the target token
    first, then distinct random ids; log-probs sorted, summing to 0.9), so no teacher is loaded.
    The SFT step is Hugging Face's causal-LM loss (as TRL's SFT): the LM head runs at every position,
    prompt included (labels -100); the student runs it at its reasoning positions only, which at a
    151,936-token vocabulary (0.5B shape) outweighs the student's heads.
(c) peak memory of a training step: QLoRA (4-bit NF4 backbone + LoRA) vs fp32 LoRA, each in its own
    subprocess, with the recipe's settings (LoRA r 16 / alpha 32 on q, k, v, o, gate, up, down;
    gradient checkpointing on the backbone; AdamW): two steps, the peak of the second (optimizer
    state allocated). CPU: the resident-set high-water mark reset just before that step
    (``/proc/self/clear_refs``), minus the resident set before the model was loaded (weights,
    gradients, optimizer state and activations count; libraries and load-time transients do not:
    ``malloc_trim`` hands freed heap back to the system before each reading, and glibc maps every
    block over 128 KiB on its own (:data:`MALLOC_ENV`), else freed heap stays resident by chance and
    counts as the step's);
    CUDA: ``torch.cuda.max_memory_allocated``. Plus each backbone's ``get_memory_footprint()``.

Each ratio's two sides are timed interleaved (A B A B ..., after one warm-up of each), so load
drifting during the run hits both alike; the medians and the median of the per-pair ratios are
reported. ``--clock cpu`` times the process's CPU seconds instead of the wall (for a check on a
loaded machine; README quotes wall seconds).
"""

from __future__ import annotations

import argparse
import copy
import contextlib
import io
import json
import os
import platform
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
SCENARIONET = ROOT.parent / "shared" / "data" / "nuscenes-mini-scenarionet"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"""LoRA targets of recipes/configs/qwen2.5-0.5b/distill_qlora.yaml."""

SHAPES = {
    "tiny": dict(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=512, vocab=0, tied=False, rope_theta=10000.0,
                 scene_dim=64, max_prompt_tokens=256, max_reasoning_tokens=192),
    "qwen2.5-0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936, tied=True, rope_theta=1e6,
                         scene_dim=128, max_prompt_tokens=384, max_reasoning_tokens=256),
}
"""Backbone shape + student head settings per ``--shape`` (vocab 0: the BPE's own size)."""


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``--clock``: wall seconds (the default, what README quotes), or this process's CPU seconds (all its
threads), which a loaded machine inflates far less than the wall (it still slows memory-bound work)."""
clock = CLOCKS["wall"]


def paired(fa, fb, reps: int) -> tuple[list[float], list[float]]:
    """Seconds (:data:`clock`: wall unless ``--clock cpu``) of ``fa`` and ``fb`` run alternately ``reps`` times each, after one warm-up of each."""
    fa()
    fb()
    ta, tb = [], []
    for _ in range(reps):
        for fn, ts in ((fa, ta), (fb, tb)):
            t = clock()
            fn()
            ts.append(clock() - t)
    return ta, tb


def interleaved(fns, reps: int) -> list[list[float]]:
    """Seconds (:data:`clock`) of each of ``fns`` run in turn (A B C A B C ...) ``reps`` times, after one warm-up of each."""
    for fn in fns:
        fn()
    ts = [[] for _ in fns]
    for _ in range(reps):
        for fn, t_list in zip(fns, ts):
            t = clock()
            fn()
            t_list.append(clock() - t)
    return ts


def ratio_stats(ta: list[float], tb: list[float]) -> dict:
    """Medians (ms) of both sides and the median of the per-pair ratios b / a."""
    return {"a_ms": 1e3 * statistics.median(ta), "b_ms": 1e3 * statistics.median(tb),
            "ratio": statistics.median(b / a for a, b in zip(ta, tb))}


def shape_of(a: argparse.Namespace) -> dict:
    """The ``--shape`` preset with ``--hidden/--layers/--heads`` overrides applied."""
    s = dict(SHAPES[a.shape])
    for k in ("hidden", "layers", "heads"):
        if getattr(a, k) is not None:
            s[k] = getattr(a, k)
    if a.hidden is not None and a.shape == "tiny":
        s["intermediate"] = 2 * s["hidden"]
    return s


def backbone_config(shape: dict, tok):
    """Qwen2 config of ``shape`` over tokenizer ``tok`` (its pad/bos/eos ids)."""
    cfg = tiny_qwen2_config(max(shape["vocab"], len(tok)), hidden_size=shape["hidden"], layers=shape["layers"], heads=shape["heads"],
                            kv_heads=shape["kv_heads"], max_positions=32768 if shape["vocab"] else 2048, pad_token_id=tok.pad_token_id,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=shape["tied"],
                            rope_theta=shape["rope_theta"])
    cfg.intermediate_size = shape["intermediate"]
    return cfg


def describe(shape: dict, n_params: int) -> str:
    return (f"Qwen2 hidden {shape['hidden']} x {shape['layers']} layers, {shape['heads']} heads / {shape['kv_heads']} KV, "
            f"FFN {shape['intermediate']}, vocab {shape['vocab'] or 'BPE'}{' tied' if shape['tied'] else ''}, {n_params / 1e6:.1f} M params")


def student_kwargs(shape: dict) -> dict:
    return dict(scene_dim=shape["scene_dim"], scene_layers=2, bev_height=32, bev_width=32)


def build(samples, shape: dict, seed: int = 0):
    """(student, processor, tokenizer) on a random Qwen2 backbone of ``shape`` with a BPE trained on ``samples``."""
    tok = build_tokenizer(samples, vocab_size=1024)
    torch.manual_seed(seed)
    model = StudentModel.from_backbone(AutoModelForCausalLM.from_config(backbone_config(shape, tok)),
                                       vocabulary=PlanningVocabulary.fit(samples, seed=seed), **student_kwargs(shape))
    return model, StudentProcessor(tok, model.config, shape["max_prompt_tokens"], shape["max_reasoning_tokens"]), tok


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

        def gen():
            with torch.no_grad():
                return model.backbone.generate(input_ids=ids, attention_mask=mask, do_sample=False, min_new_tokens=n_new,
                                               max_new_tokens=n_new, pad_token_id=proc.tokenizer.pad_token_id, use_cache=True)

        assert gen().shape[1] - ids.shape[1] == n_new
        full, lean = model.plan(batch), model.plan(batch, risk_map=False)
        if not torch.equal(full.waypoints, lean.waypoints):
            raise AssertionError("plan(risk_map=False) changed the waypoints")
        tp, tl, tt = interleaved([lambda: model.plan(batch), lambda: model.plan(batch, risk_map=False), gen], reps)
        plan_len = int(batch["agents_mask"].sum() + batch["map_mask"].sum()) + 1 + int(mask.sum()) + model.config.num_queries
        rows.append((ratio_stats(tp, tt), n_new, int(mask.sum()), plan_len, ratio_stats(tl, tt)))
    return {"plan_ms": statistics.median(r[0]["a_ms"] for r in rows), "text_decode_ms": statistics.median(r[0]["b_ms"] for r in rows),
            "ratio_text_over_plan": statistics.median(r[0]["ratio"] for r in rows), "samples": len(rows),
            "plan_no_risk_ms": statistics.median(r[4]["a_ms"] for r in rows),
            "ratio_text_over_plan_no_risk": statistics.median(r[4]["ratio"] for r in rows),
            "trajectory_tokens_median": statistics.median(r[1] for r in rows), "prompt_tokens_median": statistics.median(r[2] for r in rows),
            "plan_sequence_median": statistics.median(r[3] for r in rows)}


def bench_reasoning_first(model, proc, samples, reps: int) -> dict:
    """Latency of a reasoning-first ``plan()`` (generate the reasoning, then read the queries; the
    same weights, ``sequence_order`` switched) vs the plan-first ``plan()`` (one forward), batch 1;
    the reasoning is forced to the length of each sample's annotator reasoning (eos never matches)."""
    model.eval()
    rf = copy.deepcopy(model)
    rf.config.sequence_order = "reasoning_first"
    rows = []
    for s in samples:
        batch = proc([s.inputs])
        n_r = len(proc.encode_sample(s)["reasoning_ids"])

        def reason_then_plan():
            return rf.plan_and_explain(batch, max_new_tokens=n_r, eos_token_id=-1)

        assert reason_then_plan()[1].shape[1] == n_r
        tp, tr = paired(lambda: model.plan(batch), reason_then_plan, reps)
        rows.append((ratio_stats(tp, tr), n_r))
    return {"plan_first_ms": statistics.median(r[0]["a_ms"] for r in rows), "reasoning_first_ms": statistics.median(r[0]["b_ms"] for r in rows),
            "ratio_reasoning_first_over_plan_first": statistics.median(r[0]["ratio"] for r in rows), "samples": len(rows),
            "reasoning_tokens_median": statistics.median(r[1] for r in rows)}


def synthetic_topk(reasoning_ids: torch.Tensor, reasoning_mask: torch.Tensor, vocab: int, k: int, seed: int = 0) -> dict:
    """A cached annotator top-k of the shape :class:`dsdrive.student.processing_student.StudentProcessor`
    batches (``TOKEN_KD_KEYS``): teacher_topk_ids (B, R, k) long (the reasoning token first, then
    k - 1 distinct other ids), teacher_topk_logprobs (B, R, k) float32 sorted descending with
    probabilities summing to 0.9 (a tail outside the top-k), teacher_token_mask (B, R) bool.

    Raises:
        ValueError: ``k`` < 1 or larger than ``vocab``.
    """
    if not 1 <= k <= vocab:
        raise ValueError(f"--topk {k}: must lie in [1, vocabulary size {vocab}]")
    g = torch.Generator().manual_seed(seed)
    b, r = reasoning_ids.shape
    offsets = torch.randint(1, vocab - k + 2, (b, r, 1), generator=g) + torch.arange(k - 1)  # in [1, vocab - 1]: k - 1 consecutive ids
    others = (reasoning_ids[..., None] + offsets) % vocab  # never the target itself (offsets < vocab)
    ids = torch.cat([reasoning_ids[..., None], others], -1) if k > 1 else reasoning_ids[..., None]
    logits = torch.randn(b, r, k, generator=g).sort(-1, descending=True).values * 2.0
    logprobs = torch.log_softmax(logits, -1) + torch.log(torch.tensor(0.9))
    return {"teacher_topk_ids": ids.long(), "teacher_topk_logprobs": logprobs.float(), "teacher_token_mask": reasoning_mask.bool().clone()}


def token_kd_args():
    """``DistillConfig``'s default ``token_kd_*`` settings with the term switched on (weight 1), as
    read by :func:`dsdrive.training.token_kd.token_kd_term` (a namespace: a real ``DistillConfig``
    with a weight > 0 insists on a cache folder, which the synthetic cache has none of)."""
    from types import SimpleNamespace

    from dsdrive.training.distill_config import DistillConfig

    with tempfile.TemporaryDirectory() as d:
        cfg = DistillConfig(output_dir=d, report_to=[], use_cpu=True)
    kd = {k: getattr(cfg, k) for k in vars(cfg) if k.startswith("token_kd_")}
    return SimpleNamespace(**{**kd, "token_kd_weight": 1.0})


def bench_step(model, proc, samples, reps: int, batch_size: int, topk: int = 20) -> dict:
    from dsdrive.training.token_kd import token_kd_term

    model.train()
    batch = proc(samples[:batch_size])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    vocab = model.backbone.get_output_embeddings().weight.shape[0]
    teacher = synthetic_topk(batch["reasoning_ids"], batch["reasoning_mask"], vocab, topk)
    kd_args = token_kd_args()

    def distill_step():
        opt.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        opt.step()

    ids = torch.cat([batch["prompt_ids"], batch["reasoning_ids"]], 1)
    att = torch.cat([batch["prompt_mask"], batch["reasoning_mask"]], 1).long()
    labels = torch.cat([torch.full_like(batch["prompt_ids"], -100), batch["reasoning_ids"].masked_fill(~batch["reasoning_mask"].bool(), -100)], 1)
    bb = model.backbone

    def sft_step():  # grads of the backbone only: AdamW skips the heads (grad None)
        opt.zero_grad(set_to_none=True)
        bb(input_ids=ids, attention_mask=att, labels=labels).loss.backward()
        opt.step()

    def distill_token_kd_step():  # DistillTrainer.compute_loss with token_kd_weight > 0
        opt.zero_grad(set_to_none=True)
        out = model(**batch)
        (out.loss + kd_args.token_kd_weight * token_kd_term(out, teacher, batch["reasoning_mask"], kd_args)).backward()
        opt.step()

    td, ts, tk = interleaved([sft_step, distill_step, distill_token_kd_step], reps)
    st, sk = ratio_stats(td, ts), ratio_stats(td, tk)
    scene = int(batch["agents_mask"].sum(1).max() + batch["map_mask"].sum(1).max()) + 1
    return {"distill_step_ms": st["b_ms"], "sft_step_ms": st["a_ms"], "ratio_distill_over_sft": st["ratio"], "batch_size": batch_size,
            "distill_token_kd_step_ms": sk["b_ms"], "ratio_distill_token_kd_over_sft": sk["ratio"],
            "token_kd": {"top_k": topk, "divergence": kd_args.token_kd_divergence, "temperature": kd_args.token_kd_temperature,
                         "tail": kd_args.token_kd_tail, "weight": kd_args.token_kd_weight, "vocab": vocab},
            "sft_seq_len": ids.shape[1], "distill_seq_len": scene + ids.shape[1] + model.config.num_queries,
            "reasoning_tokens": batch["reasoning_ids"].shape[1]}


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
sys.path.insert(0, {root!r})
from dsdrive.data.dataset import load_samples
from dsdrive.student import StudentModel, StudentProcessor
from dsdrive.student.backbone import load_backbone
from dsdrive.student.lora import apply_lora
from transformers import AutoTokenizer

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {{field}}")

stages = {{}}
def stage(name):
    stages[name] = {{k: round(rss(k + ":") - (base if k == "VmRSS" else 0)) for k in ("VmRSS", "RssAnon", "RssFile")}}

samples = [s for s in load_samples({data!r}) if s.annotation][:{bs}]
tok = AutoTokenizer.from_pretrained({bb!r})
cuda = torch.cuda.is_available()
trim(0)
base = rss("VmRSS:")
q = {quant!r}
backbone = load_backbone({bb!r}, quantization=q)
foot = backbone.get_memory_footprint()
stage("loaded")
model = StudentModel.from_backbone(backbone, **{student_kw!r})
if cuda: model = model.to(backbone.device if q else "cuda")
if {ckpt!r}: model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={{"use_reentrant": False}})
model = apply_lora(model, 16, 32, 0.05, {targets!r}, q)
model.train()
stage("lora")
proc = StudentProcessor(tok, model.config, {max_prompt}, {max_reasoning})
batch = {{k: v.to(model.device) if torch.is_tensor(v) else v for k, v in proc(samples).items()}}
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
def step():
    opt.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    opt.step()
step()
stage("step1")
if cuda:
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
else:
    trim(0)
    open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current resident set
step()
peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss("VmHWM:") - base
stage("step2")
print(json.dumps({{"rss_stages_mib": stages, "peak_mib": peak, "backbone_footprint_mib": foot / 2**20, "device": "cuda" if cuda else "cpu",
                   "trainable_M": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
                   "seq_len": int(batch["prompt_ids"].shape[1] + batch["reasoning_ids"].shape[1])}}))
"""


def bench_memory(data: str, shape: dict, batch_size: int, threads: int, grad_ckpt: bool) -> dict:
    tok = build_tokenizer(load_samples(data), vocab_size=1024)
    cfg = backbone_config(shape, tok)
    res = {"lora": f"r 16, alpha 32 on {','.join(LORA_TARGETS)}", "gradient_checkpointing": grad_ckpt, "batch_size": batch_size}
    with tempfile.TemporaryDirectory() as d:
        m = AutoModelForCausalLM.from_config(cfg)
        res["params_M"] = sum(p.numel() for p in m.parameters()) / 1e6
        m.save_pretrained(d)
        tok.save_pretrained(d)
        del m
        for name, q in (("fp32_lora", None), ("qlora_4bit", "4bit")):
            code = MEM_CHILD.format(root=str(ROOT), data=data, bs=batch_size, bb=d, quant=q, threads=threads, ckpt=grad_ckpt,
                                    student_kw=student_kwargs(shape), targets=LORA_TARGETS, max_prompt=shape["max_prompt_tokens"],
                                    max_reasoning=shape["max_reasoning_tokens"])
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": str(threads), **MALLOC_ENV})
            if out.returncode != 0:
                res[name] = {"error": out.stderr[-800:]}
                continue
            res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    if "peak_mib" in res.get("fp32_lora", {}) and "peak_mib" in res.get("qlora_4bit", {}):
        res["ratio_qlora_over_fp32_peak"] = res["qlora_4bit"]["peak_mib"] / res["fp32_lora"]["peak_mib"]
        res["ratio_qlora_over_fp32_backbone"] = res["qlora_4bit"]["backbone_footprint_mib"] / res["fp32_lora"]["backbone_footprint_mib"]
    return res


def prepare_data(path: str, tmp: str) -> tuple[str, str]:
    """``path`` when it exists, else the annotated ScenarioNet build made in ``tmp`` (build, rule annotate, merge)."""
    if Path(path).is_dir():
        return path, path
    from data_builders.build import main as build_main

    from dsdrive.annotation.annotate import main as annotate_main
    from dsdrive.annotation.annotate import merge_main

    t = Path(tmp)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        steps = [(build_main, ["--source", "scenarionet", "--input", str(SCENARIONET), "--out", str(t / "planning")]),
                 (annotate_main, ["--teacher", "rule", "--data", str(t / "planning"), "--out", str(t / "annotations")]),
                 (merge_main, ["--data", str(t / "planning"), "--annotations", str(t / "annotations"), "--out", str(t / "annotated")])]
        for fn, argv in steps:
            if fn(argv) != 0:
                raise RuntimeError(f"--data {path} does not exist and preparing it failed at {fn.__module__}.{fn.__name__} {argv}")
    return str(t / "annotated"), f"{SCENARIONET.name} (dsdrive build + rule annotate + merge, since {path} does not exist)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="outputs/main/planning_annotated", help="annotated planning dataset (built when absent)")
    p.add_argument("--only", default="latency,step,memory", help="comma-separated: latency, step, memory")
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--samples", type=int, default=4, help="samples timed for latency (batch 1 each)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of each side (interleaved)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                   help="latency/step timing: wall seconds, or the process's CPU seconds (less sensitive to machine load)")
    p.add_argument("--topk", type=int, default=20, help="step: cached top-k width of the token-KD step (OpenAI / vLLM allow up to 20)")
    p.add_argument("--no_grad_ckpt", action="store_true", help="memory: no gradient checkpointing (the recipe has it on)")
    p.add_argument("--sequence-order", default="plan_first", choices=["plan_first", "reasoning_first"],
                   help="latency: reasoning_first also times a reasoning-first plan() (generation, then queries) vs plan_first")
    a = p.parse_args(argv)
    global clock
    clock = CLOCKS[a.clock]
    torch.set_num_threads(a.threads)
    shape = shape_of(a)
    only = set(a.only.split(","))
    env = (f"{a.threads} thread(s), cpu, torch {torch.__version__}, {os.cpu_count()} CPUs, "
           f"load average {os.getloadavg()[0]:.2f} at start" + ("; CPU seconds, not wall" if a.clock == "cpu" else ""))
    with tempfile.TemporaryDirectory() as tmp:
        data, data_desc = prepare_data(a.data, tmp)
        samples = [s for s in load_samples(data) if s.annotation][: max(a.samples, a.batch_size)]
        report = {"shape": a.shape, "data": data_desc, "environment": env}
        lines = []
        if only & {"latency", "step"}:
            model, proc, _ = build(samples, shape)
            n_bb = sum(p.numel() for p in model.backbone.parameters())
            report["backbone"] = describe(shape, n_bb)
            report["student_params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
            if "latency" in only:
                r = report["latency"] = bench_latency(model, proc, samples[: a.samples], a.reps)
                cfg_txt = (f"[{report['backbone']}; batch 1; plan sequence {r['plan_sequence_median']:.0f} tokens (scene + prompt "
                           f"{r['prompt_tokens_median']:.0f} + 18 queries); text: prompt {r['prompt_tokens_median']:.0f} + "
                           f"{r['trajectory_tokens_median']:.0f} generated tokens, KV cache; median of {r['samples']} samples x {a.reps} reps; {env}]")
                lines.append(f"plan() vs text decoding: text {r['ratio_text_over_plan']:.2f}x slower ({r['plan_ms']:.1f} vs {r['text_decode_ms']:.1f} ms) "
                             + cfg_txt)
                lean_line = (f"plan(risk_map=False) vs text decoding: text {r['ratio_text_over_plan_no_risk']:.2f}x slower "
                             f"({r['plan_no_risk_ms']:.1f} vs {r['text_decode_ms']:.1f} ms; same waypoints, no BEV / RiskHead) " + cfg_txt)
                if a.sequence_order == "reasoning_first":
                    r = report["latency_reasoning_first"] = bench_reasoning_first(model, proc, samples[: a.samples], a.reps)
                    lines.append(f"reasoning-first plan() vs plan-first plan(): {r['ratio_reasoning_first_over_plan_first']:.1f}x slower "
                                 f"({r['reasoning_first_ms']:.1f} vs {r['plan_first_ms']:.1f} ms) [{report['backbone']}; batch 1; "
                                 f"{r['reasoning_tokens_median']:.0f} reasoning tokens generated (the annotator's length) before the 18 "
                                 f"queries; median of {r['samples']} samples x {a.reps} reps; {env}]")
                lines.append(lean_line)  # after the reasoning-first line (its position is tested elsewhere)
            if "step" in only:
                r = report["train_step"] = bench_step(model, proc, samples, a.reps, a.batch_size, a.topk)
                cfg_txt = (f"[{report['backbone']}; batch {a.batch_size}; distill sequence {r['distill_seq_len']} tokens, SFT sequence "
                           f"{r['sft_seq_len']} ({r['reasoning_tokens']} reasoning); full fine-tuning fp32, AdamW; {a.reps} reps; {env}]")
                kd = r["token_kd"]
                lines.append(f"distill step / SFT step: {r['ratio_distill_over_sft']:.2f}x ({r['distill_step_ms']:.0f} vs {r['sft_step_ms']:.0f} ms) "
                             + cfg_txt)
                lines.append(f"distill step with token KD / SFT step: {r['ratio_distill_token_kd_over_sft']:.2f}x ({r['distill_token_kd_step_ms']:.0f} "
                             f"vs {r['sft_step_ms']:.0f} ms; top-{kd['top_k']} of a vocabulary of {kd['vocab']}, {kd['divergence']}, T {kd['temperature']:g}, "
                             f"tail {kd['tail']}, synthetic cache) " + cfg_txt)
            del model
        if "memory" in only:
            r = report["memory"] = bench_memory(data, shape, a.batch_size, a.threads, not a.no_grad_ckpt)
            if "ratio_qlora_over_fp32_peak" in r:
                q, f = r["qlora_4bit"], r["fp32_lora"]
                lines.append(f"QLoRA 4-bit / fp32 LoRA training-step peak memory: {r['ratio_qlora_over_fp32_peak']:.2f}x "
                             f"({q['peak_mib']:.0f} vs {f['peak_mib']:.0f} MiB; backbone {r['ratio_qlora_over_fp32_backbone']:.2f}x, "
                             f"{q['backbone_footprint_mib']:.0f} vs {f['backbone_footprint_mib']:.0f} MiB) [{describe(shape, r['params_M'] * 1e6)}; "
                             f"batch {a.batch_size}, sequence {f['seq_len']} tokens + scene + queries; LoRA {r['lora']}; gradient checkpointing "
                             f"{'on' if r['gradient_checkpointing'] else 'off'}; {q['device']}; {env}]")
            else:
                lines.append(f"memory: a subprocess failed: {json.dumps({k: v for k, v in r.items() if isinstance(v, dict)})[:1500]}")
    report["machine"] = platform.platform()
    print("\n".join(lines))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
