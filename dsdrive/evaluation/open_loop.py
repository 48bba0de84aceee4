"""Open-loop evaluation: run planners over planning samples, score L2 / collision, render tables.

Run as:
    dsdrive open-loop --data outputs/main/planning --planner constant_velocity ego_mlp \
        --train-ego-mlp-if-missing --out outputs/open_loop/baselines.json
    dsdrive open-loop --data DIR --planner ego_mlp --checkpoint CKPT_DIR --scenes val --out ol.json
    dsdrive open-loop --data DIR --planner constant_velocity student --checkpoint student=CKPT --scenes all --out ol.json
    python eval/open_loop.py ...          # the same command line

Metrics are :mod:`dsdrive.evaluation.metrics.planning` (SparseDrive / DistillDrive
``planning_eval.py`` conventions; ST-P3 and UniAD protocols), broken down by navigation command
(LEFT / RIGHT / STRAIGHT) beside the all-sample aggregate. Only samples with all 6 ground-truth
future steps valid are scored; the others are counted as skipped. Waypoints are in the ego frame
of each sample's current time (x forward, y left, m).

``--scenes`` picks what is evaluated and the scene ids and sample count are always printed:
``val`` (default) = the held-out scenes :data:`dsdrive.data.splits.DEFAULT_VAL_SCENES`, all of
which must be in ``--data`` (a folder without them is an error, never a quiet substitute);
``train`` = the other scenes; ``all`` = every scene given; or comma-separated scene ids.
The command writes FILE.json (all figures) and FILE.md (the tables) and prints the tables.

Only original samples are scored by default: the recorded ego, not mirrored
(:attr:`dsdrive.data.types.PlanningSample.augmented` False). Agent-as-ego and mirrored samples
(``dsdrive build --agents-as-ego --mirror``) of the selected scenes are left out and counted
(printed, and ``num_augmented_excluded`` in the report) unless ``--include-augmented`` is given.

ego_mlp without a checkpoint: with ``--train-ego-mlp-if-missing`` it is trained on the scenes of
``--data`` that are neither evaluated nor held out, saved to ``FILE_ego_mlp/`` beside the report,
and this is printed; without the flag it is an error. A planner whose checkpoint records training
scenes that are evaluated here gets a warning and ``train_eval_overlap_scenes`` in the report.

``--perception-noise none default`` (one or more of ``none``, ``default``, ``heavy`` or a YAML file;
:mod:`dsdrive.data.perception_noise`) scores every planner once per setting, in one table with a
``perception`` column: "ground-truth perception" (the logged agents) and "noisy perception (NAME)"
(the agents a detector would give: latency, range-dependent misses, position / heading / velocity
noise, ghost boxes; seeded by sample id, so every planner sees the same draw). Only the planner's
inputs are perturbed: L2 and collisions are always scored against the true agents. Privileged
planners (they read the ground truth by definition) are scored once, labelled "ground truth
(privileged)". With one setting only, the rows keep the planner's bare name.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsdrive.data.atomic_io import write_text_atomic
from dsdrive.data.dataset import load_dataset_dir, load_samples, original_sample_mask
from dsdrive.data.perception_noise import (
    GROUND_TRUTH_LABEL,
    PRIVILEGED_LABEL,
    PerceptionNoiseConfig,
    perceived,
    perception_label,
    perception_settings,
    row_name,
)
from dsdrive.data.splits import DEFAULT_VAL_SCENES, split_scenes
from dsdrive.data.types import COMMANDS, FUTURE_STEPS, PlanningInputs, PlanningSample
from dsdrive.evaluation.metrics.planning import (
    HORIZON_STEPS,
    PROTOCOL_TITLES,
    PROTOCOLS,
    complete_future_mask,
    evaluate_trajectories,
    summarize_by_command,
)
from dsdrive.planners.base import Planner, plan_samples  # noqa: F401 (plan_samples re-exported)
from dsdrive.planners.registry import load_planner, parse_checkpoints, planner_names

SCENE_HINT = "pass --scenes all to evaluate every scene given, or --scenes ID,ID to name scenes present"


def select_scenes(scene_ids: list[str], spec: str, val_scenes: tuple[str, ...] | list[str] = DEFAULT_VAL_SCENES,
                  where: str = "the dataset") -> list[str]:
    """Scenes to evaluate from a ``--scenes`` value; never a substitute for what was asked.

    Args:
        scene_ids: scene ids present in the dataset (duplicates allowed).
        spec: ``val`` (every scene of ``val_scenes``; :func:`dsdrive.data.splits.split_scenes` with
            ``strict=True``), ``train`` (the present scenes not in ``val_scenes``), ``all``, or a
            comma-separated list of scene ids (kept in the given order).
        val_scenes: the held-out scenes that ``val`` / ``train`` refer to.
        where: the dataset's name (its folder) in error messages.

    Raises:
        ValueError: ``val`` and a held-out scene is absent, a named scene is absent, or the
            selection is empty; the message names ``where``, the scenes expected and present.
    """
    present = sorted(set(scene_ids))
    if spec == "val":
        chosen = split_scenes(present, val_scenes, strict=True, where=f"{where} (--scenes val)", hint=SCENE_HINT)[1]
    elif spec == "train":
        chosen = [s for s in present if s not in set(val_scenes)]
    elif spec == "all":
        chosen = present
    else:
        chosen = list(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
        missing = [s for s in chosen if s not in present]
        if missing:
            raise ValueError(f"{where}: --scenes {spec}: not in the dataset: {missing}; available: {present}")
    if not chosen:
        raise ValueError(f"{where}: --scenes {spec}: selects no scene; available: {present}")
    return chosen


class PerceivedPlanner(Planner):
    """A planner that sees its inputs through the perception noise model (open loop, PDM score).

    Every :class:`~dsdrive.data.types.PlanningInputs` handed to it is replaced by
    :func:`dsdrive.data.perception_noise.perceived` (seeded by ``(noise.seed, sample_id)``: the
    same draw whatever the batch or order) before the wrapped planner sees it (``plan_and_explain``
    too, when the wrapped planner has it). Waypoints: (6, 3) ego frame, as the wrapped planner
    returns them. Not for privileged planners (they read whole samples, the ground truth by
    definition).

    Raises:
        ValueError: ``planner`` is privileged.
    """

    def __init__(self, planner: Planner, noise: PerceptionNoiseConfig):
        if getattr(planner, "privileged", False):
            raise ValueError(f"{planner.name} is privileged (reads the ground truth): perception noise does not apply to it")
        self.planner, self.noise = planner, noise
        self.name = planner.name
        self.config = getattr(planner, "config", None)  # trained_on_scenes, read by the overlap check
        if hasattr(planner, "plan_and_explain"):  # the HTML report explains the student's worst samples
            self.plan_and_explain = lambda inputs: planner.plan_and_explain(perceived(inputs, noise))

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """(6, 3) waypoints of the wrapped planner on the perceived inputs."""
        return self.planner.compute_trajectory(perceived(inputs, self.noise))

    def compute_trajectories(self, batch: list[PlanningInputs]) -> np.ndarray:
        """(B, 6, 3) waypoints of the wrapped planner on the perceived inputs."""
        return self.planner.compute_trajectories([perceived(x, self.noise) for x in batch])


def evaluate_planner(planner: Planner, samples: list[PlanningSample], batch_size: int = 64, progress: bool = True) -> dict:
    """Plan and score the samples with complete futures.

    Returns:
        ``{"num_evaluated", "num_skipped_incomplete_future", "plan_seconds", "metrics"}`` where
        ``metrics`` is :func:`dsdrive.evaluation.metrics.planning.summarize_by_command` output (keys ``ALL``,
        ``LEFT``, ``RIGHT``, ``STRAIGHT``; L2 in m, collision in %).
    """
    keep = complete_future_mask(samples)
    scored = [s for s, k in zip(samples, keep) if k]
    t0 = time.perf_counter()
    pred = plan_samples(planner, scored, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    per_sample = evaluate_trajectories(pred, scored)
    return {
        "num_evaluated": len(scored),
        "privileged": bool(getattr(planner, "privileged", False)),
        "num_skipped_incomplete_future": int((~keep).sum()),
        "plan_seconds": round(seconds, 4),
        "metrics": summarize_by_command(per_sample),
    }


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_markdown(results: dict[str, dict], title: str = "Open-loop planning") -> str:
    """Markdown tables, one per protocol: a row per planner x {ALL, LEFT, RIGHT, STRAIGHT}.

    Args:
        results: row name -> :func:`evaluate_planner` output; planners flagged
            ``privileged`` (they read ground-truth agent futures) are marked in their rows. When a
            row's ``perception`` is not ground truth, the table gains a ``perception`` column and
            the planner column shows the row's ``planner``.
    """
    horizons = [*HORIZON_STEPS, "avg"]
    noisy = any(res.get("perception", GROUND_TRUTH_LABEL) not in (GROUND_TRUTH_LABEL, PRIVILEGED_LABEL) for res in results.values())
    head = (
        "| planner | " + ("perception | " if noisy else "") + "command | N | " + " | ".join(f"L2 {h} (m)" for h in horizons) + " | "
        + " | ".join(f"Col. {h} (%)" for h in horizons) + " |"
    )
    sep = "|" + "---|" * (3 + noisy + 2 * len(horizons))
    lines = [f"# {title}", ""]
    for protocol in PROTOCOLS:
        lines += [f"## {PROTOCOL_TITLES[protocol]}", "", head, sep]
        for name, res in results.items():
            label = res.get("planner", name) if noisy else name
            label = f"{label} (privileged)" if res.get("privileged") else label
            if noisy:
                label = f"{label} | {res.get('perception', GROUND_TRUTH_LABEL)}"
            for cmd in ("ALL", *COMMANDS):
                summary = res["metrics"][cmd]
                l2 = summary[protocol]["L2"]
                col = summary[protocol]["collision"]
                lines.append(
                    f"| {label} | {cmd} | {summary['num_samples']} | "
                    + " | ".join(_fmt(l2[h], 3) for h in horizons) + " | "
                    + " | ".join(_fmt(col[h], 2) for h in horizons) + " |"
                )
        lines.append("")
    lines.append(
        "L2: ego-frame x, y distance to the ground-truth future. Collision: ego box 4.084 x 1.85 m "
        "(centre 0.5 m ahead of the waypoint) overlapping a ground-truth agent box at the same future "
        "step, counted only where the ground-truth trajectory does not collide there. Samples with an "
        "incomplete 3 s ground-truth future are skipped. (privileged): the planner reads ground-truth "
        "agent futures (the DistillDrive planning teacher), so its row is not comparable."
    )
    if noisy:
        lines.append(
            "\nPerception: ground-truth = the logged agents; noisy perception (NAME) = the agents through "
            "dsdrive.data.perception_noise (latency, range-dependent misses, position / heading / velocity noise, "
            "ghost boxes; settings in the JSON report), the same draw for every planner. Only the planner's "
            "inputs are perturbed: L2 and collisions are scored against the true agents. Privileged planners read "
            "the ground truth, so no noise is applied to them."
        )
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_json: str | Path) -> tuple[Path, Path]:
    """Write the JSON report and the markdown tables beside it (same stem, ``.md``).

    The files are written to temporary names and renamed, so an interrupted run never leaves a
    half-written report over an earlier one.
    """


    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_md = out_json.with_suffix(".md")
    for path, text in ((out_json, json.dumps(report, indent=2)), (out_md, render_markdown(report["planners"]))):
        write_text_atomic(path, text)
    return out_json, out_md


@dataclass
class OpenLoopRun:
    """What one open-loop command evaluated, before anything is written.

    Attributes:
        report: the JSON report (``data``, ``scene_selection``, ``scenes``, ``num_samples``,
            ``protocols``, ``planners``: name -> :func:`evaluate_planner` output + ``checkpoint``).
        samples: the evaluated samples (every sample of ``scenes``, incomplete futures included).
        planners: name -> the loaded planner, so a further report (tables, figures) can re-plan.
    """

    report: dict
    samples: list[PlanningSample]
    planners: dict[str, Planner] = field(default_factory=dict)


def add_planner_selection_arguments(ap: argparse.ArgumentParser, planner_help: str = "one or more planners") -> None:
    """Add ``--data``, ``--planner``, ``--checkpoint``, ``--scenes`` and ``--perception-noise``: what every command that scores
    planners on planning samples takes (``dsdrive open-loop``, ``dsdrive pdm-score``)."""
    ap.add_argument("--data", required=True, help="planning dataset folder (dsdrive build --out)")
    ap.add_argument("--planner", nargs="+", required=True, choices=planner_names(), help=planner_help)
    ap.add_argument("--checkpoint", nargs="*", default=[], help="DIR, or NAME=DIR per trained planner")
    ap.add_argument("--scenes", default="val", help="val (default: every held-out scene, %s) | train | all | comma-separated scene ids"
                    % ",".join(DEFAULT_VAL_SCENES))
    ap.add_argument("--perception-noise", nargs="+", default=["none"], metavar="{none,default,heavy,FILE.yaml}",
                    help="perception settings, one row per planner each (dsdrive.data.perception_noise); "
                         "e.g. 'none default' puts ground-truth and noisy perception in one table (default: none)")


def build_parser(prog: str = "dsdrive open-loop") -> argparse.ArgumentParser:
    """The open-loop command line (also ``python eval/open_loop.py``); see the module docstring."""

    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_planner_selection_arguments(ap)
    ap.add_argument("--include-augmented", action="store_true",
                    help="also score agent-as-ego and mirrored samples (default: the recorded ego, un-mirrored, only)")
    ap.add_argument("--train-ego-mlp-if-missing", action="store_true",
                    help="train ego_mlp on the scenes neither evaluated nor held out if no checkpoint is given")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", required=True, help="report FILE.json; FILE.md is written beside it")
    ap.add_argument("--report", default=None, metavar="DIR",
                    help="also write the HTML report (worst samples drawn in BEV, per command and per scene) to DIR")
    ap.add_argument("--report-worst", type=int, default=12, metavar="N", help="samples drawn in the HTML report (default 12)")
    ap.add_argument("--cv-summary", default=None, metavar="FILE",
                    help="cross-validation summary JSON whose 95%% intervals the HTML report shows beside the averages")
    return ap


def _train_ego_mlp(data: str, scene_ids: list[str], evaluated: list[str], out_json: Path, scenes_spec: str) -> str:
    """Train ego_mlp on the scenes of ``data`` neither evaluated nor in ``DEFAULT_VAL_SCENES``;
    returns its checkpoint folder (``FILE_ego_mlp`` beside the report)."""
    from dsdrive.training.ego_mlp import train_ego_mlp_on_split  # transformers, only when training is asked for

    held_out = sorted(set(evaluated) | (set(DEFAULT_VAL_SCENES) & set(scene_ids)))
    if not set(scene_ids) - set(held_out):
        raise ValueError(f"{data}: --train-ego-mlp-if-missing trains ego_mlp on scenes neither evaluated nor held out, and "
                         f"--scenes {scenes_spec} leaves none of {sorted(set(scene_ids))}; pass --checkpoint ego_mlp=DIR")
    ckpt = str(out_json.with_name(out_json.stem + "_ego_mlp"))
    planner = train_ego_mlp_on_split(data, val_scenes=held_out)
    planner.save(ckpt)
    print(f"ego_mlp: no checkpoint given; trained on training scenes {planner.config.trained_on_scenes} "
          f"({planner.config.num_train_samples} samples, final L1 {planner.config.final_train_loss:.3f}) -> {ckpt}")
    return ckpt


def run_open_loop(args: argparse.Namespace) -> OpenLoopRun:
    """Select the scenes, load (or train) the planners and evaluate them; writes nothing but an
    ego_mlp checkpoint trained on request.

    Args:
        args: :func:`build_parser` output.

    Raises:
        ValueError: a bad ``--checkpoint`` / ``--scenes`` value, ego_mlp without a checkpoint and
            without ``--train-ego-mlp-if-missing``, or a planner returning bad waypoints.
        FileNotFoundError: ``--data`` is not a planning dataset.
    """

    checkpoints = parse_checkpoints(args.checkpoint, args.planner)
    settings = perception_settings(getattr(args, "perception_noise", None))
    ds = load_dataset_dir(args.data)
    scene_ids = list(ds["scene_id"])
    scenes = select_scenes(scene_ids, args.scenes, where=str(args.data))
    include_augmented = bool(getattr(args, "include_augmented", False))
    samples = load_samples(args.data, scenes=scenes, augmented=include_augmented)
    in_scenes = set(scenes)
    excluded = 0 if include_augmented else sum(not ok for sid, ok in zip(scene_ids, original_sample_mask(ds)) if sid in in_scenes)
    print(f"{args.data}: evaluating {len(samples)} samples from {len(scenes)} scenes (--scenes {args.scenes}): {scenes}")
    if excluded:
        print(f"{args.data}: left out {excluded} augmented samples (agent-as-ego, mirrored or on-policy) of these scenes; "
              "pass --include-augmented to score them too")
    report: dict = {"data": str(args.data), "scene_selection": args.scenes, "scenes": scenes, "num_samples": len(samples),
                    "include_augmented": include_augmented, "num_augmented_excluded": excluded,
                    "protocols": PROTOCOL_TITLES, "perception_noise": {c.label: c.model_dump() for c in settings},
                    "planners": {}}
    run = OpenLoopRun(report, samples)
    for name in args.planner:
        ckpt = checkpoints.get(name)
        if name == "ego_mlp" and ckpt is None:
            if not args.train_ego_mlp_if_missing:
                raise ValueError("ego_mlp needs --checkpoint [ego_mlp=]DIR (train one: `dsdrive ego-mlp --help`), "
                                 "or pass --train-ego-mlp-if-missing to train it here on the training scenes")
            ckpt = _train_ego_mlp(args.data, scene_ids, scenes, Path(args.out), args.scenes)
        base = load_planner(name, ckpt)
        privileged = bool(getattr(base, "privileged", False))
        for noise in settings[:1] if privileged else settings:
            key = row_name(name, noise, len(settings) > 1, privileged)
            planner = run.planners[key] = base if privileged or noise.is_identity else PerceivedPlanner(base, noise)
            entry = evaluate_planner(planner, samples, batch_size=args.batch_size)
            entry.update(planner=name, perception=perception_label(noise, privileged), checkpoint=ckpt)
            trained_on = getattr(getattr(base, "config", None), "trained_on_scenes", None)
            if trained_on:
                entry["trained_on_scenes"] = list(trained_on)
                overlap = sorted(set(trained_on) & set(scenes))
                if overlap:
                    entry["train_eval_overlap_scenes"] = overlap
                    print(f"WARNING: {name} was trained on evaluated scenes {overlap}", file=sys.stderr)
            report["planners"][key] = entry
            print(f"{key}: {entry['num_evaluated']} samples scored, {entry['num_skipped_incomplete_future']} skipped (incomplete future)")
    return run


def main(argv: list[str] | None = None, prog: str = "dsdrive open-loop") -> int:
    """``dsdrive open-loop`` / ``python eval/open_loop.py``: evaluate, write FILE.json + FILE.md,
    print the tables. Returns 0, or 2 after a one-line error (bad data, scenes, checkpoints)."""
    args = build_parser(prog).parse_args(argv)
    try:
        run = run_open_loop(args)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    out_json, out_md = write_report(run.report, args.out)
    print(render_markdown(run.report["planners"]))
    print(f"wrote {out_json} and {out_md}")
    if args.report:
        from dsdrive.evaluation.open_loop_report import build_open_loop_report  # matplotlib only when asked

        cv_summary = json.loads(Path(args.cv_summary).read_text()) if args.cv_summary else None
        config = {"data": str(args.data), "scenes": run.report["scenes"], "checkpoints": {
            name: entry.get("checkpoint") for name, entry in run.report["planners"].items()}}
        rows = run.report["planners"]
        student = next((k for k, e in rows.items() if e.get("planner") == "student"), next(iter(run.planners)))
        index = build_open_loop_report(args.report, run.planners, run.samples, worst_n=args.report_worst,
                                       student=student, config=config, cv_summary=cv_summary, batch_size=args.batch_size)
        print(f"wrote {index}")
    return 0
