"""Random but physically plausible planning samples for metric tests and benchmarks.

Not a data source for training or reporting: real samples come from ``data_builders/``. The
generator drives the ego along a constant-speed, constant-turn-rate arc and scatters agents
close to that path (some parked on it, some crossing it), so that both planned and
ground-truth collisions occur often enough to exercise every branch of the metrics.

Frame: ego frame of the current time (x forward, y left), metres, radians, m/s.
"""

from __future__ import annotations

import numpy as np

from dsdrive.data.types import (
    AGENT_FUTURE_STEPS,
    EGO_STATUS_FIELDS,
    FUTURE_STEPS,
    HISTORY_STEPS,
    STEP_SECONDS,
    Agents,
    MapPolylines,
    PlanningInputs,
    PlanningSample,
    PlanningTargets,
    command_from_future,
)


def arc_trajectory(speed: float, yaw_rate: float, times: np.ndarray) -> np.ndarray:
    """(len(times), 3) ``x, y, heading`` of a constant-speed, constant-turn-rate arc from the origin."""
    t = np.asarray(times, np.float64)
    heading = yaw_rate * t
    if abs(yaw_rate) < 1e-6:
        x, y = speed * t, np.zeros_like(t)
    else:
        x = speed / yaw_rate * np.sin(heading)
        y = speed / yaw_rate * (1.0 - np.cos(heading))
    return np.stack([x, y, heading], axis=-1)


def random_sample(rng: np.random.Generator, index: int = 0, scene_id: str = "synthetic-0", num_agents: int | None = None) -> PlanningSample:
    """One random :class:`PlanningSample` (complete future; agents near the ego path)."""
    speed = float(rng.choice([0.0, rng.uniform(0.0, 1.0), rng.uniform(1.0, 15.0)], p=[0.1, 0.1, 0.8]))
    yaw_rate = float(rng.normal(0.0, 0.15))
    fut_t = STEP_SECONDS * np.arange(1, FUTURE_STEPS + 1)
    hist_t = -STEP_SECONDS * np.arange(HISTORY_STEPS, 0, -1)
    ego_future = arc_trajectory(speed, yaw_rate, fut_t)
    ego_history = arc_trajectory(speed, yaw_rate, hist_t)
    n = int(rng.integers(0, 12)) if num_agents is None else num_agents
    agent_t = STEP_SECONDS * np.arange(1, AGENT_FUTURE_STEPS + 1)
    boxes = np.zeros((n, 7), np.float32)
    futures = np.zeros((n, AGENT_FUTURE_STEPS, 3), np.float32)
    velocities = np.zeros((n, 2), np.float32)
    for a in range(n):
        anchor = ego_future[rng.integers(0, FUTURE_STEPS), :2] + rng.normal(0.0, 4.0, 2)
        yaw0 = rng.uniform(-np.pi, np.pi)
        v = rng.choice([0.0, rng.uniform(0.0, 8.0)])
        start = anchor - v * 1.5 * np.array([np.cos(yaw0), np.sin(yaw0)])  # passes the anchor at ~1.5 s
        track = arc_trajectory(v, rng.normal(0.0, 0.1), np.concatenate([[0.0], agent_t]))
        c, s = np.cos(yaw0), np.sin(yaw0)
        xy = track[:, :2] @ np.array([[c, s], [-s, c]]) + start
        length, width = rng.uniform(0.5, 6.0), rng.uniform(0.5, 2.5)
        boxes[a] = [xy[0, 0], xy[0, 1], 0.0, length, width, 1.6, yaw0]
        futures[a, :, :2] = xy[1:]
        futures[a, :, 2] = yaw0 + track[1:, 2]
        velocities[a] = v * np.array([c, s])
    masks = rng.random((n, AGENT_FUTURE_STEPS)) > 0.1
    status = np.array([speed, 0.0, 0.0, speed * yaw_rate, yaw_rate, 0.0], np.float32)
    inputs = PlanningInputs(
        sample_id=f"{scene_id}-{index:05d}",
        scene_id=scene_id,
        ego_history=ego_history.astype(np.float32),
        ego_history_mask=np.ones(HISTORY_STEPS, bool),
        ego_status=status,
        ego_status_mask=np.array([True] * 3 + [False, True, False])[: len(EGO_STATUS_FIELDS)],
        command=command_from_future(ego_future),
        agents=Agents([f"a{a}" for a in range(n)], ["VEHICLE"] * n, boxes, velocities),
        map=MapPolylines.empty(),
    )
    targets = PlanningTargets(ego_future.astype(np.float32), np.ones(FUTURE_STEPS, bool), futures, masks)
    return PlanningSample("synthetic", "synthetic-map", float(index) * STEP_SECONDS, inputs, targets)


def random_samples(num: int, seed: int = 0, num_scenes: int = 4) -> list[PlanningSample]:
    """``num`` random samples spread over ``num_scenes`` scene ids ``synthetic-0`` ... (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    return [random_sample(rng, i, scene_id=f"synthetic-{i % num_scenes}") for i in range(num)]
