"""Benchmark: throughput of the local Qwen2.5-VL annotator by batch size (the scaling curve 1, 2, 4, 8).

Run as:
    .venv/bin/python eval/bench_vlm_batching.py                                   # tiny random model, CPU, 1 thread
    .venv/bin/python eval/bench_vlm_batching.py --max-new-tokens 128              # answers of a realistic length
    .venv/bin/python eval/bench_vlm_batching.py --variants batched,stock          # with vs without the batching fixes
    .venv/bin/python eval/bench_vlm_batching.py --model /models/Qwen2.5-VL-7B-Instruct --device cuda --threads 8

Every setting answers the same conversations (real six-camera samples: the nuScenes-0061 keyframe
and the DriveLM keyframes of ``../shared/data``, cycled to ``--samples``) with greedy decoding and
``min_new_tokens = max_new_tokens`` so every answer has the same length. What is timed is the first
pass of :meth:`~dsdrive.annotation.annotators.vlm_common.VLMAnnotator.annotate` from samples to
answers: building the conversations (image headers, prompt) and
:meth:`~dsdrive.annotation.annotators.qwen_vl.QwenVLAnnotator._chat` (image decoding and resizing,
the processor, ``generate``), not the answer parsing. Settings are interleaved (1, 2, 4, 8, 1, 2,
...) so machine load hits them alike; the median of ``--repeats`` passes is kept.

Variants: ``batched`` = the annotator as shipped (length-sorted batches, inputs of the next batch
prepared in a background thread, ``dsdrive_varlen_sdpa`` attention); ``stock`` = the same without
those three (conversation order, no prefetch, transformers' SDPA with a padding mask).

Prints the configuration (model shape, pixel budget and vision tokens per image, prompt lengths,
new tokens, threads, device, load), then per variant and batch size: samples/s, the ratio to batch
1 and the padding fraction of the batches (pad tokens / all tokens).

Without ``--model`` the tiny Qwen2.5-VL of :mod:`dsdrive.student.tiny_vl` is built in a temporary folder
(text: hidden 64, 2 layers; vision: hidden 32, 2 blocks; a 400-token BPE, so prompts are long).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from data_builders.drivelm import DRIVELM_SAMPLE as DRIVELM
from data_builders.drivelm import keyframe_planning_sample as drivelm_keyframe_sample
from data_builders.nuscenes_sample import NUSCENES_INFO, nuscenes_sample_0061
from dsdrive.student.tiny_vl import build_tiny_qwen_vl as _build_tiny_vl


def build_tiny_qwen_vl(out_dir: str | Path, min_pixels: int = 28 * 28 * 4, max_pixels: int = 28 * 28 * 16) -> Path:
    """Build and save the tiny random Qwen2.5-VL (:mod:`dsdrive.student.tiny_vl`) into ``out_dir``; returns it."""
    _build_tiny_vl(out_dir, min_pixels=min_pixels, max_pixels=max_pixels)
    return Path(out_dir)


from dsdrive.annotation.annotators.qwen_vl import VARLEN_ATTENTION, QwenVLAnnotator  # noqa: E402

VARIANTS = {
    "batched": dict(attn_implementation=VARLEN_ATTENTION, sort_by_length=True, prefetch=True),
    "stock": dict(attn_implementation="sdpa", sort_by_length=False, prefetch=False),
}
"""Annotator settings per ``--variants`` name."""


def padding_fraction(teacher: QwenVLAnnotator, convs: list, lengths: list[int]) -> float:
    """Pad tokens / all tokens over the batches ``teacher`` forms from ``convs`` (prompt lengths ``lengths``)."""
    pad = total = 0
    for idx in teacher._batches(convs):
        longest = max(lengths[i] for i in idx)
        pad += sum(longest - lengths[i] for i in idx)
        total += longest * len(idx)
    return pad / total


def describe(teacher: QwenVLAnnotator) -> str:
    """Text and vision shape of the loaded model."""
    c = teacher.model.config
    t, v = c.text_config, c.vision_config
    n = sum(p.numel() for p in teacher.model.parameters())
    return (f"Qwen2.5-VL text hidden {t.hidden_size} x {t.num_hidden_layers} layers ({t.num_attention_heads} heads / "
            f"{t.num_key_value_heads} KV, vocab {t.vocab_size}), vision hidden {v.hidden_size} x {v.depth} blocks, {n / 1e6:.2f} M params, "
            f"{teacher.model.dtype}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="Qwen2.5-VL folder; default: build the tiny test model")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--batch-sizes", default="1,2,4,8", help="comma-separated; the first is the baseline of the ratios")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--min-pixels", type=int, default=28 * 28 * 4)
    p.add_argument("--max-pixels", type=int, default=28 * 28 * 16)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the prefetch thread comes on top)")
    p.add_argument("--variants", default="batched", help=f"comma-separated of {sorted(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per setting (interleaved; median kept)")
    args = p.parse_args(argv)
    if not (NUSCENES_INFO.exists() and DRIVELM.exists()):
        print(f"real data absent ({NUSCENES_INFO.parent}, {DRIVELM}); nothing to benchmark", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    names = args.variants.split(",")
    tmp = tempfile.TemporaryDirectory()
    model = args.model or str(build_tiny_qwen_vl(tmp.name, args.min_pixels, args.max_pixels))
    pool = [nuscenes_sample_0061()] + [drivelm_keyframe_sample(i) for i in range(9)]
    samples = [pool[i % len(pool)] for i in range(args.samples)]
    teachers = {}
    for name in names:
        t = QwenVLAnnotator(model, batch_size=max(sizes), max_new_tokens=args.max_new_tokens, min_pixels=args.min_pixels,
                            max_pixels=args.max_pixels, device=args.device, **VARIANTS[name])
        t.model.generation_config.min_new_tokens = args.max_new_tokens
        teachers[name] = t

    def one_pass(t: QwenVLAnnotator) -> list[str | Exception]:
        return t._chat([t._conversation(s)[0] for s in samples])

    first = next(iter(teachers.values()))
    convs = [first._conversation(s)[0] for s in samples]
    lengths = [first._prompt_length(c) for c in convs]
    vis = [it["size"][0] * it["size"][1] // 784 for it in convs[0][1]["content"] if it["type"] == "image"]
    for t in teachers.values():  # warm-up: one batch of the largest size
        t.batch_size = max(sizes)
        t._chat(convs[: max(sizes)])
    print(f"config: {describe(first)} | {len(samples)} samples x {len(vis)} images, {vis[0]} vision tokens per image "
          f"(pixels {args.min_pixels}..{args.max_pixels}), prompt tokens min/median/max {min(lengths)}/{statistics.median(lengths):.0f}/"
          f"{max(lengths)} | {args.max_new_tokens} new tokens per answer, greedy | device {first.device}, {args.threads} torch thread(s), "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start | median of {args.repeats} "
          f"interleaved passes")
    times: dict[tuple[str, int], list[float]] = {(n, b): [] for n in names for b in sizes}
    for _ in range(args.repeats):
        for name in names:
            for b in sizes:
                t = teachers[name]
                t.batch_size = b
                t0 = time.perf_counter()
                out = one_pass(t)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                times[(name, b)].append(time.perf_counter() - t0)
                bad = [a for a in out if isinstance(a, Exception)]
                if bad:
                    raise RuntimeError(f"{name} batch {b}: {len(bad)} answers failed: {bad[0]}")
    print(f"{'variant':>8} | {'batch':>5} | {'samples/s':>9} | {'vs batch ' + str(sizes[0]):>10} | padding")
    for name in names:
        base = statistics.median(times[(name, sizes[0])])
        for b in sizes:
            teachers[name].batch_size = b
            med = statistics.median(times[(name, b)])
            print(f"{name:>8} | {b:>5} | {len(samples) / med:>9.2f} | {base / med:>9.2f}x | {padding_fraction(teachers[name], convs, lengths):.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
