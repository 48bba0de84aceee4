"""Shared fixtures of the ScenarioNet builder tests: the real data folder and synthetic scenarios.

The synthetic scenario drives the ego at constant speed on a circle, so every ego-frame value
has a closed form: after a time tau at speed v on radius R (counter-clockwise), the ego-frame
pose is x = R sin(phi), y = R (1 - cos(phi)), heading phi, with phi = v tau / R.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nuscenes-mini-scenarionet"
needs_real_data = pytest.mark.skipif(not REAL_DIR.is_dir(), reason=f"real ScenarioNet data not found at {REAL_DIR}")

REAL_SAMPLES_PER_SCENE = {
    "scene-0061": 33,  # 191 steps: keyframes 0..160
    "scene-0553": 35,  # 201 steps: keyframes 0..170
    "scene-0655": 35,
    "scene-0757": 35,
    "scene-0796": 34,  # 196 steps: keyframes 0..165
    "scene-1077": 35,
    "scene-1094": 34,
    "scene-1100": 34,
}


def _track(pos: np.ndarray, heading: np.ndarray, vel: np.ndarray, valid: np.ndarray, kind: str, dims=(4.5, 1.9, 1.6)) -> dict:
    n = len(pos)
    return {
        "type": kind,
        "state": {
            "position": np.asarray(pos, np.float64),
            "heading": np.asarray(heading, np.float64),
            "velocity": np.asarray(vel, np.float64),
            "valid": np.asarray(valid, np.float64),
            "length": np.full((n, 1), dims[0]),
            "width": np.full((n, 1), dims[1]),
            "height": np.full((n, 1), dims[2]),
        },
        "metadata": {"type": kind.lower()},
    }


def circle_scenario(
    n: int = 80,
    speed: float = 6.0,
    radius: float = 25.0,
    theta0: float = 0.7,
    centre: tuple[float, float] = (300.0, -120.0),
    clockwise: bool = False,
    dt: float = 0.1,
) -> dict:
    """A ScenarioNet-format dict: the ego on a circle (global frame), two agents, four map features.

    Agents (global frame, static, valid at every step): ``near`` 10 m from the circle centre's
    side of the ego start, ``far`` 500 m away. Map: a long lane crossing the scene, a drivable-
    area boundary ``boundary_0``, a crosswalk polygon, and a road line with a NaN point.
    """
    sign = -1.0 if clockwise else 1.0
    t = np.arange(n) * dt
    ang = theta0 + sign * speed * t / radius  # angle of the position vector seen from the centre
    cx, cy = centre
    # the ego's heading is the tangent: ang + sign * pi/2
    pos = np.stack([cx + radius * np.cos(ang - sign * np.pi / 2), cy + radius * np.sin(ang - sign * np.pi / 2), np.zeros(n)], -1)
    heading = ang
    vel = speed * np.stack([np.cos(heading), np.sin(heading)], -1)
    ones = np.ones(n)
    start = pos[0, :2]
    near = np.tile([start[0] + 10.0, start[1] + 3.0, 1.0], (n, 1))
    far = np.tile([start[0] + 500.0, start[1], 1.0], (n, 1))
    tracks = {
        "ego": _track(pos, heading, vel, ones, "VEHICLE"),
        "near": _track(near, np.full(n, 0.3), np.zeros((n, 2)), ones, "PEDESTRIAN", (0.7, 0.7, 1.8)),
        "far": _track(far, np.zeros(n), np.zeros((n, 2)), ones, "VEHICLE"),
    }
    xs = np.linspace(start[0] - 400, start[0] + 400, 801)
    lane = np.stack([xs, np.full_like(xs, start[1]), np.zeros_like(xs)], -1)
    bad_line = np.array([[start[0], start[1] + 5], [np.nan, start[1] + 5], [start[0] + 9, start[1] + 5]])
    map_features = {
        "lane_1": {"type": "LANE_SURFACE_STREET", "polyline": lane},
        "boundary_0": {"type": "ROAD_LINE_SOLID_SINGLE_WHITE", "polyline": lane[:, :2] + [0.0, -8.0]},
        "cross_1": {"type": "CROSSWALK", "polygon": start + np.array([[5.0, -4], [8, -4], [8, 4], [5, 4]])},
        "line_nan": {"type": "ROAD_LINE_BROKEN_SINGLE_WHITE", "polyline": bad_line},
    }
    return {
        "id": "scene-0001",
        "version": "test",
        "length": n,
        "metadata": {
            "dataset": "nuscenes",
            "map": "test-map",
            "id": "scene-0001",
            "scenario_id": "scene-0001",
            "sample_rate": dt,
            "ts": t,
            "sdc_id": "ego",
        },
        "tracks": tracks,
        "dynamic_map_states": {},
        "map_features": map_features,
    }


def write_pickle(path: Path, obj: object) -> Path:
    """Pickle ``obj`` to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f)
    return path
