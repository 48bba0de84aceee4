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
"""

from __future__ import annotations

import argparse
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
    fn(batches[0])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        best = min(best, time.perf_counter() - t0)
    return sum(len(b) for b in batches) / best


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
    print(f"{len(samples)} samples; teacher {n_t / 1e6:.2f} M params; "
          + (f"student {n_s / 1e6:.2f} M params" if student else "student: not measured (no --student checkpoint)"))
    print(f"{'batch':>5} | {'teacher samples/s':>17} | {'student samples/s':>17} | student / teacher")
    for bs in (int(x) for x in args.batch_sizes.split(",")):
        batches = [samples[i:i + bs] for i in range(0, len(samples), bs)]
        t = throughput(teacher.compute_trajectories_privileged, batches, args.repeats)
        if student is None:
            print(f"{bs:>5} | {t:>17.1f} | {'not measured':>17} | not measured")
            continue
        s = throughput(lambda b: student.compute_trajectories([x.inputs for x in b]), batches, args.repeats)
        print(f"{bs:>5} | {t:>17.1f} | {s:>17.1f} | {s / t:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
