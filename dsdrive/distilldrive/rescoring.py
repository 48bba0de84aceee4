"""Collision-aware rescoring of a command's planning modes (SparseDrive / DistillDrive inference).

At inference DistillDrive keeps the 6 modes of the given command, moves every agent along its
predicted **top-1** motion mode, and demotes each ego mode whose box (enlarged by 1.1) overlaps
an agent box at any of the 6 future steps; the final plan is the arg-max of the rescored logits.

Decisions:

* *One ego box*: the ego box of :mod:`dsdrive.constants` (4.084 m x 1.85 m, centre
  :data:`~dsdrive.constants.EGO_CENTER_OFFSET_M` = 0.5 m ahead of the waypoint along its yaw),
  the box the open-loop collision metric scores. The inherited SparseDrive / DistillDrive
  rescoring (``HierarchicalPlanningDecoder.rescore``) uses 4.08 m x 1.73 m (x 1.56 m high)
  with the same 0.5 m offset; we keep its 1.1 enlargement but not its smaller box, so the
  rescoring avoids exactly what the metric counts.
* *Fixed quirk*: the inherited SparseDrive code indexes the collision mask with the wrong axis
  order (mode vs. step), so the mask it applies is not the mode's own. Here ``collides`` is
  computed per (sample, mode) over steps and applied to that mode.
* Demotion subtracts :data:`COLLISION_PENALTY` from the logit, so if every mode collides the
  original order is kept (rather than a uniform -inf).
* Box yaw per step: :func:`dsdrive.geometry.trajectory_yaw`, SparseDrive's ``get_yaw`` (central
  differences of the positions, origin before the first); a trajectory moving less than
  :data:`~dsdrive.geometry.STATIONARY_DISPLACEMENT_M` keeps its current yaw (0 for the ego, the
  agent's yaw for an agent).
* Overlap: separating-axis test on oriented rectangles (touching counts as overlap).

Frames: ego frame of the current time (x forward, y left), metres, radians.
"""

from __future__ import annotations

import torch

from dsdrive.constants import EGO_CENTER_OFFSET_M, EGO_LENGTH_M, EGO_WIDTH_M
from dsdrive.layers import trajectory_yaw_tensor

EGO_BOX_SCALE = 1.1
"""Both ego box sides are enlarged by this factor for rescoring (SparseDrive's ``dim_scale``)."""
COLLISION_PENALTY = 1.0e4
"""Logit penalty (subtracted) of a colliding mode."""


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
        ego_size: ego (length, width) before ``scale``; the box centre lies
            :data:`~dsdrive.constants.EGO_CENTER_OFFSET_M` ahead of each waypoint along its yaw.

    Returns:
        rescored (B, K) logits and ``collides`` (B, K) bool.
    """
    b, k, t, _ = ego_traj.shape
    ego_yaw = trajectory_yaw_tensor(ego_traj)  # (B, K, T)
    ego_sz = torch.tensor(ego_size, device=ego_traj.device, dtype=ego_traj.dtype) * scale
    ego_ctr = ego_traj + EGO_CENTER_OFFSET_M * torch.stack([ego_yaw.cos(), ego_yaw.sin()], dim=-1)
    ego_c = box_corners(ego_ctr, ego_sz.expand(b, k, t, 2), ego_yaw)  # (B, K, T, 4, 2)
    a_disp = agent_traj[:, :, :t]
    a_yaw = trajectory_yaw_tensor(a_disp, agent_yaw)
    a_c = box_corners(agent_pos[:, :, None] + a_disp, agent_size[:, :, None].expand(-1, -1, t, -1), a_yaw)  # (B, N, T, 4, 2)
    hit = boxes_overlap(ego_c[:, :, None], a_c[:, None])  # (B, K, N, T)
    collides = (hit & agent_mask[:, None, :, None]).any(-1).any(-1)
    return torch.where(collides, scores - COLLISION_PENALTY, scores), collides
