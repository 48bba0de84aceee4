"""Waypoint head of the student: planning-query hidden states -> multi-mode waypoints on a vocabulary.

DSDrive (arXiv 2505.05360) regresses waypoints from the LLM's hidden states (f_wp, L1) beside the
reasoning text head; DistillDrive (arXiv 2508.05402) anchors 3 commands x 6 modes of planning
queries on a k-means planning vocabulary (3, 6, 6, 2), selects the 6 modes of the ground-truth
command, regresses the best mode (min mean L2 to the ground truth) and classifies it. This head
does both: each of the 18 query tokens gives 6 (x, y) offsets added to its anchor and one mode
logit. Waypoints are cumulative positions in the ego frame of the current time (x forward,
y left, metres) at +0.5 ... +3.0 s.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dsdrive.constants import FUTURE_STEPS, STEP_SECONDS
from dsdrive.layers import trajectory_yaw_tensor

EGO_KINEMATIC_FEATURES = 10
"""Ego kinematics fed straight to the waypoint head (:func:`ego_kinematics`): vx, vy (m/s / 10),
ax, ay (m/s^2 / 3), yaw rate (rad/s / 0.5), steering (rad), and the 4 masks of vx, vy, ax, ay."""
STATUS_SCALE = (10.0, 10.0, 3.0, 3.0, 0.5, 1.0)
"""Divisors of :data:`dsdrive.data.types.EGO_STATUS_FIELDS` bringing each to O(1)."""


def constant_velocity_rollout(ego: torch.Tensor, future_steps: int = FUTURE_STEPS, dt: float = STEP_SECONDS) -> torch.Tensor:
    """Constant-velocity rollout of the ego's CURRENT velocity (no future input): (B, 28) ego vector
    (:data:`dsdrive.student.scene_encoder.EGO_FEATURES` layout, vx, vy first, their masks at 6, 7)
    -> (B, T, 2) cumulative x, y (metres, ego frame) at +dt ... +T*dt s; 0 where vx/vy is missing.
    The standard open-loop CV baseline (AD-MLP, arXiv 2305.10430)."""
    v = ego[:, :2] * ego[:, 6:8]
    t = torch.arange(1, future_steps + 1, device=ego.device, dtype=ego.dtype) * dt
    return v[:, None, :] * t[None, :, None]


def ego_kinematics(ego: torch.Tensor) -> torch.Tensor:
    """(B, 28) ego vector -> (B, 10) normalised kinematics (:data:`EGO_KINEMATIC_FEATURES`)."""
    status = ego[:, :6] * ego[:, 6:12] / ego.new_tensor(STATUS_SCALE)
    return torch.cat([status, ego[:, 6:10]], -1)


class WaypointHead(nn.Module):
    """(B, K*M, H) query hidden states (+ ego kinematics) -> waypoints (B, K, M, T, 2), logits (B, K, M).

    Each mode's plan is its anchor pulled towards the ego's constant-velocity rollout and then
    refined: ``w = a + g * (cv - a) + s * reg(h)`` with a per-(mode, step, axis) gate
    ``g = sigmoid(gate)`` (learned, initialised at ``gate_init``) and offsets scaled by
    ``offset_scale`` metres, so the current velocity, the strongest open-loop cue (AD-MLP,
    arXiv 2305.10430), is expressible from step 0 while the k-means anchors (DistillDrive) keep the
    modes apart. The mode logits see the query state, the ego kinematics and the anchor's L2 to
    the CV rollout (a learned-temperature prior favouring the mode consistent with the current
    speed). Without ``ego`` the gate and the kinematic terms are off (plain anchor + offset).

    Args:
        hidden_size: H, the backbone hidden size.
        num_commands, num_modes, future_steps: K, M, T (3, 6, 6).
        offset_scale: metres per unit of the regression output.
        gate_init: initial gate in (0, 1); 0 disables the CV pull (parameters still exist).
    """

    def __init__(self, hidden_size: int, num_commands: int, num_modes: int, future_steps: int, offset_scale: float = 1.0,
                 gate_init: float = 0.5):
        super().__init__()
        self.k, self.m, self.t = num_commands, num_modes, future_steps
        self.offset_scale = float(offset_scale)
        self.norm = nn.LayerNorm(hidden_size)
        self.ego_proj = nn.Linear(EGO_KINEMATIC_FEATURES, hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU())
        self.reg = nn.Linear(hidden_size, future_steps * 2)
        self.cls = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.reg.weight, std=0.01)  # start near the anchors
        nn.init.zeros_(self.reg.bias)
        g = min(max(float(gate_init), 1e-4), 1 - 1e-4)
        self.gate = nn.Parameter(torch.full((num_commands * num_modes, future_steps, 2), math.log(g / (1 - g))))
        self.gate_enabled = gate_init > 0
        self.prior_temp = nn.Parameter(torch.tensor(0.0))  # logit bias = -exp(temp) * mean L2(anchor, cv)

    def forward(self, query_states: torch.Tensor, anchors: torch.Tensor, ego: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: query_states (B, K*M, H); anchors (K, M, T, 2) metres; ego (B, 28) ego vector or None.

        Returns:
            waypoints (B, K, M, T, 2) metres ego frame, logits (B, K, M).
        """
        b = query_states.shape[0]
        x = self.norm(query_states)
        if ego is not None:
            x = x + self.ego_proj(ego_kinematics(ego.to(x.dtype)))[:, None]
        h = self.mlp(x)
        offsets = self.reg(h).reshape(b, self.k, self.m, self.t, 2) * self.offset_scale
        logits = self.cls(h).reshape(b, self.k, self.m)
        a = anchors[None].to(offsets.dtype)
        if ego is None:
            return a + offsets, logits
        cv = constant_velocity_rollout(ego.to(offsets.dtype), self.t)[:, None, None]  # (B, 1, 1, T, 2)
        logits = logits - self.prior_temp.exp() * (a - cv).norm(dim=-1).mean(-1)
        base = a + torch.sigmoid(self.gate).reshape(1, self.k, self.m, self.t, 2) * (cv - a) if self.gate_enabled else a
        return base + offsets, logits


def select_command(x: torch.Tensor, command: torch.Tensor) -> torch.Tensor:
    """Pick each sample's command group: (B, K, ...) and (B,) long -> (B, ...)."""
    return x[torch.arange(x.shape[0], device=x.device), command]


def best_mode(modes: torch.Tensor, gt: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    """Index of the mode closest to the ground truth (DistillDrive): min over modes of the mean L2
    over valid steps. modes (B, M, T, 2), gt (B, T, 2), gt_mask (B, T) bool -> (B,) long."""
    w = gt_mask.to(modes.dtype)
    dist = (modes - gt[:, None]).norm(dim=-1)  # (B, M, T)
    return ((dist * w[:, None]).sum(-1) / w.sum(-1, keepdim=True).clamp(min=1.0)).argmin(-1)


def waypoint_losses(waypoints: torch.Tensor, logits: torch.Tensor, command: torch.Tensor, gt: torch.Tensor, gt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DistillDrive-style planning losses on the ground-truth command's modes.

    L1 = mean over samples with a valid future, valid steps and x, y of |best-mode waypoints - GT|
    (cumulative positions, metres); CE = cross-entropy of the command's mode logits against the
    best-mode index (one-hot, DistillDrive's ``stage0_label``).

    Args:
        waypoints (B, K, M, T, 2), logits (B, K, M), command (B,) long, gt (B, T, 2+) ego frame,
        gt_mask (B, T) bool.

    Returns:
        (waypoint_l1, mode_ce), scalars; 0 (graph-connected) when no sample has a valid step.
    """
    modes = select_command(waypoints, command)
    mlog = select_command(logits, command)
    gt = gt[..., :2].to(modes.dtype)
    gt_mask = gt_mask.bool()
    valid = gt_mask.any(-1)
    if not bool(valid.any()):
        zero = waypoints.sum() * 0.0 + logits.sum() * 0.0
        return zero, zero
    modes, mlog, gt, gt_mask = modes[valid], mlog[valid], gt[valid], gt_mask[valid]
    best = best_mode(modes.detach(), gt, gt_mask)
    pred = modes[torch.arange(len(best), device=best.device), best]
    w = gt_mask[..., None].to(pred.dtype).expand_as(pred)
    l1 = ((pred - gt).abs() * w).sum() / w.sum()
    ce = nn.functional.cross_entropy(mlog, best)
    return l1, ce


def with_heading(xy: torch.Tensor) -> torch.Tensor:
    """(..., T, 2) ego-frame waypoints (m) -> (..., T, 3) with the heading (rad) of
    :func:`dsdrive.geometry.trajectory_yaw` (start yaw 0; no gradient through the heading)."""
    return torch.cat([xy, trajectory_yaw_tensor(xy)[..., None]], -1)
