"""Hand-built planning samples for the metric, planner and open-loop tests (ego frame, metres)."""

from __future__ import annotations

import numpy as np

from dsdrive.data.types import (
    AGENT_FUTURE_STEPS,
    FUTURE_STEPS,
    HISTORY_STEPS,
    Agents,
    MapPolylines,
    PlanningInputs,
    PlanningSample,
    PlanningTargets,
    command_from_future,
)


def straight_line(speed: float, steps: int = FUTURE_STEPS, dt: float = 0.5) -> np.ndarray:
    """(steps, 3) x, y, heading of a straight drive along +x at ``speed`` m/s."""
    t = dt * np.arange(1, steps + 1)
    return np.stack([speed * t, np.zeros_like(t), np.zeros_like(t)], axis=-1)


def make_sample(
    ego_future: np.ndarray,
    agents: list[dict] | None = None,
    sample_id: str = "s0",
    scene_id: str = "scene-test",
    ego_status: np.ndarray | None = None,
    ego_status_mask: np.ndarray | None = None,
    ego_history: np.ndarray | None = None,
    future_mask: np.ndarray | None = None,
    command: str | None = None,
) -> PlanningSample:
    """A sample with the given GT future (6, 2|3) and agents.

    Each agent dict has ``x, y, yaw, length, width`` (a box held at every future step) and an
    optional ``steps`` list of the 0-based future steps at which it exists (default: all).
    """
    ego_future = np.asarray(ego_future, np.float32)
    if ego_future.shape[1] == 2:
        ego_future = np.concatenate([ego_future, np.zeros((FUTURE_STEPS, 1), np.float32)], axis=1)
    agents = agents or []
    n = len(agents)
    boxes = np.zeros((n, 7), np.float32)
    futures = np.zeros((n, AGENT_FUTURE_STEPS, 3), np.float32)
    masks = np.zeros((n, AGENT_FUTURE_STEPS), bool)
    for i, a in enumerate(agents):
        boxes[i] = [a["x"], a["y"], 0.0, a["length"], a["width"], 1.5, a["yaw"]]
        futures[i] = [a["x"], a["y"], a["yaw"]]
        masks[i, list(a.get("steps", range(AGENT_FUTURE_STEPS)))] = True
    speed = float(np.hypot(*ego_future[0, :2]) / 0.5)
    inputs = PlanningInputs(
        sample_id=sample_id,
        scene_id=scene_id,
        ego_history=np.zeros((HISTORY_STEPS, 3), np.float32) if ego_history is None else np.asarray(ego_history, np.float32),
        ego_history_mask=np.ones(HISTORY_STEPS, bool),
        ego_status=np.array([speed, 0, 0, 0, 0, 0], np.float32) if ego_status is None else np.asarray(ego_status, np.float32),
        ego_status_mask=np.ones(6, bool) if ego_status_mask is None else np.asarray(ego_status_mask, bool),
        command=command or command_from_future(ego_future),
        agents=Agents([f"a{i}" for i in range(n)], ["VEHICLE"] * n, boxes, np.zeros((n, 2), np.float32)),
        map=MapPolylines.empty(),
    )
    targets = PlanningTargets(
        ego_future=ego_future,
        ego_future_mask=np.ones(FUTURE_STEPS, bool) if future_mask is None else np.asarray(future_mask, bool),
        agent_futures=futures,
        agent_future_masks=masks,
    )
    return PlanningSample("test", "test-map", 0.0, inputs, targets)
