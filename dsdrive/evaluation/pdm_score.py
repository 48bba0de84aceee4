"""A NAVSIM-style PDM score for every planning sample: ``dsdrive pdm-score``.

Run as:
    dsdrive pdm-score --data outputs/main/planning --planner ground_truth constant_velocity --scenes all --out pdm.json
    dsdrive pdm-score --data DIR --planner ego_mlp student --checkpoint ego_mlp=CKPT1 student=CKPT2 --out pdm.json
    dsdrive pdm-score --data DIR --planner pdm_closed ground_truth --scenes all --progress-reference pdm_closed --out pdm.json
    dsdrive pdm-score --data DIR --planner constant_velocity --perception-noise none default --out pdm.json
    python eval/pdm_score.py ...          # the same command line

``--perception-noise`` (as ``dsdrive open-loop``; :mod:`dsdrive.data.perception_noise`): one row per
planner and setting; only the planner's inputs are perturbed, the score uses the logged agents.

What NAVSIM does (Dauner et al., "NAVSIM: Data-Driven Non-Reactive Autonomous Vehicle Simulation
and Benchmarking", NeurIPS 2024 D&B, v1): the agent outputs a 4 s trajectory (8 poses at 2 Hz);
an LQR controller on a kinematic bicycle tracks it at 10 Hz against the logged, non-reactive
agents; the driven states are scored with
``PDMS = NC x DAC x (5 TTC + 2 C + 5 EP) / 12``:

* **NC** no at-fault collision: 1; 0.5 when the only at-fault collisions are with static
  objects; 0 for one with a vehicle, pedestrian or cyclist. Not at fault: the ego stopped, or
  hit from behind.
* **DAC** drivable-area compliance: 1 if every corner of the ego box stays on the drivable
  area at every step, else 0.
* **TTC** time to collision within bound: 0 if the ego, moving, projected forward at constant
  velocity, would overlap an agent ahead within about 1 s; else 1.
* **C** comfort: 1 if the driven accelerations, jerk, yaw rate and yaw acceleration stay within
  nuPlan's bounds, else 0.
* **EP** ego progress along the route, divided by the progress of a reference planner
  (PDM-Closed) and clipped to [0, 1]; 1 when the reference progresses less than 5 m.

Ours (per sample, :func:`score_sample`), and where it differs:

* **Horizon**: our samples carry **6 poses at 2 Hz (3 s)**, the nuScenes planning convention,
  not NAVSIM's 8 (4 s). The bicycle is simulated for 3 s (30 steps at 10 Hz) and every
  sub-score is taken over those 31 states.
* **Tracking**: our own kinematic bicycle + LQR (:mod:`dsdrive.evaluation.trajectory_tracking`:
  spline reference, decoupled longitudinal/lateral LQR, nuPlan's actuator lags). The initial
  state is the logged ego at the sample's time: pose, speed (logged velocity), acceleration and
  steering angle (from the yaw rate) by backward differences over 0.3 s.
* **Ego box**: the nuScenes ego box of :mod:`dsdrive.constants` (4.084 m x 1.85 m, centre
  0.5 m ahead of the ego reference point), as the open-loop collision metric uses.
* **Agents**: every logged track of the scenario (ScenarioNet, 10 Hz) valid at each simulated
  step, with its logged box (non-reactive, as NAVSIM).
* **Drivable area**: from the scenario's own map (:mod:`dsdrive.evaluation.drivable_area`:
  nuScenes' drivable-area outline and lane surfaces); NAVSIM uses the nuPlan map's drivable
  layers. A scenario without a usable map leaves its samples unscored (listed with the reason).
* **No traffic lights**: nuScenes (and so its ScenarioNet export) has no traffic-light states,
  so there is no traffic-light compliance term (NAVSIM has none in v1 PDMS either; nuPlan's
  closed-loop score has one).
* **EP reference** (``--progress-reference``): ``log`` (the default, as before PDM-Closed
  existed): the **logged ego future's** progress over the same 3 s, along the logged ego path of
  the whole scene. ``pdm_closed`` (NAVSIM's choice): the progress of our PDM-Closed
  (:mod:`dsdrive.planners.pdm_closed`, planned along the logged future as its route) tracked by
  the same bicycle + LQR, 0 when that plan collides (NC 0) or leaves the drivable area (DAC 0),
  so that the planner's own progress is then the reference (NAVSIM takes the larger of the
  two safe progresses). PDM-Closed ignores that the human stopped or slowed for reasons the
  data do not show (no traffic lights), so it often progresses farther than the log: EP under
  ``pdm_closed`` is lower for the logged future and for planners that drive like it (on the 8
  scenes: logged future 99.9 -> 95.8, constant velocity 95.6 -> 94.2). Either way a planner
  that drives farther than the reference gets EP 1, not more (clipped), and a reference below
  5 m gives EP 1.
* **TTC**: projection times 0.3, 0.6, 0.9 s at constant velocity, agents ahead only
  (:func:`dsdrive.evaluation.closed_loop.metrics.ttc_violation`); comfort: nuPlan's bounds on
  Savitzky-Golay derivatives (:func:`dsdrive.evaluation.closed_loop.metrics.comfort_signals`).

Published navtest PDMS, for the reader (not comparable with ours: other data, 4 s, PDM-Closed as
EP reference, nuPlan maps): constant velocity 20.6, ego-status MLP 65.6, human 94.8,
DistillDrive 86.2, EvoDriveVLA 85.3.

Which samples: the original samples (the recorded ego, not mirrored) of the selected scenes, as
``dsdrive open-loop`` picks them (``--scenes val|train|all|ID,ID``). Each sample is matched to its
ScenarioNet scenario (``--scenarios DIR``; default: the folder the dataset was built from, as
its ``build_report.json`` records, else :func:`dsdrive.data.paths.default_scenarios_dir`) and to
its log step (the ``SCENE_STEP`` sample id, else the nearest timestamp); the match is checked:
the logged future at that step must equal the sample's ``ego_future`` within 0.1 m. A sample
that cannot be matched, whose log is shorter than the horizon, or whose scenario has no map is
skipped and listed with its reason. A planner returning NaN or the wrong shape for a sample
scores 0 there (the reason is listed); the other samples still run.

Output: ``FILE.json`` (per planner: the means of every sub-score and of PDMS, over all samples
and over the *non-trivial* ones - the logged ego at +3 s more than 2 m from constant velocity,
in the spirit of NAVSIM's navtest, which leaves out samples a constant-velocity agent solves -
per-sample scores, skipped and failed samples) and ``FILE.md`` (the tables, with the published
anchors).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsdrive.constants import EGO_CENTER_OFFSET_M, EGO_LENGTH_M, EGO_WIDTH_M, FUTURE_STEPS, SIM_DT, STEP_SECONDS
from dsdrive.data.types import PlanningSample
from dsdrive.data.world_state import AgentState
from dsdrive.evaluation.closed_loop.metrics import (
    STATIC_TYPES,
    box_overlaps,
    comfort_bounds_ok,
    comfort_signals,
    no_collision_score,
    pdm_combine,
    progress_score,
    route_progress,
    ttc_violation,
)
from dsdrive.evaluation.drivable_area import DrivableArea, NoDrivableArea
from dsdrive.evaluation.trajectory_tracking import WHEELBASE_M, BicycleState, reference_from_plan, track
from dsdrive.geometry import ego_to_global, global_to_ego, wrap_angle

STRIDE = int(round(STEP_SECONDS / SIM_DT))
"""Log steps per plan step (5 at 10 Hz)."""
HORIZON_STEPS = FUTURE_STEPS * STRIDE
"""Simulated steps (30 = 3 s at 10 Hz)."""
MATCH_TOLERANCE_M = 0.1
"""A sample matches a log step when its ego future equals the logged future within this (m)."""
PUBLISHED_NAVTEST_PDMS = {"constant_velocity": 20.6, "ego_mlp (ego-status MLP)": 65.6, "human (logged)": 94.8,
                          "DistillDrive": 86.2, "EvoDriveVLA": 85.3}
"""NAVSIM navtest PDMS (x100) of published agents, for the reader (not comparable: see the module docstring)."""
SUB_SCORES = ("nc", "dac", "ttc", "comfort", "ep", "pdms")
NONTRIVIAL_M = 2.0
"""A sample is *non-trivial* when its logged ego at +3 s lies more than this (m) from the
constant-velocity extrapolation of its current velocity (NAVSIM's navtest likewise leaves out
samples a constant-velocity agent solves; we report both sets)."""


class SampleSkipped(ValueError):
    """A sample that cannot be scored (the message says why)."""


@dataclass
class ScenarioLog:
    """One ScenarioNet scenario as the PDM score reads it (global frame, ``SIM_DT`` steps).

    Attributes:
        file: the scenario file. n: steps.
        ego_xy (T, 2), ego_yaw (T,), ego_vel (T, 2), ego_valid (T,): the logged ego (reference point).
        route: (R, 2) the logged ego path (valid steps): the progress axis.
        ids, types: A non-ego tracks. pos (A, T, 2), yaw (A, T), lwh (A, T, 3), vel (A, T, 2), valid (A, T).
        area: the drivable area, or None with ``area_note`` saying why.
    """

    file: str
    n: int
    ego_xy: np.ndarray
    ego_yaw: np.ndarray
    ego_vel: np.ndarray
    ego_valid: np.ndarray
    route: np.ndarray
    ids: list
    types: list
    pos: np.ndarray
    yaw: np.ndarray
    lwh: np.ndarray
    vel: np.ndarray
    valid: np.ndarray
    area: DrivableArea | None
    area_note: str | None = None

    @classmethod
    def from_scenario(cls, data: dict, file: str) -> "ScenarioLog":
        """Read a ScenarioNet scenario dict (``file`` names it in messages).

        Raises:
            ValueError: the ego track is missing or never valid (names the file and field).
        """
        from dsdrive.evaluation.closed_loop.adapter import agent_type_of

        try:
            sdc = str(data["metadata"]["sdc_id"])
            st = data["tracks"][sdc]["state"]
            n = int(data.get("length", len(st["position"])))
            ego_xy = np.asarray(st["position"], np.float64)[:, :2]
            ego_yaw = np.asarray(st["heading"], np.float64).reshape(-1)
            ego_valid = np.asarray(st["valid"]).astype(bool).reshape(-1) & np.isfinite(ego_xy).all(1) & np.isfinite(ego_yaw)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{file}: unreadable ego track ({type(e).__name__}: {e})") from e
        if not ego_valid.any():
            raise ValueError(f"{file}: field tracks[{sdc!r}].state.valid is never true")
        vel = np.asarray(st.get("velocity", np.full((n, 2), np.nan)), np.float64)[:, :2]
        back = np.vstack([np.zeros((1, 2)), np.diff(ego_xy, axis=0) / SIM_DT])
        ego_vel = np.where(np.isfinite(vel), vel, back)
        ids, types, pos, yaw, lwh, avel, valid = [], [], [], [], [], [], []
        for tid, track in data["tracks"].items():
            if str(tid) == sdc:
                continue
            s = track.get("state", {})
            try:
                p = np.asarray(s["position"], np.float64)[:, :2].reshape(n, 2)
                h = np.asarray(s["heading"], np.float64).reshape(n)
                ok = np.asarray(s["valid"]).astype(bool).reshape(n) & np.isfinite(p).all(1) & np.isfinite(h)
                dims = np.stack([np.asarray(s.get(k, np.zeros(n)), np.float64).reshape(n) for k in ("length", "width", "height")], -1)
                v = np.asarray(s.get("velocity", np.zeros((n, 2))), np.float64)[:, :2].reshape(n, 2)
            except (KeyError, TypeError, ValueError):
                continue  # a malformed track is left out (the builders report it)
            if not ok.any():
                continue
            ids.append(str(tid))
            types.append(agent_type_of(track.get("type", "OTHER")))
            pos.append(np.nan_to_num(p))
            yaw.append(np.nan_to_num(h))
            lwh.append(np.nan_to_num(dims))
            avel.append(np.nan_to_num(v))
            valid.append(ok)
        a = len(ids)
        area, note = None, None
        try:
            area = DrivableArea.from_map_features(data.get("map_features"), file)
        except NoDrivableArea as e:
            note = str(e)
        return cls(file, n, ego_xy, ego_yaw, ego_vel, ego_valid, ego_xy[ego_valid], ids, types,
                   np.asarray(pos).reshape(a, n, 2), np.asarray(yaw).reshape(a, n), np.asarray(lwh).reshape(a, n, 3),
                   np.asarray(avel).reshape(a, n, 2), np.asarray(valid, bool).reshape(a, n), area, note)

    def agents_at(self, step: int) -> AgentState:
        """The tracks valid at log step ``step`` (global frame; box centres)."""
        if step >= self.n or len(self.ids) == 0:
            return AgentState.empty()
        sel = np.flatnonzero(self.valid[:, step])
        return AgentState([self.ids[i] for i in sel], [self.types[i] for i in sel], self.pos[sel, step], self.yaw[sel, step],
                          self.lwh[sel, step], self.vel[sel, step])

    def initial_state(self, step: int) -> BicycleState:
        """The logged ego at ``step`` as a bicycle state (see the module docstring)."""
        k0 = max(step - 3, 0)
        span = (step - k0) * SIM_DT
        v = float(np.linalg.norm(self.ego_vel[step]))
        accel, steer = 0.0, 0.0
        if span > 0 and self.ego_valid[k0]:
            accel = (v - float(np.linalg.norm(self.ego_vel[k0]))) / span
            yaw_rate = float(wrap_angle(self.ego_yaw[step] - self.ego_yaw[k0])) / span
            if v > 1.0:
                steer = float(np.arctan(WHEELBASE_M * yaw_rate / v))
        return BicycleState(float(self.ego_xy[step, 0]), float(self.ego_xy[step, 1]), float(self.ego_yaw[step]), v,
                            float(np.clip(accel, -8.0, 4.0)), float(np.clip(steer, -0.6, 0.6)))


def scenario_files_by_scene(folder: str | Path) -> dict[str, Path]:
    """Scene id -> ScenarioNet file of a folder (``scene-XXXX`` from the file name, else the
    file stem without ``sd_``).

    Raises:
        FileNotFoundError: no scenario file in ``folder``.
    """
    from dsdrive.evaluation.closed_loop.scenario_index import list_scenario_files, scene_id_from_file

    return {scene_id_from_file(f.name): f for f in list_scenario_files(folder)}


def log_step_of(sample: PlanningSample, log: ScenarioLog) -> int:
    """The log step of a sample (see the module docstring), checked against its ego future.

    Raises:
        SampleSkipped: no step matches, or the log is shorter than the horizon after it.
    """
    m = re.fullmatch(rf"{re.escape(sample.scene_id)}_(\d+)", sample.sample_id)
    if m:
        step = int(m.group(1))
    else:
        ts = np.arange(log.n) * SIM_DT
        step = int(np.argmin(np.abs(ts - float(sample.timestamp))))
    if step + HORIZON_STEPS >= log.n or not log.ego_valid[step: step + HORIZON_STEPS + 1].all():
        raise SampleSkipped(f"{log.file}: log step {step} + {HORIZON_STEPS} steps ({HORIZON_STEPS * SIM_DT:.0f} s) is past the "
                            f"valid log ({log.n} steps): shorter than the horizon")
    idx = step + STRIDE * np.arange(1, FUTURE_STEPS + 1)
    logged = global_to_ego(log.ego_xy[idx], log.ego_xy[step], log.ego_yaw[step])
    fut, mask = np.asarray(sample.targets.ego_future, np.float64)[:, :2], np.asarray(sample.targets.ego_future_mask, bool)
    err = float(np.abs(logged - fut)[mask].max()) if mask.any() else 0.0
    if err > MATCH_TOLERANCE_M:
        raise SampleSkipped(f"{log.file}: sample {sample.sample_id} does not match the log at step {step} "
                            f"(ego future differs by {err:.2f} m > {MATCH_TOLERANCE_M} m)")
    return step


def score_sample(log: ScenarioLog, step: int, waypoints_ego: np.ndarray, reference_progress_m: float | None = None) -> dict:
    """PDM sub-scores of one plan (see the module docstring).

    Args:
        log: the sample's scenario. step: its log step.
        waypoints_ego: (6, 2+) plan ``x, y[, heading]`` at +0.5 ... +3.0 s, ego frame of the
            logged ego at ``step`` (x forward, y left, m, rad).
        reference_progress_m: the EP reference (m); None = the logged future's progress.

    Returns:
        dict: ``nc, dac, ttc, comfort, ep, pdms`` (floats), ``progress_m``,
        ``reference_progress_m``, ``collided_with`` ("TYPE id" of the at-fault collision that
        set NC, or None), ``first_off_area_step``,
        ``ttc_step`` (simulated steps), ``driven`` ((31, 2) driven positions, global frame).

    Raises:
        SampleSkipped: the scenario has no drivable area.
        ValueError: ``waypoints_ego`` has the wrong shape or non-finite values.
    """
    wp = np.asarray(waypoints_ego, np.float64)
    if wp.ndim != 2 or wp.shape[0] != FUTURE_STEPS or wp.shape[1] < 2 or not np.isfinite(wp[:, :2]).all():
        raise ValueError(f"plan of shape {wp.shape} with non-finite values or not ({FUTURE_STEPS}, 2+)")
    if log.area is None:
        raise SampleSkipped(log.area_note or f"{log.file}: no drivable area")
    ego_xy, ego_yaw = log.ego_xy[step], float(log.ego_yaw[step])
    heading = wp[:, 2] if wp.shape[1] > 2 and np.isfinite(wp[:, 2]).all() else np.zeros(FUTURE_STEPS)
    times = STEP_SECONDS * np.arange(FUTURE_STEPS + 1)
    xy = np.vstack([ego_xy, ego_to_global(wp[:, :2], ego_xy, ego_yaw)])
    yaw = np.concatenate([[ego_yaw], ego_yaw + heading])
    init = log.initial_state(step)
    ref = reference_from_plan(times, xy, yaw, init.v * np.array([np.cos(init.yaw), np.sin(init.yaw)]))
    states = track(ref, init, HORIZON_STEPS, SIM_DT)
    pos, yaws, speed = states[:, :2], states[:, 2], states[:, 3]
    centres = pos + EGO_CENTER_OFFSET_M * np.stack([np.cos(yaws), np.sin(yaws)], 1)
    vel = speed[:, None] * np.stack([np.cos(yaws), np.sin(yaws)], 1)
    agents = [log.agents_at(step + k) for k in range(HORIZON_STEPS + 1)]
    overlaps = box_overlaps(centres, yaws, speed, agents, EGO_LENGTH_M, EGO_WIDTH_M)
    nc = no_collision_score(overlaps)
    dac, first_out = log.area.compliance(centres, yaws, EGO_LENGTH_M, EGO_WIDTH_M)
    ttc_step = ttc_violation(centres, yaws, vel, agents, EGO_LENGTH_M, EGO_WIDTH_M)
    comfort = float(np.logical_and.reduce(list(comfort_bounds_ok(comfort_signals(pos, yaws)).values())).all())
    prog = route_progress(log.route, np.stack([pos[0], pos[-1]]))
    ref_prog = route_progress(log.route, np.stack([log.ego_xy[step], log.ego_xy[step + HORIZON_STEPS]]))
    progress, reference = float(prog[1] - prog[0]), float(ref_prog[1] - ref_prog[0])
    if reference_progress_m is not None:
        reference = float(reference_progress_m)
    ep = progress_score(progress, reference)
    ttc = 1.0 if ttc_step is None else 0.0
    faults = [o for o in overlaps if o.at_fault]
    fault = next((o for o in faults if o.agent_type not in STATIC_TYPES), faults[0] if faults else None)  # the one that set NC
    return {"nc": nc, "dac": dac, "ttc": ttc, "comfort": comfort, "ep": ep, "pdms": pdm_combine(nc, dac, ttc, comfort, ep),
            "progress_m": progress, "reference_progress_m": reference,
            "collided_with": None if fault is None else f"{fault.agent_type} {fault.agent_id}",
            "first_off_area_step": first_out, "ttc_step": ttc_step, "driven": pos}


def nontrivial(sample: PlanningSample) -> bool:
    """Whether the logged future is far (> :data:`NONTRIVIAL_M` at +3 s) from constant velocity."""
    from dsdrive.planners.constant_velocity import FUTURE_TIMES_S, ego_velocity

    v = ego_velocity(sample.inputs)
    return bool(np.linalg.norm(np.asarray(sample.targets.ego_future, np.float64)[-1, :2] - v * FUTURE_TIMES_S[-1]) > NONTRIVIAL_M)


def _means(rows: list[dict]) -> dict:
    return {k: (float(np.mean([r[k] for r in rows])) if rows else None) for k in SUB_SCORES}


def plan_all(planner, samples: list[PlanningSample], batch_size: int = 64) -> tuple[np.ndarray, dict[int, str]]:
    """Plan every sample: ((B, 6, 3) float64 waypoints, {index: reason} of samples that failed).

    A privileged planner (``privileged = True``) gets whole samples; others only their inputs.
    A batch that raises is retried one sample at a time, so one bad sample fails alone; a
    non-finite or wrongly shaped plan fails its sample.
    """
    out = np.full((len(samples), FUTURE_STEPS, 3), np.nan)
    failed: dict[int, str] = {}

    def call(chunk):
        if getattr(planner, "privileged", False):
            return np.asarray(planner.compute_trajectories_privileged(chunk), np.float64)
        return np.asarray(planner.compute_trajectories([s.inputs for s in chunk]), np.float64)

    for start in range(0, len(samples), batch_size):
        chunk = samples[start: start + batch_size]
        try:
            traj = call(chunk)
            if traj.shape != (len(chunk), FUTURE_STEPS, 3):
                raise ValueError(f"returned shape {traj.shape}, expected ({len(chunk)}, {FUTURE_STEPS}, 3)")
            results = list(traj)
        except Exception:  # noqa: BLE001 - isolate the failing sample(s)
            results = []
            for s in chunk:
                try:
                    results.append(call([s])[0])
                except Exception as e:  # noqa: BLE001 - recorded per sample
                    results.append(f"planner {getattr(planner, 'name', '?')} failed: {type(e).__name__}: {e}")
        for i, r in enumerate(results):
            if isinstance(r, str):
                failed[start + i] = r
                continue
            r = np.asarray(r, np.float64)
            if r.shape != (FUTURE_STEPS, 3) or not np.isfinite(r).all():
                failed[start + i] = f"planner returned non-finite or misshapen waypoints (shape {r.shape})"
                continue
            out[start + i] = r
    return out, failed


def _log_steps(samples: list[PlanningSample], logs: dict[str, ScenarioLog]) -> tuple[dict[int, int], list[dict]]:
    """({sample index: log step} of the samples that can be scored, [{sample_id, reason}] of the others)."""
    steps, skipped = {}, []
    for i, s in enumerate(samples):
        log = logs.get(s.scene_id)
        try:
            if log is None:
                raise SampleSkipped(f"no scenario file for scene {s.scene_id}")
            if log.area is None:
                raise SampleSkipped(log.area_note or f"{log.file}: no drivable area")
            steps[i] = log_step_of(s, log)
        except SampleSkipped as e:
            skipped.append({"sample_id": s.sample_id, "reason": str(e)})
    return steps, skipped


def pdm_closed_reference(samples: list[PlanningSample], logs: dict[str, ScenarioLog], batch_size: int = 64) -> dict[str, float]:
    """The EP reference of ``--progress-reference pdm_closed`` (see the module docstring): sample id
    -> the progress (m) of PDM-Closed's plan tracked like any plan, 0 where that plan has NC or DAC
    0. A sample PDM-Closed fails on is left out (its EP falls back to the logged future)."""
    from dsdrive.planners.pdm_closed import PDMClosedPlanner

    steps, _ = _log_steps(samples, logs)
    idx = sorted(steps)
    plans, failed = plan_all(PDMClosedPlanner(), [samples[i] for i in idx], batch_size)
    out = {}
    for j, i in enumerate(idx):
        if j not in failed:
            r = score_sample(logs[samples[i].scene_id], steps[i], plans[j])
            out[samples[i].sample_id] = r["progress_m"] if r["nc"] * r["dac"] > 0 else 0.0
    return out


def evaluate_planner(planner, samples: list[PlanningSample], logs: dict[str, ScenarioLog], batch_size: int = 64,
                     reference: dict[str, float] | None = None) -> dict:
    """Score one planner on every sample.

    Args:
        samples: the samples (each ``scene_id`` a key of ``logs``, or skipped).
        logs: scene id -> :class:`ScenarioLog`.
        reference: sample id -> EP reference progress (m) (:func:`pdm_closed_reference`); None or
            a missing id = the logged future's progress.

    Returns:
        ``{"aggregate": {n_scored, n_failed, n_skipped, nc, dac, ttc, comfort, ep, pdms (means,
        failures count as 0), seconds}, "nontrivial": {n, the same means over the non-trivial
        samples (:func:`nontrivial`)}, "samples": [...], "skipped": [...], "failed": [...]}``.
    """
    t0 = time.perf_counter()
    steps, skipped = _log_steps(samples, logs)
    usable = sorted(steps)
    plans, failed_idx = plan_all(planner, [samples[i] for i in usable], batch_size)
    per_sample, failed = [], []
    for j, i in enumerate(usable):
        s = samples[i]
        if j in failed_idx:
            failed.append({"sample_id": s.sample_id, "reason": failed_idx[j]})
            per_sample.append({"sample_id": s.sample_id, "scene_id": s.scene_id, "nontrivial": nontrivial(s),
                               **{k: 0.0 for k in SUB_SCORES}, "failed": True})
            continue
        r = score_sample(logs[s.scene_id], steps[i], plans[j], (reference or {}).get(s.sample_id))
        r.pop("driven")
        per_sample.append({"sample_id": s.sample_id, "scene_id": s.scene_id, "step": steps[i], "nontrivial": nontrivial(s), **r})
    agg = {"n_scored": len(per_sample) - len(failed), "n_failed": len(failed), "n_skipped": len(skipped), **_means(per_sample),
           "seconds": round(time.perf_counter() - t0, 2)}
    hard = [p for p in per_sample if p["nontrivial"]]
    return {"aggregate": agg, "nontrivial": {"n": len(hard), **_means(hard)}, "samples": per_sample, "skipped": skipped, "failed": failed}


def render_markdown(report: dict) -> str:
    """The table of ``report["planners"]`` (means x 100, as NAVSIM reports) and the published anchors."""
    ref = report.get("progress_reference", "log")
    lines = [f"# PDM score (NAVSIM-style, 3 s horizon, EP reference: {'PDM-Closed' if ref == 'pdm_closed' else 'the logged future'}; "
             "see dsdrive/evaluation/pdm_score.py)", "",
             "| planner | scored | failed | skipped | NC | DAC | TTC | C | EP | PDMS |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in report["planners"].items():
        a = res["aggregate"]
        cells = " | ".join("-" if a[k] is None else f"{100 * a[k]:.1f}" for k in SUB_SCORES)
        lines.append(f"| {name} | {a['n_scored']} | {a['n_failed']} | {a['n_skipped']} | {cells} |")
    lines += ["", f"Non-trivial samples only (logged ego at +3 s more than {NONTRIVIAL_M:.0f} m from constant velocity):", "",
              "| planner | samples | NC | DAC | TTC | C | EP | PDMS |", "|---|---|---|---|---|---|---|---|"]
    for name, res in report["planners"].items():
        h = res["nontrivial"]
        cells = " | ".join("-" if h[k] is None else f"{100 * h[k]:.1f}" for k in SUB_SCORES)
        lines.append(f"| {name} | {h['n']} | {cells} |")
    lines += ["", "Published NAVSIM navtest PDMS (4 s, PDM-Closed as EP reference; not comparable): "
              + ", ".join(f"{k} {v}" for k, v in PUBLISHED_NAVTEST_PDMS.items()) + "."]
    return "\n".join(lines) + "\n"


def default_scenarios_for(data: str | Path, explicit: str | None) -> Path:
    """``--scenarios`` if given, else the ``input`` folder of the dataset's ``build_report.json``
    when it exists, else :func:`dsdrive.data.paths.default_scenarios_dir`."""
    from dsdrive.data.paths import default_scenarios_dir

    if explicit:
        return default_scenarios_dir(explicit)
    report = Path(data) / "build_report.json"
    if report.is_file():
        try:
            src = json.loads(report.read_text()).get("input")
        except (json.JSONDecodeError, OSError):
            src = None
        if src and Path(src).is_dir():
            return Path(src)
    return default_scenarios_dir(None)


def build_parser(prog: str = "dsdrive pdm-score") -> argparse.ArgumentParser:
    """The PDM-score command line (also ``python eval/pdm_score.py``); see the module docstring."""
    from dsdrive.evaluation.open_loop import add_planner_selection_arguments

    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_planner_selection_arguments(ap, planner_help="one or more planners (ground_truth: the logged future)")
    ap.add_argument("--scenarios", default=None, help="ScenarioNet folder the dataset was built from (default: its build_report.json input)")
    ap.add_argument("--progress-reference", choices=("log", "pdm_closed"), default="log",
                    help="EP reference: the logged future (default) or PDM-Closed's plan (NAVSIM's); see the module docstring")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", required=True, help="report FILE.json; FILE.md is written beside it")
    return ap


def run_pdm_score(args: argparse.Namespace) -> dict:
    """Load samples, scenarios and planners; score every planner. Returns the report dict.

    Raises:
        ValueError: bad ``--scenes`` / ``--checkpoint`` (one line naming it).
        FileNotFoundError: ``--data`` or ``--scenarios`` missing.
    """
    from dsdrive.data.dataset import load_dataset_dir, load_samples
    from dsdrive.data.safe_pickle import load_pickle
    from dsdrive.data.perception_noise import perception_label, perception_settings, row_name
    from dsdrive.evaluation.open_loop import PerceivedPlanner, select_scenes
    from dsdrive.planners.registry import load_planner, parse_checkpoints

    checkpoints = parse_checkpoints(args.checkpoint, args.planner)
    settings = perception_settings(getattr(args, "perception_noise", None))
    planners, perception = {}, {}  # row name -> planner (wrapped for noisy perception), row name -> perception label
    for name in args.planner:
        base = load_planner(name, checkpoints.get(name))
        privileged = bool(getattr(base, "privileged", False))
        for noise in settings[:1] if privileged else settings:
            key = row_name(name, noise, len(settings) > 1, privileged)
            planners[key] = base if privileged or noise.is_identity else PerceivedPlanner(base, noise)
            perception[key] = perception_label(noise, privileged)
    ds = load_dataset_dir(args.data)
    scenes = select_scenes(list(ds["scene_id"]), args.scenes, where=str(args.data))
    samples = load_samples(args.data, scenes=scenes, augmented=False)
    src = default_scenarios_for(args.data, args.scenarios)
    files = scenario_files_by_scene(src)
    logs, log_errors = {}, {}
    for scene in scenes:
        if scene in files:
            try:
                logs[scene] = ScenarioLog.from_scenario(load_pickle(files[scene]), files[scene].name)
            except Exception as e:  # noqa: BLE001 - an unreadable scenario skips its samples, with the reason
                log_errors[scene] = f"{files[scene].name}: {type(e).__name__}: {e}"
    print(f"{args.data}: {len(samples)} samples of {len(scenes)} scenes (--scenes {args.scenes}): {scenes}; scenarios: {src}")
    report = {"data": str(args.data), "scenarios": str(src), "scenes": scenes, "num_samples": len(samples),
              "horizon_s": HORIZON_STEPS * SIM_DT, "checkpoints": checkpoints, "scenario_errors": log_errors,
              "published_navtest_pdms": PUBLISHED_NAVTEST_PDMS,
              "perception_noise": {c.label: c.model_dump() for c in settings},
              "progress_reference": getattr(args, "progress_reference", "log"), "planners": {}}
    reference = None
    if report["progress_reference"] == "pdm_closed":
        reference = pdm_closed_reference(samples, logs, args.batch_size)
        report["progress_reference_samples"] = len(reference)
        print(f"EP reference: PDM-Closed on {len(reference)} samples (the others: the logged future)")
    for name, planner in planners.items():
        res = evaluate_planner(planner, samples, logs, args.batch_size, reference)
        for item in res["skipped"]:
            scene = next((s.scene_id for s in samples if s.sample_id == item["sample_id"]), None)
            if scene in log_errors:
                item["reason"] = log_errors[scene]
        res["perception"] = perception[name]
        report["planners"][name] = res
        a, h = res["aggregate"], res["nontrivial"]
        print(f"{name}: PDMS {a['pdms']:.3f}, non-trivial {h['pdms'] if h['pdms'] is not None else float('nan'):.3f} (NC {a['nc']:.3f} DAC {a['dac']:.3f} TTC {a['ttc']:.3f} C {a['comfort']:.3f} EP {a['ep']:.3f}); "
              f"{a['n_scored']} scored, {a['n_failed']} failed, {a['n_skipped']} skipped, {a['seconds']:.0f} s"
              if a["pdms"] is not None else f"{name}: nothing scored ({a['n_skipped']} skipped)")
    return report


def main(argv: list[str] | None = None, prog: str = "dsdrive pdm-score") -> int:
    """``dsdrive pdm-score`` / ``python eval/pdm_score.py``: score, write FILE.json + FILE.md.
    Returns 0, or 2 after a one-line error (bad data, scenes, scenarios, checkpoints)."""
    from dsdrive.data.atomic_io import write_text_atomic
    from dsdrive.evaluation.report_common import jsonable

    args = build_parser(prog).parse_args(argv)
    try:
        report = run_pdm_score(args)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"{prog}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = render_markdown(report)
    write_text_atomic(out, json.dumps(jsonable(report), indent=1))
    write_text_atomic(out.with_suffix(".md"), md)
    print(md)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
