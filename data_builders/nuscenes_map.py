"""nuScenes map expansion -> ego-frame map polylines (:class:`dsdrive.data.types.MapPolylines`).

Each location's map is a :class:`dsdrive.data.world_state.MapQuery` (``polylines_at``), queried
by :func:`dsdrive.data.world_state.planning_inputs_from_world` like the ScenarioNet map index.

Classes follow the vectorised-map convention of MapTR / VAD (Liao et al., ICLR 2023; Jiang et
al., ICCV 2023), plus lane centrelines:

* ``lane_divider``: ``lane_divider`` and ``road_divider`` lines;
* ``road_edge``: exterior and interior rings of the union of ``road_segment`` and ``lane``
  polygons (MapTR's "boundary");
* ``ped_crossing``: exterior rings of ``ped_crossing`` polygons;
* ``lane_centerline``: ``lane`` and ``lane_connector`` arcline paths discretised every 0.5 m
  (``NuScenesMap.discretize_lanes``).

Each element is clipped to the ego-frame ROI box ``|x| <= half_x, |y| <= half_y`` (a clipped
line may split into several parts), transformed with the 2D ego pose (map layers carry no
height, so the ego pitch/roll is ignored: < 0.03 % of the distance for a 1 deg tilt) and
resampled at equal arc length to :data:`dsdrive.data.types.MAP_POINTS` points. Polylines are ordered
by distance to the ego, nearest first, and at most ``max_polylines`` are kept.

Without ``<dataroot>/maps/expansion/<location>.json`` the map is empty and the missing location
is counted once in the build report.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from shapely import STRtree, affinity
from shapely.geometry import LineString, MultiLineString, MultiPolygon, Point, Polygon, box
from shapely.ops import unary_union

from dsdrive.geometry import resample_polyline
from dsdrive.data.types import MAP_POINTS, MapPolylines

CENTERLINE_RESOLUTION_M = 0.5


def _lines_of(geom) -> list[LineString]:
    """LineStrings of a (Multi)LineString / GeometryCollection, ignoring points."""
    if geom.is_empty:
        return []
    if isinstance(geom, LineString):
        return [geom]
    if isinstance(geom, (MultiLineString,)) or hasattr(geom, "geoms"):
        out = []
        for g in geom.geoms:
            out.extend(_lines_of(g))
        return out
    return []


def _rings_of(geom) -> list[LineString]:
    polys = [geom] if isinstance(geom, Polygon) else list(geom.geoms) if isinstance(geom, MultiPolygon) else []
    rings = []
    for p in polys:
        rings.append(LineString(p.exterior.coords))
        rings.extend(LineString(r.coords) for r in p.interiors)
    return rings


class _LocationMap:
    """Global-frame map geometry of one location with an STR-tree per class (a ``MapQuery``)."""

    def __init__(self, dataroot: Path, location: str):
        from nuscenes.map_expansion.map_api import NuScenesMap

        m = NuScenesMap(dataroot=str(dataroot), map_name=location)
        dividers = [m.extract_line(r["line_token"]) for layer in ("lane_divider", "road_divider") for r in getattr(m, layer)]
        road = [m.extract_polygon(r["polygon_token"]) for layer in ("road_segment", "lane") for r in getattr(m, layer)]
        edges = _rings_of(unary_union(road)) if road else []
        crossings = [LineString(m.extract_polygon(r["polygon_token"]).exterior.coords) for r in m.ped_crossing]
        tokens = [r["token"] for r in m.lane] + [r["token"] for r in m.lane_connector]
        centres = [LineString(np.asarray(p)[:, :2]) for p in m.discretize_lanes(tokens, CENTERLINE_RESOLUTION_M).values() if len(p) >= 2]
        self.layers: dict[str, list] = {
            "lane_divider": [g for g in dividers if not g.is_empty],
            "road_edge": edges,
            "ped_crossing": crossings,
            "lane_centerline": centres,
        }
        self.trees = {k: STRtree(v) for k, v in self.layers.items() if v}

    def polylines_at(self, ego_xy: np.ndarray, ego_yaw: float, roi: tuple[float, float], max_polylines: int) -> MapPolylines:
        """Polylines (M, 20, 2), M <= ``max_polylines``, in the ego frame of (``ego_xy`` (2,)
        global m, ``ego_yaw`` rad), clipped to the box ``|x| <= roi[0], |y| <= roi[1]``, nearest first."""
        x0, y0 = float(ego_xy[0]), float(ego_xy[1])
        c, s = np.cos(ego_yaw), np.sin(ego_yaw)
        # global -> ego: [x', y'] = R(-yaw) ([x, y] - t)
        to_ego = [c, s, -s, c, -(c * x0 + s * y0), s * x0 - c * y0]
        hx, hy = roi
        roi_ego = box(-hx, -hy, hx, hy)
        query = Polygon([(x0 + c * px - s * py, y0 + s * px + c * py) for px, py in roi_ego.exterior.coords])
        found = []
        for kind, tree in self.trees.items():
            for idx in tree.query(query, predicate="intersects"):
                clipped = affinity.affine_transform(self.layers[kind][int(idx)], to_ego).intersection(roi_ego)
                for line in _lines_of(clipped):
                    if line.length > 1e-3:
                        found.append((line.distance(Point(0, 0)), kind, resample_polyline(np.asarray(line.coords), MAP_POINTS)))
        if not found:
            return MapPolylines.empty()
        found.sort(key=lambda t: t[0])
        found = found[:max_polylines]
        return MapPolylines([k for _, k, _ in found], np.stack([p for _, _, p in found]).reshape(-1, MAP_POINTS, 2).astype(np.float32))


class NuScenesMapExtractor:
    """The nuScenes map expansion, one :class:`_LocationMap` per location, loaded once.

    Args:
        dataroot: nuScenes folder holding ``maps/expansion/<location>.json``.
        report: counter receiving "map expansion absent for <location>" once per location.
    """

    def __init__(self, dataroot: str | Path, report: Counter):
        self.dataroot = Path(dataroot)
        self.report = report
        self._maps: dict[str, _LocationMap | None] = {}

    def at(self, location: str) -> _LocationMap | None:
        """The map query of ``location``, or None (counted once) without its expansion file."""
        if location not in self._maps:
            if (self.dataroot / "maps" / "expansion" / f"{location}.json").exists():
                self._maps[location] = _LocationMap(self.dataroot, location)
            else:
                self.report[f"map expansion absent for {location} (empty map)"] += 1
                self._maps[location] = None
        return self._maps[location]
