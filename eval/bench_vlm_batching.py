"""Benchmark: batched (8) vs one-at-a-time generation throughput of the local Qwen2.5-VL teacher.

Run as:
    .venv/bin/python eval/bench_vlm_batching.py                      # tiny random model, CPU
    .venv/bin/python eval/bench_vlm_batching.py --model /models/Qwen2.5-VL-7B-Instruct --device cuda

Both settings answer the same conversations (real six-camera samples: the nuScenes-0061 keyframe
and the DriveLM keyframes of ``../shared/data``, cycled to ``--samples``) with greedy decoding
and ``min_new_tokens = max_new_tokens`` so every answer has the same length; prints samples/s for
batch 1 and batch ``--batch-size`` and their ratio, from one run. Without ``--model`` the tiny
Qwen2.5-VL of ``tests/helpers_vlm.py`` is built in a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tiny model and real-data samples of the VLM tests

from helpers_vlm import DRIVELM, NUSCENES_INFO, build_tiny_qwen_vl, drivelm_keyframe_sample, nuscenes_sample_0061  # noqa: E402

from dsdrive.annotation.annotators.qwen_vl import QwenVLAnnotator  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="Qwen2.5-VL folder; default: build the tiny test model")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--min-pixels", type=int, default=28 * 28 * 4)
    p.add_argument("--max-pixels", type=int, default=28 * 28 * 16)
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=2, help="timed passes per setting (best is kept)")
    args = p.parse_args(argv)
    if not (NUSCENES_INFO.exists() and DRIVELM.exists()):
        print(f"real data absent ({NUSCENES_INFO.parent}, {DRIVELM}); nothing to benchmark", file=sys.stderr)
        return 1
    tmp = tempfile.TemporaryDirectory()
    model = args.model or str(build_tiny_qwen_vl(tmp.name, args.min_pixels, args.max_pixels))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    pool = [nuscenes_sample_0061()] + [drivelm_keyframe_sample(i) for i in range(9)]
    samples = [pool[i % len(pool)] for i in range(args.samples)]
    teacher = QwenVLAnnotator(
        model, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, min_pixels=args.min_pixels,
        max_pixels=args.max_pixels, device=args.device,
    )
    teacher.model.generation_config.min_new_tokens = args.max_new_tokens
    convs = [teacher._conversation(s)[0] for s in samples]
    teacher._chat(convs[: args.batch_size])  # warm-up

    def timed(batch_size: int) -> float:
        teacher.batch_size = batch_size
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            teacher._chat(convs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return len(convs) / best

    one = timed(1)
    many = timed(args.batch_size)
    print(f"model: {model}  device: {teacher.device}  samples: {len(convs)} (6 images each)  "
          f"new tokens: {args.max_new_tokens}  pixels/image <= {args.max_pixels}")
    print(f"batch 1: {one:.2f} samples/s")
    print(f"batch {args.batch_size}: {many:.2f} samples/s")
    print(f"ratio batch {args.batch_size} / batch 1: {many / one:.2f}x")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
