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
    dsdrive closed-loop --planner log_replay constant_velocity --perception-noise none default --out /tmp/closed_loop_noise
    dsdrive closed-loop --planner log_waypoints student --cv-runs outputs/cv/runs/student --cv-seed 0 --out /tmp/closed_loop_cv
    dsdrive closed-loop --planner student_kd ego_mlp --cv-runs student_kd=outputs/cv/runs/student_kd \
        ego_mlp=outputs/cv/runs/ego_mlp --out /tmp/closed_loop_cv2

``--checkpoint`` takes ``NAME=DIR`` per trained planner, or a bare ``DIR`` when exactly one
requested planner needs one (the parsing of ``dsdrive open-loop``). ego_mlp without a checkpoint:
with ``--train-ego-mlp-if-missing`` it is trained on the *training* scenes of the planning dataset
``--data`` (:func:`dsdrive.training.ego_mlp.train_ego_mlp_on_split`), saved to
``OUT/ego_mlp_trained/``, and this is printed; a warning names evaluated scenes it was trained on.

``--cv-runs [NAME=]DIR`` drives every scene with a planner that never trained on it: DIR is
``CV_OUT/runs/PLANNER`` of ``dsdrive cross-validate --out CV_OUT``, and each scene is driven by the
checkpoint ``foldF-seedS/checkpoint`` of the fold that held it out (S = ``--cv-seed``), checked
against what ``CV_OUT/cv_settings.json`` and the checkpoint record
(:mod:`dsdrive.evaluation.closed_loop.fold_checkpoints`); a scene no fold held out, a missing fold
checkpoint or one that trained on its scene is refused (exit 2). NAME is the ``--planner`` name:
the cross-validated planner (``student``, ``student_kd``, ``ego_mlp`` ...) or its registry name; a
bare DIR goes to the one requested trained planner. Which checkpoint drives which scene is
printed, and recorded in ``report.json`` (``config.cv_runs`` and each scenario's ``checkpoint``);
each fold's scenes run in a working copy of their own (``OUT/scenarios_folds/NAME-foldF-seedS``).

``--perception-noise none default`` (``none``, ``default``, ``heavy`` or a YAML file;
:mod:`dsdrive.data.perception_noise`) rolls every planner out once per setting, the planner's inputs
passed through the noise model at every replanning step (:mod:`dsdrive.evaluation.closed_loop.rollout`);
the simulator and every metric keep the true state. Rows are named ``PLANNER [ground-truth
perception]`` / ``PLANNER [noisy perception (NAME)]`` (the bare name with one setting) and each
aggregate carries ``perception``; planners that read the log (``log_replay``, ``log_waypoints``) run
once, labelled ``ground truth (privileged)``.

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
from dataclasses import replace
from pathlib import Path

from dsdrive.data.perception_noise import perception_label, perception_settings, row_name
from dsdrive.evaluation.cross_validate import RECIPES
from dsdrive.evaluation.closed_loop.fold_checkpoints import FoldCheckpoint, checkpoints_for_scenes, runs_recipe
from dsdrive.evaluation.closed_loop.metrics import aggregate, scenario_metrics
from dsdrive.evaluation.closed_loop.report import write_report
from dsdrive.evaluation.closed_loop.rollout import RolloutConfig, ScenarioRollout, run_closed_loop
from dsdrive.evaluation.closed_loop.scenario_index import WorkingCopy, list_scenario_files, prepare_working_copy

LOG_REPLAY = "log_replay"


def build_parser(prog: str = "dsdrive closed-loop") -> argparse.ArgumentParser:
    """The closed-loop command line (also ``python eval/closed_loop.py``); see the module docstring."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=None, help="folder of ScenarioNet *.pkl (default: $DSDRIVE_SCENARIOS or ../shared/data/nuscenes-mini-scenarionet)")
    ap.add_argument("--planner", nargs="+", default=[LOG_REPLAY], help="log_replay and/or registry names (constant_velocity, ego_mlp, student ...)")
    ap.add_argument("--checkpoint", nargs="*", default=[], help="DIR, or NAME=DIR per trained planner (ego_mlp, student ...)")
    ap.add_argument("--cv-runs", nargs="*", default=[], metavar="[NAME=]DIR",
                    help="CV_OUT/runs/PLANNER of dsdrive cross-validate: each scene is driven by the fold checkpoint that held it out")
    ap.add_argument("--cv-seed", type=int, default=0, help="training seed of the --cv-runs checkpoints (foldF-seedS)")
    ap.add_argument("--data", default=None, help="planning dataset folder: ego_mlp is trained on its training scenes with --train-ego-mlp-if-missing")
    ap.add_argument("--train-ego-mlp-if-missing", action="store_true", help="train ego_mlp on the training scenes of --data if no checkpoint is given")
    ap.add_argument("--traffic", choices=("replay", "reactive"), default="replay")
    ap.add_argument("--perception-noise", nargs="+", default=["none"], metavar="{none,default,heavy,FILE.yaml}",
                    help="perception settings, one run per planner each (dsdrive.data.perception_noise; default: none)")
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


def resolve_cv_runs(args: argparse.Namespace) -> dict[str, Path]:
    """{planner name: ``CV_OUT/runs/PLANNER`` folder} from ``--cv-runs`` (``NAME=DIR`` or one bare ``DIR``).

    Raises:
        ValueError: a bare DIR while not exactly one requested planner is trained, a NAME that is not
            requested, a folder of another planner's runs (e.g. ``student=runs/ego_mlp``), or a
            planner given both ``--checkpoint`` and ``--cv-runs``; bad folders (:func:`runs_recipe`).
    """
    from dsdrive.planners.registry import CHECKPOINT_OF, PLANNERS, needs_checkpoint

    trained = [p for p in args.planner if p != LOG_REPLAY and (p not in PLANNERS or needs_checkpoint(p))]
    out: dict[str, Path] = {}
    for v in args.cv_runs:
        name, sep, path = v.partition("=")
        if not (sep and name in args.planner):
            if len(trained) != 1:
                raise ValueError(f"--cv-runs {v}: say which planner it is for (NAME=DIR); trained planners requested: {trained}")
            name, path = trained[0], v
        recipe, _ = runs_recipe(path)
        if name not in (recipe, RECIPES[recipe].registry) and CHECKPOINT_OF.get(name) != RECIPES[recipe].registry:
            raise ValueError(f"--cv-runs {v}: {path} holds {recipe} runs (registry planner {RECIPES[recipe].registry}), not {name}")
        if any(c.partition("=")[0] == name or (len(trained) == 1 and "=" not in c) for c in args.checkpoint):
            raise ValueError(f"--cv-runs {v}: {name} also has a --checkpoint; give one or the other")
        out[name] = Path(path)
    return out


def run_by_fold(name: str, work: WorkingCopy, source: Path, assign: dict[str, FoldCheckpoint], planners: dict,
                config: RolloutConfig, fold_root: Path, progress: bool) -> list[ScenarioRollout]:
    """Roll out planner ``name`` with, for each scene, the checkpoint ``assign[scene_id]``.

    Each checkpoint's scenes get a working copy of their own (``fold_root/NAME-foldF-seedS``), so a
    ``ScenarioEnv`` only ever holds scenes the loaded planner never trained on; ``planners`` maps a
    :class:`FoldCheckpoint` to its loaded planner. Returns one rollout per file of ``work`` in its
    order (``rejected`` ones first, as :func:`run_closed_loop`), each titled ``NAME (foldF-seedS)``.
    """
    files_of: dict[FoldCheckpoint, list[str]] = {}
    for file, scene in zip(work.files, work.scene_ids):
        files_of.setdefault(assign[scene], []).append(file)
    done: dict[str, ScenarioRollout] = {}
    for fc, files in files_of.items():
        sub = prepare_working_copy(source, fold_root / f"{name}-{fc.label}", files)
        for sr in run_closed_loop(sub, planners[fc], config, progress=progress):
            sr.planner = f"{name} ({fc.label})"
            done[sr.file] = sr
    rejected = [ScenarioRollout(scene_id=r.file, file=r.file, planner=name, status="rejected", failure=r.reason) for r in work.rejected]
    return rejected + [done[f] for f in work.files]


def perception_runs(names: list[str], settings: list, planners: dict, config: RolloutConfig):
    """Yield ``(planner name, row name, rollout config, perception label)`` per planner x perception
    setting (:class:`dsdrive.data.perception_noise.PerceptionNoiseConfig`); planners that read the
    log (``log_replay``, ``reads_log``) once, without noise."""
    for name in names:
        privileged = name == LOG_REPLAY or bool(getattr(planners.get(name), "reads_log", False))
        for noise in settings[:1] if privileged else settings:
            yield (name, row_name(name, noise, len(settings) > 1, privileged),
                   replace(config, perception_noise=None if privileged else noise), perception_label(noise, privileged))


def resolve_checkpoints(args: argparse.Namespace, out: Path, cv_names=()) -> dict[str, str]:
    """{planner: checkpoint dir} from ``--checkpoint`` (``NAME=DIR`` or one bare ``DIR``), training
    ego_mlp into ``OUT/ego_mlp_trained`` when asked (see the module docstring). Planners in
    ``cv_names`` (driven by ``--cv-runs``) need none.

    Raises:
        ValueError: an ambiguous bare ``DIR``, ``--train-ego-mlp-if-missing`` without ``--data``,
            or ego_mlp without a checkpoint and without that flag.
    """
    from dsdrive.planners.registry import parse_checkpoints

    trained = [p for p in args.planner if p != LOG_REPLAY and p not in cv_names]
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
        settings = perception_settings(args.perception_noise)
        work = prepare_working_copy(src, args.workdir or out / "scenarios", args.scenes)
        cv_runs = resolve_cv_runs(args)
        checkpoints = resolve_checkpoints(args, out, cv_runs)
        planners = {name: load(name, checkpoints.get(name)) for name in args.planner if name not in cv_runs}
        assign = {name: checkpoints_for_scenes(d, work.scene_ids, args.cv_seed) for name, d in cv_runs.items()}
        from dsdrive.planners.registry import CHECKPOINT_OF, load_planner

        fold_planners = {name: {fc: load_planner(name if name in CHECKPOINT_OF else fc.registry, fc.directory) for fc in set(a.values())}
                         for name, a in assign.items()}
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print(f"{src}: {len(work.scene_ids)} scenarios: {work.scene_ids}")
    for name, a in assign.items():
        for scene, fc in a.items():
            print(f"{name}: {scene} <- {fc.directory} ({fc.recipe} {fc.label}; trained on {list(fc.trained_on)})")
    for name, planner in planners.items():
        overlap = sorted(set(getattr(getattr(planner, "config", None), "trained_on_scenes", None) or []) & set(work.scene_ids))
        if overlap:
            print(f"closed_loop: WARNING {name} was trained on evaluated scenes {overlap}", file=sys.stderr)
    for r in work.rejected:
        print(f"closed_loop: WARNING scenario {r.file} rejected: {r.reason}", file=sys.stderr)
    base_config = RolloutConfig(traffic=args.traffic, max_steps=args.max_steps, explain=not args.no_explain)
    runs = {}
    fold_root = Path(str(args.workdir or out / "scenarios") + "_folds")
    for name, row, config, perception in perception_runs(args.planner, settings, planners, base_config):
        t0 = time.perf_counter()
        if name in assign:
            rollouts = run_by_fold(name, work, src, assign[name], fold_planners[name], config, fold_root, not args.no_progress)
        else:
            rollouts = run_closed_loop(work, planners[name], config, progress=not args.no_progress)
        metrics = [scenario_metrics(r) for r in rollouts]
        for m in metrics:
            if name in assign and m["scene_id"] in assign[name]:
                m["checkpoint"] = str(assign[name][m["scene_id"]].directory)
        agg = aggregate(metrics, [p.latency_ms for r in rollouts for p in r.plans if name != LOG_REPLAY])
        agg["wall_s"] = time.perf_counter() - t0
        agg["perception"] = perception
        runs[row] = {"aggregate": agg, "scenarios": list(zip(rollouts, metrics))}
        print(summary_line(row, agg))
    cfg = dict(scenarios=str(src), working_copy=str(work.directory), traffic=args.traffic, planners=args.planner,
               checkpoint=checkpoints, data=args.data, scenes=args.scenes, max_steps=args.max_steps,
               perception_noise={c.label: c.model_dump() for c in settings},
               cv_runs={name: {"runs": str(cv_runs[name]), "seed": args.cv_seed, "scenes": {s: fc.to_dict() for s, fc in a.items()}}
                        for name, a in assign.items()})
    json_path, html_path = write_report(out, runs, cfg)
    print(f"report: {html_path}\njson:   {json_path}")
    return 0
