"""Benchmark: closed-loop simulator throughput with planners vs plain log replay.

Run as:
    python eval/bench_closed_loop.py                                   # constant_velocity, 2 scenes
    python eval/bench_closed_loop.py --planner log_waypoints student --checkpoint student=runs/student --no-explain
    python eval/bench_closed_loop.py --planner ego_mlp --checkpoint runs/ego_mlp --scenes scene-0061 scene-0655 scene-1077

All rows run in this process on the same scenes and horizon (one MetaDrive engine at a time):
``log_replay`` (MetaDrive's ``ReplayEgoCarPolicy``, no planner, no controller: the simulator's
own cost) and one row per planner (adapter + planner at 2 Hz + pure pursuit/PID at 10 Hz;
``--no-explain``: the student plans only, no reasoning text, its "plan-only" speed). Prints
simulator steps per second (10 Hz steps; wall time of the rollouts, engine start excluded),
planner latency, the ratio planner / log replay, and whether each planner meets the goal of
:data:`GOAL_RATIO` x log replay. Figures are printed, never asserted; on a shared machine they
are inflated by the other jobs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np

from dsdrive.data.paths import default_scenarios_dir
from dsdrive.evaluation.closed_loop.rollout import RolloutConfig, make_env, rollout_scenario
from dsdrive.evaluation.closed_loop.scenario_index import prepare_working_copy
from dsdrive.planners.registry import load_planner, needs_checkpoint, parse_checkpoints

GOAL_RATIO = 0.3
"""A planner row should run at least this fraction of log replay's steps per second (issue 11)."""


def _run(work, planner, config, repeats: int) -> tuple[float, int, list[float]]:
    env = make_env(work, planner is None, config.traffic)
    try:
        steps, wall, lat = 0, 0.0, []
        for _ in range(repeats):
            for seed, (file, scene) in enumerate(zip(work.files, work.scene_ids)):
                t0 = time.perf_counter()
                sr = rollout_scenario(env, seed, scene, file, planner, config)
                wall += time.perf_counter() - t0
                steps += sr.num_steps
                lat += [p.latency_ms for p in sr.plans]
    finally:
        env.close()
    return wall, steps, lat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="closed-loop throughput: planners vs log replay")
    ap.add_argument("--scenarios", default=None)
    ap.add_argument("--scenes", nargs="*", default=["scene-0061", "scene-0655"])
    ap.add_argument("--planner", nargs="+", default=["constant_velocity"])
    ap.add_argument("--checkpoint", nargs="*", default=[], help="DIR, or NAME=DIR per trained planner")
    ap.add_argument("--traffic", choices=("replay", "reactive"), default="replay")
    ap.add_argument("--no-explain", action="store_true", help="drive with compute_trajectory only (no per-step explanation; faster)")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        src = default_scenarios_dir(args.scenarios)
        work = prepare_working_copy(src, tempfile.mkdtemp(prefix="bench_closed_loop_"), args.scenes)
        ckpts = parse_checkpoints(args.checkpoint, args.planner)
        planners = {name: load_planner(name, ckpts.get(name) if needs_checkpoint(name) else None) for name in args.planner}
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"bench_closed_loop: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    config = RolloutConfig(traffic=args.traffic, max_steps=args.max_steps, explain=not args.no_explain)
    rows = {}
    for name, p in (("log_replay", None), *planners.items()):
        wall, steps, lat = _run(work, p, config, args.repeats)
        rows[name] = (steps / wall, steps, wall, lat)
    base = rows["log_replay"][0]
    print(f"scenes: {', '.join(work.scene_ids)}; traffic: {args.traffic}; explain: {not args.no_explain}; repeats: {args.repeats}")
    print(f"{'row':<20} {'steps':>7} {'wall s':>8} {'steps/s':>9} {'ratio':>7} {'planner ms (mean/p95)':>22}")
    for name, (sps, steps, wall, lat) in rows.items():
        lat_s = f"{np.mean(lat):.2f}/{np.percentile(lat, 95):.2f}" if lat and name != "log_replay" else "-"
        print(f"{name:<20} {steps:>7d} {wall:>8.2f} {sps:>9.1f} {sps / base:>7.2f} {lat_s:>22}")
    for name in planners:
        ratio = rows[name][0] / base
        print(f"goal {name} >= {GOAL_RATIO:.1f}x log replay: {'met' if ratio >= GOAL_RATIO else 'NOT met'} ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
