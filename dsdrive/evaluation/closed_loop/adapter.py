"""Simulator state -> :class:`dsdrive.data.types.PlanningInputs` (what a planner may see; no future).

The rollout (:mod:`dsdrive.evaluation.closed_loop.rollout`) keeps the ego's own driven states (10 Hz) and, every
0.5 s, asks this module for the planner's inputs, built with the conventions of the ScenarioNet
builder (:func:`data_builders.scenarionet.build_scene`) so that a planner trained on ScenarioNet
samples sees the same kind of input in closed loop:

* **Ego frame** of the current sim time: x forward, y left, origin at the ego position, heading
  0 along +x (:func:`dsdrive.geometry.global_to_ego`). The simulator frame is MetaDrive's
  *centralised* scenario frame (global map metres minus the ego's initial position, axes
  unchanged; checked against the log at replay).
* ``ego_history``: the ego's own simulated poses at -2.0, -1.5, -1.0, -0.5 s; masked before the
  rollout start (the logs start at the rollout start).
* ``ego_status``: vx, vy (ego frame); ax, ay and yaw rate from *backward* differences over
  0.5 s, as the builder computes them from the log; steering 0 with mask False (ScenarioNet logs
  have none, so planners are trained without it).
* ``command``: from the *route* (the logged ego path, what a navigation system gives): the route
  point ``lookahead`` metres ahead of the ego's projection on the route, in the ego frame, through
  the +-2 m lateral rule of :func:`dsdrive.data.types.command_from_future` (VAD/SparseDrive).
* ``agents``: the simulated objects (replayed or reactive) within :data:`AGENT_ROI_M`, nearest
  first (the builder's ``radius``).
* ``map``: :class:`data_builders.scenarionet_map.MapIndex` with the builder's defaults (ROI box
  |x| <= 50 m, |y| <= 30 m, at most 100 polylines, nearest first, 20 points each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsdrive.geometry import global_to_ego, rotate_vectors, wrap_angle
from dsdrive.data.types import (
    AGENT_TYPES,
    EGO_STATUS_FIELDS,
    HISTORY_STEPS,
    STEP_SECONDS,
    Agents,
    MapPolylines,
    PlanningInputs,
    command_from_future,
)

AGENT_ROI_M = 50.0
"""Agents farther than this from the ego (m) are left out (``BuildOptions.radius``)."""
SIM_DT = 0.1
"""Seconds per simulator step (MetaDrive: 0.02 s physics x decision_repeat 5; ScenarioNet 10 Hz)."""


def agent_type_of(metadrive_type: str) -> str:
    """MetaDrive object type -> :data:`dsdrive.data.types.AGENT_TYPES` (unknown -> ``OTHER``)."""
    t = str(metadrive_type).upper()
    return t if t in AGENT_TYPES else "OTHER"


class _MapSkips:
    """Collects malformed-map-feature messages with ``BuildReport.skip``'s signature."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def skip(self, kind, file, reason, scene_id="", step=None, code=None) -> None:
        """Record a skipped agent/step (the builder's report interface) as a message."""
        self.messages.append(f"{kind}: {reason}")


@dataclass
class MapCache:
    """A scenario's map in the simulator frame: the builder's ``MapIndex`` (planner input), the
    raw polylines (BEV plots) and the lane-surface polygons (drivable area, DAC).

    Attributes:
        index: :class:`data_builders.scenarionet_map.MapIndex` over the features.
        types: K dsdrive map types of ``polylines``.
        polylines: K arrays (P_k, 2), metres, simulator frame.
        lane_polygons: lane-surface polygons (P, 2) where the scenario has them.
        boundary_rings: ``boundary_*`` polylines (ScenarioNet's nuScenes drivable-area outline).
        skipped: messages about malformed map features (left out).
    """

    index: object
    types: list[str]
    polylines: list[np.ndarray]
    lane_polygons: list[np.ndarray]
    boundary_rings: list[np.ndarray]
    skipped: list[str]

    @classmethod
    def from_scenario(cls, scenario: dict, name: str = "scenario") -> "MapCache":
        """Read ``scenario['map_features']`` (ScenarioNet dict, simulator frame)."""
        from data_builders.scenarionet_map import MapIndex, map_type_of

        skips = _MapSkips()
        feats = dict(scenario.get("map_features") or {})
        index = MapIndex.from_features(feats, name, "", skips)
        types, lines, polys, rings = [], [], [], []
        for fid, feat in feats.items():
            if not isinstance(feat, dict):
                continue
            mtype = map_type_of(fid, feat.get("type", ""))
            poly = feat.get("polygon")
            if mtype == "lane_centerline" and poly is not None and len(poly) >= 3:
                polys.append(np.asarray(poly, np.float64)[:, :2])
            pts = feat.get("polyline")
            if mtype is None or pts is None or len(pts) < 2:
                continue
            pts = np.asarray(pts, np.float64)[:, :2]
            if np.isfinite(pts).all():
                types.append(mtype)
                lines.append(pts)
                if str(fid).startswith("boundary_"):
                    rings.append(pts)
        return cls(index, types, lines, polys, rings, skips.messages)

    def in_ego_frame(self, ego_xy: np.ndarray, ego_yaw: float) -> MapPolylines:
        """Map polylines around the ego in its frame, (M, 20, 2), as the ScenarioNet builder makes them."""
        from data_builders.scenarionet import BuildOptions

        opts = BuildOptions()
        return self.index.polylines_at(np.asarray(ego_xy, np.float64)[:2], float(ego_yaw), opts.map_roi, opts.max_polylines)


@dataclass
class AgentState:
    """Simulated objects at one time, simulator frame.

    Attributes:
        ids: N scenario track ids.
        types: N :data:`dsdrive.data.types.AGENT_TYPES`.
        xy: (N, 2) box centres (m); yaw: (N,) rad; lwh: (N, 3) length, width, height (m).
        velocity: (N, 2) m/s, simulator frame.
    """

    ids: list[str]
    types: list[str]
    xy: np.ndarray
    yaw: np.ndarray
    lwh: np.ndarray
    velocity: np.ndarray

    @classmethod
    def empty(cls) -> "AgentState":
        """No agents (all arrays with a leading dimension of 0)."""
        return cls([], [], np.zeros((0, 2)), np.zeros(0), np.zeros((0, 3)), np.zeros((0, 2)))


@dataclass
class EgoState:
    """The ego at one simulator step (simulator frame): ``xy`` (2,) m, ``yaw`` rad, ``velocity``
    (2,) m/s, ``steering`` (MetaDrive's normalised [-1, 1]), ``length``/``width`` m."""

    xy: np.ndarray
    yaw: float
    velocity: np.ndarray
    steering: float = 0.0
    length: float = 4.515
    width: float = 1.852


def agents_in_ego_frame(agents: AgentState, ego: EgoState, roi: float = AGENT_ROI_M) -> Agents:
    """Objects within ``roi`` metres of the ego, nearest first, as :class:`Agents` in the ego frame."""
    if len(agents.ids) == 0:
        return Agents.empty()
    dist = np.linalg.norm(agents.xy - ego.xy[None], axis=1)
    keep = np.flatnonzero(dist <= roi)
    if len(keep) == 0:
        return Agents.empty()
    keep = keep[np.argsort(dist[keep], kind="stable")]
    xy = global_to_ego(agents.xy[keep], ego.xy, ego.yaw)
    yaw = np.asarray(wrap_angle(agents.yaw[keep] - ego.yaw))
    boxes = np.concatenate([xy, np.zeros((len(xy), 1)), agents.lwh[keep], yaw[:, None]], axis=1)
    vel = rotate_vectors(agents.velocity[keep], ego.yaw)
    return Agents([agents.ids[i] for i in keep], [agents.types[i] for i in keep], boxes.astype(np.float32), vel.astype(np.float32))


def command_from_route(route_xy: np.ndarray, ego: EgoState, lookahead: float) -> str:
    """Navigation command from the route (the logged ego path, simulator frame, (R, 2)).

    Projects the ego on the route (nearest vertex), walks ``lookahead`` metres along it and applies
    the +-2 m lateral rule of :func:`dsdrive.data.types.command_from_future` in the ego frame. A route
    shorter than 1 m gives ``STRAIGHT``.
    """
    route = np.asarray(route_xy, np.float64)
    if len(route) < 2:
        return "STRAIGHT"
    seg = np.linalg.norm(np.diff(route, axis=0), axis=1)
    if seg.sum() < 1.0:
        return "STRAIGHT"
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    s0 = cum[int(np.argmin(np.linalg.norm(route - ego.xy[None], axis=1)))]
    s = min(s0 + max(lookahead, 0.0), cum[-1])
    target = np.array([np.interp(s, cum, route[:, 0]), np.interp(s, cum, route[:, 1])])
    local = global_to_ego(target[None], ego.xy, ego.yaw)[0]
    return command_from_future(np.array([[0.0, 0.0]] * 5 + [local.tolist()]))


def build_planning_inputs(
    sample_id: str,
    scene_id: str,
    ego_trace: list[EgoState],
    agents: AgentState,
    map_cache: MapCache,
    route_xy: np.ndarray,
    command_lookahead: float,
) -> PlanningInputs:
    """Assemble the planner's inputs at the last entry of ``ego_trace``.

    Args:
        ego_trace: ego states at 10 Hz from the rollout start up to and including now.
        agents: simulated objects now (simulator frame).
        map_cache: the scenario's map.
        route_xy: (R, 2) the logged ego path (navigation route), simulator frame.
        command_lookahead: metres ahead along the route for the command (:func:`command_from_route`).

    Returns:
        :class:`PlanningInputs` in the ego frame of now; no future value.

    Raises:
        ValueError: ``ego_trace`` is empty.
    """
    if not ego_trace:
        raise ValueError("build_planning_inputs: empty ego_trace")
    ego = ego_trace[-1]
    stride = int(round(STEP_SECONDS / SIM_DT))
    hist = np.zeros((HISTORY_STEPS, 3), np.float32)
    hmask = np.zeros(HISTORY_STEPS, bool)
    for k in range(HISTORY_STEPS):  # k = 0 -> -2.0 s
        back = (HISTORY_STEPS - k) * stride
        if len(ego_trace) - 1 - back >= 0:
            past = ego_trace[-1 - back]
            hist[k, :2] = global_to_ego(past.xy[None], ego.xy, ego.yaw)[0]
            hist[k, 2] = wrap_angle(past.yaw - ego.yaw)
            hmask[k] = True
    v_local = rotate_vectors(ego.velocity, ego.yaw)
    if len(ego_trace) > stride:  # backward difference over 0.5 s, as the ScenarioNet builder
        prev = ego_trace[-1 - stride]
        span = stride * SIM_DT
        a_local = (v_local - rotate_vectors(prev.velocity, ego.yaw)) / span
        yaw_rate = float(wrap_angle(ego.yaw - prev.yaw)) / span
        smask = True
    else:
        a_local, yaw_rate, smask = np.zeros(2), 0.0, False
    status = np.array([v_local[0], v_local[1], a_local[0], a_local[1], yaw_rate, 0.0], np.float32)
    status_mask = np.array([True, True, smask, smask, smask, False])
    if len(status) != len(EGO_STATUS_FIELDS):
        raise AssertionError("ego_status layout out of sync with EGO_STATUS_FIELDS")
    return PlanningInputs(
        sample_id=sample_id,
        scene_id=scene_id,
        ego_history=hist,
        ego_history_mask=hmask,
        ego_status=status,
        ego_status_mask=status_mask,
        command=command_from_route(route_xy, ego, command_lookahead),
        agents=agents_in_ego_frame(agents, ego),
        map=map_cache.in_ego_frame(ego.xy, ego.yaw),
    )
