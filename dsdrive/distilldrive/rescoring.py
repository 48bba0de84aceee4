"""Collision-aware rescoring of a command's planning modes (SparseDrive / DistillDrive inference).

At inference DistillDrive keeps the 6 modes of the given command, moves every agent along its
predicted **top-1** motion mode, and demotes each ego mode whose box (4.08 m x 1.73 m, enlarged by
1.1) overlaps an agent box at any of the 6 future steps; the final plan is the arg-max of the
rescored logits.

Decisions:

* *Fixed quirk*: the inherited SparseDrive code indexes the collision mask with the wrong axis
  order (mode vs. step), so the mask it applies is not the mode's own. Here ``collides`` is
  computed per (sample, mode) over steps and applied to that mode.
* Demotion subtracts :data:`COLLISION_PENALTY` from the logit, so if every mode collides the
  original order is kept (rather than a uniform -inf).
* Box yaw per step: finite difference of the positions (prev -> current step, origin before the
  first), falling back to the previous yaw (the current yaw at step 1) when a step moves less
  than ``min_step_m`` (a standing box keeps its heading).
* Overlap: separating-axis test on oriented rectangles (touching counts as overlap).

Frames: ego frame of the current time (x forward, y left), metres, radians.
"""

from __future__ import annotations

import torch

EGO_LENGTH_M = 4.08
EGO_WIDTH_M = 1.73
EGO_BOX_SCALE = 1.1
COLLISION_PENALTY = 1.0e4


def box_corners(center: torch.Tensor, size: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """Oriented rectangle corners (..., 4, 2) from centre (..., 2), length/width (..., 2), yaw (...)."""
    c, s = yaw.cos(), yaw.sin()
    dx = torch.tensor([0.5, -0.5, -0.5, 0.5], device=center.device, dtype=center.dtype)
    dy = torch.tensor([0.5, 0.5, -0.5, -0.5], device=center.device, dtype=center.dtype)
    lx, ly = size[..., :1] * dx, size[..., 1:2] * dy
    x = center[..., :1] + c[..., None] * lx - s[..., None] * ly
    y = center[..., 1:2] + s[..., None] * lx + c[..., None] * ly
    return torch.stack([x, y], dim=-1)


def boxes_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Separating-axis overlap test of rectangles given by corners a, b (..., 4, 2) -> (...) bool.

    ``a`` and ``b`` broadcast against each other in their leading dimensions.
    """
    a, b = torch.broadcast_tensors(a, b)
    axes = torch.cat([a[..., 1:3, :] - a[..., 0:2, :], b[..., 1:3, :] - b[..., 0:2, :]], dim=-2)  # (..., 4, 2) edges
    normals = torch.stack([-axes[..., 1], axes[..., 0]], dim=-1)
    pa = torch.einsum("...kc,...jc->...kj", normals, a)  # (..., 4 axes, 4 corners)
    pb = torch.einsum("...kc,...jc->...kj", normals, b)
    separated = (pa.max(-1).values < pb.min(-1).values) | (pb.max(-1).values < pa.min(-1).values)
    return ~separated.any(-1)


def trajectory_yaw(traj: torch.Tensor, yaw0: torch.Tensor, min_step_m: float = 0.1) -> torch.Tensor:
    """Per-step yaw (..., T) of cumulative positions (..., T, 2) that start at the origin of ``traj``'s
    own frame (i.e. positions relative to the current centre), given the current yaw ``yaw0`` (...)."""
    steps = torch.diff(traj, dim=-2, prepend=torch.zeros_like(traj[..., :1, :]))
    heading = torch.atan2(steps[..., 1], steps[..., 0])
    moving = steps.norm(dim=-1) >= min_step_m
    out, prev = [], yaw0
    for t in range(traj.shape[-2]):
        prev = torch.where(moving[..., t], heading[..., t], prev)
        out.append(prev)
    return torch.stack(out, dim=-1)


def collision_rescore(
    scores: torch.Tensor, ego_traj: torch.Tensor, agent_pos: torch.Tensor, agent_yaw: torch.Tensor,
    agent_size: torch.Tensor, agent_traj: torch.Tensor, agent_mask: torch.Tensor,
    ego_size: tuple[float, float] = (EGO_LENGTH_M, EGO_WIDTH_M), scale: float = EGO_BOX_SCALE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Demote colliding ego modes.

    Args:
        scores: (B, K) mode logits of the command.
        ego_traj: (B, K, T, 2) cumulative ego waypoints (m), T <= 12.
        agent_pos: (B, N, 2) current centres; agent_yaw: (B, N); agent_size: (B, N, 2) length, width.
        agent_traj: (B, N, >=T, 2) predicted top-1 displacement from the current centre (m).
        agent_mask: (B, N) bool.
        ego_size: ego (length, width) before ``scale``.

    Returns:
        rescored (B, K) logits and ``collides`` (B, K) bool.
    """
    b, k, t, _ = ego_traj.shape
    ego_yaw = trajectory_yaw(ego_traj, torch.zeros(b, k, device=ego_traj.device, dtype=ego_traj.dtype))
    ego_sz = torch.tensor(ego_size, device=ego_traj.device, dtype=ego_traj.dtype) * scale
    ego_c = box_corners(ego_traj, ego_sz.expand(b, k, t, 2), ego_yaw)  # (B, K, T, 4, 2)
    a_disp = agent_traj[:, :, :t]
    a_yaw = trajectory_yaw(a_disp, agent_yaw)
    a_c = box_corners(agent_pos[:, :, None] + a_disp, agent_size[:, :, None].expand(-1, -1, t, -1), a_yaw)  # (B, N, T, 4, 2)
    hit = boxes_overlap(ego_c[:, :, None], a_c[:, None])  # (B, K, N, T)
    collides = (hit & agent_mask[:, None, :, None]).any(-1).any(-1)
    return torch.where(collides, scores - COLLISION_PENALTY, scores), collides
