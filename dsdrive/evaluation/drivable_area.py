"""The drivable area of a scenario, from the scenario's own map, and drivable-area compliance (DAC).

One module for both scores that need it: the closed-loop metrics
(:mod:`dsdrive.evaluation.closed_loop.metrics`, simulator frame) and the per-sample PDM score
(:mod:`dsdrive.evaluation.pdm_score`, the scenario's global frame). Both build it from a
ScenarioNet ``map_features`` dict; the frame is whatever frame the features are in (MetaDrive's
centralised scenario frame or ScenarioNet's global frame), metres.

The area (shapely, even-odd fill of rings, then a union):

* **boundary rings**: ``boundary_*`` polylines that close (first and last point within
  :data:`RING_CLOSE_M`) - ScenarioNet's nuScenes converter writes nuScenes' drivable-area
  outline (road surface, including parking lanes and intersections) this way. Rings nested in
  rings are holes (even-odd: the rings are XOR-ed from the largest down), as in nuScenes'
  ``drivable_area`` polygons with their interior holes;
* **lane surfaces**: every ``LANE_*`` feature's ``polygon`` (the lane's surface);
* without any boundary ring (e.g. Waymo or MetaDrive PG scenarios): lane polygons plus every
  lane centreline buffered by :data:`LANE_HALF_WIDTH_M` (half a 3.5 m lane).

DAC (NAVSIM, Dauner et al., NeurIPS 2024; nuPlan's ``drivable_area_compliance``): 1 if all four
corners of the ego box stay inside the area at every evaluated step, else 0. The ego box is
given by its centre, heading, length and width (:func:`dsdrive.geometry.box_corners`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from dsdrive.geometry import box_corners

RING_CLOSE_M = 0.5
"""A ``boundary_*`` polyline whose ends are closer than this (m) is a closed ring."""
LANE_HALF_WIDTH_M = 1.75
"""Half lane width (m) used to buffer lane centrelines where the map has no outline."""


class NoDrivableArea(ValueError):
    """The scenario's map has nothing to build a drivable area from (the message names the
    scenario and what was missing)."""


def _points(feat: dict, key: str) -> np.ndarray | None:
    pts = feat.get(key)
    if pts is None:
        return None
    try:
        arr = np.asarray(pts, np.float64)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 2 or arr.shape[1] < 2 or not np.isfinite(arr[:, :2]).all():
        return None
    return arr[:, :2]


@dataclass
class DrivableArea:
    """A prepared shapely geometry of the drivable surface (one metric frame, metres).

    Attributes:
        geometry: the area (Polygon / MultiPolygon), prepared for fast point tests.
        source: how it was built: ``boundary rings + lane polygons`` or
            ``lane polygons + buffered centrelines``.
        num_rings, num_lane_polygons, num_centrelines: what went into it.
    """

    geometry: shapely.Geometry
    source: str
    num_rings: int = 0
    num_lane_polygons: int = 0
    num_centrelines: int = 0

    @classmethod
    def from_parts(cls, rings: list[np.ndarray], lane_polygons: list[np.ndarray], centrelines: list[np.ndarray],
                   name: str = "scenario") -> "DrivableArea":
        """Build the area (see the module docstring) from (P, 2) arrays in one frame.

        Args:
            rings: ``boundary_*`` polylines (only the closed ones are used).
            lane_polygons: lane-surface polygons.
            centrelines: lane centrelines (used only when no ring closes).
            name: the scenario, for the error message.

        Raises:
            NoDrivableArea: nothing usable (no closed ring, lane polygon or centreline).
        """
        closed = [r for r in rings if len(r) >= 4 and np.linalg.norm(r[0] - r[-1]) < RING_CLOSE_M]
        region = None
        for poly in sorted((shapely.make_valid(shapely.Polygon(r)) for r in closed), key=lambda g: -g.area):
            region = poly if region is None else shapely.symmetric_difference(region, poly)
        parts = [shapely.make_valid(shapely.Polygon(p)) for p in lane_polygons if len(p) >= 3]
        n_poly, n_centre = len(parts), 0
        if region is None:
            buffered = [shapely.LineString(c).buffer(LANE_HALF_WIDTH_M) for c in centrelines if len(c) >= 2]
            parts += buffered
            n_centre, source = len(buffered), "lane polygons + buffered centrelines"
        else:
            parts.append(region)
            source = "boundary rings + lane polygons"
        parts = [p for p in parts if not p.is_empty]
        if not parts:
            raise NoDrivableArea(f"{name}: no drivable area: the map has no closed boundary_* ring, lane polygon or "
                                 f"lane centreline ({len(rings)} boundary polylines, {len(lane_polygons)} lane polygons, "
                                 f"{len(centrelines)} centrelines)")
        geom = shapely.union_all(parts)
        shapely.prepare(geom)
        return cls(geom, source, len(closed), n_poly, n_centre)

    @classmethod
    def from_map_features(cls, features: dict | None, name: str = "scenario") -> "DrivableArea":
        """Build the area from a ScenarioNet ``map_features`` dict (feature id -> {type, polyline,
        polygon}); malformed or non-finite features are skipped.

        Raises:
            NoDrivableArea: ``features`` is empty or None, or holds nothing usable.
        """
        if not features:
            raise NoDrivableArea(f"{name}: no drivable area: field 'map_features' is empty (the scenario has no map)")
        rings, polys, centres = [], [], []
        for fid, feat in features.items():
            if not isinstance(feat, dict):
                continue
            ftype = str(feat.get("type", "")).upper()
            line = _points(feat, "polyline")
            if str(fid).startswith("boundary_") and line is not None:
                rings.append(line)
            if ftype.startswith("LANE_"):
                poly = _points(feat, "polygon")
                if poly is not None and len(poly) >= 3:
                    polys.append(poly)
                if line is not None:
                    centres.append(line)
        return cls.from_parts(rings, polys, centres, name)

    def corners_inside(self, xy: np.ndarray, yaw: np.ndarray, length: float, width: float) -> np.ndarray:
        """Whether every corner of each box is inside the area.

        Args:
            xy: (S, 2) box centres (m, the area's frame). yaw: (S,) headings (rad).
            length, width: box size (m).

        Returns:
            (S,) bool.
        """
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        corners = box_corners(xy[:, 0], xy[:, 1], length, width, np.asarray(yaw, np.float64).reshape(-1))
        return shapely.contains_xy(self.geometry, corners[..., 0], corners[..., 1]).all(axis=1)

    def compliance(self, xy: np.ndarray, yaw: np.ndarray, length: float, width: float) -> tuple[float, int | None]:
        """DAC over a trajectory of boxes (see :meth:`corners_inside`): (1.0 or 0.0, the first
        step with a corner outside or None)."""
        inside = self.corners_inside(xy, yaw, length, width)
        if inside.all():
            return 1.0, None
        return 0.0, int(np.argmin(inside))
