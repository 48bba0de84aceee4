"""The text-trajectory VLA baseline as a :class:`~dsdrive.planners.base.Planner` (name ``"text_trajectory_vla"``).

Loads a checkpoint folder of :mod:`dsdrive.training.text_trajectory` (the VLM with its adapters
merged, its tokenizer and image processor, ``text_trajectory.json``) and plans by greedy decoding of
the waypoint text (GPT-Driver / EvoDriveVLA; :class:`dsdrive.student.text_trajectory_vla.TextTrajectoryVLA`).
Waypoints are (6, 3) ``x, y, heading`` in the ego frame (x forward, y left, metres, radians).

Parse failures are never silent: a row whose answer is not exactly six ``(x,y)`` pairs gets the
constant-velocity plan of its inputs (:class:`dsdrive.planners.constant_velocity.ConstantVelocityPlanner`:
the ego-status velocity held for 3 s, zero when the status is masked) and is counted;
:attr:`TextTrajectoryPlanner.parse_stats` gives the count, the rate and the first failing answers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsdrive.data.types import PlanningInputs
from dsdrive.planners.base import Planner
from dsdrive.planners.constant_velocity import ConstantVelocityPlanner
from dsdrive.student.text_trajectory_vla import TextPlan, TextTrajectoryVLA

KEPT_FAILURES = 20
"""Failing answers kept verbatim in :attr:`TextTrajectoryPlanner.parse_stats` (the count has them all)."""


class TextTrajectoryPlanner(Planner):
    """Planner around a saved text-trajectory VLA.

    Args:
        checkpoint_dir: folder written by ``recipes/text_trajectory.py``.
        device: torch device string.
        max_new_tokens: generation cap; None = the checkpoint's ``max_new_tokens``.

    Raises:
        FileNotFoundError: a checkpoint file is missing (naming it).
    """

    name = "text_trajectory_vla"

    def __init__(self, checkpoint_dir: str | Path, device: str = "cpu", max_new_tokens: int | None = None):
        self.vla = TextTrajectoryVLA.from_pretrained(checkpoint_dir, device=device)
        if max_new_tokens is not None:
            self.vla.processor.settings.max_new_tokens = int(max_new_tokens)
        self.fallback = ConstantVelocityPlanner()
        self.planned = 0
        self.failures: list[tuple[str, str]] = []
        self.num_failures = 0

    @classmethod
    def load(cls, checkpoint_dir: str | Path, **kw) -> "TextTrajectoryPlanner":
        """Registry entry point (:func:`dsdrive.planners.registry.load_planner`)."""
        return cls(checkpoint_dir, **kw)

    def plan(self, batch: list[PlanningInputs]) -> TextPlan:
        """Decode and parse a batch; failed rows replaced by the fallback and counted (module docstring)."""
        out = self.vla.plan(batch)
        self.planned += len(batch)
        for i in np.flatnonzero(~out.parsed):
            out.waypoints[i] = self.fallback.compute_trajectory(batch[i])
            self.num_failures += 1
            if len(self.failures) < KEPT_FAILURES:
                self.failures.append((batch[i].sample_id, out.texts[i][:200]))
        return out

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """(6, 3) float32 ego-frame waypoints for one input."""
        return self.compute_trajectories([inputs])[0]

    def compute_trajectories(self, batch: list[PlanningInputs]) -> np.ndarray:
        """(B, 6, 3) float32 ego-frame waypoints, one batched greedy decoding."""
        return self.plan(batch).waypoints.astype(np.float32)

    @property
    def parse_stats(self) -> dict:
        """``planned`` samples, ``parse_failures`` (answers replaced by the constant-velocity plan),
        ``parse_failure_rate`` (0 before anything is planned) and the first ``failures`` as
        ``(sample_id, answer[:200])``."""
        return {"planned": self.planned, "parse_failures": self.num_failures,
                "parse_failure_rate": self.num_failures / self.planned if self.planned else 0.0, "failures": list(self.failures)}


__all__ = ["TextTrajectoryPlanner"]
