"""Kinematic baselines: constant velocity and constant turn rate and velocity (CTRV).

The constant-velocity planner is the standard open-loop sanity baseline (navsim's
``ConstantVelocityAgent``; "Is Ego Status All You Need for Open-Loop End-to-End Autonomous
Driving?", Li et al., CVPR 2024). It reads only the ego status, so it shows how much of the
nuScenes L2 metric a model gets from the current velocity alone.

Frame: ego frame of the current time (x forward, y left), metres, radians, m/s.
Output: (6, 3) ``x, y, heading`` at +0.5 ... +3.0 s.
"""

from __future__ import annotations

import numpy as np

from dsdrive.geometry import wrap_angle
from dsdrive.planners.base import Planner
from dsdrive.data.types import EGO_STATUS_FIELDS, FUTURE_STEPS, STEP_SECONDS, PlanningInputs

_VX, _VY, _YAW_RATE = (EGO_STATUS_FIELDS.index(f) for f in ("vx", "vy", "yaw_rate"))
FUTURE_TIMES_S = STEP_SECONDS * np.arange(1, FUTURE_STEPS + 1)
"""(6,) seconds of the future waypoints."""
MIN_HEADING_SPEED = 0.1
"""Below this speed (m/s) the heading of a constant-velocity plan is 0 (no direction of travel)."""


def ego_velocity(inputs: PlanningInputs) -> np.ndarray:
    """(2,) ego-frame velocity ``vx, vy`` (m/s).

    Uses ``ego_status`` vx, vy when both are real measurements (``ego_status_mask``); otherwise
    the finite difference from the last history pose (at -0.5 s) to the origin when that pose is
    valid; otherwise zero.
    """
    status = np.asarray(inputs.ego_status, np.float64)
    mask = np.asarray(inputs.ego_status_mask, bool)
    if mask[_VX] and mask[_VY]:
        return status[[_VX, _VY]]
    if bool(np.asarray(inputs.ego_history_mask)[-1]):
        return -np.asarray(inputs.ego_history, np.float64)[-1, :2] / STEP_SECONDS
    return np.zeros(2)


class ConstantVelocityPlanner(Planner):
    """Keeps the current ego velocity for 3 s: waypoint k = (vx, vy) * 0.5 k.

    The heading of every waypoint is the direction of travel ``atan2(vy, vx)`` (0 below
    :data:`MIN_HEADING_SPEED`). The yaw rate is ignored (see :class:`ConstantTurnRatePlanner`).
    """

    name = "constant_velocity"

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """(6, 3) float32 ego-frame ``x, y, heading`` at +0.5 ... +3.0 s."""
        v = ego_velocity(inputs)
        heading = float(np.arctan2(v[1], v[0])) if np.hypot(*v) >= MIN_HEADING_SPEED else 0.0
        out = np.zeros((FUTURE_STEPS, 3), np.float32)
        out[:, 0] = v[0] * FUTURE_TIMES_S
        out[:, 1] = v[1] * FUTURE_TIMES_S
        out[:, 2] = heading
        return out


class ConstantTurnRatePlanner(Planner):
    """Constant turn rate and velocity (CTRV): speed |v| and yaw rate held for 3 s.

    The ego moves on a circular arc from the origin, starting along the current direction of
    travel ``atan2(vy, vx)``; heading(t) = heading(0) + yaw_rate * t. The yaw rate comes from
    ``ego_status`` when measured, else from the last two history headings, else 0 (then this
    planner equals :class:`ConstantVelocityPlanner`).
    """

    name = "constant_turn_rate"

    @staticmethod
    def yaw_rate(inputs: PlanningInputs) -> float:
        """Current yaw rate (rad/s, counter-clockwise positive)."""
        if bool(np.asarray(inputs.ego_status_mask)[_YAW_RATE]):
            return float(inputs.ego_status[_YAW_RATE])
        if bool(np.asarray(inputs.ego_history_mask)[-1]):
            return float(wrap_angle(-float(inputs.ego_history[-1, 2])) / STEP_SECONDS)
        return 0.0

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """(6, 3) float32 ego-frame ``x, y, heading`` at +0.5 ... +3.0 s."""
        v = ego_velocity(inputs)
        speed = float(np.hypot(*v))
        h0 = float(np.arctan2(v[1], v[0])) if speed >= MIN_HEADING_SPEED else 0.0
        w = self.yaw_rate(inputs)
        t = FUTURE_TIMES_S
        heading = h0 + w * t
        if abs(w) < 1e-6:
            x, y = speed * t * np.cos(h0), speed * t * np.sin(h0)
        else:
            x = speed / w * (np.sin(heading) - np.sin(h0))
            y = speed / w * (np.cos(h0) - np.cos(heading))
        return np.stack([x, y, heading], axis=-1).astype(np.float32)
