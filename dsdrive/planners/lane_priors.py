"""The student's map-reading priors as planners of their own: input-only baselines.

:class:`LaneFollowingPlanner` holds the current speed along the command's lane centreline
(:func:`dsdrive.student.lane_prior.lane_following_prior`); :class:`LaneIDMPlanner` is one
PDM-Closed proposal along that lane (:func:`dsdrive.student.lane_prior.lane_idm_prior`: IDM
towards ``max(current speed, min_speed)``, braking for the nearest agent ahead at constant
velocity and for bends; Dauner et al., CoRL 2023). Both read only :class:`PlanningInputs` (ego
status and history, agents now, map, command; never the route, the future or the log), so they
are baselines of the same information as the student, not privileged planners. They show what
the student's waypoint head gets from its priors before any learning, open loop and closed loop.

Frame: ego frame of the current time (x forward, y left), metres, radians.
Output: (6, 3) ``x, y, heading`` at +0.5 ... +3.0 s.
"""

from __future__ import annotations

import numpy as np

from dsdrive.data.types import PlanningInputs
from dsdrive.geometry import trajectory_yaw
from dsdrive.planners.base import Planner
from dsdrive.student.lane_prior import IDM_MIN_SPEED_MPS, lane_following_prior, lane_idm_prior


def _with_heading(xy: np.ndarray) -> np.ndarray:
    """(6, 2) waypoints -> (6, 3) float32 with the direction of travel as heading (start yaw 0)."""
    return np.concatenate([xy, trajectory_yaw(xy)[:, None]], -1).astype(np.float32)


class LaneFollowingPlanner(Planner):
    """The current speed held for 3 s along the command's lane at the current lateral offset."""

    name = "lane_following"

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """(6, 3) float32 ego-frame ``x, y, heading`` at +0.5 ... +3.0 s.

        Raises:
            ValueError: an unknown command (names the value).
        """
        return _with_heading(lane_following_prior(inputs))


class LaneIDMPlanner(Planner):
    """PDM-Closed's IDM along the command's lane, from the planning inputs alone.

    Args:
        min_speed: lowest IDM target speed (m/s); 0 holds a stop, > 0 pulls away on free road.

    Raises:
        ValueError: ``min_speed`` < 0 (from :func:`lane_idm_prior`, at the first plan).
    """

    name = "lane_idm"

    def __init__(self, min_speed: float = IDM_MIN_SPEED_MPS):
        self.min_speed = float(min_speed)

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """(6, 3) float32 ego-frame ``x, y, heading`` at +0.5 ... +3.0 s."""
        return _with_heading(lane_idm_prior(inputs, min_speed=self.min_speed))
