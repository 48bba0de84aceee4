"""The closed loop: MetaDrive ``ScenarioEnv`` replaying ScenarioNet scenes, a planner at 2 Hz,
the :class:`~dsdrive.evaluation.closed_loop.controller.WaypointController` at the simulator rate (10 Hz).

One scenario:

1. ``env.reset(seed=i)`` loads scenario i of the working copy (:mod:`dsdrive.evaluation.closed_loop.scenario_index`);
   the ego starts at its logged pose and velocity.
2. Every ``replan_steps`` (5 = 0.5 s) the adapter (:mod:`dsdrive.evaluation.closed_loop.adapter`) builds
   :class:`~dsdrive.data.types.PlanningInputs` from the simulator state; the planner returns (6, 3)
   ego-frame waypoints; its latency is timed; its explanation is recorded when it gives one
   (``plan_and_explain(inputs) -> (waypoints, explanation)`` or ``explain(inputs)``).
3. Every step the controller turns the latest plan into ``[steering, throttle_brake]``.
4. The run lasts the log minus its last 0.5 s (``length - 1 - TAIL_TRIM_STEPS`` steps) or
   ``max_steps``: ScenarioNet's nuScenes logs end with a one-step backward jump of the ego
   (e.g. scene-1077 4 steps before the end: +1.5 m, -1.5 m, +1.5 m), an artifact no planner
   should be judged on. MetaDrive's own termination
   (arrival, out of road) is recorded but does not stop the rollout, so every planner is judged
   over the same horizon.

Traffic: ``replay`` (logged agents, non-reactive) or ``reactive`` (logged vehicles follow their
logs but brake for the ego with an IDM: :mod:`dsdrive.evaluation.closed_loop.reactive_traffic`;
MetaDrive's own ``reactive_traffic`` switch is never used).

``log_replay`` (``planner=None``) is the reference row: the ego follows the log exactly
(MetaDrive's ``ReplayEgoCarPolicy``, a teleport: neither the controller nor the vehicle dynamics
are exercised); the logged future at each 0.5 s is recorded as its "plan". ``log_waypoints``
(:class:`dsdrive.planners.log_future.LogWaypointsPlanner`, ``reads_log = True``) is the harness
check: the logged future handed to the same controller as any planner; the rollout gives it the
scenario's logged ego track (:meth:`~dsdrive.planners.log_future.LogWaypointsPlanner.set_log`)
and asks it for the logged waypoints at each replanning step instead of building inputs.
A planner that reads the world (``reads_world = True``, e.g. PDM-Closed,
:class:`dsdrive.planners.pdm_closed.PDMClosedPlanner`) gets the scenario's route (the logged ego
path, :class:`~dsdrive.data.world_state.Route`) and drivable area once
(``set_world(route, drivable_area)``), then at each replanning step the inputs built as for any
planner plus the ego pose: ``plan_in_world(inputs, ego_xy, ego_yaw, t_now) -> (waypoints,
explanation)`` (simulator frame, log clock).

Perception noise (``RolloutConfig.perception_noise``; :mod:`dsdrive.data.perception_noise`): the
inputs the adapter builds are passed through the noise model before the planner sees them, drawn
from ``(seed, scene_id, step)`` (the same draw for every planner at the same scene and step, a
run reproducible). Only the planner's view changes: the simulator, the recorded agents and every
metric keep the true state. Planners that read the log (``log_replay``, ``log_waypoints``) build no
inputs, so no noise reaches them.

The drivable area for DAC is built once per scenario from its map
(:class:`dsdrive.evaluation.drivable_area.DrivableArea`); a scenario without a usable map still
runs, with DAC and PDMS unscored and the reason in ``notes``.

Failures never stop a run: a scenario MetaDrive rejects (reset raises) is recorded ``rejected``
with the reason; a planner that raises, returns a non-finite value or the wrong shape ends that
scenario as ``failed`` at that step with the reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from dsdrive.data.perception_noise import PerceptionNoiseConfig, perceived
from dsdrive.geometry import ego_to_global, global_to_ego, wrap_angle
from dsdrive.planners.base import Planner
from dsdrive.evaluation.closed_loop.adapter import AgentState, EgoState, MapCache, ScenarioLog, agent_type_of, build_planning_inputs
from dsdrive.evaluation.closed_loop.controller import WaypointController
from dsdrive.evaluation.closed_loop.explain import describe_plan
from dsdrive.evaluation.closed_loop.metadrive_assets import ensure_offline_assets
from dsdrive.evaluation.closed_loop.reactive_traffic import ReactiveTraffic
from dsdrive.evaluation.closed_loop.scenario_index import WorkingCopy
from dsdrive.evaluation.drivable_area import DrivableArea, NoDrivableArea
from dsdrive.constants import FUTURE_STEPS, METADRIVE_EGO_LENGTH_M, METADRIVE_EGO_WIDTH_M, SIM_DT, STEP_SECONDS

TAIL_TRIM_STEPS = 5
"""Log steps left out at the end of every scenario (see the module docstring)."""
CRASH_KEYS = ("crash_vehicle", "crash_human", "crash_object", "crash_building", "crash_sidewalk", "out_of_road")
"""Per-step flags copied from MetaDrive's ``info`` (physics contacts; out_of_road = > 4 m off the route)."""


@dataclass
class RolloutConfig:
    """Options of a closed-loop run.

    Attributes:
        traffic: ``replay`` (logged, non-reactive) or ``reactive`` (logged vehicles that brake
            for the ego: :mod:`dsdrive.evaluation.closed_loop.reactive_traffic`).
        max_steps: cap on simulator steps per scenario (None: the log length - 1 - 5).
        replan_steps: simulator steps between planner calls (5 = 2 Hz).
        explain: ask planners that explain themselves for their explanation at every call
            (for the report); False drives with ``compute_trajectory`` only.
        perception_noise: the perception noise model applied to the planner's inputs (None or
            an identity config: ground-truth perception); see the module docstring.
    """

    traffic: str = "replay"
    max_steps: int | None = None
    replan_steps: int = 5
    explain: bool = True
    perception_noise: PerceptionNoiseConfig | None = None


@dataclass
class PlanRecord:
    """One planner call. Waypoints: ego frame (6, 3) and simulator frame (6, 2)."""

    step: int
    t: float
    command: str
    waypoints_ego: list
    waypoints_world: list
    latency_ms: float
    explanation: dict


@dataclass
class ScenarioRollout:
    """Everything recorded about one scenario (simulator frame, 10 Hz, S = steps + 1 states).

    Attributes:
        status: ``ok`` | ``failed`` (planner failure; ``failure`` says why, ``failure_step`` where)
            | ``rejected`` (MetaDrive could not load it).
        ego_xy (S, 2), ego_yaw (S,), ego_vel (S, 2), actions (S, 2) (action applied after state s),
        flags: name -> (S,) bool from :data:`CRASH_KEYS`; md_route_completion (S,).
        agents: per state, the simulated objects (:class:`AgentState`).
        log_xy (T, 2), log_yaw (T,), log_valid (T,): the logged ego (the route).
        ego_length, ego_width: the simulated ego body (m), read from MetaDrive's vehicle
            (default :data:`dsdrive.constants.METADRIVE_EGO_LENGTH_M` / ``_WIDTH_M``).
        plans: the planner calls.
        drivable_area: the map's drivable area (None: no usable map; ``notes`` says why).
        notes: why a score could not be computed (e.g. no map).
        reactive_events: in reactive traffic, ``{step, agent_id, detail}`` the first time each
            vehicle braked for a leader (:class:`ReactiveTraffic`).
    """

    scene_id: str
    file: str
    planner: str
    status: str = "ok"
    failure: str | None = None
    failure_step: int | None = None
    ego_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    ego_yaw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ego_vel: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    actions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    flags: dict = field(default_factory=dict)
    md_route_completion: np.ndarray = field(default_factory=lambda: np.zeros(0))
    agents: list = field(default_factory=list)
    log_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    log_yaw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    log_valid: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    ego_length: float = METADRIVE_EGO_LENGTH_M
    ego_width: float = METADRIVE_EGO_WIDTH_M
    map: MapCache | None = None
    plans: list = field(default_factory=list)
    drivable_area: DrivableArea | None = None
    notes: list = field(default_factory=list)
    reactive_events: list = field(default_factory=list)
    wall_s: float = 0.0
    warnings: list = field(default_factory=list)

    @property
    def num_steps(self) -> int:
        return max(len(self.ego_xy) - 1, 0)


def make_env(workdir: WorkingCopy, log_replay: bool, traffic: str):
    """A ``ScenarioEnv`` over the working copy (state only, no rendering). MetaDrive replays the
    traffic in both modes; ``reactive`` is applied by the rollout (:class:`ReactiveTraffic`).

    Raises:
        ValueError: unknown ``traffic``.
    """
    # metadrive is optional (the `sim` extra) and slow to import: only a rollout loads it
    from metadrive.envs.scenario_env import ScenarioEnv
    from metadrive.policy.env_input_policy import EnvInputPolicy
    from metadrive.policy.replay_policy import ReplayEgoCarPolicy

    if traffic not in ("replay", "reactive"):
        raise ValueError(f"--traffic {traffic!r}: expected 'replay' or 'reactive'")
    ensure_offline_assets()
    cfg = dict(
        data_directory=str(workdir.directory),
        num_scenarios=len(workdir.files),
        agent_policy=ReplayEgoCarPolicy if log_replay else EnvInputPolicy,
        reactive_traffic=False,  # reactive traffic is ours (ReactiveTraffic), applied in the rollout
        use_render=False,
        log_level=logging.ERROR,
        horizon=None,
        # no lidar/side/lane-line rays: the planner reads the adapter, not MetaDrive's observation
        vehicle_config=dict(lidar=dict(num_lasers=0, distance=0), side_detector=dict(num_lasers=0, distance=0),
                            lane_line_detector=dict(num_lasers=0, distance=0)),
    )
    return ScenarioEnv(cfg)


def _ego_state(v) -> EgoState:
    return EgoState(np.asarray(v.position, np.float64)[:2], float(v.heading_theta), np.asarray(v.velocity, np.float64)[:2],
                    float(v.steering), float(v.LENGTH), float(v.WIDTH))


def _agent_state(env) -> AgentState:
    tm = getattr(env.engine, "traffic_manager", None)
    if tm is None or not tm.spawned_objects:
        return AgentState.empty()
    ids, types, xy, yaw, lwh, vel = [], [], [], [], [], []
    mapping = tm.obj_id_to_scenario_id
    for name, o in tm.spawned_objects.items():
        ids.append(str(mapping.get(name, name)))
        types.append(agent_type_of(getattr(o, "metadrive_type", "OTHER")))
        xy.append(np.asarray(o.position, np.float64)[:2])
        yaw.append(float(o.heading_theta))
        lwh.append([float(o.LENGTH), float(o.WIDTH), float(getattr(o, "HEIGHT", 1.5))])
        vel.append(np.asarray(o.velocity, np.float64)[:2])
    return AgentState(ids, types, np.asarray(xy), np.asarray(yaw), np.asarray(lwh), np.asarray(vel))


def _validate_waypoints(wp: Any) -> np.ndarray:
    arr = np.asarray(wp, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != FUTURE_STEPS or arr.shape[1] < 2:
        raise ValueError(f"planner returned waypoints of shape {arr.shape}, expected ({FUTURE_STEPS}, 3)")
    if not np.isfinite(arr[:, :2]).all():
        raise ValueError(f"planner returned non-finite waypoints: {np.round(arr, 2).tolist()}")
    if arr.shape[1] == 2:
        arr = np.concatenate([arr, np.zeros((FUTURE_STEPS, 1))], axis=1)
    return arr[:, :3]


def _call_planner(planner: Planner, inputs, explain: bool = True, log_pose: tuple | None = None,
                  world_pose: tuple | None = None) -> tuple[np.ndarray, Any, float]:
    """Plan once: ``(waypoints (6, 3) validated, explanation or None, latency ms)``. A planner that
    reads the log (``reads_log``) is asked ``plan_from_log(*log_pose)`` = (step, ego xy, ego yaw);
    one that reads the world (``reads_world``) ``plan_in_world(inputs, *world_pose)`` = (ego xy,
    ego yaw, t_now)."""
    t0 = time.perf_counter()
    explanation = None
    if log_pose is not None:
        wp = planner.plan_from_log(*log_pose)
    elif world_pose is not None:
        wp, explanation = planner.plan_in_world(inputs, *world_pose)
        explanation = explanation if explain else None
    elif explain and hasattr(planner, "plan_and_explain"):
        wp, explanation = planner.plan_and_explain(inputs)
    else:
        wp = planner.compute_trajectory(inputs)
    latency = (time.perf_counter() - t0) * 1000.0
    if explain and explanation is None and hasattr(planner, "explain"):
        explanation = planner.explain(inputs)
    return _validate_waypoints(wp), explanation, latency


def _logged_future(sr: ScenarioRollout, step: int) -> np.ndarray:
    """(6, 3) logged ego future in the ego frame of ``step`` (the last valid pose is held past the
    end of the valid log)."""
    stride = round(STEP_SECONDS / SIM_DT)  # 5 simulator steps per 0.5 s waypoint
    last_valid = np.flatnonzero(sr.log_valid)[-1] if sr.log_valid.any() else len(sr.log_xy) - 1
    idx = np.minimum(step + np.arange(1, FUTURE_STEPS + 1) * stride, last_valid)
    xy = global_to_ego(sr.log_xy[idx], sr.log_xy[step], sr.log_yaw[step])
    yaw = wrap_angle(sr.log_yaw[idx] - sr.log_yaw[step])
    return np.concatenate([xy, np.asarray(yaw)[:, None]], axis=1)


def rollout_scenario(env, seed: int, scene_id: str, file: str, planner: Planner | None, config: RolloutConfig,
                     hooks: Any = None) -> ScenarioRollout:
    """Run one scenario (see the module docstring). Never raises for planner failures.

    ``hooks`` (optional; on-policy data collection, :mod:`dsdrive.training.dagger`): an object with
    ``on_inputs(scene_id, step, inputs, ego, log)``, called with the :class:`PlanningInputs` handed to
    the planner at every replanning step (ego frame of now; ``ego`` the :class:`EgoState`, simulator
    frame; ``log`` the :class:`ScenarioLog`), and ``perturb(scene_id, step, action) -> action``,
    which may change the ``[steering, throttle_brake]`` sent to the simulator (DART-style noise).
    Either method may be absent. Metrics record the action actually executed."""
    name = "log_replay" if planner is None else getattr(planner, "name", type(planner).__name__)
    sr = ScenarioRollout(scene_id=scene_id, file=file, planner=name)
    t_start = time.perf_counter()
    try:
        env.reset(seed=seed)
    except Exception as e:  # noqa: BLE001 - MetaDrive's rejection of a scenario is recorded
        sr.status, sr.failure = "rejected", f"MetaDrive could not load the scenario: {type(e).__name__}: {e}"
        return sr
    scenario = env.engine.data_manager.current_scenario
    ego_track = scenario["tracks"][scenario["metadata"]["sdc_id"]]["state"]
    sr.log_xy = np.asarray(ego_track["position"], np.float64)[:, :2]
    sr.log_yaw = np.asarray(ego_track["heading"], np.float64).reshape(-1)
    sr.log_valid = np.asarray(ego_track["valid"]).astype(bool)
    sr.map = MapCache.from_scenario(scenario, file)
    sr.warnings.extend(sr.map.skipped)
    try:
        sr.drivable_area = DrivableArea.from_map_features(scenario.get("map_features"), file)
    except NoDrivableArea as e:
        sr.notes.append(f"{e}; DAC and PDMS not scored")
    log = ScenarioLog.from_scenario(scenario)
    reads_log = planner is not None and getattr(planner, "reads_log", False)
    if reads_log:
        planner.set_log(sr.log_xy, sr.log_yaw, sr.log_valid)
    reads_world = planner is not None and not reads_log and getattr(planner, "reads_world", False)
    if reads_world:
        planner.set_world(log.route, sr.drivable_area)
    traffic = ReactiveTraffic.from_scenario(scenario) if config.traffic == "reactive" else None
    horizon = max(int(scenario["length"]) - 1 - TAIL_TRIM_STEPS, 1)
    if config.max_steps is not None:
        horizon = min(horizon, int(config.max_steps))
    v = env.agent
    sr.ego_length, sr.ego_width = float(v.LENGTH), float(v.WIDTH)
    trace: list[EgoState] = [_ego_state(v)]
    agents = [_agent_state(env)]
    flags = {k: [False] for k in CRASH_KEYS}
    rc = [float(v.navigation.route_completion)]
    actions = []
    controller = WaypointController()
    for step in range(horizon):
        t_now = step * SIM_DT
        ego = trace[-1]
        if step % config.replan_steps == 0:
            if planner is None:
                wp, expl, lat = _logged_future(sr, step), None, 0.0
                cmd = "-"
            else:
                if reads_log:
                    inputs, cmd, log_pose = None, "-", (step, ego.xy, ego.yaw)
                else:
                    inputs = build_planning_inputs(f"{scene_id}_cl{step}", scene_id, trace, agents[-1], sr.map, log)
                    inputs = perceived(inputs, config.perception_noise, scene_id, step)  # the true agents stay in sr.agents
                    cmd, log_pose = inputs.command, None
                    if hooks is not None and hasattr(hooks, "on_inputs"):
                        hooks.on_inputs(scene_id, step, inputs, ego, log)
                try:
                    wp, expl, lat = _call_planner(planner, inputs, config.explain, log_pose,
                                                  (ego.xy, ego.yaw, t_now) if reads_world else None)
                except Exception as e:  # noqa: BLE001 - a planner failure ends this scenario only
                    sr.status, sr.failure_step = "failed", step
                    sr.failure = f"planner {name} failed at step {step} (t={t_now:.1f} s): {type(e).__name__}: {e}"
                    break
                controller.set_plan(wp, ego.xy, ego.yaw, t_now)
            sr.plans.append(
                PlanRecord(step, round(t_now, 2), cmd, np.round(wp, 3).tolist(),
                           np.round(ego_to_global(wp[:, :2], ego.xy, ego.yaw), 3).tolist(), round(lat, 3),
                           describe_plan(wp, float(np.hypot(*ego.velocity)), expl, log_replay=planner is None or reads_log))
            )
        if planner is None:
            action = np.zeros(2)
        else:
            action = controller.act(ego.xy, ego.yaw, float(np.hypot(*ego.velocity)), t_now)
            if hooks is not None and hasattr(hooks, "perturb"):
                action = np.asarray(hooks.perturb(scene_id, step, action), np.float64)
        try:
            _, _, _, _, info = env.step(action)
        except Exception as e:  # noqa: BLE001 - a simulator error ends this scenario only
            sr.status, sr.failure_step = "failed", step
            sr.failure = f"MetaDrive step failed at step {step}: {type(e).__name__}: {e}"
            break
        actions.append(action)
        trace.append(_ego_state(env.agent))
        if traffic is not None:
            e = trace[-1]
            try:
                traffic.after_step(env, step + 1, e.xy, e.velocity, e.length, e.width)
            except Exception as exc:  # noqa: BLE001 - a traffic error ends this scenario only
                sr.status, sr.failure_step = "failed", step
                sr.failure = f"reactive traffic failed at step {step + 1}: {type(exc).__name__}: {exc}"
                trace.pop()
                actions.pop()
                break
        agents.append(_agent_state(env))
        for k in CRASH_KEYS:
            flags[k].append(bool(info.get(k, False)))
        rc.append(float(info.get("route_completion", np.nan)))
    sr.ego_xy = np.asarray([e.xy for e in trace])
    sr.ego_yaw = np.asarray([e.yaw for e in trace])
    sr.ego_vel = np.asarray([e.velocity for e in trace])
    sr.actions = np.asarray(actions + [np.zeros(2)])
    sr.flags = {k: np.asarray(v_, bool) for k, v_ in flags.items()}
    sr.md_route_completion = np.asarray(rc)
    sr.agents = agents
    if traffic is not None:
        sr.reactive_events = list(traffic.events)
    sr.wall_s = time.perf_counter() - t_start
    return sr


def run_closed_loop(workdir: WorkingCopy, planner: Planner | None, config: RolloutConfig | None = None, progress: bool = True,
                    hooks: Any = None) -> list[ScenarioRollout]:
    """Roll out ``planner`` (None: log replay) on every scenario of the working copy (``hooks``:
    see :func:`rollout_scenario`).

    Returns:
        One :class:`ScenarioRollout` per indexed file, plus a ``rejected`` one per file the
        index left out (``workdir.rejected``), in file order.
    """
    config = config or RolloutConfig()
    out: list[ScenarioRollout] = []
    name = "log_replay" if planner is None else getattr(planner, "name", type(planner).__name__)
    for r in workdir.rejected:
        out.append(ScenarioRollout(scene_id=r.file, file=r.file, planner=name, status="rejected", failure=r.reason))
    env = make_env(workdir, planner is None, config.traffic)
    try:
        pairs = list(zip(workdir.files, workdir.scene_ids))
        for seed, (file, scene_id) in enumerate(tqdm(pairs, desc=f"closed loop [{name}]", unit="scene", disable=not progress)):
            sr = rollout_scenario(env, seed, scene_id, file, planner, config, hooks)
            out.append(sr)
            if sr.status == "rejected":  # the engine may be half-reset: start a fresh one
                env.close()
                env = make_env(workdir, planner is None, config.traffic)
    finally:
        env.close()
    return out
