"""The drivable area from a scenario's own map (DAC): real nuScenes scenes (the logged ego stays on
it, the ego moved sideways off the road does not), even-odd holes of nested rings, the
centreline fallback, and a scenario without a map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsdrive.constants import EGO_LENGTH_M, EGO_WIDTH_M
from dsdrive.data.safe_pickle import load_pickle
from dsdrive.evaluation.drivable_area import LANE_HALF_WIDTH_M, DrivableArea, NoDrivableArea

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nuscenes-mini-scenarionet"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")


def _square(cx: float, cy: float, half: float) -> np.ndarray:
    ring = np.array([[cx - half, cy - half], [cx + half, cy - half], [cx + half, cy + half], [cx - half, cy + half]])
    return np.vstack([ring, ring[:1]])  # closed, as ScenarioNet writes boundary rings


@needs_data
@pytest.mark.parametrize("scene", ["scene-0061", "scene-0757"])
def test_logged_ego_on_the_area_and_off_when_moved_sideways(scene):
    """scene-0061 (a left turn through an intersection) and scene-0757 (a street with parked
    cars): every logged ego box is inside; the same boxes moved 15 m to the left are off the
    road at most steps (to the right, scene-0061 has another road)."""
    data = load_pickle(DATA / f"sd_nuscenes_v1.0-mini_{scene}.pkl")
    area = DrivableArea.from_map_features(data["map_features"], scene)
    assert area.source == "boundary rings + lane polygons" and area.num_rings >= 1 and area.num_lane_polygons > 10
    st = data["tracks"][data["metadata"]["sdc_id"]]["state"]
    ok = np.asarray(st["valid"]).astype(bool)
    xy, yaw = np.asarray(st["position"])[ok, :2], np.asarray(st["heading"])[ok]
    assert area.corners_inside(xy, yaw, EGO_LENGTH_M, EGO_WIDTH_M).all()
    assert area.compliance(xy, yaw, EGO_LENGTH_M, EGO_WIDTH_M) == (1.0, None)
    left = xy + 15.0 * np.stack([-np.sin(yaw), np.cos(yaw)], 1)
    inside = area.corners_inside(left, yaw, EGO_LENGTH_M, EGO_WIDTH_M)
    assert inside.mean() < 0.2
    dac, first = area.compliance(left, yaw, EGO_LENGTH_M, EGO_WIDTH_M)
    assert dac == 0.0 and first == int(np.argmin(inside))


def test_nested_rings_are_holes_and_lanes_fill_them():
    """An outer ring with a ring inside (a traffic island): the island is off the area unless a
    lane polygon covers it; a box straddling the outer edge is off."""
    outer, island = _square(0.0, 0.0, 20.0), _square(0.0, 0.0, 5.0)
    area = DrivableArea.from_map_features({"boundary_0": {"type": "ROAD_LINE_SOLID_SINGLE_WHITE", "polyline": outer},
                                           "boundary_1": {"type": "ROAD_LINE_SOLID_SINGLE_WHITE", "polyline": island}})
    boxes = np.array([[12.0, 0.0], [0.0, 0.0], [19.5, 0.0]])
    assert area.corners_inside(boxes, np.zeros(3), 4.0, 1.8).tolist() == [True, False, False]
    lane = {"type": "LANE_SURFACE_STREET", "polyline": np.array([[-6.0, 0.0], [6.0, 0.0]]),
            "polygon": np.array([[-6.0, -3.0], [6.0, -3.0], [6.0, 3.0], [-6.0, 3.0]])}
    filled = DrivableArea.from_map_features({"boundary_0": {"type": "X", "polyline": outer}, "boundary_1": {"type": "X", "polyline": island},
                                             "lane": lane})
    assert filled.corners_inside(boxes, np.zeros(3), 4.0, 1.8).tolist() == [True, True, False]


def test_centreline_fallback_without_rings():
    """No closed ring (e.g. Waymo, MetaDrive PG): lane centrelines buffered by half a lane; an
    open boundary polyline is not a ring."""
    feats = {"lane": {"type": "LANE_SURFACE_STREET", "polyline": np.array([[0.0, 0.0], [50.0, 0.0]])},
             "boundary_0": {"type": "ROAD_LINE_SOLID_SINGLE_WHITE", "polyline": np.array([[0.0, 5.0], [50.0, 5.0]])}}
    area = DrivableArea.from_map_features(feats)
    assert area.source == "lane polygons + buffered centrelines" and area.num_centrelines == 1 and area.num_rings == 0
    y_edge = LANE_HALF_WIDTH_M - 0.9  # a 1.8 m wide box whose left side touches the lane edge
    assert area.corners_inside(np.array([[25.0, y_edge - 0.05], [25.0, y_edge + 0.2]]), np.zeros(2), 4.0, 1.8).tolist() == [True, False]


def test_no_map_is_a_clear_error():
    with pytest.raises(NoDrivableArea, match="sd_x.pkl: no drivable area: field 'map_features' is empty"):
        DrivableArea.from_map_features({}, "sd_x.pkl")
    with pytest.raises(NoDrivableArea, match="no closed boundary_\\* ring, lane polygon or lane centreline"):
        DrivableArea.from_map_features({"c": {"type": "CROSSWALK", "polygon": np.zeros((4, 2))},
                                        "l": {"type": "LANE_SURFACE_STREET", "polyline": np.array([[np.nan, 0.0], [1.0, 0.0]])}}, "sd_y.pkl")
