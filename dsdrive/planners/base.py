"""The planner interface (navsim's ``AbstractAgent`` shape).

A planner sees :class:`dsdrive.data.types.PlanningInputs` only (no future), and returns ego-frame
waypoints: (6, 3) ``x, y, heading`` at +0.5 ... +3.0 s, x forward, y left, metres/radians.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from dsdrive.data.types import FUTURE_STEPS, PlanningInputs


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
