"""K-fold cross-validation by scene, several seeds, with 95 % bootstrap intervals over scenes.

Run as (``dsdrive cross-validate`` and ``python eval/cross_validate.py`` are the same command, :func:`main`):
    python eval/cross_validate.py --data outputs/main/planning_annotated --folds 4 --seeds 3 \
        --planner constant_velocity ego_mlp student student_no_ego --out outputs/cv
    dsdrive cross-validate --data DIR --folds 2 --seeds 1 --planner constant_velocity ego_mlp --out /tmp/cv
    dsdrive cross-validate --data DIR --folds 4 --seeds 3 --planner constant_velocity student student_kd planning_teacher \
        --compare student_kd:student --planner-args student="--max_steps 100" student_kd="--max_steps 100" --out DIR

Folds: the distinct scene ids of ``--data`` are sorted and scene ``i`` (0-based, in that order)
goes to fold ``i mod K`` (:func:`make_folds`). For each fold x seed every learned planner is
trained by its own stage (``main(argv)`` of the stage module, in this process) on the OTHER folds'
scenes only (the fold's scenes are the stage's held-out ``--val_scenes``; the no-overlap rule is
checked before training and again on the scenes the checkpoint records), then scored on the fold's
scenes: recorded-ego, un-mirrored samples with a complete 3 s future (datasets without the
``ego_source`` / ``mirrored`` tags: every sample is recorded ego), so every such sample is tested
exactly once per seed. Planners (:data:`RECIPES`): ``constant_velocity`` (nothing trained, one run
per fold), ``ego_mlp`` (``dsdrive ego-mlp``), ``student`` and ``student_no_ego`` (``dsdrive distill
--config recipes/configs/tiny/distill.yaml``, the latter with ``--use_ego_status false``, the
ego-status ablation of AD-MLP / Li et al. CVPR 2024), ``student_reasoning_first`` (the same with
``--sequence_order reasoning_first``: the plan reads the generated reasoning), ``planning_teacher`` (``dsdrive
planning-teacher``, privileged: it reads ground-truth agent futures) and ``student_kd`` (distill with
``distill_kd.yaml`` and the SAME fold x seed's planning teacher); ``planning_teacher_kinematic`` /
``student_kd_kinematic`` are the same with ``train_kinematic.yaml`` (the teacher also knows its own
kinematics and plans a residual on its CTRV rollout); ``student_cvae`` is the student with
DistillDrive's conditional VAE op on its planning queries (``--planning_cvae true``) and
``student_kd_cvae`` DistillDrive's full student recipe: feature KD from ``planning_teacher_kinematic``
plus the VAE op; ``student_idm_modes`` is the student whose modes are lane-IDM proposals
(``--waypoint_prior idm_modes --plan_selection best``, :class:`dsdrive.student.waypoint_head.WaypointHead`);
``student_warm_start`` is the student recipe
fine-tuned from a saved student (``--planner-args student_warm_start="--init_from CKPT"``, required:
e.g. a student pretrained on MetaDrive procedural scenes, which never saw a nuScenes scene).
``--planner-args NAME="ARGS"`` appends flags to a planner's training command (later flags override).

Resumable: each (planner, fold, seed) writes ``OUT/runs/PLANNER/foldF-seedS/`` (``checkpoint/``,
``train.log``, ``train.json`` after training, ``result.json`` with per-sample metrics and scene ids
after scoring); a rerun skips finished units, and refuses a unit made with other arguments or data.

Statistics (:mod:`dsdrive.evaluation.statistics`): per planner the per-sample metrics are pooled
over folds, averaged over seeds per sample, and bootstrapped by scene (B = ``--n-boot``); ``cv.md``
gives mean [95 % CI] of ST-P3 and UniAD L2 1s/2s/3s/avg and collision, the seed-to-seed spread,
and paired differences (per sample, then by scene) to ``--baseline`` and for ``--compare A:B``
pairs (and student:student_no_ego, student_kd:student when both run), saying "no measurable
difference" where the interval includes 0. ``cv.json`` holds every figure, the timings and
``intervals`` in the shape ``dsdrive open-loop --cv-summary`` reads. Wall and CPU time are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsdrive.data.atomic_io import write_json_atomic, write_text_atomic
from dsdrive.evaluation.metrics.planning import HORIZON_STEPS, PROTOCOLS
from dsdrive.evaluation.statistics import DEFAULT_N_BOOT, METHOD, paired_difference_ci, scene_bootstrap_ci

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "recipes" / "configs"
HORIZONS = (*HORIZON_STEPS, "avg")
COLUMNS = [(p, m, h) for p in PROTOCOLS for m in ("L2", "collision") for h in HORIZONS]
"""Per-sample metric columns: (protocol, L2 m | collision %, horizon)."""
DISTILL_FLAGS = {"data": "--data", "out": "--output_dir", "val": "--val_scenes", "seed": "--seed"}


@dataclass(frozen=True)
class PlannerRecipe:
    """How one cross-validated planner is trained and loaded.

    Attributes:
        registry: its name in :mod:`dsdrive.planners.registry`.
        stage: module whose ``main(argv)`` trains it (None: nothing to train, one run per fold).
        args: fixed training arguments (config file, quiet flags).
        flags: the stage's flag names for data, output folder, held-out scenes and seed.
        teacher: planner whose checkpoint of the same fold and seed is its planning-KD teacher.
    """

    registry: str
    stage: str | None = None
    args: tuple[str, ...] = ()
    flags: dict = field(default_factory=lambda: dict(DISTILL_FLAGS))
    teacher: str | None = None


_STUDENT = ("--config", str(CONFIGS / "tiny" / "distill.yaml"), "--eval_open_loop", "false", "--disable_tqdm", "true")
RECIPES: dict[str, PlannerRecipe] = {
    "constant_velocity": PlannerRecipe("constant_velocity"),
    "ego_mlp": PlannerRecipe("ego_mlp", "dsdrive.training.ego_mlp", ("--no-progress",),
                             {"data": "--data", "out": "--out", "val": "--val-scenes", "seed": "--seed"}),
    "student": PlannerRecipe("student", "dsdrive.training.distill", _STUDENT),
    "student_no_ego": PlannerRecipe("student", "dsdrive.training.distill", (*_STUDENT, "--use_ego_status", "false")),
    "student_reasoning_first": PlannerRecipe("student", "dsdrive.training.distill", (*_STUDENT, "--sequence_order", "reasoning_first")),
    "student_warm_start": PlannerRecipe("student", "dsdrive.training.distill", _STUDENT),
    "planning_teacher": PlannerRecipe("planning_teacher", "dsdrive.training.planning_teacher",
                                      ("--config", str(CONFIGS / "planning_teacher" / "train_distribution.yaml"), "--disable_tqdm", "true")),
    "student_kd": PlannerRecipe("student", "dsdrive.training.distill",
                                ("--config", str(CONFIGS / "tiny" / "distill_kd.yaml"), "--eval_open_loop", "false", "--disable_tqdm", "true"),
                                teacher="planning_teacher"),
    "planning_teacher_kinematic": PlannerRecipe("planning_teacher", "dsdrive.training.planning_teacher",
                                                ("--config", str(CONFIGS / "planning_teacher" / "train_kinematic.yaml"), "--disable_tqdm", "true")),
    "student_kd_kinematic": PlannerRecipe("student", "dsdrive.training.distill",
                                          ("--config", str(CONFIGS / "tiny" / "distill_kd.yaml"), "--eval_open_loop", "false", "--disable_tqdm", "true"),
                                          teacher="planning_teacher_kinematic"),
    "student_cvae": PlannerRecipe("student", "dsdrive.training.distill", (*_STUDENT, "--planning_cvae", "true")),
    "student_idm_modes": PlannerRecipe("student", "dsdrive.training.distill",
                                       (*_STUDENT, "--waypoint_prior", "idm_modes", "--plan_selection", "best")),
    "student_kd_cvae": PlannerRecipe("student", "dsdrive.training.distill",
                                     ("--config", str(CONFIGS / "tiny" / "distill_kd.yaml"), "--eval_open_loop", "false", "--disable_tqdm", "true",
                                      "--planning_cvae", "true"),
                                     teacher="planning_teacher_kinematic"),
}
"""Cross-validated planners by name (see the module docstring)."""
NATURAL_PAIRS = (("student", "student_no_ego"), ("student_kd", "student"), ("student_kd_kinematic", "student"), ("student_reasoning_first", "student"),
                 ("student_warm_start", "student"), ("student_cvae", "student"), ("student_kd_cvae", "student"),
                 ("student_kd_cvae", "student_cvae"), ("student_idm_modes", "student"))
"""Comparisons added whenever both planners run (the ego-status ablation, the gain of planning KD,
reasoning-first vs plan-first ordering, the gain of a warm start / pretraining, of the VAE op, of
KD + the VAE op, of KD given the VAE op, and of proposal modes over the kinematic head)."""


# ---------------------------------------------------------------------------------------------- folds
def make_folds(scene_ids, k: int) -> list[list[str]]:
    """Partition the distinct scene ids into ``k`` folds: sorted ids, scene ``i`` -> fold ``i mod k``.

    Raises:
        ValueError: ``k < 2`` or more folds than scenes (names both).
    """
    scenes = sorted(set(scene_ids))
    if not isinstance(k, int) or k < 2 or k > len(scenes):
        raise ValueError(f"--folds {k}: need 2 <= K <= number of scenes ({len(scenes)}: {scenes})")
    return [scenes[i::k] for i in range(k)]


def is_recorded_ego(sample) -> bool:
    """True for a recorded-ego, un-mirrored sample (a sample without the tags counts as one)."""
    return getattr(sample, "ego_source", "recorded_ego") in (None, "recorded_ego") and not bool(getattr(sample, "mirrored", False))


def per_sample_columns(l2: np.ndarray, collision: np.ndarray) -> np.ndarray:
    """(N, 6) per-step L2 (m) and collision (0/1) -> (N, len(COLUMNS)) per-sample values.

    ST-P3: running mean over the steps up to the horizon; UniAD: the value at the horizon; "avg" =
    mean of 1s/2s/3s; collision in %. Pooled means of these columns equal the usual open-loop table
    (:func:`dsdrive.evaluation.metrics.planning.summarize`), as both are linear in the samples.
    """
    out = []
    for p in PROTOCOLS:
        for m, v in (("L2", np.asarray(l2, np.float64)), ("collision", 100.0 * np.asarray(collision, np.float64))):
            hs = [v[:, :k].mean(1) if p == "stp3" else v[:, k - 1] for k in HORIZON_STEPS.values()]
            out += [*hs, np.mean(hs, axis=0)]
    return np.stack(out, 1)


# ---------------------------------------------------------------------------------------------- units
@dataclass
class Unit:
    """One (planner, fold, seed) run; ``seed`` is None for planners with nothing to train."""

    planner: str
    fold: int
    seed: int | None
    test_scenes: list[str]
    train_scenes: list[str]
    out: Path

    @property
    def dir(self) -> Path:
        return self.out / "runs" / self.planner / (f"fold{self.fold}" if self.seed is None else f"fold{self.fold}-seed{self.seed}")

    @property
    def label(self) -> str:
        return f"{self.planner} fold {self.fold}" + ("" if self.seed is None else f" seed {self.seed}")


def _relative(argv: list[str], unit_dir: Path) -> list[str]:
    return [a.replace(str(unit_dir), "<unit>") for a in argv]


def train_argv(unit: Unit, data: str, extra: dict[str, list[str]], teacher_dir: Path | None) -> list[str]:
    """The training command line of a unit (data, output, the fold's scenes held out, seed, extras)."""
    r = RECIPES[unit.planner]
    f = r.flags
    argv = [*r.args, f["data"], str(data), f["out"], str(unit.dir / "checkpoint"), f["val"], ",".join(unit.test_scenes),
            f["seed"], str(unit.seed)]
    if r.teacher:
        argv += ["--planning_kd_teacher", str(teacher_dir), "--planning_kd_cache", str(unit.dir / "kd_cache")]
    return argv + list(extra.get(unit.planner, []))


def recorded_training_scenes(planner: str, ckpt: Path) -> tuple[list[str] | None, list[str] | None]:
    """(training scenes, held-out scenes) a checkpoint records, None where it records none."""
    if RECIPES[planner].registry == "ego_mlp":
        return json.loads((ckpt / "config.json").read_text()).get("trained_on_scenes"), None
    report = ckpt / "eval_heldout.json"
    if report.is_file():
        rep = json.loads(report.read_text())
        return rep.get("train_scenes"), rep.get("val_scenes")
    return None, None


def check_no_overlap(unit: Unit, trained: list[str] | None = None, held_out: list[str] | None = None) -> None:
    """Raise RuntimeError if the unit trains on a scene it tests (planned split, or what the checkpoint records)."""
    for what, scenes in (("planned training scenes", unit.train_scenes), ("checkpoint's training scenes", trained)):
        overlap = sorted(set(scenes or []) & set(unit.test_scenes))
        if overlap:
            raise RuntimeError(f"{unit.label}: {what} {sorted(scenes)} include test scenes {overlap}")
    if held_out is not None and sorted(held_out) != sorted(unit.test_scenes):
        raise RuntimeError(f"{unit.label}: checkpoint held out {sorted(held_out)}, expected the fold's scenes {sorted(unit.test_scenes)}")


def train_unit(unit: Unit, data: str, extra: dict[str, list[str]], teacher_dir: Path | None = None) -> dict:
    """Train a unit through its stage's ``main(argv)`` (output captured in ``train.log``), or reuse
    a finished training (``train.json``); returns the ``train.json`` record.

    Raises:
        RuntimeError: the stage failed (log named), or the split overlaps (:func:`check_no_overlap`).
        ValueError: ``train.json`` was written with another command line.
    """
    check_no_overlap(unit)
    argv = train_argv(unit, data, extra, teacher_dir)
    marker = unit.dir / "train.json"
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done["argv"] != _relative(argv, unit.dir):
            raise ValueError(f"{marker}: trained with {done['argv']}, now {_relative(argv, unit.dir)}; use another --out or delete {unit.dir}")
        return done
    unit.dir.mkdir(parents=True, exist_ok=True)
    main = getattr(importlib.import_module(RECIPES[unit.planner].stage), "main")
    wall, cpu = time.perf_counter(), time.process_time()
    with open(unit.dir / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print("argv:", shlex.join(argv), flush=True)
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse errors
            rc = e.code
        except Exception:
            traceback.print_exc()
            rc = "exception"
    if rc not in (0, None):
        raise RuntimeError(f"{unit.label}: training failed ({rc}); see {unit.dir / 'train.log'}")
    trained, held_out = recorded_training_scenes(unit.planner, unit.dir / "checkpoint")
    check_no_overlap(unit, trained, held_out)
    record = {"argv": _relative(argv, unit.dir), "train_scenes": unit.train_scenes, "test_scenes": unit.test_scenes,
              "checkpoint_train_scenes": trained, "train_wall_s": round(time.perf_counter() - wall, 2),
              "train_cpu_s": round(time.process_time() - cpu, 2)}
    write_json_atomic(marker, record)
    return record


def evaluate_unit(unit: Unit, samples: list, train: dict | None) -> dict:
    """Score the unit's planner on its test samples; returns (and the caller saves) the result record."""
    from dsdrive.evaluation.metrics.planning import evaluate_trajectories
    from dsdrive.planners.base import plan_samples
    from dsdrive.planners.registry import load_planner

    wall, cpu = time.perf_counter(), time.process_time()
    planner = load_planner(RECIPES[unit.planner].registry, unit.dir / "checkpoint" if train is not None else None)
    pred = plan_samples(planner, samples, progress=False)
    m = evaluate_trajectories(pred, samples)
    return {"planner": unit.planner, "fold": unit.fold, "seed": unit.seed, "test_scenes": unit.test_scenes,
            "train_scenes": unit.train_scenes if train is not None else [], "privileged": bool(getattr(planner, "privileged", False)),
            "sample_ids": m.sample_ids, "scene_ids": [s.scene_id for s in samples], "commands": m.commands,
            "l2": np.round(m.l2, 5).tolist(), "collision": m.collision.astype(int).tolist(),
            "train": train, "eval_wall_s": round(time.perf_counter() - wall, 2), "eval_cpu_s": round(time.process_time() - cpu, 2)}


# ---------------------------------------------------------------------------------------------- aggregation
def aggregate(results: dict[str, list[dict]], baseline: str, pairs: list[tuple[str, str]], n_boot: int, seed: int) -> dict:
    """Pool each planner's unit results and bootstrap by scene (module docstring).

    Args:
        results: planner -> its unit result records (all folds, all seeds).
        baseline, pairs: paired differences ``planner - baseline`` and ``A - B``.

    Returns:
        ``{"planners": {name: {...}}, "differences": [...]}`` (JSON-ready).

    Raises:
        RuntimeError: a sample is tested twice within one seed, or the planners were scored on
            different samples (a paired difference needs the same ones).
    """
    names = [f"{p}/{m}/{h}" for p, m, h in COLUMNS]
    pooled, out = {}, {"planners": {}, "differences": []}
    for planner, recs in results.items():
        seeds = sorted({r["seed"] for r in recs}, key=lambda s: -1 if s is None else s)
        per_seed, scene_of = {}, {}
        for s in seeds:
            rows = {}
            for r in (r for r in recs if r["seed"] == s):
                vals = per_sample_columns(np.asarray(r["l2"]).reshape(-1, 6), np.asarray(r["collision"]).reshape(-1, 6))
                for sid, sc, v in zip(r["sample_ids"], r["scene_ids"], vals):
                    if sid in rows:
                        raise RuntimeError(f"{planner}: sample {sid} tested twice with seed {s} (folds overlap)")
                    rows[sid], scene_of[sid] = v, sc
            per_seed[s] = rows
        ids = sorted(per_seed[seeds[0]])
        if any(sorted(rows) != ids for rows in per_seed.values()):
            raise RuntimeError(f"{planner}: seeds were scored on different samples")
        stack = np.stack([np.stack([per_seed[s][i] for i in ids]) for s in seeds])  # (seeds, N, C)
        scenes = [scene_of[i] for i in ids]
        mean_over_seeds = stack.mean(0)
        pooled[planner] = (ids, scenes, mean_over_seeds)
        ci = scene_bootstrap_ci(mean_over_seeds, scenes, n_boot=n_boot, seed=seed)
        seed_means = stack.mean(1)  # (seeds, C)
        out["planners"][planner] = {
            **ci.to_dict(names), "seeds": [s for s in seeds], "privileged": any(r.get("privileged") for r in recs),
            "seed_means": {n: [round(float(v), 5) for v in seed_means[:, j]] for j, n in enumerate(names)},
            "seed_sd": {n: (float(np.std(seed_means[:, j], ddof=1)) if len(seeds) > 1 else 0.0) for j, n in enumerate(names)},
        }
    wanted = [(p, baseline) for p in results if p != baseline and baseline in results] + [tuple(pr) for pr in pairs]
    for a, b in dict.fromkeys(wanted):  # in order, each pair once
        if a not in pooled or b not in pooled:
            continue
        (ida, sca, va), (idb, _, vb) = pooled[a], pooled[b]
        if ida != idb:
            raise RuntimeError(f"paired difference {a} - {b}: the planners were scored on different samples")
        d = paired_difference_ci(va, vb, sca, n_boot=n_boot, seed=seed)
        out["differences"].append({"a": a, "b": b, **d.to_dict(names),
                                   "includes_zero": dict(zip(names, map(bool, np.atleast_1d(d.includes_zero()))))})
    return out


def intervals_for_report(agg: dict) -> dict:
    """``{"method", "intervals": {planner: {"ALL": {protocol: {metric: {horizon: [lo, hi]}}}}}}``
    (what ``dsdrive open-loop --cv-summary`` reads)."""
    iv = {}
    for planner, r in agg["planners"].items():
        node = iv.setdefault(planner, {"ALL": {}})["ALL"]
        for (p, m, h) in COLUMNS:
            lo, hi = r["ci"][f"{p}/{m}/{h}"]
            if lo is not None:
                node.setdefault(p, {}).setdefault(m, {})[h] = [lo, hi]
    return {"method": f"95 % {METHOD}; folds x seeds cross-validation by scene", "intervals": iv}


# ---------------------------------------------------------------------------------------------- report
PROTOCOL_NAMES = {"stp3": "ST-P3 protocol (running mean up to t)", "uniad": "UniAD protocol (value at t)"}


def _cell(mean, ci, digits: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def verdict(lo: float | None, hi: float | None, a: str, b: str) -> str:
    """Words for a difference ``a - b`` of a lower-is-better metric and its CI."""
    if lo is None:
        return "–"
    if lo <= 0 <= hi:
        return "no measurable difference"
    return f"{a} lower (better)" if hi < 0 else f"{a} higher (worse)"


def render_markdown(report: dict) -> str:
    """cv.md: settings, one table per protocol, seed spread, paired differences, timings."""
    agg, s = report["aggregate"], report["settings"]
    lines = [f"# Cross-validation by scene: {s['folds']} folds x {s['seeds']} seeds", "",
             f"Data `{s['data']}`: {s['num_test_samples']} test samples (recorded ego, un-mirrored, complete 3 s future) "
             f"from {len(s['scenes'])} scenes; each tested once per seed. Folds (sorted scene ids, scene i -> fold i mod K): "
             + "; ".join(f"{i}: {', '.join(f)}" for i, f in enumerate(s["fold_scenes"])) + ".",
             f"Intervals: 95 % {METHOD}, B = {s['n_boot']}, bootstrap seed {s['bootstrap_seed']}; per sample the seeds are averaged first.", ""]
    for p in PROTOCOLS:
        lines += [f"## {PROTOCOL_NAMES[p]}", "",
                  "| planner | seeds | N | " + " | ".join(f"L2 {h} (m)" for h in HORIZONS) + " | Col. avg (%) |",
                  "|---|---|---|" + "---|" * (len(HORIZONS) + 1)]
        for name, r in agg["planners"].items():
            label = f"{name} (privileged)" if r["privileged"] else name
            seeds = "1 (deterministic)" if r["seeds"] == [None] else str(len(r["seeds"]))
            cells = [_cell(r["mean"][f"{p}/L2/{h}"], r["ci"][f"{p}/L2/{h}"], 3) for h in HORIZONS]
            cells.append(_cell(r["mean"][f"{p}/collision/avg"], r["ci"][f"{p}/collision/avg"], 2))
            lines.append(f"| {label} | {seeds} | {r['num_samples']} | " + " | ".join(cells) + " |")
        for name, why in report.get("unavailable", {}).items():
            lines.append(f"| {name} | – | – | " + " | ".join(["not available"] * (len(HORIZONS) + 1)) + " |")
        lines.append("")
    lines += ["## Seed-to-seed spread (pooled mean of each seed; ST-P3)", "", "| planner | L2 avg per seed (m) | SD (m) | Col. avg per seed (%) | SD (%) |", "|---|---|---|---|---|"]
    for name, r in agg["planners"].items():
        l2, col = r["seed_means"]["stp3/L2/avg"], r["seed_means"]["stp3/collision/avg"]
        lines.append(f"| {name} | {', '.join(f'{v:.3f}' for v in l2)} | {r['seed_sd']['stp3/L2/avg']:.3f} | "
                     f"{', '.join(f'{v:.2f}' for v in col)} | {r['seed_sd']['stp3/collision/avg']:.2f} |")
    lines += ["", "## Paired differences (A - B per sample, bootstrapped by scene; < 0: A better)", "",
              "| A - B | protocol | " + " | ".join(f"ΔL2 {h} (m)" for h in HORIZONS) + " | L2 avg | ΔCol. avg (%) | collision avg |",
              "|---|---|" + "---|" * (len(HORIZONS) + 3)]
    for d in agg["differences"]:
        for p in PROTOCOLS:
            cells = [_cell(d["mean"][f"{p}/L2/{h}"], d["ci"][f"{p}/L2/{h}"], 3) for h in HORIZONS]
            lo, hi = d["ci"][f"{p}/L2/avg"]
            clo, chi = d["ci"][f"{p}/collision/avg"]
            lines.append(f"| {d['a']} - {d['b']} | {p} | " + " | ".join(cells) + f" | {verdict(lo, hi, d['a'], d['b'])} | "
                         f"{_cell(d['mean'][f'{p}/collision/avg'], d['ci'][f'{p}/collision/avg'], 2)} | {verdict(clo, chi, d['a'], d['b'])} |")
    t = report["timing"]
    lines += ["", "## Time", "", f"This invocation: {t['wall_s']:.0f} s wall, {t['cpu_s']:.0f} s CPU (process) on {t['cpu_count']} CPU cores. "
              "Per planner, summed over its units (training + scoring, as first run):", "",
              "| planner | units | wall (s) | CPU (s) |", "|---|---|---|---|"]
    for name, v in t["per_planner"].items():
        lines.append(f"| {name} | {v['units']} | {v['wall_s']:.0f} | {v['cpu_s']:.0f} |")
    if report.get("unavailable"):
        lines += ["", "Not available: " + "; ".join(f"{k}: {v}" for k, v in report["unavailable"].items())]
    lines += ["", "L2: ego-frame x, y distance to the ground truth (m). Collision: the nuScenes ego box at the planned waypoint "
              "overlapping a ground-truth agent box where the ground truth does not (%). (privileged): reads ground-truth "
              "agent futures, not comparable to the others. 'no measurable difference': the 95 % interval includes 0."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- command line
def _planner_args(values: list[str]) -> dict[str, list[str]]:
    out = {}
    for v in values:
        name, sep, args = v.partition("=")
        if not sep or name not in RECIPES:
            raise ValueError(f"--planner-args {v!r}: expected NAME=\"ARGS\" with NAME one of {list(RECIPES)}")
        out[name] = out.get(name, []) + shlex.split(args)
    return out


def build_parser(prog: str = "dsdrive cross-validate") -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="planning dataset folder (annotated for the students)")
    ap.add_argument("--folds", type=int, default=4, help="K folds of scenes (2 <= K <= scenes)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0 .. S-1 per fold for trained planners")
    ap.add_argument("--planner", nargs="+", default=["constant_velocity", "ego_mlp", "student"], choices=list(RECIPES))
    ap.add_argument("--baseline", default="constant_velocity", help="planner every other is compared to")
    ap.add_argument("--compare", nargs="*", default=[], metavar="A:B", help="further paired differences A - B")
    ap.add_argument("--planner-args", nargs="*", default=[], metavar='NAME="ARGS"',
                    help='extra training flags per planner, e.g. student="--max_steps 100" (split like a shell line)')
    ap.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT, help="bootstrap replicates")
    ap.add_argument("--bootstrap-seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output folder (cv.json, cv.md, runs/)")
    return ap


def run(args: argparse.Namespace) -> dict:
    """Train, score and aggregate; writes ``OUT/cv.json`` and ``OUT/cv.md``; returns the report.

    Raises:
        ValueError: bad folds / planners / comparisons, or ``--out`` made with another dataset or folds.
        FileNotFoundError: ``--data`` is not a planning dataset.
    """
    import os

    from dsdrive.data.dataset import load_samples
    from dsdrive.evaluation.metrics.planning import complete_future_mask

    t_wall, t_cpu = time.perf_counter(), time.process_time()
    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds}: must be >= 1")
    planners = list(dict.fromkeys(args.planner))
    if args.baseline not in planners:
        raise ValueError(f"--baseline {args.baseline}: not among --planner {planners}")
    pairs = [tuple(c.split(":", 1)) for c in args.compare]
    for c, pr in zip(args.compare, pairs):
        if len(pr) != 2 or not set(pr) <= set(planners):
            raise ValueError(f"--compare {c}: expected A:B with both among --planner {planners}")
    pairs += [pr for pr in NATURAL_PAIRS if set(pr) <= set(planners) and pr not in pairs]
    extra = _planner_args(args.planner_args)
    if "student_warm_start" in planners and "--init_from" not in extra.get("student_warm_start", []):
        raise ValueError('--planner student_warm_start needs --planner-args student_warm_start="--init_from CKPT" '
                         "(a saved student to fine-tune); without it the planner is the student recipe again")

    samples = load_samples(args.data)
    folds = make_folds([s.scene_id for s in samples], args.folds)
    recorded = [s for s in samples if is_recorded_ego(s)]
    complete = complete_future_mask(recorded)
    test = [s for s, c in zip(recorded, complete) if c]
    out = Path(args.out)
    settings = {"data": str(Path(args.data).resolve()), "folds": args.folds, "seeds": args.seeds, "fold_scenes": folds,
                "scenes": sorted({s.scene_id for s in samples}), "num_samples": len(samples),
                "sample_ids_sha1": hashlib.sha1("\n".join(sorted(s.sample_id for s in samples)).encode()).hexdigest(),
                "num_test_samples": len(test), "num_left_out_augmented": len(samples) - len(recorded),
                "num_left_out_incomplete_future": int((~complete).sum()), "n_boot": args.n_boot, "bootstrap_seed": args.bootstrap_seed}
    old = out / "cv_settings.json"
    if old.is_file():
        prev = json.loads(old.read_text())
        for key in ("data", "fold_scenes", "sample_ids_sha1"):
            if prev.get(key) != settings[key]:
                raise ValueError(f"{out}: made with {key}={prev.get(key)!r}, now {settings[key]!r}; use another --out")
    write_json_atomic(old, settings)
    print(f"{args.data}: {len(samples)} samples, {len(settings['scenes'])} scenes; testing {len(test)} "
          f"(left out {settings['num_left_out_augmented']} augmented, {settings['num_left_out_incomplete_future']} incomplete future)")
    for i, f in enumerate(folds):
        print(f"  fold {i}: {f}")

    units = []
    for name in planners:
        for k, fold in enumerate(folds):
            train_scenes = sorted(sc for j, f in enumerate(folds) if j != k for sc in f)
            for seed in ([None] if RECIPES[name].stage is None else range(args.seeds)):
                units.append(Unit(name, k, seed, list(fold), train_scenes, out))
    results: dict[str, list[dict]] = {p: [] for p in planners}
    timing = {p: {"units": 0, "wall_s": 0.0, "cpu_s": 0.0} for p in planners}
    unavailable: dict[str, str] = {}
    for i, unit in enumerate(units, 1):
        if unit.planner in unavailable:
            continue
        res_file = unit.dir / "result.json"
        recipe = RECIPES[unit.planner]
        teacher = Unit(recipe.teacher, unit.fold, unit.seed, unit.test_scenes, unit.train_scenes, out) if recipe.teacher else None
        teacher_dir = teacher.dir / "checkpoint" if teacher else None
        try:
            if res_file.is_file():
                res = json.loads(res_file.read_text())
                argv = _relative(train_argv(unit, args.data, extra, teacher_dir), unit.dir) if recipe.stage else None
                if sorted(res["test_scenes"]) != sorted(unit.test_scenes) or (res.get("train") or {}).get("argv") != argv:
                    raise ValueError(f"{res_file}: made with test scenes {res['test_scenes']} and training arguments "
                                     f"{(res.get('train') or {}).get('argv')}, now {unit.test_scenes} and {argv}; use another --out or delete {unit.dir}")
                print(f"[{i}/{len(units)}] {unit.label}: done before, skipped")
            else:
                print(f"[{i}/{len(units)}] {unit.label}: test {unit.test_scenes}" + ("" if recipe.stage is None
                      else f", training on {unit.train_scenes}"), flush=True)
                train = None
                if recipe.stage is not None:
                    if teacher:
                        train_unit(teacher, args.data, extra)
                    train = train_unit(unit, args.data, extra, teacher_dir)
                res = evaluate_unit(unit, [s for s in test if s.scene_id in set(unit.test_scenes)], train)
                write_json_atomic(res_file, res, indent=0)
                print(f"    trained {(train or {}).get('train_wall_s', 0):.0f} s, scored {len(res['sample_ids'])} samples in {res['eval_wall_s']:.1f} s", flush=True)
        except (ImportError, RuntimeError) as e:  # a stage that is missing or failed: report, go on with the others
            unavailable[unit.planner] = str(e)
            print(f"    {unit.planner} not available: {e}", file=sys.stderr)
            continue
        results[unit.planner].append(res)
        tr = res.get("train") or {}
        timing[unit.planner]["units"] += 1
        timing[unit.planner]["wall_s"] += tr.get("train_wall_s", 0.0) + res["eval_wall_s"]
        timing[unit.planner]["cpu_s"] += tr.get("train_cpu_s", 0.0) + res["eval_cpu_s"]
    results = {p: r for p, r in results.items() if p not in unavailable}
    if args.baseline in unavailable:
        raise RuntimeError(f"baseline {args.baseline} is not available: {unavailable[args.baseline]}")
    agg = aggregate(results, args.baseline, [pr for pr in pairs if not set(pr) & set(unavailable)], args.n_boot, args.bootstrap_seed)
    report = {"settings": settings, "aggregate": agg, "unavailable": unavailable, **intervals_for_report(agg),
              "timing": {"wall_s": round(time.perf_counter() - t_wall, 1), "cpu_s": round(time.process_time() - t_cpu, 1),
                         "cpu_count": os.cpu_count(), "per_planner": {p: {k: round(v, 1) if isinstance(v, float) else v for k, v in t.items()}
                                                                      for p, t in timing.items() if p not in unavailable}}}
    write_json_atomic(out / "cv.json", report)
    write_text_atomic(out / "cv.md", render_markdown(report))
    return report


def main(argv: list[str] | None = None, prog: str = "dsdrive cross-validate") -> int:
    """``dsdrive cross-validate`` / ``python eval/cross_validate.py``: returns 0, or 2 after a
    one-line error (bad data, folds, planners, or an ``--out`` made with other settings)."""
    args = build_parser(prog).parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print(render_markdown(report))
    t = report["timing"]
    print(f"wall time {t['wall_s']:.0f} s, CPU time {t['cpu_s']:.0f} s; wrote {Path(args.out) / 'cv.json'} and {Path(args.out) / 'cv.md'}")
    return 0
