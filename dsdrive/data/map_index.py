"""Map query over ScenarioNet-format map features -> ego-frame map polylines (``MAP_TYPES``, 20 points each).

ScenarioNet's map format (Li et al., "ScenarioNet", NeurIPS 2023 D&B) is also what MetaDrive
replays, so both the ScenarioNet builder and the closed-loop simulator read their map through
this module: one :class:`MapIndex` per scenario, queried by
:func:`dsdrive.data.world_state.planning_inputs_from_world` at each ego pose.

Type mapping (ScenarioNet's ``MetaDriveType`` names):

* ``LANE_*`` (e.g. ``LANE_SURFACE_STREET``) centreline ``polyline`` -> ``lane_centerline``;
* ``ROAD_LINE_*`` -> ``lane_divider``, **except** ids ``boundary_<k>``: ScenarioNet's nuScenes
  converter stores the drivable-area boundary there as ``ROAD_LINE_SOLID_SINGLE_WHITE``, which
  is a road edge -> ``road_edge``;
* ``ROAD_EDGE_*`` and ``BOUNDARY_*`` -> ``road_edge``;
* ``CROSSWALK`` polygon (closed ring) -> ``ped_crossing``;
* lane ``polygon`` s are not used (their outlines duplicate dividers and edges); other types
  (stop signs, speed bumps, driveways) are ignored.

Region of interest (ROI): an ego-frame box |x| <= 50 m, |y| <= 30 m by default (a 100 m x 60 m
box; DistillDrive/SparseDrive use 60 m x 30 m for map *perception*, a planner wants more look-
ahead: 3 s at 17 m/s is 51 m). Each polyline is clipped to the ROI (a polyline leaving and
re-entering gives several pieces), the pieces nearest to the ego are kept (``max_polylines``)
and each is resampled to ``MAP_POINTS`` points at equal arc length, nearest first.

Frames: features and the query pose are in one global frame (a map's metres: nuScenes global,
or MetaDrive's centralised scenario frame); the output is in the ego frame of the pose (x
forward, y left, origin at the ego position).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from dsdrive.data.types import MAP_POINTS, MapPolylines
from dsdrive.geometry import ego_to_global, global_to_ego, resample_polyline


def map_type_of(feature_id: str, scenarionet_type: str) -> str | None:
    """The ``MAP_TYPES`` class of a ScenarioNet map feature, or None when unused."""
    t = str(scenarionet_type).upper()
    if t.startswith("LANE_"):
        return "lane_centerline"
    if t.startswith("ROAD_LINE_"):
        return "road_edge" if str(feature_id).startswith("boundary_") else "lane_divider"
    if t.startswith("ROAD_EDGE") or t.startswith("BOUNDARY"):
        return "road_edge"
    if t == "CROSSWALK":
        return "ped_crossing"
    return None


def _feature_points(feature: dict, kind: str) -> np.ndarray | None:
    if kind == "ped_crossing" and feature.get("polygon") is not None:
        ring = np.asarray(feature["polygon"], dtype=np.float64)[:, :2]
        return np.concatenate([ring, ring[:1]]) if len(ring) else ring
    if feature.get("polyline") is None:
        return None
    return np.asarray(feature["polyline"], dtype=np.float64)[:, :2]


@dataclass
class MapSkip:
    """A map feature left out of the index: ``reason`` names the feature id and the problem;
    ``code`` groups skips in build reports (``malformed feature`` | ``non-finite feature``)."""

    reason: str
    code: str


class MapIndex:
    """The usable map polylines of one scenario in the global frame, with an STR-tree.

    Attributes:
        types: per polyline, a class from ``MAP_TYPES``.
        lines: (F,) shapely LineStrings, global metres.
        skipped: the features left out by :meth:`from_features` (malformed or non-finite).
    """

    def __init__(self, types: list[str], lines: np.ndarray, skipped: list[MapSkip] | None = None):
        self.types = np.asarray(types, dtype=object)
        self.lines = lines
        self.tree = shapely.STRtree(lines)
        self.skipped = list(skipped or [])

    @classmethod
    def from_features(cls, features: dict) -> "MapIndex":
        """Index a scenario's ``map_features`` (id -> feature dict, global frame).

        Features of unused types are ignored; malformed features (not a dict, unreadable points)
        and features with non-finite points are left out and listed in :attr:`skipped`, so one
        bad feature does not lose the map.
        """
        types, coords, skipped = [], [], []
        for fid, feature in features.items():
            if not isinstance(feature, dict):
                skipped.append(MapSkip(f"map_features[{fid!r}] is {type(feature).__name__}, expected a dict", "malformed feature"))
                continue
            kind = map_type_of(fid, feature.get("type", ""))
            if kind is None:
                continue
            try:
                pts = _feature_points(feature, kind)
            except (ValueError, TypeError, IndexError) as exc:
                skipped.append(MapSkip(f"map_features[{fid!r}]: malformed points ({exc})", "malformed feature"))
                continue
            if pts is None or len(pts) < 2:
                continue
            if not np.isfinite(pts).all():
                skipped.append(MapSkip(f"map_features[{fid!r}]: non-finite points", "non-finite feature"))
                continue
            types.append(kind)
            coords.append(pts)
        lines = np.asarray([shapely.LineString(c) for c in coords], dtype=object) if coords else np.zeros(0, dtype=object)
        return cls(types, lines, skipped)

    def polylines_at(self, ego_xy: np.ndarray, ego_yaw: float, roi: tuple[float, float], max_polylines: int) -> MapPolylines:
        """Map polylines in the ego frame of pose (``ego_xy`` (2,) global m, ``ego_yaw`` rad).

        Returns:
            :class:`MapPolylines` with points (M, 20, 2), M <= ``max_polylines``, every point
            inside the ROI box |x| <= roi[0], |y| <= roi[1], nearest polylines first.
        """
        if len(self.lines) == 0:
            return MapPolylines.empty()
        hx, hy = roi
        corners = ego_to_global(np.array([[hx, hy], [-hx, hy], [-hx, -hy], [hx, -hy]]), ego_xy, ego_yaw)
        box = shapely.Polygon(corners)
        idx = self.tree.query(box, predicate="intersects")
        if len(idx) == 0:
            return MapPolylines.empty()
        parts, owner = shapely.get_parts(shapely.intersection(self.lines[idx], box), return_index=True)
        keep = (shapely.get_type_id(parts) == 1) & (shapely.length(parts) > 1e-3)
        parts, owner = parts[keep], idx[owner[keep]]
        order = np.argsort(shapely.distance(parts, shapely.Point(ego_xy)), kind="stable")[:max_polylines]
        points = np.empty((len(order), MAP_POINTS, 2), np.float32)
        for k, i in enumerate(order):
            local = global_to_ego(shapely.get_coordinates(parts[i]), ego_xy, ego_yaw)
            points[k] = np.clip(resample_polyline(local, MAP_POINTS), [-hx, -hy], [hx, hy])
        return MapPolylines([str(t) for t in self.types[owner[order]]], points)
