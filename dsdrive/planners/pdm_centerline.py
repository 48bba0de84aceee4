"""The route centreline of PDM-Closed (:mod:`dsdrive.planners.pdm_closed`, step 1), ego frame.

PDM-Closed (Dauner et al., CoRL 2023) follows the lane centreline of its route. Ours is built from
an ego-frame map (:class:`dsdrive.data.types.MapPolylines`; x forward, y left, metres) and a
route, by :func:`route_centerline`:

* **with a route** (the logged ego path, or a sample's logged future): the route, resampled every
  1 m, is extended when shorter than needed by the lane walk below (least turning), then
  straight along its last heading; each point moves onto the nearest lane centreline heading the
  same way (within 30 deg) when one lies within 1 m, partly up to 2 m (linear weight), not at all
  beyond (there the route is kept: parking lots, maps without lanes); the result is smoothed over
  +-3 m and extended 5 m backwards (the ego's projection falls inside).
* **without a route** (a state with no logged future): a **lane walk** from the ego: the start
  lane is the nearest lane centreline within 3 m heading within 45 deg of the ego; lanes within
  0.5 m of it are the branches of a fork; at each lane end the successors are the lanes starting
  within 1.5 m heading within 60 deg. The command chooses among branches and successors for the
  first ``command_m`` metres (LEFT: the most left-turning one, RIGHT: the most right-turning,
  STRAIGHT: the least turning), beyond it the least turning one. No lane at the ego: straight
  ahead. ScenarioNet maps have no lane graph, so successors are found by geometry.
* **lane change by command** (without a route, when the caller gives ``lane_change_m``): the
  command is the +-2 m lateral rule at +3 s (:func:`dsdrive.data.types.command_from_future`), so
  LEFT / RIGHT also means "change lanes". When the walk above never reaches 2 m to the
  commanded side within ``lane_change_m`` of arc length (a left-turn lane under RIGHT, a straight
  lane under LEFT with a lane beside it), the walk starts instead on the nearest lane beside
  the ego on that side (its nearest point within 5 m, at least 1 m to that side, heading within
  30 deg) whose walk reaches at least 1 m further to that side. That centreline starts beside
  the ego (``Centerline.lane_change``), so the ego's lateral offset from it is the lane change
  still to do; the lane-following priors close it (:func:`lane_change_offsets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsdrive.data.types import COMMAND_LATERAL_THRESHOLD_M, COMMANDS, MapPolylines
from dsdrive.geometry import resample_polyline, wrap_angle

CENTERLINE_STEP_M = 1.0
"""Spacing (m) of the centreline points."""
SNAP_NEAR_M, SNAP_FAR_M = 1.0, 2.0
"""A route point within SNAP_NEAR_M of an aligned lane centreline moves onto it; beyond SNAP_FAR_M it stays."""
SNAP_MAX_ANGLE = np.deg2rad(30.0)
"""Largest heading difference (rad) between the route and a lane it is matched to."""
JOIN_M = 1.5
"""A lane whose start lies within this (m) of a lane's end is its successor in the lane walk."""
START_M = 3.0
"""The lane walk starts on a lane within this distance (m) of the ego, heading within 45 deg."""
FORK_M = 0.5
"""Start lanes within this (m) of the nearest one are branches of one fork (the command picks one)."""
LANE_CHANGE_M = 5.0
"""A lane beside the ego whose nearest point lies within this (m) is a lane-change target."""
LANE_CHANGE_MIN_SIDE_M = 1.0
"""A lane-change target lies at least this far (m) to the commanded side of the ego."""
LANE_CHANGE_ANGLE = np.deg2rad(30.0)
"""Largest heading difference (rad) between the ego and a lane-change target."""
LANE_CHANGE_GAIN_M = 1.0
"""A lane change is taken only when its walk reaches this much (m) further to the commanded side."""


@dataclass
class Centerline:
    """A centreline in the ego frame: ``xy`` (K, 2) m every ~1 m, ``s`` (K,) arc length (m),
    ``yaw`` (K,) rad, ``curvature`` (K,) 1/m (left positive); ``source`` says what it was made from
    and ``lane_fraction`` the share of its points matched to a lane centreline; ``lane_change``:
    it is a lane beside the ego, taken by the command (module docstring)."""

    xy: np.ndarray
    s: np.ndarray
    yaw: np.ndarray
    curvature: np.ndarray
    source: str
    lane_fraction: float
    lane_change: bool = False

    @classmethod
    def from_points(cls, xy: np.ndarray, source: str, lane_fraction: float, lane_change: bool = False) -> "Centerline":
        """Resample (P, 2) points at :data:`CENTERLINE_STEP_M` and derive heading and curvature;
        ``lane_change``: the centreline is a lane beside the ego (module docstring)."""
        xy = dedupe_points(xy)
        length = float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum())
        xy = resample_polyline(xy, max(int(np.ceil(length / CENTERLINE_STEP_M)) + 1, 2))
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
        d = np.gradient(xy, axis=0)
        yaw = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
        curv = np.gradient(yaw) / np.maximum(np.gradient(s), 1e-6) if len(s) > 2 else np.zeros(len(s))
        return cls(xy, s, yaw, _smooth(curv, 5), source, lane_fraction, lane_change)

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Station (arc length, m) and signed lateral offset (m, left positive) of points (P, 2)."""
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        a, d = self.xy[:-1], np.diff(self.xy, axis=0)
        n2 = np.maximum((d * d).sum(1), 1e-12)
        u = np.clip(((pts[:, None] - a[None]) * d[None]).sum(-1) / n2, 0.0, 1.0)  # (P, K-1)
        dist = np.linalg.norm(pts[:, None] - (a[None] + u[..., None] * d[None]), axis=-1)
        i = np.argmin(dist, axis=1)
        rows = np.arange(len(pts))
        cross = d[i, 0] * (pts[:, 1] - a[i, 1]) - d[i, 1] * (pts[:, 0] - a[i, 0])
        return self.s[i] + u[rows, i] * np.sqrt(n2[i]), np.where(cross >= 0, 1.0, -1.0) * dist[rows, i]

    def pose(self, station: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points (T, 2) at ``station`` (T,) m along the centreline, ``offset`` (T,) m to its left,
        and the centreline heading there (T,) rad."""
        x, y = np.interp(station, self.s, self.xy[:, 0]), np.interp(station, self.s, self.xy[:, 1])
        yaw = np.interp(station, self.s, self.yaw)
        return np.stack([x - np.sin(yaw) * offset, y + np.cos(yaw) * offset], -1), yaw


def dedupe_points(xy: np.ndarray, eps: float = 0.05) -> np.ndarray:
    """(P, 2) points without consecutive repeats closer than ``eps`` (m)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > eps])
    return xy[keep]


def _smooth(values: np.ndarray, half: int) -> np.ndarray:
    """Moving average over +-``half`` samples along axis 0 (the ends use the samples available)."""
    v = np.asarray(values, np.float64)
    if half < 1 or len(v) < 3:
        return v
    kernel = np.ones(2 * half + 1)
    ones = np.convolve(np.ones(len(v)), kernel, mode="same")
    if v.ndim == 1:
        return np.convolve(v, kernel, mode="same") / ones
    return np.stack([np.convolve(v[:, j], kernel, mode="same") / ones for j in range(v.shape[1])], -1)


def _headings(xy: np.ndarray) -> np.ndarray:
    d = np.gradient(xy, axis=0) if len(xy) > 1 else np.array([[1.0, 0.0]])
    return np.arctan2(d[:, 1], d[:, 0])


def _lanes(map_: MapPolylines) -> list[np.ndarray]:
    """The lane centrelines of an ego-frame map, each (P, 2), longer than 0.5 m."""
    out = []
    for t, p in zip(map_.types, np.asarray(map_.points, np.float64).reshape(len(map_.types), -1, 2)):
        if t == "lane_centerline":
            p = dedupe_points(p)
            if len(p) >= 2 and np.linalg.norm(np.diff(p, axis=0), axis=1).sum() > 0.5:
                out.append(p)
    return out


def _yaw_of(d: np.ndarray) -> float:
    return float(np.arctan2(d[1], d[0]))


def _foot(lane: np.ndarray, point: np.ndarray) -> tuple[float, int, np.ndarray]:
    """Distance (m) from ``point`` (2,) to ``lane`` (P, 2), the index of the nearest segment, and the foot point (2,)."""
    a, d = lane[:-1], np.diff(lane, axis=0)
    u = np.clip(((point - a) * d).sum(1) / np.maximum((d * d).sum(1), 1e-12), 0.0, 1.0)
    feet = a + u[:, None] * d
    dist = np.linalg.norm(point - feet, axis=1)
    k = int(np.argmin(dist))
    return float(dist[k]), k, feet[k]


def _lane_walk(lanes: list[np.ndarray], start: np.ndarray, yaw: float, command: str, length: float,
               command_m: float) -> np.ndarray | None:
    """Points (Q, 2) along the lanes for ``length`` m from ``start`` (2,) heading ``yaw`` (ego frame):
    the start lane is the nearest one within ``START_M`` heading within 45 deg; where several lie
    within ``FORK_M`` of the nearest (the branches of a fork), ``command`` picks one as it picks
    successors (see the module docstring), for the first ``command_m`` m. None when no lane
    starts the walk."""
    starts = []  # (turn to the lane's end, lane, next vertex, distance, heading error)
    for j, lane in enumerate(lanes):
        dist, k, _ = _foot(lane, start)
        dyaw = abs(float(wrap_angle(_yaw_of(lane[k + 1] - lane[k]) - yaw)))
        if dist < START_M and dyaw < np.pi / 4:
            starts.append((float(wrap_angle(_yaw_of(lane[-1] - lane[-2]) - yaw)), j, k + 1, dist, dyaw))
    if not starts:
        return None
    near = min(s[3] for s in starts)
    starts = [s for s in starts if s[3] <= near + FORK_M]  # the lane the ego is on (at a fork: every branch)
    pick = max if command == "LEFT" else min
    _, j, k, _, _ = (pick(starts) if command in ("LEFT", "RIGHT") else min(starts, key=lambda s: (abs(s[0]), s[3] + 2.0 * s[4])))
    return _walk_on(lanes, j, k, start, command, length, command_m)


def _walk_on(lanes: list[np.ndarray], j: int, k: int, start: np.ndarray, command: str, length: float,
             command_m: float) -> np.ndarray:
    """Points (Q, 2): lane ``j`` from its vertex ``k`` on, then its successors chosen by ``command``
    for the first ``command_m`` m (the least turning one beyond), until ``length`` m from ``start`` (2,)."""
    pieces, visited = [lanes[j][k:]], {j}
    travelled = float(np.linalg.norm(np.diff(np.vstack([start, lanes[j][k:]]), axis=0), axis=1).sum())
    while travelled < length:
        lane = lanes[j]
        end, end_yaw = lane[-1], _yaw_of(lane[-1] - lane[-2])
        options = []
        for i, cand in enumerate(lanes):
            if i in visited or np.linalg.norm(cand[0] - end) > JOIN_M:
                continue
            if abs(float(wrap_angle(_yaw_of(cand[1] - cand[0]) - end_yaw))) < np.pi / 3:
                options.append((float(wrap_angle(_yaw_of(cand[-1] - cand[-2]) - end_yaw)), i))
        if not options:
            break
        rule = command if travelled < command_m else "STRAIGHT"
        _, j = (max(options) if rule == "LEFT" else min(options) if rule == "RIGHT"
                else min(options, key=lambda o: (abs(o[0]), o[1])))
        visited.add(j)
        pieces.append(lanes[j])
        travelled += float(np.linalg.norm(np.diff(lanes[j], axis=0), axis=1).sum())
    return dedupe_points(np.vstack(pieces))


def _reach_to_side(walk: np.ndarray, side: float, within_m: float) -> float:
    """How far (m) ``walk`` (Q, 2, ego frame, starting at or beside the ego) reaches to ``side``
    (+1 left, -1 right) within ``within_m`` m of arc length: the largest ``side * y``."""
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(walk, axis=0), axis=1))])
    return float((side * walk[arc <= max(within_m, arc[min(1, len(arc) - 1)]), 1]).max())


def _lane_change_walk(lanes: list[np.ndarray], current: np.ndarray | None, command: str, length: float,
                      command_m: float, lane_change_m: float) -> np.ndarray | None:
    """The walk (Q, 2) from the foot point on the nearest lane beside the ego to the ``command``'s
    side, when the ``current`` walk (from the ego, or None) does not reach 2 m to that side within
    ``lane_change_m`` m and that lane's walk reaches :data:`LANE_CHANGE_GAIN_M` further (module
    docstring); else None."""
    if command not in ("LEFT", "RIGHT"):
        return None
    side = 1.0 if command == "LEFT" else -1.0
    have = _reach_to_side(current, side, lane_change_m) if current is not None else 0.0
    if have >= COMMAND_LATERAL_THRESHOLD_M:
        return None
    beside = []  # (distance, lane, next vertex, foot)
    for j, lane in enumerate(lanes):
        dist, k, foot = _foot(lane, np.zeros(2))
        dyaw = abs(float(wrap_angle(_yaw_of(lane[k + 1] - lane[k]))))
        if dist < LANE_CHANGE_M and dyaw < LANE_CHANGE_ANGLE and side * foot[1] >= LANE_CHANGE_MIN_SIDE_M:
            beside.append((dist, j, k + 1, foot))
    for _, j, k, foot in sorted(beside, key=lambda b: b[0]):
        walk = np.vstack([foot, _walk_on(lanes, j, k, np.zeros(2), command, length, command_m)])
        if _reach_to_side(walk, side, lane_change_m) >= have + LANE_CHANGE_GAIN_M:
            return dedupe_points(walk)
    return None


def _extend_straight(xy: np.ndarray, ahead: float, behind: float) -> np.ndarray:
    """``xy`` (P, 2) extended straight ``behind`` m before its start and ``ahead`` m past its end."""
    yaw = _headings(xy)
    out = [xy]
    if behind > 0:
        out.insert(0, xy[0] - behind * np.array([[np.cos(yaw[0]), np.sin(yaw[0])]]))
    if ahead > 0:
        out.append(xy[-1] + ahead * np.array([[np.cos(yaw[-1]), np.sin(yaw[-1])]]))
    return np.vstack(out)


def route_centerline(map_: MapPolylines, route_xy: np.ndarray | None, command: str, length_m: float,
                     command_m: float = 30.0, lane_change_m: float | None = None) -> Centerline:
    """The centreline ahead of the ego (see the module docstring, step 1), ego frame.

    Args:
        map_: the ego-frame map (lane centrelines are used).
        route_xy: (R, 2) the route in the ego frame, in driving order, or None (lane walk by the
            command). A route shorter than 2 m counts as none.
        command: one of :data:`dsdrive.data.types.COMMANDS` (used without a route).
        length_m: the centreline reaches at least this far (m) past the ego.
        command_m: distance (m) over which the command picks the successor lanes.
        lane_change_m: without a route, the arc length (m) within which the walk must reach 2 m to
            the side of a LEFT / RIGHT command, else it changes lanes (module docstring); None:
            never (PDM-Closed's own lane walk).

    Returns:
        A :class:`Centerline` starting 5 m behind the route's start (the ego's projection is inside).

    Raises:
        ValueError: an unknown command or a non-finite route (names the value).
    """
    if command not in COMMANDS:
        raise ValueError(f"route_centerline: command {command!r} is not one of {COMMANDS}")
    lanes = _lanes(map_)
    if route_xy is not None and not np.isfinite(np.asarray(route_xy, np.float64)).all():
        raise ValueError("route_centerline: the route has non-finite points")
    route = None if route_xy is None else dedupe_points(route_xy)
    if route is not None and np.linalg.norm(np.diff(route, axis=0), axis=1).sum() < 2.0:
        route = None
    source, lane_change = "route", False
    if route is None:
        route = _lane_walk(lanes, np.zeros(2), 0.0, command, length_m, command_m)
        source = "lane walk" if route is not None else "straight (no lane at the ego)"
        route = np.vstack([np.zeros(2), route]) if route is not None else np.array([[0.0, 0.0], [1.0, 0.0]])
        if lane_change_m is not None:
            beside = _lane_change_walk(lanes, route if source == "lane walk" else None, command, length_m, command_m, lane_change_m)
            if beside is not None:
                route, source, lane_change = beside, f"lane change {command}", True
    have = float(np.linalg.norm(route[-1]))
    if have < length_m and source == "route":
        more = _lane_walk(lanes, route[-1], float(_headings(route)[-1]), "STRAIGHT", length_m - have, 0.0)
        if more is not None:
            route, source = np.vstack([route, more]), "route + lane walk"
    dense = Centerline.from_points(route, source, 0.0).xy
    dense = _extend_straight(dense, max(length_m - float(np.linalg.norm(dense[-1])), 0.0) + 5.0, 0.0)
    dense = Centerline.from_points(dense, source, 0.0).xy
    frac = 0.0
    if lanes:
        segs_a = np.concatenate([lane[:-1] for lane in lanes])
        segs_d = np.concatenate([np.diff(lane, axis=0) for lane in lanes])
        seg_yaw = np.arctan2(segs_d[:, 1], segs_d[:, 0])
        n2 = np.maximum((segs_d ** 2).sum(1), 1e-12)
        u = np.clip(((dense[:, None] - segs_a[None]) * segs_d[None]).sum(-1) / n2, 0.0, 1.0)
        foot = segs_a[None] + u[..., None] * segs_d[None]  # (P, S, 2)
        dist = np.linalg.norm(dense[:, None] - foot, axis=-1)
        aligned = np.abs(wrap_angle(seg_yaw[None] - _headings(dense)[:, None])) < SNAP_MAX_ANGLE
        dist = np.where(aligned, dist, np.inf)
        k = np.argmin(dist, axis=1)
        d = dist[np.arange(len(dense)), k]
        w = np.clip((SNAP_FAR_M - d) / (SNAP_FAR_M - SNAP_NEAR_M), 0.0, 1.0)
        dense = dense + w[:, None] * (foot[np.arange(len(dense)), k] - dense)
        frac = float((w > 0).mean())
        source = f"{source} matched to lanes" if frac > 0 else f"{source} (no lane matched)"
    dense = _extend_straight(_smooth(dense, int(round(3.0 / CENTERLINE_STEP_M))), 0.0, 5.0)
    return Centerline.from_points(dense, source, frac, lane_change)
