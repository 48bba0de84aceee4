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

import torch
from torch import nn


class WaypointHead(nn.Module):
    """(B, K*M, H) query hidden states -> offsets (B, K, M, T, 2) and mode logits (B, K, M).

    Args:
        hidden_size: H, the backbone hidden size.
        num_commands, num_modes, future_steps: K, M, T (3, 6, 6).
    """

    def __init__(self, hidden_size: int, num_commands: int, num_modes: int, future_steps: int):
        super().__init__()
        self.k, self.m, self.t = num_commands, num_modes, future_steps
        self.norm = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU())
        self.reg = nn.Linear(hidden_size, future_steps * 2)
        self.cls = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.reg.weight, std=0.01)  # start near the anchors
        nn.init.zeros_(self.reg.bias)

    def forward(self, query_states: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: query_states (B, K*M, H); anchors (K, M, T, 2) metres.

        Returns:
            waypoints (B, K, M, T, 2) = anchors + offsets (metres, ego frame), logits (B, K, M).
        """
        b = query_states.shape[0]
        h = self.mlp(self.norm(query_states))
        offsets = self.reg(h).reshape(b, self.k, self.m, self.t, 2)
        logits = self.cls(h).reshape(b, self.k, self.m)
        return anchors[None].to(offsets.dtype) + offsets, logits


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


def with_heading(xy: torch.Tensor, min_step_m: float = 0.1) -> torch.Tensor:
    """(..., T, 2) waypoints -> (..., T, 3) with heading from finite differences (rad, ego frame).

    Heading at step t is atan2 of the displacement from step t-1 (the origin for t = 0); a
    displacement shorter than ``min_step_m`` keeps the previous heading (0 at the start), so a
    stopped plan does not spin.
    """
    prev = torch.cat([torch.zeros_like(xy[..., :1, :]), xy[..., :-1, :]], -2)
    d = xy - prev
    raw = torch.atan2(d[..., 1], d[..., 0])
    moving = d.norm(dim=-1) >= min_step_m
    heads = []
    last = torch.zeros_like(raw[..., 0])
    for t in range(xy.shape[-2]):
        last = torch.where(moving[..., t], raw[..., t], last)
        heads.append(last)
    return torch.cat([xy, torch.stack(heads, -1)[..., None]], -1)
