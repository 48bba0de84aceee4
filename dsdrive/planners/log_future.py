"""Planners that return the logged ego future: the harness checks. **Privileged** (they read the log).

* ``ground_truth`` (:class:`GroundTruthPlanner`): the sample's own ``targets.ego_future``. Run
  through the PDM score (``dsdrive pdm-score``), it shows what the scorer gives the expert: NAVSIM
  reports the human (logged) trajectory at PDMS 94.8 on navtest.
* ``log_waypoints`` (:class:`LogWaypointsPlanner`): in closed loop, at each replanning step, the
  logged ego poses at +0.5 ... +3.0 s *of the current simulator time*, in the ego frame of the
  simulated ego now; the same pure-pursuit + PID controller as every other planner tracks them
  (:mod:`dsdrive.evaluation.closed_loop.rollout`). Unlike log replay (which teleports the ego),
  this exercises the controller and MetaDrive's vehicle dynamics: the check of the harness.
  When the ego lags behind the log, the logged waypoints lie farther ahead and the controller
  speeds up to catch up; past the end of the valid log the last logged pose is held. In open
  loop it returns the sample's ground-truth future like ``ground_truth``.

Neither can plan from :class:`~dsdrive.data.types.PlanningInputs` alone (they have no future):
:meth:`compute_trajectory` raises; open-loop and PDM-score evaluation hand them whole samples
through ``compute_trajectories_privileged`` (``privileged = True``), and the closed loop hands
``log_waypoints`` the scenario's logged ego track (``reads_log = True``:
:meth:`LogWaypointsPlanner.set_log`, then :meth:`LogWaypointsPlanner.plan_from_log`).

Waypoints: (6, 3) float32 ``x, y, heading`` at +0.5 ... +3.0 s, ego frame (x forward, y left,
metres, radians).
"""

from __future__ import annotations

import numpy as np

from dsdrive.constants import FUTURE_STEPS, SIM_DT, STEP_SECONDS
from dsdrive.data.types import PlanningInputs, PlanningSample
from dsdrive.geometry import global_to_ego, wrap_angle
from dsdrive.planners.base import Planner


class GroundTruthPlanner(Planner):
    """The logged ego future of each sample (privileged; see the module docstring)."""

    name = "ground_truth"
    privileged = True

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """Not available: the logged future is not in the inputs.

        Raises:
            TypeError: always; use :meth:`compute_trajectories_privileged` with whole samples.
        """
        raise TypeError(f"{self.name} returns the logged future: call compute_trajectories_privileged(samples) "
                        "with PlanningSample objects, not PlanningInputs")

    def compute_trajectories(self, batch: list[PlanningInputs]) -> np.ndarray:
        """Not available (see :meth:`compute_trajectory`)."""
        return self.compute_trajectory(batch[0] if batch else None)  # raises

    def compute_trajectories_privileged(self, samples: list[PlanningSample]) -> np.ndarray:
        """(B, 6, 3) float32: each sample's ``targets.ego_future`` (ego frame).

        Raises:
            ValueError: a sample whose future is not complete (``ego_future_mask`` not all True),
                named by sample id.
        """
        out = np.zeros((len(samples), FUTURE_STEPS, 3), np.float32)
        for i, s in enumerate(samples):
            if not np.asarray(s.targets.ego_future_mask, bool).all():
                raise ValueError(f"{self.name}: sample {s.sample_id} has an incomplete ego future (mask "
                                 f"{np.asarray(s.targets.ego_future_mask).tolist()})")
            out[i] = np.asarray(s.targets.ego_future, np.float32)
        return out


class LogWaypointsPlanner(GroundTruthPlanner):
    """The logged ego future at the current simulator time, for the closed loop (see the module docstring)."""

    name = "log_waypoints"
    reads_log = True

    def __init__(self) -> None:
        self._xy: np.ndarray | None = None
        self._yaw: np.ndarray | None = None
        self._last_valid = 0

    def set_log(self, log_xy: np.ndarray, log_yaw: np.ndarray, log_valid: np.ndarray) -> None:
        """Adopt a scenario's logged ego track (simulator frame, one entry per simulator step).

        Args:
            log_xy: (T, 2) m. log_yaw: (T,) rad. log_valid: (T,) bool.

        Raises:
            ValueError: shapes disagree or no valid step.
        """
        xy, yaw, valid = np.asarray(log_xy, np.float64)[:, :2], np.asarray(log_yaw, np.float64).reshape(-1), np.asarray(log_valid, bool)
        if not (len(xy) == len(yaw) == len(valid)) or not valid.any():
            raise ValueError(f"{self.name}: log of {len(xy)} positions, {len(yaw)} headings, {len(valid)} flags "
                             f"({int(valid.sum())} valid); need equal lengths and a valid step")
        self._xy, self._yaw, self._last_valid = xy, yaw, int(np.flatnonzero(valid)[-1])

    def plan_from_log(self, step: int, ego_xy: np.ndarray, ego_yaw: float) -> np.ndarray:
        """(6, 3) float32: the logged poses at simulator steps ``step + 5k`` (k = 1..6; held at the
        last valid step) in the ego frame of (``ego_xy`` (2,), ``ego_yaw``), simulator frame.

        Raises:
            RuntimeError: :meth:`set_log` was not called.
        """
        if self._xy is None:
            raise RuntimeError(f"{self.name}: set_log(...) must be called before plan_from_log")
        stride = int(round(STEP_SECONDS / SIM_DT))
        idx = np.minimum(step + stride * np.arange(1, FUTURE_STEPS + 1), self._last_valid)
        xy = global_to_ego(self._xy[idx], ego_xy, ego_yaw)
        yaw = wrap_angle(self._yaw[idx] - ego_yaw)
        return np.concatenate([xy, np.asarray(yaw)[:, None]], 1).astype(np.float32)
