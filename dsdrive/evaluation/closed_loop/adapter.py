"""Simulator state -> :class:`dsdrive.data.types.PlanningInputs` (what a planner may see; no future).

The rollout (:mod:`dsdrive.evaluation.closed_loop.rollout`) keeps the ego's own driven states (10 Hz) and, every
0.5 s, asks this module for the planner's inputs. This module only gathers the simulator's
state into a :class:`dsdrive.data.world_state.WorldState` and calls
:func:`dsdrive.data.world_state.planning_inputs_from_world`, the function the builders call too,
so a planner sees in closed loop exactly the kind of input it was trained on (see that module
for every convention: ego frame, history, status, agents, map, command). What is simulator-
specific, and decided here:

* **Frame**: MetaDrive's *centralised* scenario frame (global map metres minus the ego's
  initial position, axes unchanged; checked against the log at replay). The map and the route
  come from the same scenario dict, so they are in the same frame.
* **Ego track**: the ego's simulated states from the rollout start (= log step 0), at
  ``SIM_DT`` = 0.1 s, with MetaDrive's velocity; no steering measurement (ScenarioNet logs have
  none, so planners are trained without it).
* **Route** (command source): the logged ego path on the log clock (step x ``SIM_DT``)
  (:class:`ScenarioLog`); the command is the route point the log reaches 3 s after the ego's
  place on it, which at logged times on the logged path is the builders' +3 s rule exactly.
* **Heights**: MetaDrive objects carry no box-centre height, so box z comes from the log: each
  agent's logged z at the current step (its nearest valid step; an object the log lacks rests
  on the ego's ground, z = ego z + height / 2) minus the logged ego z at the ego's place on the
  route, as in training samples.
* **Options**: :class:`dsdrive.data.world_state.FeatureOptions` defaults, the builders' defaults
  (agents within 50 m, map box |x| <= 50 m, |y| <= 30 m, at most 100 polylines).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dsdrive.constants import METADRIVE_EGO_LENGTH_M, METADRIVE_EGO_WIDTH_M, SIM_DT
from dsdrive.data.map_index import MapIndex, map_type_of
from dsdrive.data.types import AGENT_TYPES, PlanningInputs
from dsdrive.data.world_state import AgentState, EgoTrack, FeatureOptions, Route, WorldState, planning_inputs_from_world

__all__ = ["AgentState", "EgoState", "MapCache", "ScenarioLog", "agent_type_of", "build_planning_inputs"]


def agent_type_of(metadrive_type: str) -> str:
    """MetaDrive object type -> :data:`dsdrive.data.types.AGENT_TYPES` (unknown -> ``OTHER``)."""
    t = str(metadrive_type).upper()
    return t if t in AGENT_TYPES else "OTHER"


@dataclass
class MapCache:
    """A scenario's map in the simulator frame: the :class:`~dsdrive.data.map_index.MapIndex` the
    planner inputs are queried from, the raw polylines (BEV plots) and the lane-surface polygons
    (drivable area, DAC).

    Attributes:
        index: :class:`dsdrive.data.map_index.MapIndex` over the features.
        types: K dsdrive map types of ``polylines``.
        polylines: K arrays (P_k, 2), metres, simulator frame.
        lane_polygons: lane-surface polygons (P, 2) where the scenario has them.
        boundary_rings: ``boundary_*`` polylines (ScenarioNet's nuScenes drivable-area outline).
        skipped: messages about malformed map features (left out).
    """

    index: MapIndex
    types: list[str]
    polylines: list[np.ndarray]
    lane_polygons: list[np.ndarray]
    boundary_rings: list[np.ndarray]
    skipped: list[str]

    @classmethod
    def from_scenario(cls, scenario: dict, name: str = "scenario") -> "MapCache":
        """Read ``scenario['map_features']`` (ScenarioNet dict, simulator frame); ``name`` (the
        scenario file) prefixes the messages about skipped features."""
        feats = dict(scenario.get("map_features") or {})
        index = MapIndex.from_features(feats)
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
        return cls(index, types, lines, polys, rings, [f"map: {name}: {s.reason}" for s in index.skipped])


@dataclass
class EgoState:
    """The ego at one simulator step (simulator frame): ``xy`` (2,) m, ``yaw`` rad, ``velocity``
    (2,) m/s, ``steering`` (MetaDrive's normalised [-1, 1]), ``length``/``width`` m."""

    xy: np.ndarray
    yaw: float
    velocity: np.ndarray
    steering: float = 0.0
    length: float = METADRIVE_EGO_LENGTH_M
    width: float = METADRIVE_EGO_WIDTH_M


@dataclass
class ScenarioLog:
    """What the planner inputs read from the scenario log besides the map (simulator frame).

    Attributes:
        route: the logged ego path (valid, finite steps) on the log clock ``step * SIM_DT``.
        route_z: (R,) logged ego height at each route vertex (m).
        track_z: track id -> (T,) logged box-centre height (m), NaN where the track is invalid.
    """

    route: Route
    route_z: np.ndarray
    track_z: dict[str, np.ndarray]

    @classmethod
    def from_scenario(cls, scenario: dict) -> "ScenarioLog":
        """Read the ego route and track heights of a ScenarioNet scenario dict.

        Raises:
            ValueError: the ego track has no valid, finite step (names the field).
        """
        sdc = scenario["metadata"]["sdc_id"]
        track_z, route = {}, None
        for tid, track in scenario["tracks"].items():
            st = track["state"]
            pos = np.asarray(st["position"], np.float64)
            valid = np.asarray(st["valid"]).astype(bool).reshape(-1)
            z = pos[:, 2] if pos.shape[1] > 2 else np.zeros(len(pos))
            if str(tid) == str(sdc):
                ok = valid & np.isfinite(pos[:, :2]).all(1) & np.isfinite(np.asarray(st["heading"], np.float64).reshape(-1))
                steps = np.flatnonzero(ok)
                if len(steps) == 0:
                    raise ValueError(f"scenario {scenario.get('id', '?')}: field tracks[{sdc!r}].state has no valid ego step")
                route, route_z = Route(pos[steps, :2], steps * SIM_DT), np.nan_to_num(z[steps])
            else:
                track_z[str(tid)] = np.where(valid & np.isfinite(z), z, np.nan)
        return cls(route, route_z, track_z)

    def ego_z(self, ego_xy: np.ndarray, t_now: float) -> float:
        """Logged ego height at the ego's place on the route (m)."""
        return float(self.route_z[self.route.nearest(ego_xy, t_now)])

    def agent_z(self, agents: AgentState, step: int, ego_z: float) -> np.ndarray:
        """(N,) box-centre heights of ``agents`` at simulator step ``step``: each track's logged z
        at that step (else at its nearest valid step); ``ego_z + height / 2`` for an object the
        log does not have."""
        out = ego_z + 0.5 * agents.lwh[:, 2]
        for k, tid in enumerate(agents.ids):
            z = self.track_z.get(tid)
            if z is None or not np.isfinite(z).any():
                continue
            good = np.flatnonzero(np.isfinite(z))
            out[k] = z[good[np.argmin(np.abs(good - step))]]
        return out


def build_planning_inputs(
    sample_id: str,
    scene_id: str,
    ego_trace: list[EgoState],
    agents: AgentState,
    map_cache: MapCache,
    log: ScenarioLog,
) -> PlanningInputs:
    """Assemble the planner's inputs at the last entry of ``ego_trace`` through
    :func:`dsdrive.data.world_state.planning_inputs_from_world`.

    Args:
        ego_trace: ego states at 10 Hz from the rollout start (log step 0) up to and including now.
        agents: simulated objects now (simulator frame); ``z`` None = taken from ``log``.
        map_cache: the scenario's map.
        log: the scenario's route and logged heights (:meth:`ScenarioLog.from_scenario`).

    Returns:
        :class:`PlanningInputs` in the ego frame of now; no future value.

    Raises:
        ValueError: ``ego_trace`` is empty, or a state is non-finite.
    """
    if not ego_trace:
        raise ValueError("build_planning_inputs: empty ego_trace")
    xy = np.array([np.asarray(e.xy, np.float64)[:2] for e in ego_trace])
    step = len(ego_trace) - 1
    ego_z = log.ego_z(xy[-1], step * SIM_DT)
    if agents.z is None:
        agents = replace(agents, z=log.agent_z(agents, step, ego_z))
    track = EgoTrack(SIM_DT, xy, [e.yaw for e in ego_trace], ego_z, np.array([np.asarray(e.velocity, np.float64)[:2] for e in ego_trace]))
    world = WorldState(sample_id, scene_id, track, agents, log.route, map_cache.index)
    return planning_inputs_from_world(world, FeatureOptions())
