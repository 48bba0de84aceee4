"""Synthetic planning samples for the rule-teacher / annotate tests (kinematically consistent).

A sample is an ego driving along +x at ``speed`` with constant acceleration ``accel`` plus a few
agents: a lead vehicle in the ego lane, an oncoming vehicle in the next lane, a pedestrian
crossing ahead, a parked car behind. Ego frame: x forward, y left, metres; 0.5 s steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsdrive.data.types import AGENT_FUTURE_STEPS, FUTURE_STEPS, MAP_POINTS, Agents, MapPolylines, PlanningInputs, PlanningSample, PlanningTargets

DT = 0.5


def straight_future(speed: float, accel: float = 0.0, steps: int = FUTURE_STEPS, lateral: float = 0.0) -> np.ndarray:
    """(steps, 3) x, y, heading of a straight constant-acceleration motion (speed clipped at 0)."""
    t = DT * np.arange(1, steps + 1)
    if accel < 0 and speed > 0:
        tc = np.minimum(t, speed / -accel)
    else:
        tc = t
    x = speed * tc + 0.5 * accel * tc**2
    y = lateral * t / t[-1]
    return np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.float32)


def agent_track(x0: float, y0: float, vx: float, vy: float, steps: int = AGENT_FUTURE_STEPS) -> np.ndarray:
    t = DT * np.arange(1, steps + 1)
    heading = np.arctan2(vy, vx) if (vx or vy) else 0.0
    return np.stack([x0 + vx * t, y0 + vy * t, np.full_like(t, heading)], axis=-1).astype(np.float32)


def make_sample(sample_id: str = "s0", speed: float = 8.0, accel: float = 0.0, future: np.ndarray | None = None,
                future_mask: np.ndarray | None = None, with_agents: bool = True, scene_id: str = "scene-synth") -> PlanningSample:
    """A synthetic sample (see the module docstring)."""
    fut = straight_future(speed, accel) if future is None else np.asarray(future, np.float32)
    hist = np.stack([-speed * DT * np.arange(4, 0, -1), np.zeros(4), np.zeros(4)], axis=-1).astype(np.float32)
    specs = [  # id, type, x, y, length, width, vx, vy
        ("lead", "VEHICLE", 15.0, 0.2, 4.5, 1.9, max(speed - 4.0, 0.0), 0.0),
        ("oncoming", "VEHICLE", 40.0, 3.6, 4.6, 1.9, -8.0, 0.0),
        ("ped", "PEDESTRIAN", 12.0, -6.0, 0.7, 0.7, 0.0, 1.5),
        ("parked", "VEHICLE", -12.0, -3.5, 4.4, 1.8, 0.0, 0.0),
    ] if with_agents else []
    ids = [s[0] for s in specs]
    boxes = np.array([[x, y, 0.0, l, w, 1.6, 0.0] for _, _, x, y, l, w, _, _ in specs], np.float32).reshape(-1, 7)
    vels = np.array([[vx, vy] for *_, vx, vy in specs], np.float32).reshape(-1, 2)
    futs = np.stack([agent_track(x, y, vx, vy) for _, _, x, y, _, _, vx, vy in specs]) if specs else np.zeros((0, AGENT_FUTURE_STEPS, 3), np.float32)
    crossing = np.stack([np.full(MAP_POINTS, 14.0), np.linspace(-8, 8, MAP_POINTS)], axis=-1)[None].astype(np.float32)
    inputs = PlanningInputs(
        sample_id=sample_id, scene_id=scene_id, ego_history=hist, ego_history_mask=np.ones(4, bool),
        ego_status=np.array([speed, 0.0, accel, 0.0, 0.0, 0.0], np.float32),
        ego_status_mask=np.array([True, True, True, True, True, False]),
        command="STRAIGHT", agents=Agents(ids, [s[1] for s in specs], boxes, vels),
        map=MapPolylines(["ped_crossing"], crossing),
    )
    targets = PlanningTargets(
        ego_future=fut, ego_future_mask=np.ones(FUTURE_STEPS, bool) if future_mask is None else np.asarray(future_mask, bool),
        agent_futures=futs, agent_future_masks=np.ones((len(ids), AGENT_FUTURE_STEPS), bool),
    )
    return PlanningSample(source="synthetic", map_name="synthetic", timestamp=0.0, inputs=inputs, targets=targets)


def make_dataset(out_dir: Path, n: int = 12) -> list[PlanningSample]:
    """Save ``n`` synthetic samples (varied speeds; the last one with an all-masked future) to ``out_dir``."""
    from dsdrive.data.dataset import save_samples

    samples = [make_sample(f"synth-{k:03d}", speed=float(2 + k % 9), accel=float((k % 5) - 2)) for k in range(n - 1)]
    samples.append(make_sample(f"synth-{n - 1:03d}", future_mask=np.zeros(FUTURE_STEPS, bool)))
    save_samples(samples, out_dir)
    return samples


def shared_data_dir() -> Path:
    """``../shared/data`` from the repository root."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"
