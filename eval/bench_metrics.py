"""Benchmark: vectorised planning metrics vs the per-sample shapely reference, same predictions.

Run as:
    python eval/bench_metrics.py --data outputs/main/planning --synthetic 2000

Prints, for each workload, the wall time of :func:`dsdrive.evaluation.metrics.planning.evaluate_trajectories`
(numpy, batched separating-axis test) and of :func:`dsdrive.evaluation.metrics.reference.reference_evaluate`
(shapely loop), their ratio, and the agreement: mismatched collision indicators (must be 0) and
the largest absolute difference of per-step L2 and of every reported table value.
Workloads: the held-out scenes of ``--data`` planned by the constant-velocity baseline (when
``--data`` is given), and ``--synthetic`` random samples from :mod:`dsdrive.evaluation.metrics.synthetic`
with noisy ground-truth predictions. The first line prints the configuration (workloads, repeats,
threads available, numpy / shapely versions, load average); each workload line its sample and
agent counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import shapely

from dsdrive.data.dataset import load_dataset_dir, load_samples
from dsdrive.evaluation.metrics.planning import PROTOCOLS, complete_future_mask, evaluate_trajectories, summarize_by_command
from dsdrive.evaluation.metrics.reference import reference_evaluate
from dsdrive.evaluation.metrics.synthetic import random_samples
from dsdrive.evaluation.open_loop import plan_samples, select_scenes
from dsdrive.planners.constant_velocity import ConstantVelocityPlanner


def best_time(fn, repeats: int) -> tuple[float, object]:
    """Smallest wall time (s) over ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def table_values(summary: dict) -> np.ndarray:
    """Every reported number of a :func:`summarize_by_command` output, flattened (None -> nan)."""
    vals = []
    for cmd in sorted(summary):
        for p in PROTOCOLS:
            for metric in ("L2", "collision"):
                vals += [np.nan if v is None else v for v in summary[cmd][p][metric].values()]
    return np.array(vals, dtype=np.float64)


def compare(label: str, pred: np.ndarray, samples: list, repeats: int, ref_repeats: int = 1) -> None:
    """Time both evaluations interleaved (vectorised, reference, vectorised, ...; best of each) and print the line."""
    t_vec = t_ref = float("inf")
    for r in range(max(repeats, ref_repeats)):
        if r < repeats:
            t, fast = best_time(lambda: evaluate_trajectories(pred, samples), 1)
            t_vec = min(t_vec, t)
        if r < ref_repeats:
            t, ref = best_time(lambda: reference_evaluate(pred, samples), 1)
            t_ref = min(t_ref, t)
    mismatch = int((fast.collision != ref.collision).sum() + (fast.gt_collision != ref.gt_collision).sum())
    l2_diff = float(np.max(np.abs(fast.l2 - ref.l2))) if len(samples) else 0.0
    tab_diff = float(np.nanmax(np.abs(table_values(summarize_by_command(fast)) - table_values(summarize_by_command(ref)))))
    n_agents = sum(len(s.inputs.agents) for s in samples)
    print(
        f"{label}: {len(samples)} samples, {n_agents} agents | vectorised {t_vec * 1e3:.1f} ms, "
        f"shapely reference {t_ref * 1e3:.1f} ms, speed-up x{t_ref / max(t_vec, 1e-9):.1f} | "
        f"collision indicators mismatched: {mismatch} of {2 * fast.collision.size}, "
        f"planned collision steps {int(fast.collision.sum())}, GT collision steps {int(fast.gt_collision.sum())} | "
        f"max |dL2| {l2_diff:.2e} m, max |d table value| {tab_diff:.2e}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="planning dataset; its held-out scenes are planned by constant velocity")
    ap.add_argument("--scenes", default="val", help="val | train | all | comma-separated scene ids")
    ap.add_argument("--synthetic", type=int, default=2000, help="number of synthetic samples (0: skip)")
    ap.add_argument("--repeats", type=int, default=5, help="vectorised timing repeats (best is kept)")
    ap.add_argument("--ref-repeats", type=int, default=1, help="shapely reference timing repeats, interleaved (best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"config: data {args.data or 'none'} (scenes {args.scenes}), synthetic {args.synthetic} samples (seed {args.seed}); "
          f"vectorised: best of {args.repeats}, shapely reference: best of {args.ref_repeats} (interleaved); numpy {np.__version__}, shapely {shapely.__version__}, "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")

    if args.data:
        scenes = select_scenes(list(load_dataset_dir(args.data)["scene_id"]), args.scenes)
        loaded = load_samples(args.data, scenes=scenes)
        samples = [s for s, k in zip(loaded, complete_future_mask(loaded)) if k]
        pred = plan_samples(ConstantVelocityPlanner(), samples, progress=False)
        compare(f"real {','.join(scenes)} (constant velocity)", pred, samples, args.repeats, args.ref_repeats)
        noisy = np.stack([s.targets.ego_future for s in samples]) + np.random.default_rng(args.seed).normal(0, 1.0, (len(samples), 6, 3))
        compare(f"real {','.join(scenes)} (GT + 1 m noise)", noisy, samples, args.repeats, args.ref_repeats)
    if args.synthetic:
        samples = random_samples(args.synthetic, seed=args.seed)
        rng = np.random.default_rng(args.seed + 1)
        pred = np.stack([s.targets.ego_future for s in samples]) + rng.normal(0, 1.5, (len(samples), 6, 3))
        compare("synthetic (GT + 1.5 m noise)", pred, samples, args.repeats, args.ref_repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
