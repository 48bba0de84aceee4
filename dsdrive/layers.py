"""Torch building blocks shared by the student and the DistillDrive planning teacher.

* :func:`sine_embedding`: the Transformer / DETR sine-cosine embedding of scalars (positions in
  metres, time indices), in SparseDrive's ``pos2posemb`` form (swc-17/SparseDrive), rewritten.
* :func:`trajectory_yaw_tensor`: :func:`dsdrive.geometry.trajectory_yaw` (the project's one
  heading-from-waypoints rule) for tensors.
* :func:`ctrv_arc`: the constant-turn-rate-and-velocity rollout of a velocity and a yaw rate, the
  kinematic prior of the student's waypoint head and of the planning teacher.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dsdrive.geometry import trajectory_yaw


def sine_embedding(
    x: torch.Tensor, num_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi, interleave: bool = True,
) -> torch.Tensor:
    """Sine/cosine embedding of every scalar of ``x`` (Transformer / DETR style).

    Scalar ``v`` gets ``num_feats / 2`` frequencies ``w_i = scale / temperature ** (2 i / num_feats)``
    (``i = 0 .. num_feats/2 - 1``) and the features ``sin(w_i v)``, ``cos(w_i v)``.

    Args:
        x: (..., C) tensor (metres, seconds or indices, used as they are; scale them first if
            needed). Integer tensors are allowed.
        num_feats: features per scalar; must be even.
        temperature: the frequency base (DETR: 10000).
        scale: the factor of the first frequency (DETR / SparseDrive: 2 pi).
        interleave: feature order per scalar. True: ``[sin w_0 v, cos w_0 v, sin w_1 v, ...]``
            (SparseDrive's ``pos2posemb``, the planning teacher); False: all sines, then all
            cosines ``[sin w_0 v, ..., sin w_{F/2-1} v, cos w_0 v, ...]`` (the student's scene
            encoder).

    Returns:
        (..., C * num_feats), scalar by scalar (the first ``num_feats`` features embed
        ``x[..., 0]``). Computed in float32; returned in ``x``'s dtype when ``x`` is floating
        point, else float32.

    Raises:
        ValueError: ``num_feats`` is not a positive even number.
    """
    if num_feats <= 0 or num_feats % 2:
        raise ValueError(f"sine_embedding: num_feats must be a positive even number, got {num_feats}")
    dim_t = torch.arange(num_feats // 2, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * dim_t / num_feats)
    pos = x.float().unsqueeze(-1) * scale / dim_t  # (..., C, F/2)
    emb = torch.stack([pos.sin(), pos.cos()], dim=-1 if interleave else -2).flatten(-2)  # (..., C, F)
    emb = emb.flatten(-2)
    return emb.to(x.dtype) if x.is_floating_point() else emb


def trajectory_yaw_tensor(xy: torch.Tensor, yaw0: torch.Tensor | float = 0.0) -> torch.Tensor:
    """:func:`dsdrive.geometry.trajectory_yaw` of a tensor (the one rule, computed once in numpy).

    Args:
        xy: (..., T, 2+) waypoints (m) relative to the current position, T >= 2 (see
            :func:`dsdrive.geometry.trajectory_yaw` for frames).
        yaw0: start yaw (rad), a float or a (...) tensor: the yaw of a stationary trajectory.

    Returns:
        (..., T) yaw (rad) in ``xy``'s dtype and device. No gradient flows through it (the
        yaw is a box orientation / a heading column, never a training target).

    Raises:
        ValueError: bad shapes (from :func:`dsdrive.geometry.trajectory_yaw`).
    """
    start = yaw0.detach().to("cpu", torch.float64).numpy() if torch.is_tensor(yaw0) else float(yaw0)
    yaw = trajectory_yaw(xy.detach().to("cpu", torch.float64).numpy(), start)
    return torch.from_numpy(np.ascontiguousarray(yaw)).to(device=xy.device, dtype=xy.dtype)


MIN_HEADING_SPEED = 0.1
"""Below this speed (m/s) a CTRV rollout starts along +x (as :class:`dsdrive.planners.constant_velocity.ConstantTurnRatePlanner`)."""
MIN_YAW_RATE = 1e-6
"""Below this |yaw rate| (rad/s) the CTRV arc is a straight line."""


def ctrv_arc(v: torch.Tensor, yaw_rate: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Constant turn rate and velocity: (B, 2) ego-frame velocity vx, vy (m/s), (B,) yaw rate (rad/s) and
    (T,) times (s) -> (B, T, 2) cumulative x, y (m, ego frame).

    Speed |v| is held on the closed-form circular arc of
    :class:`dsdrive.planners.constant_velocity.ConstantTurnRatePlanner`, starting along the direction of
    travel (+x below :data:`MIN_HEADING_SPEED`); below :data:`MIN_YAW_RATE` the arc is a straight line.
    """
    speed = v.norm(dim=-1)
    h0 = torch.where(speed >= MIN_HEADING_SPEED, torch.atan2(v[:, 1], v[:, 0]), torch.zeros_like(speed))[:, None]
    w = yaw_rate[:, None]
    th = h0 + w * t[None]
    turning = w.abs() >= MIN_YAW_RATE
    safe_w = torch.where(turning, w, torch.ones_like(w))
    s = speed[:, None]
    x = torch.where(turning, s / safe_w * (th.sin() - h0.sin()), s * t[None] * h0.cos())
    y = torch.where(turning, s / safe_w * (h0.cos() - th.cos()), s * t[None] * h0.sin())
    return torch.stack([x, y], -1)
