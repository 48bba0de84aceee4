"""Kinematic prior of the planning teacher: the ego's own constant-velocity / CTRV rollout, and its
kinematics as a feature vector for the ego queries.

The issue behind this module (dsdrive issue 10, goal 6): a privileged planning teacher that only
sees its past poses through attention plans worse than constant velocity on 205 training samples;
DistillDrive's stage-0 teacher gets no ego status at all (``shared/research/distilldrive.md``).
With ``kinematic_prior`` the teacher's 18 modes start from a rollout of the ego's CURRENT state
(no future is read) and learn a residual on top of it, the "prior + learned correction" shape of
AD-MLP's ego-status baseline (Zhai et al., arXiv 2305.10430) and of the student's waypoint head
(:mod:`dsdrive.student.waypoint_head`).

Inputs are the teacher batch's 10-d DistillDrive status (:data:`dsdrive.distilldrive.teacher_inputs.STATUS_FROM_OURS`
layout: ``ax`` slot 0, ``ay`` 1, yaw rate 5, ``vx`` 6, ``vy`` 7; m/s, m/s^2, rad/s) with its
mask, and the (B, 4, 5) ego history ``x, y, cos, sin, valid`` at -2.0 ... -0.5 s (ego frame of the
current time: x forward, y left, metres).
"""

from __future__ import annotations

import torch

from dsdrive.data.types import FUTURE_STEPS, STEP_SECONDS
from dsdrive.layers import ctrv_arc

PRIORS = ("none", "cv", "ctrv")
"""``none``: no prior (anchors only, the published teacher); ``cv``: constant velocity;
``ctrv``: constant turn rate and velocity (speed and yaw rate held)."""
KINEMATIC_FEATURES = 10
"""vx, vy (/10), ax, ay (/3), yaw rate (/0.5), each zeroed where unmeasured, then their 5 masks."""
STATUS_SLOTS = (6, 7, 0, 1, 5)
"""Slots of vx, vy, ax, ay, yaw rate in the 10-d status."""
STATUS_SCALE = (10.0, 10.0, 3.0, 3.0, 0.5)


def ego_velocity(status: torch.Tensor, status_mask: torch.Tensor, ego_history: torch.Tensor) -> torch.Tensor:
    """(B, 2) ego-frame velocity (m/s): the measured ``vx, vy`` where both are masked in, else the
    finite difference from the history pose at -0.5 s to the origin where that pose is valid, else 0
    (the rule of :func:`dsdrive.planners.constant_velocity.ego_velocity`)."""
    measured = status_mask[:, 6] & status_mask[:, 7]
    v = status[:, 6:8]
    last = ego_history[:, -1]
    from_hist = -last[:, :2] / STEP_SECONDS
    hist_ok = last[:, 4] > 0.5
    return torch.where(measured[:, None], v, torch.where(hist_ok[:, None], from_hist, torch.zeros_like(v)))


def kinematic_rollout(kind: str, status: torch.Tensor, status_mask: torch.Tensor, ego_history: torch.Tensor,
                      steps: int = FUTURE_STEPS, dt: float = STEP_SECONDS) -> torch.Tensor:
    """Rollout of the ego's current state: (B, steps, 2) cumulative x, y (m, ego frame) at +dt ... +steps*dt.

    Args:
        kind: ``"cv"`` (position = v t) or ``"ctrv"`` (speed |v| and the measured yaw rate held,
            starting along the direction of travel, on the closed-form circular arc of
            :class:`dsdrive.planners.constant_velocity.ConstantTurnRatePlanner`; an unmeasured yaw
            rate counts as 0, which equals ``"cv"``).
        status, status_mask: (B, 10) DistillDrive status and bool mask; ego_history: (B, 4, 5).

    Raises:
        ValueError: ``kind`` not ``"cv"`` or ``"ctrv"``.
    """
    if kind not in ("cv", "ctrv"):
        raise ValueError(f"kinematic_rollout: kind {kind!r}, expected 'cv' or 'ctrv'")
    v = ego_velocity(status, status_mask, ego_history)
    t = torch.arange(1, steps + 1, device=v.device, dtype=v.dtype) * dt
    if kind == "cv":
        return v[:, None, :] * t[None, :, None]
    yaw_rate = torch.where(status_mask[:, 5], status[:, 5], torch.zeros_like(v[:, 0]))
    return ctrv_arc(v, yaw_rate, t)


def kinematic_features(status: torch.Tensor, status_mask: torch.Tensor) -> torch.Tensor:
    """(B, 10) status + mask -> (B, :data:`KINEMATIC_FEATURES`) normalised kinematics (see there)."""
    idx = list(STATUS_SLOTS)
    m = status_mask[:, idx].to(status.dtype)
    return torch.cat([status[:, idx] * m / status.new_tensor(STATUS_SCALE), m], dim=-1)
