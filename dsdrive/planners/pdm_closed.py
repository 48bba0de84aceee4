"""PDM-Closed: a privileged rule-based planner (route centreline, IDM proposals, simulated and scored).

Dauner, Hallgarten, Geiger & Chitta, "Parting with Misconceptions about Learning-based Vehicle
Motion Planning", CoRL 2023: PDM-Closed won the nuPlan 2023 challenge and is NAVSIM's progress
reference. Our implementation, written from the paper (not from its code), at every call, in the
**ego frame** of now (x forward, y left, metres, rad, m/s):

1. **Centreline** (:mod:`dsdrive.planners.pdm_centerline`): the lane centrelines of ``inputs.map``
   matched along the route, smoothed. The route, by context: closed loop, the scenario's logged
   ego path from the ego's place on it (:meth:`PDMClosedPlanner.set_world`); open loop and the
   PDM score, the sample's logged future ``targets.ego_future`` (3 s, extended along the lanes);
   a state without a logged future (the annotator's default), no route: the lanes walked from the
   ego's lane, the command choosing at forks.
2. **Proposals**: IDM (:func:`dsdrive.evaluation.closed_loop.reactive_traffic.idm_acceleration`,
   nuPlan's PDM-Closed constants: s0 1 m, headway 1.5 s, a_max 1.5 m/s^2, b 3 m/s^2; deceleration
   capped at 6 m/s^2) along the centreline, at 10 Hz over 4 s, towards each target speed
   ``f x limit`` with ``f`` in {0.2, 0.4, 0.6, 0.8, 1.0}, on each lateral offset {-1, 0, +1} m
   from the centreline (15 proposals, PDM-Closed's grid), plus one **stop** proposal on the
   centreline (not in the paper: it brakes at ``min(3, v / 1 s)`` m/s^2, so that when every
   moving proposal collides there is a way out; a stopped ego is never at fault). nuScenes
   (ScenarioNet) maps carry no speed limits: the limit is ``max(DEFAULT_SPEED_LIMIT_MPS = 13.9
   m/s (50 km/h, urban), current speed)``. Agents are forecast at constant velocity, heading
   held (cones and barriers standing: their velocity is noise). The IDM leader is the nearest
   agent ahead of the ego whose box corners, projected on the centreline, reach within the ego's
   half-width + 0.3 m of the proposal's path; the gap runs from the ego's front bumper to the
   nearest corner's station. With a destination (closed loop: the end of the log's route) the
   IDM also stops 1 m before it (a route shorter than 2 m: the ego stays). The offset starts at
   the ego's own lateral offset and reaches the target offset over ``clip(2 s x speed, 8, 25)``
   m (a cosine blend). Not in the paper: the desired speed is also capped on curves,
   ``sqrt(3 m/s^2 / |curvature|)`` with a 2 m/s^2 braking envelope ahead (nuPlan maps give
   per-lane speed limits, ours do not).
3. **Simulation**: each proposal's poses at 0, 0.5, ..., 4 s are tracked from the current ego state
   by the kinematic bicycle + LQR of :mod:`dsdrive.evaluation.trajectory_tracking` (the same
   tracker the PDM score uses), 40 steps of 0.1 s.
4. **Scoring** (PDM sub-scores, :mod:`dsdrive.evaluation.closed_loop.metrics`): NC (at-fault box
   overlaps with the agents forecast at constant velocity, heading held), DAC, TTC, comfort, EP
   (progress along the centreline over the best progress among the proposals with NC x DAC > 0;
   1 below 5 m), PDMS = NC x DAC x (5 EP + 5 TTC + 2 C) / 12. DAC: against the scenario's
   drivable area in closed loop (:class:`dsdrive.evaluation.drivable_area.DrivableArea`); from a
   planning sample (open loop, PDM score, annotator), the ego box must not cross a ``road_edge``
   polyline of ``inputs.map`` (edges the ego already straddles now are ignored; no edge: DAC 1).
5. **Selection** (deterministic): among the proposals within 0.05 of the best PDMS, the one with
   the smallest offset, then the highest PDMS (so the plan does not zigzag between equally good
   offsets); when every PDMS is 0, the most NC, the latest first collision, then DAC, then the
   weighted sum. Output: the chosen proposal's *simulated* states at +0.5 ... +3.0 s, (6, 3)
   ``x, y, heading``, as PDM-Closed returns its simulated trajectory.

**Cautious settings** (off by default; the DAgger labeller's switches, :mod:`dsdrive.training.dagger_config`):
``idm`` replaces the IDM constants (e.g. a 2 s headway and a 2 m minimum gap: the "two-second
rule"); ``log_speed_margin`` (not None) makes the closed-loop target speed the scene's instead of
13.9 m/s: :func:`log_speed_band`, the logged ego's fastest speed over the next 4 s from the ego's
place on the route, times ``1 + margin`` (at least ``LOG_SPEED_FLOOR_MPS``). That limit is then
used as given (a faster ego is slowed to it) rather than raised to the current speed.

Not in our version: nuPlan's driving-direction compliance and traffic lights (nuScenes has none);
the centreline comes from lane *geometry* matched to the logged route, not from a lane graph.

Privileged: it reads the route (the logged path) and, in closed loop, the drivable area.
:meth:`PDMClosedPlanner.compute_trajectory` plans from ``PlanningInputs`` alone (route from the
command); open loop and the PDM score hand it whole samples (``privileged = True``:
:meth:`~PDMClosedPlanner.compute_trajectories_privileged`), the closed loop the world
(``reads_world = True``: :meth:`~PDMClosedPlanner.set_world` per scenario, then
:meth:`~PDMClosedPlanner.plan_in_world` at every replanning step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy.spatial import cKDTree

from dsdrive.constants import EGO_CENTER_OFFSET_M, EGO_LENGTH_M, EGO_WIDTH_M, FUTURE_STEPS, SIM_DT, STEP_SECONDS
from dsdrive.data.types import EGO_STATUS_FIELDS, MapPolylines, PlanningInputs, PlanningSample
from dsdrive.data.world_state import AgentState, Route
from dsdrive.evaluation.closed_loop.metrics import (
    box_overlaps, comfort_bounds_ok, comfort_signals, no_collision_score, pdm_combine, progress_score, ttc_violation)
from dsdrive.evaluation.closed_loop.reactive_traffic import LATERAL_MARGIN_M, IDMParams, idm_acceleration
from dsdrive.evaluation.trajectory_tracking import WHEELBASE_M, BicycleState, reference_from_plan, track
from dsdrive.geometry import box_corners, ego_to_global, global_to_ego
from dsdrive.planners.pdm_centerline import CENTERLINE_STEP_M, Centerline, dedupe_points, route_centerline
from dsdrive.planners.base import Planner
from dsdrive.planners.constant_velocity import ego_velocity

DEFAULT_SPEED_LIMIT_MPS = 13.9
"""Speed limit (m/s, 50 km/h) where the map has none (every nuScenes ScenarioNet map)."""
SPEED_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)
"""Target speeds of the proposals, as fractions of the speed limit (PDM-Closed)."""
LATERAL_OFFSETS_M = (-1.0, 0.0, 1.0)
"""Lateral offsets (m, left positive) of the proposals from the centreline (PDM-Closed)."""
HORIZON_STEPS = 40
"""Proposal horizon: 40 steps of ``SIM_DT`` = 4 s (NAVSIM's)."""
PDM_IDM = IDMParams(s0=1.0, headway=1.5, a_max=1.5, b=3.0, max_decel=6.0)
"""IDM constants of the proposals (nuPlan PDM-Closed's, deceleration capped at 6 m/s^2)."""
LAT_ACCEL_MAX = 3.0
"""Lateral acceleration (m/s^2) of the curve speed cap."""
CURVE_BRAKE = 2.0
"""Deceleration (m/s^2) of the braking envelope ahead of a curve."""
STOP_TAU_S = 1.0
"""The stop proposal brakes at ``min(b, v / STOP_TAU_S)`` (m/s^2): the deceleration fades near a stand (no jerk spike)."""
PDMS_TIE = 0.05
"""Proposals within this PDMS of the best count as equally good (the smallest offset wins)."""
STANDING_TYPES = ("TRAFFIC_CONE", "TRAFFIC_BARRIER")
"""Agent types forecast standing whatever their velocity says (in closed loop a replayed cone can report 5 m/s)."""
EGO_FRONT_M = EGO_CENTER_OFFSET_M + EGO_LENGTH_M / 2
"""Distance (m) from the ego reference point to its front bumper."""
LOG_SPEED_WINDOW_S = 4.0
"""Window (s of log time, from the ego's place on the route) of :func:`log_speed_band`: the proposal horizon."""
LOG_SPEED_FLOOR_MPS = 1.0
"""Lowest target speed (m/s) :func:`log_speed_band` returns (a logged stand still lets the IDM creep to its destination stop)."""
_AX, _YAW_RATE = (EGO_STATUS_FIELDS.index(f) for f in ("ax", "yaw_rate"))

AreaTest = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(box centres (S, 2), headings (S,))`` in the ego frame -> (S,) bool: every corner on the drivable area."""


# ----------------------------------------------------------------------------- drivable area tests
def road_edge_test(map_: MapPolylines) -> AreaTest:
    """DAC test from an ego-frame map: a box is on the drivable area unless it crosses a
    ``road_edge`` polyline; edges crossing the ego box now are ignored (see the module docstring)."""
    edges = [shapely.LineString(dedupe_points(p)) for t, p in zip(map_.types, np.asarray(map_.points, np.float64).reshape(len(map_.types), -1, 2))
             if t == "road_edge" and len(dedupe_points(p)) >= 2]
    now = shapely.Polygon(box_corners(EGO_CENTER_OFFSET_M, 0.0, EGO_LENGTH_M, EGO_WIDTH_M, 0.0))
    edges = [e for e in edges if not e.intersects(now)]
    geom = shapely.union_all(edges) if edges else None

    def test(centres: np.ndarray, yaws: np.ndarray) -> np.ndarray:
        if geom is None:
            return np.ones(len(centres), bool)
        polys = shapely.polygons(box_corners(centres[:, 0], centres[:, 1], EGO_LENGTH_M, EGO_WIDTH_M, yaws))
        return ~shapely.intersects(polys, geom)

    return test


def log_speed_band(route: Route, i: int, margin: float, window_s: float = LOG_SPEED_WINDOW_S,
                   floor: float = LOG_SPEED_FLOOR_MPS) -> float:
    """The scene's speed limit at route vertex ``i`` (m/s): the logged ego's fastest speed over log
    times ``[t_i, t_i + window_s]``, times ``1 + margin``, at least ``floor``. Speeds are 0.5 s
    finite differences of the arc length along ``route`` (the logged path, :class:`Route`), so the
    10 Hz position noise does not count as speed.

    Raises:
        ValueError: ``i`` outside the route, ``margin < 0``, ``window_s <= 0`` or ``floor <= 0``.
    """
    if not 0 <= i < len(route.xy) or margin < 0 or window_s <= 0 or floor <= 0:
        raise ValueError(f"log_speed_band: index {i} (route of {len(route.xy)} vertices), margin {margin} (>= 0), "
                         f"window_s {window_s} (> 0), floor {floor} (> 0)")
    if len(route.xy) < 2:
        return float(floor)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(route.xy, axis=0), axis=1))])
    t, dt = route.t, 0.5
    k = np.flatnonzero((t >= t[i]) & (t <= t[i] + window_s))  # never empty: holds i
    v = (np.interp(t[k] + dt, t, s) - s[k]) / dt  # the arc length is held past the route's end
    return float(max(floor, (1.0 + margin) * float(v.max())))


def world_area_test(area, ego_xy: np.ndarray, ego_yaw: float) -> AreaTest:
    """DAC test against a :class:`~dsdrive.evaluation.drivable_area.DrivableArea` in a global frame,
    for boxes given in the ego frame of (``ego_xy`` (2,), ``ego_yaw``); when the ego box is not
    on the area now, every box passes (the test says nothing)."""
    now_ok = bool(area.corners_inside(ego_to_global(np.array([[EGO_CENTER_OFFSET_M, 0.0]]), ego_xy, ego_yaw),
                                      np.array([ego_yaw]), EGO_LENGTH_M, EGO_WIDTH_M)[0])

    def test(centres: np.ndarray, yaws: np.ndarray) -> np.ndarray:
        if not now_ok:
            return np.ones(len(centres), bool)
        return area.corners_inside(ego_to_global(centres, ego_xy, ego_yaw), np.asarray(yaws) + ego_yaw, EGO_LENGTH_M, EGO_WIDTH_M)

    return test


# ----------------------------------------------------------------------------- planner
@dataclass
class Proposal:
    """One scored proposal: target ``speed`` (m/s), lateral ``offset`` (m), sub-scores, ``progress``
    (m along the centreline), ``collision_step`` (first at-fault overlap, or None), ``leader``
    ("TYPE id" of the IDM leader at the start, or None), ``states`` (41, 6) simulated
    ``x, y, yaw, v, a, steer`` in the ego frame."""

    speed: float
    offset: float
    nc: float = 1.0
    dac: float = 1.0
    ttc: float = 1.0
    comfort: float = 1.0
    ep: float = 1.0
    pdms: float = 0.0
    progress: float = 0.0
    collision_step: int | None = None
    leader: str | None = None
    states: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))


@dataclass
class PDMClosedResult:
    """A plan: ``waypoints`` (6, 3) ego frame at +0.5 ... +3.0 s, every ``proposals`` entry, the
    index ``best`` of the chosen one, and the ``centerline`` it followed."""

    waypoints: np.ndarray
    proposals: list[Proposal]
    best: int
    centerline: Centerline

    def explanation(self) -> dict:
        """A closed-loop explanation record (text, ``mode_scores`` = every proposal's PDMS)."""
        p = self.proposals[self.best]
        lead = f", IDM leader {p.leader}" if p.leader else ", no IDM leader"
        text = (f"PDM-Closed: target {p.speed:.1f} m/s, offset {p.offset:+.0f} m{lead}; NC {p.nc:.1f} DAC {p.dac:.0f} "
                f"TTC {p.ttc:.0f} C {p.comfort:.0f} EP {p.ep:.2f} PDMS {p.pdms:.2f}; centreline: {self.centerline.source}.")
        return {"text": text, "mode_scores": [round(q.pdms, 3) for q in self.proposals]}


def initial_state(inputs: PlanningInputs) -> BicycleState:
    """The ego now as a bicycle state in its own frame: speed from :func:`ego_velocity`,
    acceleration ``ax`` and steering from the yaw rate where measured (as the PDM score's
    initial state)."""
    v = float(np.hypot(*ego_velocity(inputs)))
    mask, st = np.asarray(inputs.ego_status_mask, bool), np.asarray(inputs.ego_status, np.float64)
    accel = float(np.clip(st[_AX], -8.0, 4.0)) if mask[_AX] and np.isfinite(st[_AX]) else 0.0
    steer = 0.0
    if mask[_YAW_RATE] and np.isfinite(st[_YAW_RATE]) and v > 1.0:
        steer = float(np.clip(np.arctan(WHEELBASE_M * st[_YAW_RATE] / v), -0.6, 0.6))
    return BicycleState(0.0, 0.0, 0.0, v, accel, steer)


class PDMClosedPlanner(Planner):
    """PDM-Closed (privileged; see the module docstring).

    Args:
        speed_limit: the speed limit (m/s) used where the map has none.
        speed_fractions, offsets: the proposal grid.
        idm: the proposals' IDM constants (default ``PDM_IDM``, nuPlan PDM-Closed's).
        log_speed_margin: None (default): closed-loop plans aim at ``speed_limit``; a number >= 0:
            at the scene's speed, :func:`log_speed_band` with this margin (:meth:`plan_in_world`).

    Raises:
        ValueError: ``speed_limit <= 0``, an empty grid, or ``log_speed_margin < 0``.
    """

    name = "pdm_closed"
    privileged = True
    reads_world = True

    def __init__(self, speed_limit: float = DEFAULT_SPEED_LIMIT_MPS, speed_fractions: tuple = SPEED_FRACTIONS,
                 offsets: tuple = LATERAL_OFFSETS_M, idm: IDMParams = PDM_IDM, log_speed_margin: float | None = None) -> None:
        if not speed_limit > 0 or not speed_fractions or not offsets:
            raise ValueError(f"PDMClosedPlanner: speed_limit {speed_limit} must be > 0 and the grid non-empty "
                             f"(fractions {speed_fractions}, offsets {offsets})")
        if log_speed_margin is not None and not log_speed_margin >= 0:
            raise ValueError(f"PDMClosedPlanner: log_speed_margin {log_speed_margin} must be None or >= 0")
        self.speed_limit, self.speed_fractions, self.offsets = float(speed_limit), tuple(speed_fractions), tuple(offsets)
        self.idm, self.log_speed_margin = idm, log_speed_margin
        self._route: Route | None = None
        self._area = None

    # ------------------------------------------------------------------ entry points
    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """(6, 3) float32 plan from the inputs alone: no route (lane walk by the command), DAC
        from the map's road edges."""
        return self.plan(inputs).waypoints

    def compute_trajectories_privileged(self, samples: list[PlanningSample]) -> np.ndarray:
        """(B, 6, 3) float32: each sample planned along its logged future as the route
        (:func:`sample_route`)."""
        return np.stack([self.plan(s.inputs, sample_route(s)).waypoints for s in samples]).astype(np.float32)

    def set_world(self, route: Route, drivable_area=None) -> None:
        """Adopt a closed-loop scenario: its ``route`` (the logged ego path, simulator frame) and
        its drivable area (:class:`~dsdrive.evaluation.drivable_area.DrivableArea` or None: road
        edges of the inputs are used)."""
        self._route, self._area = route, drivable_area

    def plan_in_world(self, inputs: PlanningInputs, ego_xy: np.ndarray, ego_yaw: float, t_now: float) -> tuple[np.ndarray, dict]:
        """Closed-loop plan at the ego pose (``ego_xy`` (2,) m, ``ego_yaw`` rad, simulator frame) and
        log time ``t_now`` (s): ``((6, 3) waypoints, explanation dict)``.

        Raises:
            RuntimeError: :meth:`set_world` was not called.
        """
        if self._route is None:
            raise RuntimeError(f"{self.name}: set_world(route, drivable_area) must be called before plan_in_world")
        i = self._route.nearest(ego_xy, t_now)
        route = global_to_ego(self._route.xy[max(i - 10, 0):], ego_xy, ego_yaw)
        area = None if self._area is None else world_area_test(self._area, np.asarray(ego_xy, np.float64), float(ego_yaw))
        res = self.plan(inputs, route, area, goal=True, speed_limit=self.world_speed_limit(self._route, i))
        return res.waypoints, res.explanation()

    def world_speed_limit(self, route: Route, i: int) -> float | None:
        """The speed limit (m/s) of a closed-loop plan at route vertex ``i``: :func:`log_speed_band`
        with ``log_speed_margin``, or None (``speed_limit`` as before) when that is None."""
        return None if self.log_speed_margin is None else log_speed_band(route, i, self.log_speed_margin)

    # ------------------------------------------------------------------ the planner
    def plan(self, inputs: PlanningInputs, route_xy: np.ndarray | None = None, area: AreaTest | None = None,
             goal: bool = False, speed_limit: float | None = None) -> PDMClosedResult:
        """Plan once (see the module docstring).

        Args:
            inputs: the ego-frame inputs (ego status, agents, map, command).
            route_xy: (R, 2) ego-frame route in driving order, or None (lane walk by the command).
            area: the DAC test; None = :func:`road_edge_test` of ``inputs.map``.
            goal: the route's last point is the destination (closed loop: the log's end): the
                IDM stops there (a standing leader 1 m past it; a route shorter than 2 m: stay).
                False: the route was cut by a horizon (a sample's 3 s future) and is extended.
            speed_limit: None: ``max(self.speed_limit, current speed)``; a number (m/s, > 0): this
                call's limit as given, even below the current speed (the scene's speed, e.g.
                :meth:`world_speed_limit`; the proposals then slow down to it).

        Returns:
            :class:`PDMClosedResult` (waypoints (6, 3) float32, x forward, y left, m, rad).
        """
        init = initial_state(inputs)
        if speed_limit is not None and not speed_limit > 0:
            raise ValueError(f"PDMClosedPlanner.plan: speed_limit {speed_limit} must be None or > 0")
        limit = max(self.speed_limit, init.v) if speed_limit is None else float(speed_limit)
        horizon_s = HORIZON_STEPS * SIM_DT
        cl = route_centerline(inputs.map, route_xy, inputs.command, max(limit, init.v) * horizon_s + 20.0, init.v * 3.0 + 10.0)
        area = area or road_edge_test(inputs.map)
        s0, d0 = (float(a[0]) for a in cl.project(np.zeros((1, 2))))
        s_goal = None
        if goal:
            s_goal = s0 if route_xy is None else float(cl.project(np.asarray(route_xy, np.float64)[-1:])[0][0])
        forecast = AgentForecast.build(inputs, cl)
        cap = curve_speed_cap(cl)
        blend = offset_blend_m(init.v)
        stride = int(round(STEP_SECONDS / SIM_DT))
        proposals = []
        for f, off in [(f, off) for f in self.speed_fractions for off in self.offsets] + [(0.0, 0.0)]:  # + the stop proposal
            p = Proposal(f * limit, off)

            def offset_at(st: np.ndarray, off: float = off) -> np.ndarray:
                return off + (d0 - off) * 0.5 * (1 + np.cos(np.pi * np.clip((st - s0) / blend, 0.0, 1.0)))

            stations, p.leader = idm_profile(init.v, s0, p.speed, offset_at, forecast, cl, cap, s_goal, self.idm)
            knots = stations[::stride]
            xy, yaw = cl.pose(knots, offset_at(knots))
            xy[0], yaw[0] = 0.0, 0.0
            ref = reference_from_plan(STEP_SECONDS * np.arange(len(knots)), xy, np.unwrap(yaw), np.array([init.v, 0.0]))
            p.states = track(ref, BicycleState(**vars(init)), HORIZON_STEPS, SIM_DT)
            proposals.append(p)
        score_proposals(proposals, forecast, area, cl)
        best = _select(proposals)
        st = proposals[best].states[stride::stride][:FUTURE_STEPS]
        return PDMClosedResult(st[:, :3].astype(np.float32), proposals, best, cl)


def score_proposals(proposals: list[Proposal], forecast: "AgentForecast", area: AreaTest, cl: Centerline) -> None:
    """Fill every proposal's PDM sub-scores from its simulated ``states`` (HORIZON_STEPS + 1, 6),
    ego frame (the module docstring, step 4): NC and the first at-fault step against the agents of
    ``forecast``, DAC by ``area``, TTC, comfort, progress along ``cl`` (m) and EP against the
    best progress among the proposals with NC x DAC > 0, then PDMS."""
    agents = forecast.near(np.stack([p.states for p in proposals]))
    for p in proposals:
        pos, yaw, v = p.states[:, :2], p.states[:, 2], p.states[:, 3]
        centres = pos + EGO_CENTER_OFFSET_M * np.stack([np.cos(yaw), np.sin(yaw)], 1)
        vel = v[:, None] * np.stack([np.cos(yaw), np.sin(yaw)], 1)
        overlaps = box_overlaps(centres, yaw, v, agents, EGO_LENGTH_M, EGO_WIDTH_M)
        p.nc = no_collision_score(overlaps)
        p.collision_step = next((o.step for o in overlaps if o.at_fault), None)
        p.dac = float(area(centres, yaw).all())
        p.ttc = 0.0 if ttc_violation(centres, yaw, vel, agents, EGO_LENGTH_M, EGO_WIDTH_M) is not None else 1.0
        p.comfort = float(np.logical_and.reduce(list(comfort_bounds_ok(comfort_signals(pos, yaw)).values())).all())
        st, _ = cl.project(pos[[0, -1]])
        p.progress = float(st[1] - st[0])
    safe = [p.progress for p in proposals if p.nc * p.dac > 0]
    best = max(safe) if safe else 0.0
    for p in proposals:
        p.ep = progress_score(p.progress, best)
        p.pdms = pdm_combine(p.nc, p.dac, p.ttc, p.comfort, p.ep)


def offset_blend_m(speed: float) -> float:
    """Distance (m) over which a proposal's lateral offset reaches its target: clip(2 s x ``speed`` m/s, 8, 25)."""
    return float(np.clip(2.0 * speed, 8.0, 25.0))


def safety_order(p: Proposal) -> tuple[float, int, float]:
    """``(NC, first at-fault step or HORIZON_STEPS + 1 without one, DAC)`` of a scored proposal: larger
    is safer (the first keys of the fallback when no proposal scores PDMS > 0)."""
    return p.nc, HORIZON_STEPS + 1 if p.collision_step is None else p.collision_step, p.dac


def _select(proposals: list[Proposal]) -> int:
    """Index of the chosen proposal (see the module docstring, step 5)."""
    top = max(p.pdms for p in proposals)
    idx = range(len(proposals))
    if top > 0:
        near = [i for i in idx if proposals[i].pdms >= top - PDMS_TIE]
        return min(near, key=lambda i: (abs(proposals[i].offset), -proposals[i].pdms, i))

    def fallback(i: int) -> tuple:
        p = proposals[i]
        return (*safety_order(p), (5 * p.ep + 5 * p.ttc + 2 * p.comfort) / 12, -abs(p.offset), -i)

    return max(idx, key=fallback)


@dataclass
class AgentForecast:
    """Agents at constant velocity (heading held) at steps 0 ... HORIZON_STEPS of ``SIM_DT``: the
    metric states and, per step and agent (S, N), the box centre's station, the box corners'
    station and lateral extremes on the centreline, and the speed along it."""

    states: list[AgentState]
    labels: list[str]
    station: np.ndarray  # (S, N) centre
    rear: np.ndarray  # (S, N) smallest corner station
    lat_min: np.ndarray  # (S, N) corner lateral offsets (left positive)
    lat_max: np.ndarray
    v_along: np.ndarray

    def near(self, states: np.ndarray) -> list[AgentState]:
        """The forecast states (one per step) of only the agents that come within reach of the ego
        at the same step in any of ``states`` (P, S, 6): centre distance below both half-diagonals
        + the TTC projection (0.9 s x speed) + 1 m. Others can neither overlap nor violate TTC."""
        if not self.labels:
            return self.states
        xy = np.stack([a.xy for a in self.states])  # (S, N, 2)
        lwh = self.states[0].lwh
        reach = 0.5 * (np.hypot(lwh[:, 0], lwh[:, 1]) + np.hypot(EGO_LENGTH_M, EGO_WIDTH_M)) + EGO_CENTER_OFFSET_M + 1.0
        dist = np.linalg.norm(states[:, :, None, :2] - xy[None], axis=-1)  # (P, S, N)
        keep = np.flatnonzero((dist < reach[None, None] + 0.9 * states[:, :, 3:4]).any(axis=(0, 1)))
        return [AgentState([a.ids[i] for i in keep], [a.types[i] for i in keep], a.xy[keep], a.yaw[keep], a.lwh[keep],
                           a.velocity[keep]) for a in self.states]

    @classmethod
    def build(cls, inputs: PlanningInputs, cl: Centerline) -> "AgentForecast":
        a = inputs.agents
        boxes = np.asarray(a.boxes, np.float64).reshape(-1, 7)
        vel = np.asarray(a.velocities, np.float64).reshape(-1, 2).copy()
        vel[np.isin(np.asarray(a.types, dtype=object), STANDING_TYPES)] = 0.0  # cones and barriers stand (their velocity is noise)
        n, t = len(boxes), SIM_DT * np.arange(HORIZON_STEPS + 1)
        xy = boxes[None, :, :2] + t[:, None, None] * vel[None]  # (S, N, 2)
        lwh, yaw = boxes[:, 3:6], boxes[:, 6]
        states = [AgentState(list(a.ids), list(a.types), xy[k], yaw, lwh, vel) for k in range(len(t))]
        if n == 0:
            z = np.zeros((len(t), 0))
            return cls(states, [], z, z, z, z, z)
        station, rear = np.full((len(t), n), -np.inf), np.full((len(t), n), np.inf)
        lat_min, lat_max, v_along = np.full((len(t), n), np.inf), np.full((len(t), n), np.inf), np.zeros((len(t), n))
        dist, _ = cKDTree(cl.xy).query(xy.reshape(-1, 2))  # only agents that pass near the centreline can lead
        near = np.flatnonzero((dist.reshape(len(t), n) < 0.5 * np.hypot(lwh[:, 0], lwh[:, 1]) + 2 * CENTERLINE_STEP_M + 3.0).any(0))
        if len(near):
            m = len(near)
            corners = box_corners(xy[:, near, 0], xy[:, near, 1], lwh[near, 0], lwh[near, 1], np.broadcast_to(yaw[near], (len(t), m)))
            pts = np.concatenate([xy[:, near, None], corners], axis=2)  # (S, M, 5, 2): centre + 4 corners
            st, lat = (v.reshape(len(t), m, 5) for v in cl.project(pts.reshape(-1, 2)))
            path_yaw = np.interp(st[..., 0], cl.s, cl.yaw)
            station[:, near], rear[:, near] = st[..., 0], st[..., 1:].min(-1)
            lat_min[:, near], lat_max[:, near] = lat[..., 1:].min(-1), lat[..., 1:].max(-1)
            v_along[:, near] = vel[None, near, 0] * np.cos(path_yaw) + vel[None, near, 1] * np.sin(path_yaw)
        return cls(states, [f"{ty} {i}" for ty, i in zip(a.types, a.ids)], station, rear, lat_min, lat_max, v_along)


def curve_speed_cap(cl: Centerline) -> np.ndarray:
    """(K,) highest speed (m/s) at each centreline point: the curve limit ``sqrt(LAT_ACCEL_MAX /
    |curvature|)`` and the braking envelope (``CURVE_BRAKE``) towards every slower point ahead."""
    v = np.sqrt(LAT_ACCEL_MAX / np.maximum(np.abs(cl.curvature), 1e-4))
    for k in range(len(v) - 2, -1, -1):
        v[k] = min(v[k], np.sqrt(v[k + 1] ** 2 + 2.0 * CURVE_BRAKE * (cl.s[k + 1] - cl.s[k])))
    return v


def idm_profile(v: float, s: float, target: float, offset_at, fc: AgentForecast, cl: Centerline,
                 cap: np.ndarray, s_goal: float | None = None, idm: IDMParams = PDM_IDM) -> tuple[np.ndarray, str | None]:
    """Stations (HORIZON_STEPS + 1,) m of one IDM proposal from station ``s`` at speed ``v``, and the
    IDM leader at the start ("TYPE id", "the route's end", or None). ``s_goal``: the destination's
    station (a standing leader whose gap is measured from the ego reference point), or None.
    ``idm``: the IDM constants (PDM-Closed's by default)."""
    out, first_leader = [s], None
    for k in range(HORIZON_STEPS):
        gap, v_lead = np.inf, 0.0
        if fc.station.shape[1]:
            st, d = fc.station[k], offset_at(fc.station[k])
            half = EGO_WIDTH_M / 2 + LATERAL_MARGIN_M
            inside = (fc.lat_min[k] - d < half) & (fc.lat_max[k] - d > -half) & (st > s)
            if inside.any():
                gaps = np.where(inside, fc.rear[k] - (s + EGO_FRONT_M), np.inf)
                j = int(np.argmin(gaps))
                gap, v_lead = float(gaps[j]), float(fc.v_along[k, j])
                if k == 0:
                    first_leader = fc.labels[j]
        if s_goal is not None and s_goal - s < gap:
            gap, v_lead = s_goal - s, 0.0
            first_leader = "the route's end" if k == 0 else first_leader
        if target > 0:
            a = idm_acceleration(v, min(target, float(np.interp(s, cl.s, cap))), gap, v_lead, idm)
        else:  # the stop proposal: brake at min(b, v / STOP_TAU_S), harder when the IDM interaction term asks for it
            a = min(-min(idm.b, v / STOP_TAU_S), idm_acceleration(v, np.inf, gap, v_lead, idm)) if v > 0 else 0.0
        v_new = max(v + a * SIM_DT, 0.0)
        s += 0.5 * (v + v_new) * SIM_DT
        v = v_new
        out.append(s)
    return np.asarray(out), first_leader


def sample_route(sample: PlanningSample) -> np.ndarray | None:
    """The route of a planning sample: the ego (origin) and its logged future's valid prefix,
    (R, 2) ego frame; None without a valid first future step."""
    mask = np.asarray(sample.targets.ego_future_mask, bool)
    n = int(np.argmin(mask)) if not mask.all() else len(mask)
    if n == 0:
        return None
    return np.vstack([np.zeros((1, 2)), np.asarray(sample.targets.ego_future, np.float64)[:n, :2]])
