"""Map-reading priors of the student's waypoint head: the current speed held along the command's lane,
and (``waypoint_prior: kinematic_idm``) PDM-Closed's IDM along that lane.

A kinematic prior that reads the map: the ego's current speed |v| (m/s, :func:`dsdrive.planners.constant_velocity.ego_velocity`:
the measured ``vx, vy``, else the last history step, else 0) is held for 3 s along the lane
centreline ahead that the navigation command selects (:func:`dsdrive.planners.pdm_centerline.route_centerline`
without a route: PDM-Closed's lane walk, Dauner et al., CoRL 2023), at the ego's current lateral
offset from that centreline. It reads only :class:`dsdrive.data.types.PlanningInputs` (ego status /
history, map, command; never the future), so it is a planner input like the constant-velocity rollout.
Where no lane lies at the ego the lane walk goes straight ahead, so the prior is constant velocity
along the x axis. A LEFT / RIGHT command whose lane walk does not reach 2 m to that side within the
3 s distance (:func:`command_centerline`) moves the centreline to the lane beside the ego, and the
priors close the lateral offset to it linearly (:func:`lane_change_offsets`): a lane change. None of
the 275 logged samples below takes it (their LEFT commands are turns the ego's own lane makes), so
their priors are unchanged; it acts in closed loop, where the command follows the log's path.

Frame: ego frame of the current time (x forward, y left), metres; waypoints at +0.5 ... +3.0 s.
On the 275 recorded-ego samples of the 8 shared nuScenes-mini scenes (no parameter fitted):
ST-P3 L2 avg constant velocity 0.457 m, CTRV 0.431 m, this prior 0.434 m, the mean of CTRV and this
prior 0.415 m (README, "The student": the kinematic waypoint prior).

:func:`lane_idm_prior` is one PDM-Closed proposal (Dauner et al., CoRL 2023;
:mod:`dsdrive.planners.pdm_closed`) on the same lane and offset: the IDM's speed profile towards
``max(current speed, min_speed)``, braking for the nearest agent ahead on the lane (agents at
constant velocity) and for curves (PDM-Closed's curve cap). It reads the agents, which the
constant-speed priors never do: a prior that slows behind a leader or before a bend, and pulls
away from a stop when ``min_speed`` > 0. On the same 275 samples: ST-P3 L2 avg 0.832 m
(``min_speed`` 0), 0.997 m (3 m/s); the human keeps closer gaps and takes curves faster than it.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dsdrive.constants import SIM_DT
from dsdrive.data.types import FUTURE_STEPS, STEP_SECONDS, PlanningInputs
from dsdrive.data.world_state import COMMAND_HORIZON_S
from dsdrive.planners.constant_velocity import ego_velocity
from dsdrive.planners.pdm_centerline import Centerline, route_centerline
from dsdrive.planners.pdm_closed import HORIZON_STEPS, AgentForecast, curve_speed_cap, idm_profile, offset_blend_m

IDM_MIN_SPEED_MPS = 3.0
"""Default lowest target speed (m/s) of :func:`lane_idm_prior`: a standing ego with free road ahead
is planned to pull away (0: the IDM holds the current speed, so it never leaves a stop)."""

IDM_MODES_TOP_SPEED_MPS = 15.0
"""Fastest target speed (m/s) of the ``idm_modes`` proposals (:func:`idm_mode_targets`); the logged
ego of the shared nuScenes-mini scenes drives at most ~17.5 m/s."""

LANE_MARGIN_M = 10.0
"""The centreline reaches this far (m) beyond the 3 s constant-speed distance."""


LANE_CHANGE_MIN_LOOKAHEAD_M = 10.0
"""Shortest arc length (m) within which the lane walk must meet a LEFT / RIGHT command before it changes
lanes (:func:`dsdrive.planners.pdm_centerline.route_centerline`'s ``lane_change_m``); above it, the
distance the current speed covers in the command's 3 s."""

def command_centerline(inputs: PlanningInputs, speed: float, reach: float) -> tuple[Centerline, float, float]:
    """The lane walk of ``inputs.command`` reaching ``reach`` m, with lane changes by command
    (:func:`dsdrive.planners.pdm_centerline.route_centerline`, ``lane_change_m`` = max(3 s x
    ``speed`` m/s, :data:`LANE_CHANGE_MIN_LOOKAHEAD_M`)), and the ego's station and lateral offset
    (m, left positive) on it.

    Raises:
        ValueError: an unknown command (names the value).
    """
    lookahead = max(COMMAND_HORIZON_S * speed, LANE_CHANGE_MIN_LOOKAHEAD_M)
    line = route_centerline(inputs.map, None, inputs.command, reach, reach, lane_change_m=lookahead)
    station, offset = line.project(np.zeros((1, 2)))
    return line, float(station[0]), float(offset[0])


def lane_change_offsets(line: Centerline, s0: float, d0: float, stations: np.ndarray, speed: float) -> np.ndarray:
    """Lateral offsets (m, left positive) from ``line`` at ``stations`` (T,) m: the ego's offset ``d0``
    at its station ``s0`` held (lane keeping), or, on a lane-change centreline (``line.lane_change``),
    closed linearly to 0 over PDM-Closed's blend distance (:func:`~dsdrive.planners.pdm_closed.offset_blend_m`)."""
    stations = np.asarray(stations, np.float64)
    if not line.lane_change:
        return np.full_like(stations, d0)
    return d0 * np.clip(1.0 - (stations - s0) / offset_blend_m(speed), 0.0, 1.0)


CACHE_SIZE = 50_000
"""Priors kept in memory by :func:`lane_following_prior` (a sample is encoded once per training run;
cross-validation trains many runs in one process)."""
_cache: dict[tuple, np.ndarray] = {}


def lane_following_prior(inputs: PlanningInputs, future_steps: int = FUTURE_STEPS, dt: float = STEP_SECONDS) -> np.ndarray:
    """(future_steps, 2) float32 ego-frame x, y (m) at +dt ... +future_steps*dt s: the current speed
    held along the command's lane centreline at the current lateral offset (module docstring).

    The result is cached on everything it reads (speed, command, map types and a 128-bit digest of
    the points, steps, dt), so a cache hit is the value a fresh computation gives.

    Raises:
        ValueError: an unknown command (from :func:`route_centerline`, naming the value).
    """
    speed = float(np.hypot(*ego_velocity(inputs)))
    key = (speed, inputs.command, tuple(inputs.map.types), _digest(inputs.map.points), future_steps, float(dt))
    hit = _cache.get(key)
    if hit is not None:
        return hit.copy()
    out = _lane_following_prior(inputs, speed, future_steps, dt)
    _remember(key, out)
    return out.copy()


def _remember(key: tuple, value: np.ndarray) -> None:
    """Keep ``value`` (a copy) in the prior cache under ``key``; the cache is emptied when full."""
    if len(_cache) >= CACHE_SIZE:
        _cache.clear()
    _cache[key] = value.copy()


def _digest(*arrays) -> str:
    """128-bit digest of arrays (dtype, shape and bytes of each): the cache keys' stand-in for the points."""
    h = hashlib.blake2b(digest_size=16)
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype}{arr.shape}".encode() + arr.tobytes())
    return h.hexdigest()


def _lane_following_prior(inputs: PlanningInputs, speed: float, future_steps: int, dt: float) -> np.ndarray:
    t = dt * np.arange(1, future_steps + 1)
    reach = speed * float(t[-1]) + LANE_MARGIN_M
    line, s0, d0 = command_centerline(inputs, speed, reach)
    stations = s0 + speed * t
    xy, _ = line.pose(stations, lane_change_offsets(line, s0, d0, stations, speed))
    return np.nan_to_num(xy).astype(np.float32)


def lane_idm_prior(inputs: PlanningInputs, future_steps: int = FUTURE_STEPS, dt: float = STEP_SECONDS,
                   min_speed: float = IDM_MIN_SPEED_MPS) -> np.ndarray:
    """(future_steps, 2) float32 ego-frame x, y (m) at +dt ... +future_steps*dt s: PDM-Closed's IDM
    (nuPlan's constants, :data:`dsdrive.planners.pdm_closed.PDM_IDM`) along the command's lane
    centreline at the current lateral offset, towards ``max(current speed, min_speed)`` m/s, with
    the agents of ``inputs`` at constant velocity as leaders and PDM-Closed's curve cap (module
    docstring). Reads only :class:`PlanningInputs` (no route, no future). Cached like
    :func:`lane_following_prior`, on everything it reads (agents included).

    Raises:
        ValueError: an unknown command (from :func:`route_centerline`), ``min_speed`` < 0 or
            ``future_steps * dt`` beyond the IDM's 4 s horizon (names the value).
    """
    if not min_speed >= 0:
        raise ValueError(f"lane_idm_prior: min_speed {min_speed} must be >= 0 (m/s)")
    speed = float(np.hypot(*ego_velocity(inputs)))
    return lane_idm_proposals(inputs, (max(speed, float(min_speed)),), future_steps, dt)[0]


def idm_mode_targets(num_modes: int, top_speed: float = IDM_MODES_TOP_SPEED_MPS) -> tuple[float, ...]:
    """Target speeds (m/s) of the ``idm_modes`` proposals: ``num_modes`` evenly spaced from 0 (the stop
    proposal) to ``top_speed`` (6 modes: 0, 3, 6, 9, 12, 15).

    Raises:
        ValueError: fewer than 2 modes or a top speed <= 0 (names the value).
    """
    if num_modes < 2 or not top_speed > 0:
        raise ValueError(f"idm_mode_targets: num_modes {num_modes} must be >= 2 and top_speed {top_speed} > 0 (m/s)")
    return tuple(float(v) for v in np.linspace(0.0, float(top_speed), int(num_modes)))


def lane_idm_proposals(inputs: PlanningInputs, targets: tuple[float, ...], future_steps: int = FUTURE_STEPS,
                       dt: float = STEP_SECONDS) -> np.ndarray:
    """(len(targets), future_steps, 2) float32 ego-frame x, y (m) at +dt ... +future_steps*dt s: one
    lane-IDM proposal per target speed (m/s; 0 = PDM-Closed's stop proposal), each as
    :func:`lane_idm_prior` (the command's lane at the current lateral offset, constant-velocity
    leaders, the curve cap; the centreline reaches as far as the fastest target needs, so a
    proposal depends on the fastest target of its set): PDM-Closed's set of speed proposals (Dauner et al., CoRL 2023) built
    from the planning inputs alone, the modes of ``waypoint_prior: idm_modes``. Cached per target
    on everything it reads.

    Raises:
        ValueError: an unknown command (from :func:`route_centerline`), a negative or non-finite
            target, no target, or ``future_steps * dt`` beyond the IDM's 4 s horizon (names the value).
    """
    targets = tuple(float(v) for v in targets)
    if not targets or not all(np.isfinite(v) and v >= 0 for v in targets):
        raise ValueError(f"lane_idm_proposals: targets {targets} must be one or more finite speeds >= 0 (m/s)")
    stride = int(round(dt / SIM_DT))
    if stride * future_steps > HORIZON_STEPS:
        raise ValueError(f"lane_idm_proposals: {future_steps} steps of {dt} s exceed the IDM horizon of {HORIZON_STEPS * SIM_DT} s")
    speed = float(np.hypot(*ego_velocity(inputs)))
    reach = max(speed, max(targets)) * HORIZON_STEPS * SIM_DT + LANE_MARGIN_M  # one centreline for every target
    a = inputs.agents
    scene = (speed, reach, inputs.command, tuple(inputs.map.types), tuple(a.types),
             _digest(inputs.map.points, np.asarray(a.boxes, np.float64), np.asarray(a.velocities, np.float64)), future_steps, float(dt))
    out = np.zeros((len(targets), future_steps, 2), np.float32)
    missing = []
    for i, target in enumerate(targets):
        hit = _cache.get(("idm", target) + scene)
        if hit is None:
            missing.append(i)
        else:
            out[i] = hit
    if missing:
        line, s0, d0 = command_centerline(inputs, speed, reach)
        forecast, cap = AgentForecast.build(inputs, line), curve_speed_cap(line)

        def offset_at(st: np.ndarray) -> np.ndarray:
            return lane_change_offsets(line, s0, d0, st, speed)

        for i in missing:
            stations, _ = idm_profile(speed, s0, targets[i], offset_at, forecast, line, cap)
            knots = stations[stride::stride][:future_steps]
            xy, _ = line.pose(knots, offset_at(knots))
            out[i] = np.nan_to_num(xy)
            _remember(("idm", targets[i]) + scene, out[i])
    return out
