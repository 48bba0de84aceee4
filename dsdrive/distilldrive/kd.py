"""Planning distillation terms, teacher -> student (DistillDrive, arXiv 2508.05402).

DistillDrive's student has the same 18 planning queries as its teacher (3 commands x 6 modes of
one :class:`dsdrive.distilldrive.planning_vocabulary.PlanningVocabulary`), so query i of the student is paired
with query i of the teacher, 1:1. Terms (public code @15dff59):

* ``feature``: MSE(adapter(student plan queries), teacher plan queries), weight 0.5 (active in
  their configs). The adapter is a Linear ``student_dim -> teacher_dim``.
* ``mode_kl``: KL(softmax(teacher / T) || softmax(student / T)) * T^2 within each command's 6
  modes, averaged over the 3 groups and the batch. Present in their code with weight 0, so the
  default here is 0.0 as well; set e.g. 0.5 to use it.
* ``regression``: L1 between student and teacher waypoints of all 18 modes (weight 0 by default,
  as published).

Teacher tensors are detached here (the teacher is frozen). Waypoints are cumulative ego-frame
positions (x forward, y left, metres).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsdrive.data.types import COMMANDS


class PlanningKD(nn.Module):
    """Planning-query distillation.

    Args:
        student_dim: Ds, teacher_dim: Dt (query feature sizes).
        feature_weight: weight of the feature MSE (0.5). mode_kl_weight: weight of the mode KL (0.0).
        regression_weight: weight of the waypoint L1 (0.0). temperature: KL temperature T (1.0).
    """

    def __init__(self, student_dim: int, teacher_dim: int, feature_weight: float = 0.5, mode_kl_weight: float = 0.0,
                 regression_weight: float = 0.0, temperature: float = 1.0):
        super().__init__()
        self.adapter = nn.Linear(student_dim, teacher_dim)
        self.feature_weight, self.mode_kl_weight, self.regression_weight, self.temperature = feature_weight, mode_kl_weight, regression_weight, temperature

    def forward(
        self, student_queries: torch.Tensor, teacher_queries: torch.Tensor,
        student_logits: torch.Tensor | None = None, teacher_logits: torch.Tensor | None = None,
        student_waypoints: torch.Tensor | None = None, teacher_waypoints: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Distillation terms.

        Args:
            student_queries: (B, 18, Ds); teacher_queries: (B, 18, Dt).
            student_logits, teacher_logits: (B, 18) mode logits, command-major (index = command * 6 + mode);
                needed when ``mode_kl_weight`` > 0.
            student_waypoints, teacher_waypoints: (B, 18, 6, 2) metres; needed when ``regression_weight`` > 0.
            valid: (B,) bool samples to include (e.g. those with a cached teacher output); default all.

        Returns:
            ``feature``, ``mode_kl``, ``regression`` (each already weighted; 0 when its weight is 0)
            and ``total`` (their sum).

        Raises:
            ValueError: mismatched query counts, or a weighted term whose inputs are missing.
        """
        if student_queries.shape[:2] != teacher_queries.shape[:2]:
            raise ValueError(f"PlanningKD: student queries {tuple(student_queries.shape)} vs teacher {tuple(teacher_queries.shape)}")
        b = student_queries.shape[0]
        w = torch.ones(b, device=student_queries.device) if valid is None else valid.float()
        n = w.sum().clamp(min=1.0)
        zero = student_queries.new_zeros(())
        out = {"feature": zero, "mode_kl": zero, "regression": zero}
        if self.feature_weight > 0:
            mse = (self.adapter(student_queries) - teacher_queries.detach()).pow(2).mean(dim=(1, 2))
            out["feature"] = self.feature_weight * (mse * w).sum() / n
        if self.mode_kl_weight > 0:
            if student_logits is None or teacher_logits is None:
                raise ValueError("PlanningKD: mode_kl_weight > 0 needs student_logits and teacher_logits (B, 18)")
            t = self.temperature
            s = F.log_softmax(student_logits.reshape(b, len(COMMANDS), -1) / t, dim=-1)
            p = F.softmax(teacher_logits.detach().reshape(b, len(COMMANDS), -1) / t, dim=-1)
            kl = F.kl_div(s, p, reduction="none").sum(-1).mean(-1) * t * t
            out["mode_kl"] = self.mode_kl_weight * (kl * w).sum() / n
        if self.regression_weight > 0:
            if student_waypoints is None or teacher_waypoints is None:
                raise ValueError("PlanningKD: regression_weight > 0 needs student_waypoints and teacher_waypoints (B, 18, 6, 2)")
            l1 = (student_waypoints - teacher_waypoints.detach()).abs().mean(dim=(1, 2, 3))
            out["regression"] = self.regression_weight * (l1 * w).sum() / n
        out["total"] = out["feature"] + out["mode_kl"] + out["regression"]
        return out
