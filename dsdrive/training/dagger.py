"""On-policy closed-loop distillation: DAgger with PDM-Closed as the privileged expert.

Run as (``dsdrive dagger`` and ``python recipes/dagger.py`` are the same command, :func:`main`):
    dsdrive dagger --data outputs/main/planning_annotated --out outputs/dagger --folds 4 --fold 0 --iterations 3
    dsdrive dagger --data DIR --out OUT --fold 1 --iterations 3 --max_steps 300      # flags unknown here go to distill
    dsdrive dagger --data DIR --out OUT --summary-only                                 # table of every fold run

Method: DAgger (Ross, Gordon & Bagnell, AISTATS 2011) as in Learning by Cheating's on-policy stage
(Chen, Zhou, Koltun & Kraehenbuehl, CoRL 2019): a privileged agent labels the states the student
itself visits. Here the privileged agent is PDM-Closed (:mod:`dsdrive.planners.pdm_closed`; it
reads the ground-truth agents, the map, the route and the drivable area of the simulator) and the
states come from MetaDrive rollouts of the current student on the fold's training scenes, with
DART steering perturbations (Laskey et al., CoRL 2017) so that recovery states are visited too.

Per fold F (held-out scenes ``make_folds(sorted scene ids, folds)[F]``: never rolled out for
training, never trained on) and iteration i, under ``OUT/fold_F/iter_i/``:

* ``rollout/`` (i >= 1): the :class:`~dsdrive.data.types.PlanningInputs` built at every replanning
  step (2 Hz) while student i-1 drives each training scene (with ``beta0 > 0``: DAgger's mixture,
  :class:`ExpertMixture`, PDM-Closed driving a step with probability beta_i), saved as planning samples
  (:func:`dsdrive.data.dataset.save_samples`; ``source="metadrive"``, ``ego_source="on_policy"``: a
  provenance tag, never an input; targets empty, masks False), ``world.json`` (the simulator pose
  and scenario file of each state, for the labeller), ``summary.json`` (states, perturbations,
  the training scenes' route completion, wall seconds). Recorded through the rollout's ``hooks``
  (:func:`dsdrive.evaluation.closed_loop.rollout.rollout_scenario`); no second simulation loop.
* ``labels/`` (i >= 1): the same samples labelled by PDM-Closed from the simulator state: the
  closed-loop plan (route = the log's path from the ego's place on it, drivable area of the
  scenario, destination at the log's end: exactly :meth:`PDMClosedPlanner.plan_in_world`) is
  ``targets.ego_future`` (6, 3, ego frame, mask True; PDM-Closed with the label settings of
  :class:`DaggerConfig`: target speed, IDM headway and gap) and the PDM-Closed annotator's annotation
  (:class:`~dsdrive.annotation.annotators.pdm_closed.PDMClosedAnnotator`: meta-action, risk,
  explanation of that plan) is ``annotation``; agent futures are not known (mask False): the
  logged future is never read. ``summary.json`` lists failures (a state PDM-Closed cannot plan).
* ``train_data/``: the logged samples of the training scenes + every ``labels/`` of iterations
  1..i (DAgger's aggregation); iteration 0 is plain imitation of the logged samples.
* ``checkpoint/``: the student trained from scratch on ``train_data`` by
  :func:`dsdrive.training.distill.main` with the main job's YAML (``distill_config``; extra flags
  passed through), held-out scenes = the fold's; its ``eval_heldout.json`` is written last. With
  ``warm_start`` iteration i >= 1 instead fine-tunes student i-1 on ``train_data``
  (``--init_from``, ``warm_start_steps`` steps); ``on_policy_repeat`` k puts each on-policy sample k
  times into ``train_data`` (copies' ids suffixed ``~rep1`` ...), so a large logged set (agents as
  ego, mirrored) does not drown the states the student visited.
* ``closed_loop.json``: the student on the held-out scenes (unperturbed;
  :func:`~dsdrive.evaluation.closed_loop.metrics.scenario_metrics` per scene + ``aggregate``; an
  at-fault collision is an ``at-fault overlap`` event, i.e. NC < 1). ``open_loop.json``: ST-P3 /
  UniAD L2 and collision on the held-out logged samples. ``timing.json``: wall seconds of
  simulation (training rollouts + held-out rollouts), labelling, training.
* ``done``: written last, atomically. Resume: a finished iteration is skipped; inside one, every
  part with its marker (``rollout/done``, ``labels/done``, ``checkpoint/eval_heldout.json``,
  ``closed_loop.json``) is skipped; a part cut off is redone from its start (deterministic:
  seeded perturbations, seeded training, MetaDrive replays).

``OUT/summary.json`` / ``OUT/summary.md``: the per-fold, per-iteration table (every fold found).

Raises (from :func:`main`, as exit code 2 with a one-line message): the data folder or scenarios
missing, a held-out or training scene with no scenario file, bad settings (:class:`DaggerConfig`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dsdrive.constants import AGENT_FUTURE_STEPS, FUTURE_STEPS, SIM_DT
from dsdrive.data.atomic_io import write_json_atomic, write_text_atomic
from dsdrive.data.types import PlanningInputs, PlanningSample, PlanningTargets
from dsdrive.training.dagger_config import DaggerConfig

ON_POLICY = "on_policy"
"""``PlanningSample.ego_source`` of a state the student visited in closed loop."""


# ------------------------------------------------------------------------------------------ helpers
def _plain(obj):
    """JSON-safe copy: numpy scalars and arrays to Python values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def empty_targets(inputs: PlanningInputs) -> PlanningTargets:
    """Targets of an unlabelled state: zeros with every mask False ((6, 3) ego, (N, 12, 3) agents)."""
    n = len(inputs.agents)
    return PlanningTargets(np.zeros((FUTURE_STEPS, 3), np.float32), np.zeros(FUTURE_STEPS, bool),
                           np.zeros((n, AGENT_FUTURE_STEPS, 3), np.float32), np.zeros((n, AGENT_FUTURE_STEPS), bool))


# ------------------------------------------------------------------------------------------ the expert
def expert_planner(cfg: DaggerConfig | None = None, cls=None):
    """PDM-Closed with the label settings of ``cfg`` (None: PDM-Closed's defaults): the IDM headway
    and minimum gap, and the scene's speed band (``label_speed log``) or 13.9 m/s (``fixed``).
    ``cls``: a :class:`~dsdrive.planners.pdm_closed.PDMClosedPlanner` subclass to build."""
    from dsdrive.planners.pdm_closed import PDM_IDM, PDMClosedPlanner

    cls = cls or PDMClosedPlanner
    if cfg is None:
        return cls()
    return cls(idm=replace(PDM_IDM, headway=cfg.label_idm_headway, s0=cfg.label_idm_s0),
               log_speed_margin=cfg.label_speed_margin if cfg.label_speed == "log" else None)


class ExpertMixture:
    """DAgger's mixture policy (Ross, Gordon & Bagnell, AISTATS 2011): at each replanning step the
    expert drives with probability ``beta``, the student otherwise.

    A closed-loop planner that reads the world (``reads_world``, :mod:`dsdrive.evaluation.closed_loop.rollout`):
    ``set_world`` goes to the expert; ``plan_in_world(inputs, ego_xy, ego_yaw, t_now)`` returns the
    expert's closed-loop plan (:meth:`~dsdrive.planners.pdm_closed.PDMClosedPlanner.plan_in_world`)
    or ``(student.compute_trajectory(inputs), None)``: (6, 3) ego-frame waypoints at +0.5 ... +3.0 s.
    Draws come from ``(seed, iteration)`` in call order (a rerun of the same rollouts mixes
    identically); ``decisions`` lists them (True: the expert drove that step).

    Raises:
        ValueError: ``beta`` outside [0, 1].
    """

    name = "dagger_mixture"
    reads_world = True

    def __init__(self, student, expert, beta: float, seed: int, iteration: int) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"ExpertMixture: beta={beta!r}, expected in [0, 1]")
        self.student, self.expert, self.beta = student, expert, float(beta)
        self._rng = np.random.default_rng([seed, iteration, 0xDA66])
        self.decisions: list[bool] = []

    def set_world(self, route, drivable_area=None) -> None:
        self.expert.set_world(route, drivable_area)

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """The student's plan (open-loop use: no world to hand the expert)."""
        return self.student.compute_trajectory(inputs)

    def plan_in_world(self, inputs: PlanningInputs, ego_xy: np.ndarray, ego_yaw: float, t_now: float):
        expert = bool(self._rng.random() < self.beta)
        self.decisions.append(expert)
        if expert:
            return self.expert.plan_in_world(inputs, ego_xy, ego_yaw, t_now)
        return self.student.compute_trajectory(inputs), None


# ------------------------------------------------------------------------------------------ rollouts
class DartPerturbation:
    """Seeded steering noise on the executed action (DART, Laskey et al., CoRL 2017).

    At each replanning step (every ``replan_steps`` simulator steps) with no perturbation running,
    one starts with probability ``prob``: ``steering += s``, ``|s| ~ U[steer / 2, steer]``, random
    sign, for ``steps`` simulator steps, clipped to [-1, 1] (MetaDrive's normalised steering). The
    draws come from ``(seed, iteration, crc32(scene_id))``: a rerun perturbs identically.
    """

    def __init__(self, prob: float, steer: float, steps: int, seed: int, iteration: int, replan_steps: int = 5):
        self.prob, self.steer, self.steps, self.seed, self.iteration, self.replan = prob, steer, steps, seed, iteration, replan_steps
        self.windows: list[dict] = []
        self._scene, self._rng, self._left, self._offset = None, None, 0, 0.0

    def active(self) -> bool:
        """True while a perturbation is being applied."""
        return self._left > 0

    def __call__(self, scene_id: str, step: int, action: np.ndarray) -> np.ndarray:
        if scene_id != self._scene or step == 0:
            self._scene, self._left = scene_id, 0
            self._rng = np.random.default_rng([self.seed, self.iteration, zlib.crc32(scene_id.encode())])
        if self._left == 0 and step % self.replan == 0 and self.prob > 0 and self._rng.random() < self.prob:
            self._offset = float(self._rng.choice([-1.0, 1.0]) * self._rng.uniform(self.steer / 2, self.steer))
            self._left = self.steps
            self.windows.append({"scene_id": scene_id, "step": step, "steering_offset": round(self._offset, 4)})
        out = np.asarray(action, np.float64).copy()
        if self._left > 0:
            out[0] = float(np.clip(out[0] + self._offset, -1.0, 1.0))
            self._left -= 1
        return out


class OnPolicyRecorder:
    """Rollout hooks (:func:`~dsdrive.evaluation.closed_loop.rollout.rollout_scenario`): records the
    planner's inputs at every replanning step with the simulator pose, and applies a
    :class:`DartPerturbation` (None: no noise) to the executed action."""

    def __init__(self, iteration: int, files: dict[str, str], perturbation: DartPerturbation | None = None):
        self.iteration, self.files, self.perturbation = iteration, files, perturbation
        self.records: list[dict] = []

    def on_inputs(self, scene_id: str, step: int, inputs: PlanningInputs, ego, log) -> None:
        sid = f"{scene_id}_it{self.iteration}_cl{step:04d}"
        self.records.append({"inputs": replace(inputs, sample_id=sid), "scene_id": scene_id, "step": step,
                             "t_now": round(step * SIM_DT, 3), "ego_xy": np.asarray(ego.xy, float)[:2].tolist(), "ego_yaw": float(ego.yaw),
                             "file": self.files[scene_id], "route_ends": log.route.xy[[0, -1]].tolist(),
                             "perturbed": bool(self.perturbation is not None and self.perturbation.active())})

    def perturb(self, scene_id: str, step: int, action: np.ndarray) -> np.ndarray:
        return action if self.perturbation is None else self.perturbation(scene_id, step, action)


def collect_rollouts(ckpt: Path, work, cfg: DaggerConfig, iteration: int, map_names: dict[str, str], out: Path) -> dict:
    """Roll out the student of ``ckpt`` on the working copy ``work`` (training scenes) with DART
    perturbations (and, with ``cfg.beta(iteration) > 0``, the expert driving some steps:
    :class:`ExpertMixture`); write ``out/`` (samples), ``out/world.json`` (``expert_drove`` per
    state), ``out/summary.json``, ``out/done``."""
    from dsdrive.data.dataset import save_samples
    from dsdrive.evaluation.closed_loop.metrics import scenario_metrics
    from dsdrive.evaluation.closed_loop.rollout import RolloutConfig, run_closed_loop
    from dsdrive.planners.student import StudentPlanner

    t0 = time.perf_counter()
    files = {s: str(Path(work.directory) / f) for f, s in zip(work.files, work.scene_ids)}
    pert = DartPerturbation(cfg.perturb_prob, cfg.perturb_steer, cfg.perturb_steps, cfg.seed, iteration)
    rec = OnPolicyRecorder(iteration, files, pert)
    beta = cfg.beta(iteration)
    planner = StudentPlanner(ckpt) if beta == 0 else ExpertMixture(StudentPlanner(ckpt), expert_planner(cfg), beta, cfg.seed, iteration)
    rollouts = run_closed_loop(work, planner, RolloutConfig(traffic=cfg.traffic, max_steps=cfg.rollout_max_steps, explain=False),
                               progress=False, hooks=rec)
    samples = [PlanningSample("metadrive", map_names.get(r["scene_id"], ""), r["t_now"], r["inputs"], empty_targets(r["inputs"]),
                              ego_source=ON_POLICY) for r in rec.records]
    drove = getattr(planner, "decisions", [False] * len(rec.records))
    if len(drove) != len(rec.records):
        raise RuntimeError(f"{out}: {len(rec.records)} recorded states but {len(drove)} mixture decisions")
    world = {r["inputs"].sample_id: {**{k: r[k] for k in ("scene_id", "step", "t_now", "ego_xy", "ego_yaw", "file", "route_ends", "perturbed")},
                                     "expert_drove": e} for r, e in zip(rec.records, drove)}
    write_json_atomic(out / "world.json", world)
    save_samples(samples, out / "samples")
    per_scene = [scenario_metrics(r) for r in rollouts]
    summary = {"states": len(samples), "perturbed_states": sum(r["perturbed"] for r in rec.records), "perturbations": pert.windows,
               "beta": beta, "expert_driven_states": int(sum(drove)),
               "scenes": {m["scene_id"]: {k: m.get(k) for k in ("status", "route_completion", "pdms", "steps", "failure")} for m in per_scene},
               "wall_s": time.perf_counter() - t0}
    write_json_atomic(out / "summary.json", _plain(summary))
    write_json_atomic(out / "done", {"states": len(samples)})
    return summary


# ------------------------------------------------------------------------------------------ labels
def _world_labeller(cfg: DaggerConfig | None = None):
    from dsdrive.planners.pdm_closed import PDMClosedPlanner

    class WorldLabeller(PDMClosedPlanner):
        """PDM-Closed whose ``plan`` uses the drivable-area test, destination and speed limit of the
        state being labelled (as :meth:`PDMClosedPlanner.plan_in_world`) and keeps its last result."""

        area = None
        goal = False
        limit = None
        last = None

        def plan(self, inputs, route_xy=None, area=None, goal=False, speed_limit=None):
            self.last = super().plan(inputs, route_xy, area if area is not None else self.area, goal or self.goal,
                                     speed_limit if speed_limit is not None else self.limit)
            return self.last

    return expert_planner(cfg, WorldLabeller)


def label_states(rollout_dir: Path, out: Path, cfg: DaggerConfig | None = None) -> dict:
    """Label every recorded state of ``rollout_dir`` with PDM-Closed from the simulator state (see the
    module docstring; label settings from ``cfg``, None: PDM-Closed's defaults); write
    ``out/samples``, ``out/summary.json``, ``out/done``."""
    from dsdrive.annotation.annotators.pdm_closed import PDMClosedAnnotator
    from dsdrive.data.dataset import load_samples, save_samples
    from dsdrive.data.safe_pickle import load_pickle
    from dsdrive.evaluation.closed_loop.adapter import ScenarioLog
    from dsdrive.evaluation.drivable_area import DrivableArea, NoDrivableArea
    from dsdrive.geometry import global_to_ego
    from dsdrive.planners.pdm_closed import world_area_test

    t0 = time.perf_counter()
    world = _read(rollout_dir / "world.json")
    labeller = _world_labeller(cfg)
    annotator = PDMClosedAnnotator(planner=labeller)
    scenes: dict[str, tuple] = {}
    labelled, failures = [], []
    for s in load_samples(rollout_dir / "samples"):
        w = world[s.sample_id]
        if w["file"] not in scenes:
            scenario = load_pickle(w["file"])
            try:
                area = DrivableArea.from_map_features(scenario.get("map_features"), w["file"])
            except NoDrivableArea:
                area = None
            scenes[w["file"]] = (ScenarioLog.from_scenario(scenario).route, area)
        route, area = scenes[w["file"]]
        # MetaDrive centres a scenario on the ego's first position: the simulator frame is the
        # scenario file's frame shifted (never rotated: checked on the route's two ends)
        sim_ends = np.asarray(w["route_ends"], np.float64)
        shift = route.xy[0] - sim_ends[0]
        if not np.allclose(route.xy[-1] - route.xy[0], sim_ends[1] - sim_ends[0], atol=0.05):
            raise ValueError(f"{w['file']}: the simulator's route {sim_ends.tolist()} is not a shift of the file's "
                             f"({route.xy[[0, -1]].tolist()}); cannot place state {s.sample_id} on the map")
        xy, yaw = np.asarray(w["ego_xy"], np.float64) + shift, float(w["ego_yaw"])
        i = route.nearest(xy, w["t_now"])
        route_xy = global_to_ego(route.xy[max(i - 10, 0):], xy, yaw)
        labeller.area = None if area is None else world_area_test(area, xy, yaw)
        labeller.goal = True
        labeller.limit = labeller.world_speed_limit(route, i)
        try:
            ann = annotator.annotate_one(s, route_xy)
        except ValueError as e:
            failures.append({"sample_id": s.sample_id, "reason": str(e)})
            continue
        plan = np.asarray(labeller.last.waypoints, np.float32)
        targets = replace(s.targets, ego_future=plan, ego_future_mask=np.ones(FUTURE_STEPS, bool))
        labelled.append(replace(s, targets=targets, annotation=ann.model_dump(mode="json")))
    save_samples(labelled, out / "samples")
    summary = {"labelled": len(labelled), "failures": failures, "labeller": "pdm-closed (closed-loop world: route, drivable area, destination)",
               "label_settings": {"idm_headway_s": labeller.idm.headway, "idm_s0_m": labeller.idm.s0,
                                  "speed": "fixed" if labeller.log_speed_margin is None else f"log band x {1 + labeller.log_speed_margin:g}"},
               "wall_s": time.perf_counter() - t0}
    write_json_atomic(out / "summary.json", summary)
    write_json_atomic(out / "done", {"labelled": len(labelled)})
    return summary


# ------------------------------------------------------------------------------------------ train / evaluate
def repeat_samples(samples: list[PlanningSample], k: int) -> list[PlanningSample]:
    """``samples`` then k - 1 copies of each, ids (and annotation ids) suffixed ``~rep1`` ... ``~rep{k-1}``."""
    out = list(samples)
    for r in range(1, k):
        for s in samples:
            sid = f"{s.sample_id}~rep{r}"
            ann = {**s.annotation, "sample_id": sid} if isinstance(s.annotation, dict) and "sample_id" in s.annotation else s.annotation
            out.append(replace(s, inputs=replace(s.inputs, sample_id=sid), annotation=ann))
    return out


def train_student(cfg: DaggerConfig, train_dir: Path, heldout: list[str], ckpt: Path, extra: list[str],
                  init_from: Path | None = None) -> float:
    """Train the student on ``train_dir`` with :func:`dsdrive.training.distill.main` (YAML
    ``cfg.distill_config`` + ``extra`` flags; with ``init_from``, fine-tune that checkpoint for
    ``cfg.warm_start_steps`` steps); returns wall seconds. ``eval_heldout.json`` marks it done."""
    from dsdrive.training.distill import main as distill_main

    if ckpt.exists():
        shutil.rmtree(ckpt)  # a run cut off: start it again from scratch
    t0 = time.perf_counter()
    argv = ["--config", cfg.distill_config, "--data", cfg.data, "--train_data", str(train_dir), "--val_scenes", ",".join(heldout),
            "--output_dir", str(ckpt), "--num_threads", str(cfg.num_threads), *extra]
    if init_from is not None:  # after extra: the warm start's own settings win
        argv += ["--init_from", str(init_from)] + (["--max_steps", str(cfg.warm_start_steps)] if cfg.warm_start_steps else [])
    rc = distill_main(argv, prog="dsdrive dagger (distill)")
    if rc != 0 or not (ckpt / "eval_heldout.json").is_file():
        raise RuntimeError(f"distill failed for {ckpt} (exit {rc}); argv {argv}")
    return time.perf_counter() - t0


def evaluate_closed_loop(ckpt: Path, work, cfg: DaggerConfig) -> dict:
    """The student of ``ckpt`` on the held-out working copy, unperturbed: per-scene metrics, aggregate,
    at-fault collision count (scenes with an ``at-fault overlap`` event), wall seconds."""
    from dsdrive.evaluation.closed_loop.metrics import aggregate, scenario_metrics
    from dsdrive.evaluation.closed_loop.rollout import RolloutConfig, run_closed_loop
    from dsdrive.planners.student import StudentPlanner

    t0 = time.perf_counter()
    rollouts = run_closed_loop(work, StudentPlanner(ckpt), RolloutConfig(traffic=cfg.traffic, max_steps=cfg.rollout_max_steps, explain=False),
                               progress=False)
    per = [scenario_metrics(r) for r in rollouts]
    agg = aggregate(per, [p.latency_ms for r in rollouts for p in r.plans])
    agg["at_fault_collisions"] = sum(any(e["kind"] == "at-fault overlap" for e in m.get("events", [])) for m in per)
    agg["any_collision"] = sum(bool(m.get("collision_vehicle") or m.get("collision_pedestrian") or m.get("collision_object")) for m in per)
    return _plain({"scenes": [r.scene_id for r in rollouts], "aggregate": agg, "per_scene": per, "wall_s": time.perf_counter() - t0})


@dataclass
class FoldPlan:
    """The scenes of one fold: ``heldout`` and ``train`` ids, and the two working copies."""

    heldout: list[str]
    train: list[str]
    work_train: object
    work_heldout: object


def plan_fold(cfg: DaggerConfig, scene_ids: list[str], root: Path) -> FoldPlan:
    """Split ``scene_ids`` into the fold's held-out and training scenes and link their scenarios.

    Raises:
        ValueError: a scene has no scenario file in ``cfg.scenarios`` (names it), or bad folds.
    """
    from dsdrive.data.paths import default_scenarios_dir
    from dsdrive.evaluation.closed_loop.scenario_index import prepare_working_copy
    from dsdrive.evaluation.cross_validate import make_folds

    heldout = make_folds(scene_ids, cfg.folds)[cfg.fold]
    train = [s for s in sorted(set(scene_ids)) if s not in heldout]
    src = default_scenarios_dir(cfg.scenarios)
    works = []
    for name, scenes in (("train", train), ("heldout", heldout)):
        work = prepare_working_copy(src, root / f"scenarios_{name}", scenes)
        missing = sorted(set(scenes) - set(work.scene_ids))
        if missing:
            raise ValueError(f"{src}: no usable scenario file for {name} scene(s) {missing}")
        works.append(work)
    return FoldPlan(heldout, train, *works)


# ------------------------------------------------------------------------------------------ the loop
def run_iteration(cfg: DaggerConfig, fold: FoldPlan, logged: list[PlanningSample], root: Path, i: int, extra: list[str]) -> dict:
    """Run (or resume) iteration ``i`` of a fold under ``root/iter_i`` (see the module docstring)."""
    from dsdrive.data.dataset import load_samples, save_samples

    it = root / f"iter_{i}"
    if (it / "done").is_file():
        return _read(it / "done")
    it.mkdir(parents=True, exist_ok=True)
    if i > 0:
        if not (it / "rollout" / "done").is_file():
            maps = {s.scene_id: s.map_name for s in logged}
            collect_rollouts(root / f"iter_{i - 1}" / "checkpoint", fold.work_train, cfg, i, maps, it / "rollout")
        if not (it / "labels" / "done").is_file():
            label_states(it / "rollout", it / "labels", cfg)
    ckpt = it / "checkpoint"
    on_policy = [s for j in range(1, i + 1) for s in load_samples(root / f"iter_{j}" / "labels" / "samples")]
    if not (ckpt / "eval_heldout.json").is_file():
        save_samples(logged + repeat_samples(on_policy, cfg.on_policy_repeat), it / "train_data")
        init = root / f"iter_{i - 1}" / "checkpoint" if cfg.warm_start and i > 0 else None
        write_json_atomic(it / "training.json", {"wall_s": train_student(cfg, it / "train_data", fold.heldout, ckpt, extra, init),
                                                 "logged_samples": len(logged), "on_policy_samples": len(on_policy),
                                                 "on_policy_repeat": cfg.on_policy_repeat, "init_from": str(init) if init else None})
    if not (it / "closed_loop.json").is_file():
        write_json_atomic(it / "closed_loop.json", evaluate_closed_loop(ckpt, fold.work_heldout, cfg))
    ev = _read(ckpt / "eval_heldout.json")
    ol = ev.get("open_loop") or {}
    write_json_atomic(it / "open_loop.json", {"scenes": fold.heldout, **ol})
    cl = _read(it / "closed_loop.json")
    part = {k: (_read(it / k / "summary.json")["wall_s"] if (it / k / "summary.json").is_file() else 0.0) for k in ("rollout", "labels")}
    timing = {"simulation_s": part["rollout"] + cl["wall_s"], "rollout_train_scenes_s": part["rollout"], "heldout_closed_loop_s": cl["wall_s"],
              "labelling_s": part["labels"], "training_s": _read(it / "training.json")["wall_s"]}
    timing["total_s"] = timing["simulation_s"] + timing["labelling_s"] + timing["training_s"]
    write_json_atomic(it / "timing.json", timing)
    a = cl["aggregate"]
    stp3 = (ol.get("metrics") or {}).get("ALL", {}).get("stp3", {})
    row = {"fold": cfg.fold, "iteration": i, "heldout": fold.heldout, "route_completion": a.get("route_completion"),
           "at_fault_collisions": a.get("at_fault_collisions"), "any_collision": a.get("any_collision"), "pdms": a.get("pdms"),
           "scenes": a.get("ran"), "l2_stp3_avg": (stp3.get("L2") or {}).get("avg"),
           "samples_added": len(load_samples(it / "labels" / "samples")) if i > 0 else 0, "on_policy_total": len(on_policy),
           "logged_samples": len(logged), "timing": timing}
    write_json_atomic(it / "done", _plain(row))
    return row


def summarize(out: Path) -> dict:
    """Collect every ``fold_*/iter_*/done`` under ``out`` into ``summary.json`` and ``summary.md``
    (one row per fold and iteration, then the mean over the folds run per iteration)."""
    rows = [_read(p) for p in sorted(out.glob("fold_*/iter_*/done"))]
    rows.sort(key=lambda r: (r["iteration"], r["fold"]))
    fmt = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = ["| fold | held-out scenes | iter | RC | at-fault coll. | any coll. | PDMS | open-loop L2 avg (m) | samples added | on-policy total | sim s | label s | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["timing"]
        lines.append(f"| {r['fold']} | {','.join(s.replace('scene-', '') for s in r['heldout'])} | {r['iteration']} | {fmt(r['route_completion'])} | "
                     f"{r['at_fault_collisions']}/{r['scenes']} | {r['any_collision']}/{r['scenes']} | {fmt(r['pdms'])} | {fmt(r['l2_stp3_avg'])} | "
                     f"{r['samples_added']} | {r['on_policy_total']} | {t['simulation_s']:.0f} | {t['labelling_s']:.0f} | {t['training_s']:.0f} |")
    means = []
    for i in sorted({r["iteration"] for r in rows}):
        rs = [r for r in rows if r["iteration"] == i]
        mean = lambda k: float(np.mean([r[k] for r in rs if r[k] is not None])) if any(r[k] is not None for r in rs) else None  # noqa: E731
        means.append({"iteration": i, "folds": [r["fold"] for r in rs], "route_completion": mean("route_completion"), "pdms": mean("pdms"),
                      "l2_stp3_avg": mean("l2_stp3_avg"), "at_fault_collisions": sum(r["at_fault_collisions"] for r in rs),
                      "scenes": sum(r["scenes"] for r in rs)})
    if len({r["fold"] for r in rows}) > 1:
        lines += ["", "| iter | folds | RC (mean) | at-fault coll. | PDMS (mean) | L2 avg (mean) |", "|---|---|---|---|---|---|"]
        lines += [f"| {m['iteration']} | {len(m['folds'])} | {fmt(m['route_completion'])} | {m['at_fault_collisions']}/{m['scenes']} | "
                  f"{fmt(m['pdms'])} | {fmt(m['l2_stp3_avg'])} |" for m in means]
    report = {"rows": rows, "by_iteration": means}
    write_json_atomic(out / "summary.json", _plain(report))
    write_text_atomic(out / "summary.md", "\n".join(lines) + "\n")
    return report


def run(cfg: DaggerConfig, extra: list[str]) -> dict:
    """Run (or resume) iterations 0..``cfg.iterations`` of fold ``cfg.fold``; returns the summary."""
    import torch

    from dsdrive.data.dataset import load_samples

    torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    root = out / f"fold_{cfg.fold}"
    samples = load_samples(cfg.data)
    wanted = cfg.scene_list()
    scene_ids = sorted({s.scene_id for s in samples} & set(wanted)) if wanted else sorted({s.scene_id for s in samples})
    if wanted and set(wanted) - set(scene_ids):
        raise ValueError(f"--scenes: {sorted(set(wanted) - set(scene_ids))} not in {cfg.data}")
    fold = plan_fold(cfg, scene_ids, root)
    logged = [s for s in samples if s.scene_id in set(fold.train)]
    write_json_atomic(root / "fold.json", {"heldout": fold.heldout, "train": fold.train, "config": cfg.__dict__, "distill_flags": extra})
    print(f"fold {cfg.fold}/{cfg.folds}: held out {fold.heldout}, training scenes {fold.train} ({len(logged)} logged samples)")
    for i in range(cfg.iterations + 1):
        row = run_iteration(cfg, fold, logged, root, i, extra)
        print(f"iter {i}: RC {row['route_completion']:.3f} at-fault {row['at_fault_collisions']}/{row['scenes']} PDMS {row['pdms'] or 0:.3f} "
              f"L2 {row['l2_stp3_avg'] or float('nan'):.3f} m, +{row['samples_added']} on-policy samples; {row['timing']['total_s']:.0f} s")
    return summarize(out)


def parse_args(argv: list[str] | None, prog: str = "dsdrive dagger") -> tuple[DaggerConfig, list[str], bool]:
    """``(DaggerConfig, flags for distill, summary_only)`` from argv (transformers ``HfArgumentParser``)."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    summary_only = "--summary-only" in argv
    argv = [a for a in argv if a != "--summary-only"]
    parser = HfArgumentParser(DaggerConfig, prog=prog, description=__doc__.split("\n\n")[0])
    cfg, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    return cfg, list(rest), summary_only


def main(argv: list[str] | None = None, prog: str = "dsdrive dagger") -> int:
    """``dsdrive dagger`` / ``recipes/dagger.py``: run or resume one fold, then write the summary.
    Returns 0, or 2 after a one-line error (missing data or scenarios, bad settings)."""
    try:
        cfg, extra, summary_only = parse_args(argv, prog)
        if summary_only:
            print((Path(cfg.out) / "summary.md").read_text() if summarize(Path(cfg.out))["rows"] else "no finished iteration")
            return 0
        run(cfg, extra)
    except (FileNotFoundError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print((Path(cfg.out) / "summary.md").read_text())
    return 0
