"""One feature path: a world state at time t -> :class:`~dsdrive.data.types.PlanningInputs`.

DESIGN.md: "A single function turns a world state at time t into PlanningInputs; builders and
the simulator both call it, so training and driving see the same inputs." The ScenarioNet
builder, the nuScenes builder and the closed-loop adapter each fill a :class:`WorldState` from
their own source (a log, a database, a simulator) and call :func:`planning_inputs_from_world`;
every convention below is therefore decided once, here.

Frames and units: the world state is in one *global* frame (a map's metres: nuScenes global,
ScenarioNet's, or MetaDrive's centralised scenario frame), angles in rad counter-clockwise,
velocities in m/s. The output is in the **ego frame** of the current time: x forward, y left,
origin at the ego position, heading 0 along +x (:func:`dsdrive.geometry.global_to_ego`); the
frame is planar (the ego's heading only, z up): a source that knows the ego's pitch/roll (nuScenes,
~1 deg) does not apply it, since ScenarioNet logs and the simulator cannot.

Conventions:

* ``ego_history`` (4, 3): the ego's own poses at -2.0, -1.5, -1.0, -0.5 s (every
  ``STEP_SECONDS / dt``-th entry back along :class:`EgoTrack`), masked and zero before the track
  start or where an entry is invalid.
* ``ego_status`` over ``EGO_STATUS_FIELDS`` (vx, vy, ax, ay, yaw_rate, steering): a field the
  source *measured* (``WorldState.measured_status``, e.g. the nuScenes CAN bus) is taken as is;
  the others are derived from the track with *backward* differences only (no future value):
  velocity = the track's velocity now (else the backward difference over one track entry),
  rotated into the ego frame; acceleration = (v(now) - v(now - 0.5 s)) / span, both in the ego
  frame of now; yaw rate = wrap(yaw(now) - yaw(now - 0.5 s)) / span; span from the track's
  timestamps. Steering is never derived (masked unless measured).
* ``agents``: every object in ``WorldState.agents`` whose centre is within ``radius`` (2D) of
  the ego, nearest first (stable sort); box ``x, y, z, l, w, h, yaw`` with **z relative to the
  ego's height** (box-centre z minus ``EgoTrack.z``, as training samples have it) and yaw
  relative to the ego heading; velocity rotated into the ego frame.
* ``map``: ``WorldState.map.polylines_at(ego pose, roi, max_polylines)``: the ego-frame ROI box
  ``|x| <= roi[0], |y| <= roi[1]``, at most ``max_polylines`` nearest first, 20 points each.
* ``command`` (VAD/SparseDrive's rule): the ego is placed on the route (:meth:`Route.nearest`,
  the logged ego pose nearest to it), the route point the log reaches ``COMMAND_HORIZON_S`` = 3 s
  later is taken into the ego frame, and its lateral offset gives LEFT (y >= 2 m), RIGHT
  (y <= -2 m) or STRAIGHT (:func:`dsdrive.data.types.command_from_future`). At a logged time on
  the logged path this is exactly the builders' rule, the lateral offset of the ego future at
  +3 s; off the log (closed loop) it stays the navigation intent of the log at that place.

Perception noise is not applied here but on the output, :class:`PlanningInputs`
(:func:`dsdrive.data.perception_noise.apply_perception_noise`): open loop and training read
stored samples, not world states, so the ego-frame inputs are the one place that open loop,
training and the simulator (which calls it right after this function) all share; the noise is
rotation-invariant, so drawing it before or after the rigid ego-frame transform is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from dsdrive.constants import FUTURE_STEPS, HISTORY_STEPS, STEP_SECONDS
from dsdrive.data.types import (
    AGENT_TYPES,
    EGO_STATUS_FIELDS,
    Agents,
    Camera,
    MapPolylines,
    PlanningInputs,
    command_from_future,
)
from dsdrive.geometry import global_to_ego, rotate_vectors, wrap_angle

COMMAND_HORIZON_S = FUTURE_STEPS * STEP_SECONDS
"""Route look-ahead of the command (s): the +3 s of the builders' future-based rule."""
ROUTE_TIE_M = 0.1
"""Route vertices within this distance (m) of the nearest one count as equally near; among them
the one logged closest to the current time is taken (the log stood still, or passes twice)."""


@dataclass
class FeatureOptions:
    """What the planner inputs keep around the ego (same defaults for builders and simulator).

    Attributes:
        radius: agents farther than this (2D centre distance, m) are left out.
        map_roi: half extents (x, y) of the ego-frame map box (m).
        max_polylines: at most this many map polylines, nearest to the ego first.

    Raises:
        ValueError: a non-positive radius or ROI, or a negative ``max_polylines``.
    """

    radius: float = 50.0
    map_roi: tuple[float, float] = (50.0, 30.0)
    max_polylines: int = 100

    def __post_init__(self) -> None:
        self.map_roi = (float(self.map_roi[0]), float(self.map_roi[1]))
        if not self.radius > 0 or min(self.map_roi) <= 0 or self.max_polylines < 0:
            raise ValueError(f"FeatureOptions: radius {self.radius}, map_roi {self.map_roi} must be > 0 and "
                             f"max_polylines {self.max_polylines} >= 0")


@dataclass
class EgoTrack:
    """The ego's past and present poses at a fixed rate, global frame; the last entry is now.

    Attributes:
        dt: nominal seconds between entries (0.1 for 10 Hz logs and the simulator, 0.5 for
            nuScenes keyframes); must divide ``STEP_SECONDS``.
        xy: (K, 2) positions (m). yaw: (K,) headings (rad).
        z: the ego's current height (m); agent box z is given relative to it.
        velocity: (K, 2) velocities (m/s), NaN where unknown; None = unknown everywhere.
        valid: (K,) bool, False for entries the source marks invalid; None = all valid.
        timestamps: (K,) measured times (s) used for finite-difference spans; None = ``t0 + k dt``.
        t0: nominal log time (s) of entry 0; entry k is at ``t0 + k dt`` on the clock of the
            :class:`Route`.

    Raises:
        ValueError: inconsistent shapes, a ``dt`` not dividing ``STEP_SECONDS``, or a current
            entry that is invalid or non-finite (names the field and value).
    """

    dt: float
    xy: np.ndarray
    yaw: np.ndarray
    z: float
    velocity: np.ndarray | None = None
    valid: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    t0: float = 0.0

    def __post_init__(self) -> None:
        self.xy = np.asarray(self.xy, np.float64).reshape(-1, 2)
        k = len(self.xy)
        self.yaw = np.asarray(self.yaw, np.float64).reshape(-1)
        self.velocity = np.full((k, 2), np.nan) if self.velocity is None else np.asarray(self.velocity, np.float64)
        self.valid = np.ones(k, bool) if self.valid is None else np.asarray(self.valid, bool).reshape(-1)
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, np.float64).reshape(-1)
        for name in ("yaw", "velocity", "valid", "timestamps"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != k:
                raise ValueError(f"EgoTrack: field {name!r} has {len(arr)} entries, xy has {k}")
        if k == 0:
            raise ValueError("EgoTrack: field 'xy' is empty (the track needs the current entry)")
        if self.velocity.shape != (k, 2):
            raise ValueError(f"EgoTrack: field 'velocity' has shape {self.velocity.shape}, expected ({k}, 2)")
        stride = STEP_SECONDS / self.dt if self.dt > 0 else 0.0
        if self.dt <= 0 or abs(stride - round(stride)) > 1e-6:
            raise ValueError(f"EgoTrack: field 'dt' = {self.dt} s does not divide {STEP_SECONDS} s")
        if not (self.valid[-1] and np.isfinite(self.xy[-1]).all() and np.isfinite(self.yaw[-1]) and np.isfinite(self.z)):
            raise ValueError(f"EgoTrack: the current entry is invalid or non-finite (valid={bool(self.valid[-1])}, "
                             f"xy={self.xy[-1].tolist()}, yaw={self.yaw[-1]}, z={self.z})")

    def __len__(self) -> int:
        return len(self.xy)

    @property
    def stride(self) -> int:
        """Entries per ``STEP_SECONDS`` (5 at 10 Hz, 1 for nuScenes keyframes)."""
        return int(round(STEP_SECONDS / self.dt))

    @property
    def times(self) -> np.ndarray:
        """(K,) seconds used for finite-difference spans (``timestamps`` or the nominal clock)."""
        return self.timestamps if self.timestamps is not None else self.t0 + np.arange(len(self)) * self.dt

    @property
    def time_now(self) -> float:
        """Nominal log time of the current entry (s), on the :class:`Route` clock."""
        return self.t0 + (len(self) - 1) * self.dt


@dataclass
class AgentState:
    """Other objects at the current time, global (or simulator) frame.

    Attributes:
        ids: N track ids. types: N classes from :data:`dsdrive.data.types.AGENT_TYPES`.
        xy: (N, 2) box centres (m). yaw: (N,) headings (rad). lwh: (N, 3) length, width, height (m).
        velocity: (N, 2) m/s.
        z: (N,) box-centre heights (m), same vertical datum as ``EgoTrack.z``; None = not known
            yet (a simulator fills it before :func:`planning_inputs_from_world`, which needs it).

    Raises:
        ValueError: array lengths differ from ``ids``, or a type outside ``AGENT_TYPES``.
    """

    ids: list[str]
    types: list[str]
    xy: np.ndarray
    yaw: np.ndarray
    lwh: np.ndarray
    velocity: np.ndarray
    z: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.ids, self.types = [str(i) for i in self.ids], list(self.types)
        try:
            self.xy = np.asarray(self.xy, np.float64).reshape(n, 2)
            self.yaw = np.asarray(self.yaw, np.float64).reshape(n)
            self.lwh = np.asarray(self.lwh, np.float64).reshape(n, 3)
            self.velocity = np.asarray(self.velocity, np.float64).reshape(n, 2)
            if self.z is not None:
                self.z = np.asarray(self.z, np.float64).reshape(n)
        except ValueError as exc:
            raise ValueError(f"AgentState: arrays do not match {n} ids ({exc})") from exc
        bad = sorted(set(self.types) - set(AGENT_TYPES))
        if len(self.types) != n or bad:
            raise ValueError(f"AgentState: field 'types' has {len(self.types)} entries for {n} ids, "
                             f"unknown types {bad} (expected {AGENT_TYPES})")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> "AgentState":
        """No agents (all arrays with a leading dimension of 0)."""
        return cls([], [], np.zeros((0, 2)), np.zeros(0), np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0))


@dataclass
class Route:
    """The navigation route: the logged ego path with its log clock, global frame.

    Attributes:
        xy: (R, 2) positions (m), in time order.
        t: (R,) nominal log time (s) of each position, strictly increasing (the clock of
            ``EgoTrack.time_now``).

    Raises:
        ValueError: empty, mismatched, non-finite, or times not strictly increasing.
    """

    xy: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        self.xy = np.asarray(self.xy, np.float64).reshape(-1, 2)
        self.t = np.asarray(self.t, np.float64).reshape(-1)
        if len(self.xy) == 0 or len(self.t) != len(self.xy):
            raise ValueError(f"Route: {len(self.xy)} positions and {len(self.t)} times (need the same number, >= 1)")
        if not (np.isfinite(self.xy).all() and np.isfinite(self.t).all()) or np.any(np.diff(self.t) <= 0):
            raise ValueError("Route: positions/times must be finite and times strictly increasing")

    def nearest(self, ego_xy: np.ndarray, t_now: float) -> int:
        """Index of the route vertex nearest to ``ego_xy``; among vertices within
        :data:`ROUTE_TIE_M` of the nearest, the one whose time is closest to ``t_now``."""
        d = np.linalg.norm(self.xy - np.asarray(ego_xy, np.float64)[:2], axis=1)
        near = np.flatnonzero(d <= d.min() + ROUTE_TIE_M)
        return int(near[np.argmin(np.abs(self.t[near] - t_now))])

    def position_at(self, t: float) -> np.ndarray:
        """(2,) route position at log time ``t`` (linear in time; held at the route's ends)."""
        return np.array([np.interp(t, self.t, self.xy[:, 0]), np.interp(t, self.t, self.xy[:, 1])])


def command_from_route(route: Route, ego_xy: np.ndarray, ego_yaw: float, t_now: float) -> str:
    """Navigation command: the route point the log reaches :data:`COMMAND_HORIZON_S` after the
    ego's place on the route, through the +-2 m lateral rule in the ego frame of
    (``ego_xy`` (2,) m, ``ego_yaw`` rad) (see the module docstring)."""
    target = route.position_at(route.t[route.nearest(ego_xy, t_now)] + COMMAND_HORIZON_S)
    return command_from_future(global_to_ego(target[None], ego_xy, ego_yaw))


class MapQuery(Protocol):
    """A map that returns ego-frame polylines around a pose (e.g. :class:`dsdrive.data.map_index.MapIndex`)."""

    def polylines_at(self, ego_xy: np.ndarray, ego_yaw: float, roi: tuple[float, float], max_polylines: int) -> MapPolylines:
        """Polylines (M, 20, 2) in the ego frame of (``ego_xy`` global m, ``ego_yaw`` rad), nearest first."""
        ...


@dataclass
class WorldState:
    """Everything known about the world at the current time (global frame), before any ego-frame
    transform. Only the route looks ahead, and only the command is read from it.

    Attributes:
        sample_id, scene_id: ids given to the inputs.
        ego: the ego's track up to now.
        agents: the other objects now (with ``z``).
        route: the navigation route (command source).
        map: the map query, or None when the source has no map (empty map polylines).
        measured_status: (6,) ego status measured by the source over ``EGO_STATUS_FIELDS``, or None.
        measured_status_mask: (6,) bool, which entries of ``measured_status`` are measurements.
        cameras: the camera rig of this time (passed through), if any.
    """

    sample_id: str
    scene_id: str
    ego: EgoTrack
    agents: AgentState
    route: Route
    map: MapQuery | None = None
    measured_status: np.ndarray | None = None
    measured_status_mask: np.ndarray | None = None
    cameras: list[Camera] = field(default_factory=list)


def _velocity_at(ego: EgoTrack, k: int) -> np.ndarray:
    """(2,) global velocity of entry ``k``: the track's, else a backward difference over one entry."""
    v = ego.velocity[k]
    if np.isfinite(v).all():
        return v
    if k >= 1 and ego.valid[k - 1]:
        span = ego.times[k] - ego.times[k - 1]
        if span > 0:
            return (ego.xy[k] - ego.xy[k - 1]) / span
    return np.full(2, np.nan)


def ego_status_from_track(ego: EgoTrack) -> tuple[np.ndarray, np.ndarray]:
    """Ego status (6,) over ``EGO_STATUS_FIELDS`` and its (6,) mask derived from the track with
    backward differences over ``STEP_SECONDS`` (see the module docstring); steering masked."""
    status, mask = np.zeros(len(EGO_STATUS_FIELDS)), np.zeros(len(EGO_STATUS_FIELDS), bool)
    now, yaw = len(ego) - 1, float(ego.yaw[-1])
    v_now = rotate_vectors(_velocity_at(ego, now), yaw)
    if np.isfinite(v_now).all():
        status[0:2], mask[0:2] = v_now, True
    prev = now - ego.stride
    if prev >= 0 and ego.valid[prev]:
        span = ego.times[now] - ego.times[prev]
        if span > 0:  # repeated timestamps: leave masked
            yaw_rate = float(wrap_angle(ego.yaw[now] - ego.yaw[prev])) / span
            if np.isfinite(yaw_rate):
                status[4], mask[4] = yaw_rate, True
            accel = (v_now - rotate_vectors(_velocity_at(ego, prev), yaw)) / span
            if np.isfinite(accel).all():
                status[2:4], mask[2:4] = accel, True
    return status, mask


def _history(ego: EgoTrack) -> tuple[np.ndarray, np.ndarray]:
    """(4, 3) ego-frame poses at -2.0 ... -0.5 s and their (4,) mask."""
    now = len(ego) - 1
    steps = now - ego.stride * np.arange(HISTORY_STEPS, 0, -1)
    safe = np.maximum(steps, 0)
    mask = (steps >= 0) & ego.valid[safe]
    xy = global_to_ego(ego.xy[safe], ego.xy[now], ego.yaw[now])
    poses = np.concatenate([xy, np.asarray(wrap_angle(ego.yaw[safe] - ego.yaw[now]))[:, None]], -1)
    return np.where(mask[:, None], poses, 0.0), mask


def _agents(agents: AgentState, ego_xy: np.ndarray, ego_yaw: float, ego_z: float, radius: float) -> Agents:
    if agents.z is None:
        raise ValueError("planning_inputs_from_world: field 'agents.z' is None (box-centre heights unknown; "
                         "the source must give them so that box z is relative to the ego as in training samples)")
    dist = np.linalg.norm(agents.xy - ego_xy, axis=-1)
    sel = np.flatnonzero(dist <= radius)
    sel = sel[np.argsort(dist[sel], kind="stable")]
    xy = global_to_ego(agents.xy[sel], ego_xy, ego_yaw)
    boxes = np.concatenate(
        [xy, (agents.z[sel] - ego_z)[:, None], agents.lwh[sel], np.asarray(wrap_angle(agents.yaw[sel] - ego_yaw))[:, None]], axis=-1
    )
    vel = rotate_vectors(agents.velocity[sel], ego_yaw)
    return Agents([agents.ids[i] for i in sel], [agents.types[i] for i in sel], boxes.astype(np.float32), vel.astype(np.float32))


def planning_inputs_from_world(state: WorldState, options: FeatureOptions | None = None) -> PlanningInputs:
    """The planner's inputs at the current time of ``state`` (the one feature path).

    Args:
        state: the world state now (global frame).
        options: radius, map ROI and polyline cap; defaults to :class:`FeatureOptions`.

    Returns:
        :class:`PlanningInputs` in the ego frame of now (x forward, y left, metres): history
        (4, 3) + mask, status (6,) + mask, command, agents (N, 7) boxes / (N, 2) velocities
        nearest first, map polylines (M, 20, 2); no future value.

    Raises:
        ValueError: ``agents.z`` is None, or ``measured_status`` / its mask (required with it) are not (6,).
    """
    opts = options or FeatureOptions()
    ego = state.ego
    xy0, yaw0 = ego.xy[-1], float(ego.yaw[-1])
    history, history_mask = _history(ego)
    status, status_mask = ego_status_from_track(ego)
    if state.measured_status is not None:
        measured = np.asarray(state.measured_status, np.float64).reshape(-1)
        mmask = np.asarray(state.measured_status_mask if state.measured_status_mask is not None else [], bool).reshape(-1)
        if measured.shape != status.shape or mmask.shape != status.shape:
            raise ValueError(f"WorldState: measured_status {measured.shape} / mask {mmask.shape}, expected ({len(EGO_STATUS_FIELDS)},)")
        status, status_mask = np.where(mmask, measured, status), mmask | status_mask
    polylines = state.map.polylines_at(xy0, yaw0, opts.map_roi, opts.max_polylines) if state.map is not None else MapPolylines.empty()
    return PlanningInputs(
        sample_id=state.sample_id,
        scene_id=state.scene_id,
        ego_history=history.astype(np.float32),
        ego_history_mask=history_mask,
        ego_status=status.astype(np.float32),
        ego_status_mask=status_mask,
        command=command_from_route(state.route, xy0, yaw0, ego.time_now),
        agents=_agents(state.agents, xy0, yaw0, float(ego.z), opts.radius),
        map=polylines,
        cameras=list(state.cameras),
    )
