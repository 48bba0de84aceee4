"""Losses of the DistillDrive planning teacher: planning, motion and ego-status terms.

Source: DistillDrive stage-0 configs (facts in ``shared/research/distilldrive.md``):

* Planning: among the 6 modes of the **ground-truth command**, the best mode is the one with the
  smallest mean L2 over valid steps of the cumulative waypoints. Classification comes in the two
  published variants:

  - ``"label"`` (stage0_label): one-hot best mode, sigmoid focal loss (alpha 0.25, gamma 2),
    weight 0.5, normalised by the number of samples (mmdet ``avg_factor``);
  - ``"distribution"`` (stage0_distribution): a soft target 0.9 / 0.05 / 0.05 on the three
    closest modes (0 elsewhere), KL(target || softmax(logits)) per sample, weight 0.5.

  Regression: L1 on the per-step offsets of the best mode, weight 2.0.
* Motion: best of 6 per agent by mean L2 over valid steps; focal classification weight 0.2 and
  L1 on per-step offsets weight 0.2, over agents with at least one valid future step.
* Ego status: L1 on the 10-d status over its mask, weight 2.0.

Not implemented: the distribution variant's ``multi_ego_status`` (one status per ego query) and
``multi_ego_anchor`` switches; a single status head is used in both variants.

Frames: ego frame of the current time (x forward, y left), metres. Per-step offsets are
differences of consecutive cumulative positions with the origin (current centre) before step 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CLS_VARIANTS = ("label", "distribution")
SOFT_TOP3 = (0.9, 0.05, 0.05)


def cumulative_to_offsets(cum: torch.Tensor) -> torch.Tensor:
    """(..., T, 2) cumulative positions from the origin -> (..., T, 2) per-step offsets."""
    return torch.diff(cum, dim=-2, prepend=torch.zeros_like(cum[..., :1, :]))


def step_validity(mask: torch.Tensor) -> torch.Tensor:
    """(..., T) position mask -> (..., T) offset mask (step t and its predecessor both valid)."""
    prev = torch.cat([torch.ones_like(mask[..., :1]), mask[..., :-1]], dim=-1)
    return mask & prev


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Elementwise sigmoid focal loss (Lin et al. 2017, mmdet ``FocalLoss``); same shape as ``logits``."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return a_t * (1 - p_t) ** gamma * ce


def best_mode(pred_cum: torch.Tensor, gt_cum: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best mode by mean L2 over valid steps.

    Args:
        pred_cum: (..., K, T, 2) cumulative predicted positions (m).
        gt_cum: (..., T, 2) ground truth; mask: (..., T) bool.

    Returns:
        index (...,) long and distance (..., K) metres (0 where no step is valid).
    """
    d = torch.linalg.norm(pred_cum - gt_cum.unsqueeze(-3), dim=-1)  # (..., K, T)
    w = mask.unsqueeze(-2).float()
    dist = (d * w).sum(-1) / w.sum(-1).clamp(min=1.0)
    return dist.argmin(dim=-1), dist


def classification_loss(logits: torch.Tensor, dist: torch.Tensor, best: torch.Tensor, valid: torch.Tensor, variant: str) -> torch.Tensor:
    """Mode classification over K modes (unweighted), mean over valid rows.

    Args:
        logits: (R, K); dist: (R, K) mode distances (m); best: (R,) long; valid: (R,) bool.
        variant: ``"label"`` (one-hot focal) or ``"distribution"`` (soft top-3 target, KL).

    Raises:
        ValueError: unknown ``variant``.
    """
    if variant not in CLS_VARIANTS:
        raise ValueError(f"classification_loss: variant {variant!r}, expected one of {CLS_VARIANTS}")
    n = valid.float().sum().clamp(min=1.0)
    if variant == "label":
        target = F.one_hot(best, logits.shape[-1]).float()
        return (sigmoid_focal_loss(logits, target).sum(-1) * valid).sum() / n
    k = logits.shape[-1]
    order = dist.argsort(dim=-1)
    target = torch.zeros_like(logits)
    soft = torch.tensor(SOFT_TOP3[:k], dtype=logits.dtype, device=logits.device)
    target.scatter_(-1, order[:, : len(soft)], soft.expand(len(logits), -1))
    target = target / target.sum(-1, keepdim=True)
    kl = F.kl_div(F.log_softmax(logits, dim=-1), target, reduction="none").sum(-1)
    return (kl * valid).sum() / n


def planning_loss(
    plan_cls: torch.Tensor, plan_reg: torch.Tensor, command: torch.Tensor, gt: torch.Tensor, gt_mask: torch.Tensor,
    variant: str = "label", cls_weight: float = 0.5, reg_weight: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Planning loss on the GT command's 6 modes.

    Args:
        plan_cls: (B, 3 * K) logits, command-major (index = command * K + mode).
        plan_reg: (B, 3 * K, 6, 2) cumulative waypoints (m).
        command: (B,) long; gt: (B, 6, 2) cumulative GT; gt_mask: (B, 6) bool.

    Returns:
        ``plan_cls``, ``plan_reg`` (weighted scalars), ``best`` (B,) mode index within the command,
        ``best_traj`` (B, 6, 2) the best mode's waypoints.
    """
    b = plan_cls.shape[0]
    k = plan_cls.shape[1] // 3
    rows = torch.arange(b, device=plan_cls.device)
    cls = plan_cls.view(b, 3, k)[rows, command]
    reg = plan_reg.view(b, 3, k, *plan_reg.shape[-2:])[rows, command]  # (B, K, 6, 2)
    best, dist = best_mode(reg, gt, gt_mask)
    valid = gt_mask.any(-1)
    best_traj = reg[rows, best]
    off_mask = step_validity(gt_mask).unsqueeze(-1).float() * valid[:, None, None]
    l1 = (cumulative_to_offsets(best_traj) - cumulative_to_offsets(gt)).abs() * off_mask
    reg_loss = l1.sum() / off_mask.sum().mul(2).clamp(min=1.0)
    cls_loss = classification_loss(cls, dist, best, valid, variant)
    return {"plan_cls": cls_weight * cls_loss, "plan_reg": reg_weight * reg_loss, "best": best, "best_traj": best_traj}


def motion_loss(
    motion_cls: torch.Tensor, motion_reg: torch.Tensor, gt: torch.Tensor, gt_mask: torch.Tensor, agent_mask: torch.Tensor,
    cls_weight: float = 0.2, reg_weight: float = 0.2,
) -> dict[str, torch.Tensor]:
    """Best-of-modes motion loss.

    Args:
        motion_cls: (B, N, K) logits; motion_reg: (B, N, K, 12, 2) cumulative displacement from
            each agent's current centre, ego frame (m).
        gt: (B, N, 12, 2) GT displacement; gt_mask: (B, N, 12); agent_mask: (B, N).

    Returns:
        ``motion_cls``, ``motion_reg`` weighted scalars.
    """
    best, dist = best_mode(motion_reg, gt, gt_mask)
    valid = (gt_mask.any(-1) & agent_mask).reshape(-1)
    k = motion_cls.shape[-1]
    cls = classification_loss(motion_cls.reshape(-1, k), dist.reshape(-1, k), best.reshape(-1), valid, "label")
    sel = torch.gather(motion_reg, 2, best[..., None, None, None].expand(*best.shape, 1, *motion_reg.shape[-2:])).squeeze(2)
    off_mask = (step_validity(gt_mask) & agent_mask[..., None]).unsqueeze(-1).float()
    l1 = (cumulative_to_offsets(sel) - cumulative_to_offsets(gt)).abs() * off_mask
    reg = l1.sum() / off_mask.sum().mul(2).clamp(min=1.0)
    return {"motion_cls": cls_weight * cls, "motion_reg": reg_weight * reg}


def status_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, weight: float = 2.0) -> torch.Tensor:
    """Masked L1 on the (B, 10) ego status, mean over real entries, times ``weight``."""
    m = mask.float()
    return weight * ((pred - gt).abs() * m).sum() / m.sum().clamp(min=1.0)
