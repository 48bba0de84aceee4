"""Closed-loop evaluation in MetaDrive on ScenarioNet scenes, with an HTML + JSON report.

Run as (the two forms are the same command):
    dsdrive closed-loop --scenarios ../shared/data/nuscenes-mini-scenarionet \\
        --planner log_replay constant_velocity --out /tmp/closed_loop
    dsdrive closed-loop --planner ego_mlp --checkpoint runs/ego_mlp --traffic reactive \\
        --scenes scene-0061 scene-0655 --out /tmp/closed_loop_mlp
    dsdrive closed-loop --planner log_replay ego_mlp student \\
        --checkpoint ego_mlp=runs/ego_mlp student=runs/student --out /tmp/closed_loop_cmp
    python eval/closed_loop.py --planner log_replay ego_mlp --data outputs/main/planning \\
        --train-ego-mlp-if-missing --out /tmp/closed_loop_mlp
    dsdrive closed-loop --planner log_waypoints constant_velocity --traffic reactive --out /tmp/closed_loop_reactive

``--checkpoint`` takes ``NAME=DIR`` per trained planner, or a bare ``DIR`` when exactly one
requested planner needs one (the parsing of ``dsdrive open-loop``). ego_mlp without a checkpoint:
with ``--train-ego-mlp-if-missing`` it is trained on the *training* scenes of the planning dataset
``--data`` (:func:`dsdrive.training.ego_mlp.train_ego_mlp_on_split`), saved to
``OUT/ego_mlp_trained/``, and this is printed; a warning names evaluated scenes it was trained on.

Each planner (``log_replay`` = the logged expert teleported along the log, the reference row;
``log_waypoints`` = the logged future tracked by the controller, the harness check; any name of
:func:`dsdrive.planners.registry.load_planner`) is rolled out on every scene (planner at 2 Hz,
pure pursuit + PID at 10 Hz; see :mod:`dsdrive.evaluation.closed_loop.rollout`), scored with
:mod:`dsdrive.evaluation.closed_loop.metrics` (route completion, collisions, NAVSIM-style NC / DAC / TTC /
C / EP / PDMS, latency) and reported in ``OUT/report.html`` (opens with no server) and
``OUT/report.json``. The ScenarioNet index files are written into a working copy
(``OUT/scenarios`` by default), never into the source folder. MetaDrive assets are checked and,
offline, replaced by a stub for state-only simulation (a warning says so).

``--scenes`` keeps the scenario files whose names contain one of the given strings; each string
must match a file (a typo is an error, not a smaller run), and the scene ids rolled out are printed.
Bad input: a folder with no scenario, a checkpoint folder that is missing or is not that
planner's -> exit 2 with a one-line message naming it; a scenario MetaDrive rejects, one shorter
than the horizon, one without a map (DAC/PDMS unscored) or a planner failure (e.g. NaN
waypoints) -> recorded in the report with the reason, the run goes on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dsdrive.evaluation.closed_loop.metrics import aggregate, scenario_metrics
from dsdrive.evaluation.closed_loop.report import write_report
from dsdrive.evaluation.closed_loop.rollout import RolloutConfig, run_closed_loop
from dsdrive.evaluation.closed_loop.scenario_index import list_scenario_files, prepare_working_copy

LOG_REPLAY = "log_replay"


def build_parser(prog: str = "dsdrive closed-loop") -> argparse.ArgumentParser:
    """The closed-loop command line (also ``python eval/closed_loop.py``); see the module docstring."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=None, help="folder of ScenarioNet *.pkl (default: $DSDRIVE_SCENARIOS or ../shared/data/nuscenes-mini-scenarionet)")
    ap.add_argument("--planner", nargs="+", default=[LOG_REPLAY], help="log_replay and/or registry names (constant_velocity, ego_mlp, student ...)")
    ap.add_argument("--checkpoint", nargs="*", default=[], help="DIR, or NAME=DIR per trained planner (ego_mlp, student ...)")
    ap.add_argument("--data", default=None, help="planning dataset folder: ego_mlp is trained on its training scenes with --train-ego-mlp-if-missing")
    ap.add_argument("--train-ego-mlp-if-missing", action="store_true", help="train ego_mlp on the training scenes of --data if no checkpoint is given")
    ap.add_argument("--traffic", choices=("replay", "reactive"), default="replay")
    ap.add_argument("--no-explain", action="store_true", help="drive with compute_trajectory only (no per-step explanation; faster)")
    ap.add_argument("--scenes", nargs="*", default=None, help="keep only scenario files containing these strings, e.g. scene-0061 (each must match)")
    ap.add_argument("--max-steps", type=int, default=None, help="cap simulator steps per scenario (10 Hz)")
    ap.add_argument("--workdir", default=None, help="working copy for the index files (default: OUT/scenarios)")
    ap.add_argument("--out", required=True, help="report folder (report.html, report.json)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def load(name: str, checkpoint: str | None):
    """``None`` for log replay, else the registry's planner (clear error for unknown names)."""
    if name == LOG_REPLAY:
        return None
    from dsdrive.planners.registry import load_planner, needs_checkpoint

    ckpt = checkpoint if needs_checkpoint(name) else None
    return load_planner(name, ckpt)


def check_scene_filters(source: Path, scenes: list[str] | None) -> None:
    """Every ``--scenes`` string must match a scenario file name in ``source``.

    Raises:
        FileNotFoundError: a string matches no file (lists the scenario files present).
    """
    if not scenes:
        return
    names = [f.name for f in list_scenario_files(source)]
    unmatched = [s for s in scenes if not any(s in n for n in names)]
    if unmatched:
        raise FileNotFoundError(f"{source}: --scenes {unmatched} match no scenario file (files: {names})")


def resolve_checkpoints(args: argparse.Namespace, out: Path) -> dict[str, str]:
    """{planner: checkpoint dir} from ``--checkpoint`` (``NAME=DIR`` or one bare ``DIR``), training
    ego_mlp into ``OUT/ego_mlp_trained`` when asked (see the module docstring).

    Raises:
        ValueError: an ambiguous bare ``DIR``, ``--train-ego-mlp-if-missing`` without ``--data``,
            or ego_mlp without a checkpoint and without that flag.
    """
    from dsdrive.planners.registry import parse_checkpoints

    trained = [p for p in args.planner if p != LOG_REPLAY]
    checkpoints = parse_checkpoints(args.checkpoint, trained)
    if "ego_mlp" in trained and "ego_mlp" not in checkpoints:
        if not args.train_ego_mlp_if_missing:
            raise ValueError("ego_mlp needs --checkpoint [ego_mlp=]DIR, or --train-ego-mlp-if-missing --data DIR "
                             "to train it here on the training scenes of a planning dataset")
        if not args.data:
            raise ValueError("--train-ego-mlp-if-missing needs --data DIR (a planning dataset; its training scenes are used)")
        from dsdrive.training.ego_mlp import train_ego_mlp_on_split

        ckpt = out / "ego_mlp_trained"
        try:
            planner = train_ego_mlp_on_split(args.data, progress=not args.no_progress)
        except ValueError as e:  # e.g. --data without the held-out scenes: say which flag it came from
            raise ValueError(f"--train-ego-mlp-if-missing --data {args.data}: {e}") from e
        planner.save(str(ckpt))
        checkpoints["ego_mlp"] = str(ckpt)
        print(f"ego_mlp: no checkpoint given; trained on training scenes {planner.config.trained_on_scenes} "
              f"({planner.config.num_train_samples} samples, final L1 {planner.config.final_train_loss:.3f}) -> {ckpt}")
    return checkpoints


def summary_line(name: str, agg: dict) -> str:
    """One printed line of a planner's run aggregates (``-`` for what was not scored)."""
    if not agg.get("ran"):
        return f"{name}: no scenario ran (failed {agg['failed']}, rejected {agg['rejected']})"

    def f(key: str, digits: int = 3) -> str:
        return "-" if agg.get(key) is None else f"{agg[key]:.{digits}f}"

    return (f"{name}: RC {f('route_completion')} arrival {f('arrival')} coll.veh {f('collision_vehicle')} "
            f"coll.ped {f('collision_pedestrian')} coll.obj {f('collision_object')} off-road {f('off_road')} "
            f"route-dep {f('route_departure')} NC {f('nc')} DAC {f('dac')} TTC {f('ttc')} C {f('comfort')} EP {f('ep')} "
            f"PDMS {f('pdms')} tracking lon {f('tracking_lon_mean', 2)}/{f('tracking_lon_max', 2)} lat "
            f"{f('tracking_lat_mean', 2)}/{f('tracking_lat_max', 2)} m "
            f"(ran {agg['ran']}, failed {agg['failed']}, rejected {agg['rejected']}, {agg.get('wall_s', 0):.0f} s)")


def main(argv: list[str] | None = None, prog: str = "dsdrive closed-loop") -> int:
    """``dsdrive closed-loop`` / ``python eval/closed_loop.py``: roll out, score, write the report.
    Returns 0, or 2 after a one-line error (no scenario, bad ``--scenes`` / checkpoints / data)."""
    args = build_parser(prog).parse_args(argv)
    from dsdrive.data.paths import default_scenarios_dir

    out = Path(args.out)
    try:
        src = default_scenarios_dir(args.scenarios)
        check_scene_filters(src, args.scenes)
        work = prepare_working_copy(src, args.workdir or out / "scenarios", args.scenes)
        checkpoints = resolve_checkpoints(args, out)
        planners = {name: load(name, checkpoints.get(name)) for name in args.planner}
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print(f"{src}: {len(work.scene_ids)} scenarios: {work.scene_ids}")
    for name, planner in planners.items():
        overlap = sorted(set(getattr(getattr(planner, "config", None), "trained_on_scenes", None) or []) & set(work.scene_ids))
        if overlap:
            print(f"closed_loop: WARNING {name} was trained on evaluated scenes {overlap}", file=sys.stderr)
    for r in work.rejected:
        print(f"closed_loop: WARNING scenario {r.file} rejected: {r.reason}", file=sys.stderr)
    config = RolloutConfig(traffic=args.traffic, max_steps=args.max_steps, explain=not args.no_explain)
    runs = {}
    for name, planner in planners.items():
        t0 = time.perf_counter()
        rollouts = run_closed_loop(work, planner, config, progress=not args.no_progress)
        metrics = [scenario_metrics(r) for r in rollouts]
        agg = aggregate(metrics, [p.latency_ms for r in rollouts for p in r.plans if name != LOG_REPLAY])
        agg["wall_s"] = time.perf_counter() - t0
        runs[name] = {"aggregate": agg, "scenarios": list(zip(rollouts, metrics))}
        print(summary_line(name, agg))
    cfg = dict(scenarios=str(src), working_copy=str(work.directory), traffic=args.traffic, planners=args.planner,
               checkpoint=checkpoints, data=args.data, scenes=args.scenes, max_steps=args.max_steps)
    json_path, html_path = write_report(out, runs, cfg)
    print(f"report: {html_path}\njson:   {json_path}")
    return 0
