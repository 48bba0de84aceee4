"""Benchmark: planning throughput of the DistillDrive teacher vs the student, same samples, same run.

Run as:
    python eval/bench_teacher_student.py --teacher outputs/ckpt/planning_teacher_label \
        --student outputs/ckpt/student --data outputs/main/planning --batch-sizes 1,16

Prints samples/s of each planner (forward + mode selection, no gradient, CPU unless --device) at
each batch size and the ratio student / teacher (DistillDrive's README reports FPS at batch 1:
teacher 31.6, student 6.0 on a GPU; their student also runs image backbones). The teacher is
timed on whole samples (it is privileged: it reads ground-truth agent futures), the student on
``PlanningInputs`` only. Input building (collation, tokenisation) is included for both. Without
``--student`` (or if the folder is missing) only the teacher is timed and the ratio is reported
as not measured. Without ``--data`` the synthetic samples of ``dsdrive.evaluation.metrics.synthetic`` are used.
Sides are timed interleaved (teacher, student, teacher, ...; best pass each) so load hits both
alike. The first line prints the configuration: both models' shapes and sizes, samples, agents
per sample, threads, device and the load average; the table gives it per batch size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from dsdrive.data.dataset import load_samples
from dsdrive.evaluation.metrics.synthetic import random_samples
from dsdrive.planners.distilldrive_teacher import PlanningTeacherPlanner
from dsdrive.planners.student import StudentPlanner


def throughput(fn, batches: list, repeats: int) -> float:
    """Samples per second of ``fn`` over ``batches`` (best of ``repeats`` passes, after a warm-up)."""
    return interleaved([fn], batches, repeats)[0]


def interleaved(fns: list, batches: list, repeats: int) -> list[float]:
    """Samples per second of each of ``fns`` over ``batches``: one warm-up each, then ``repeats``
    rounds that time every function in turn; the best pass of each is kept."""
    for fn in fns:
        fn(batches[0])
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            for b in batches:
                fn(b)
            best[k] = min(best[k], time.perf_counter() - t0)
    n = sum(len(b) for b in batches)
    return [n / t for t in best]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="planning-teacher checkpoint folder")
    ap.add_argument("--student", default=None, help="student checkpoint folder (dsdrive/planners/student.py)")
    ap.add_argument("--data", default=None, help="planning dataset folder; default: synthetic samples")
    ap.add_argument("--num-samples", type=int, default=32)
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.data:
        samples = load_samples(args.data)[: args.num_samples]
    else:
        samples = random_samples(args.num_samples, seed=0)
    teacher = PlanningTeacherPlanner(args.teacher, device=args.device)
    student = None
    if args.student and (Path(args.student) / "config.json").is_file():
        student = StudentPlanner(args.student, device=args.device)
    n_t = sum(p.numel() for p in teacher.model.parameters())
    n_s = sum(p.numel() for p in student.model.parameters()) if student else 0
    tc = teacher.model.config
    agents = [len(s.inputs.agents) for s in samples]
    student_desc = "student: not measured (no --student checkpoint)"
    if student:
        bb = student.model.config.backbone_config
        student_desc = (f"student {n_s / 1e6:.2f} M params (backbone {bb.get('model_type')} hidden {bb.get('hidden_size')} x "
                        f"{bb.get('num_hidden_layers')} layers, scene encoder {student.model.config.scene_dim} wide)")
    print(f"config: {len(samples)} samples of {args.data or 'synthetic data'} (agents per sample median {statistics.median(agents):.0f}, "
          f"max {max(agents)}); teacher {n_t / 1e6:.2f} M params (hidden {tc.hidden_dim}, {tc.agent_layers} agent + {tc.num_layers} "
          f"interaction layers); {student_desc}; device {args.device}, {args.threads} torch thread(s), torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; best of {args.repeats} interleaved passes")
    print(f"{'batch':>5} | {'teacher samples/s':>17} | {'student samples/s':>17} | student / teacher")
    for bs in (int(x) for x in args.batch_sizes.split(",")):
        batches = [samples[i:i + bs] for i in range(0, len(samples), bs)]
        if student is None:
            t = throughput(teacher.compute_trajectories_privileged, batches, args.repeats)
            print(f"{bs:>5} | {t:>17.1f} | {'not measured':>17} | not measured")
            continue
        t, s = interleaved([teacher.compute_trajectories_privileged, lambda b: student.compute_trajectories([x.inputs for x in b])],
                           batches, args.repeats)
        print(f"{bs:>5} | {t:>17.1f} | {s:>17.1f} | {s / t:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
