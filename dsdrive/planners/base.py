"""The planner interface (navsim's ``AbstractAgent`` shape).

A planner sees :class:`dsdrive.data.types.PlanningInputs` only (no future), and returns ego-frame
waypoints: (6, 3) ``x, y, heading`` at +0.5 ... +3.0 s, x forward, y left, metres/radians.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from tqdm import tqdm

from dsdrive.data.types import FUTURE_STEPS, PlanningInputs, PlanningSample


class Planner(ABC):
    """Base class of every planner evaluated open-loop or closed-loop."""

    name: str = "planner"

    @abstractmethod
    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """Plan from the current inputs.

        Args:
            inputs: what the ego may see now (no ground-truth future).

        Returns:
            (6, 3) float32 ego-frame waypoints ``x, y, heading`` at +0.5 ... +3.0 s.
        """

    def compute_trajectories(self, batch: list[PlanningInputs]) -> np.ndarray:
        """Plan a batch; (B, 6, 3). Override for batched models."""
        out = np.stack([np.asarray(self.compute_trajectory(x), np.float32) for x in batch])
        if out.shape[1:] != (FUTURE_STEPS, 3):
            raise ValueError(f"{self.name}: expected (B, {FUTURE_STEPS}, 3) waypoints, got {out.shape}")
        return out


def plan_samples(planner: Planner, samples: list[PlanningSample], batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Run ``planner`` on the samples' inputs (never their targets), in batches.

    A planner marked ``privileged = True`` (the DistillDrive planning teacher, which reads
    ground-truth agent futures) is given the whole samples through
    ``compute_trajectories_privileged``; its results are flagged ``"privileged"``.

    Returns:
        (B, 6, 3) float32 ego-frame waypoints.

    Raises:
        ValueError: the planner returns a wrong shape or non-finite values (planner and sample named).
    """
    out = np.zeros((len(samples), FUTURE_STEPS, 3), np.float32)
    for start in tqdm(range(0, len(samples), batch_size), desc=f"plan {planner.name}", disable=not progress):
        chunk = samples[start : start + batch_size]
        if getattr(planner, "privileged", False):  # e.g. the DistillDrive planning teacher: reads GT agent futures
            traj = np.asarray(planner.compute_trajectories_privileged(chunk), np.float32)
        else:
            traj = np.asarray(planner.compute_trajectories([s.inputs for s in chunk]), np.float32)
        if traj.shape != (len(chunk), FUTURE_STEPS, 3):
            raise ValueError(f"planner {planner.name}: returned {traj.shape}, expected ({len(chunk)}, {FUTURE_STEPS}, 3)")
        bad = ~np.isfinite(traj).all(axis=(1, 2))
        if bad.any():
            raise ValueError(f"planner {planner.name}: non-finite waypoints for sample {chunk[int(np.argmax(bad))].sample_id}")
        out[start : start + len(chunk)] = traj
    return out
