"""Held-out prediction and open-loop evaluation of the DistillDrive planning teacher (CPU or GPU).

Training runs through ``transformers.Trainer``:
:class:`dsdrive.training.planning_teacher_trainer.PlanningTeacherTrainer` with
:class:`dsdrive.training.planning_teacher_config.PlanningTeacherTrainingConfig` (DistillDrive
stage 0, arXiv 2508.05402: AdamW, weight decay 1e-3, clipping at norm 25, cosine decay), launched by
``dsdrive planning-teacher`` / ``recipes/planning_teacher.py``. This module keeps the two
functions that evaluation code shares (the trainer, ``dsdrive.training.planning_kd``, benches):
selected waypoints of a trained teacher, and their open-loop L2 / collision.
"""

from __future__ import annotations

import numpy as np
import torch

from dsdrive.data.types import PlanningSample
from dsdrive.distilldrive.planning_teacher import PlanningTeacher
from dsdrive.distilldrive.teacher_inputs import build_teacher_batch
from dsdrive.evaluation.metrics.planning import (
    complete_future_mask,
    evaluate_trajectories,
    summarize_by_command,
)


@torch.no_grad()
def predict_teacher(model: PlanningTeacher, samples: list[PlanningSample], batch_size: int = 32, rescore: bool | None = None) -> np.ndarray:
    """Selected plans of ``samples`` in eval mode (the model is left in eval mode).

    Args:
        model: a trained teacher (any device). samples: whole samples (privileged inputs).
        batch_size: samples per forward pass. rescore: override the config's collision rescoring.

    Returns:
        (B, 6, 3) float32 waypoints ``x, y, heading`` at +0.5 ... +3.0 s, ego frame of the
        current time (x forward, y left), metres, radians; (0, 6, 3) for no samples.
    """
    model.eval()
    if not samples:
        return np.zeros((0, 6, 3), np.float32)
    kw = model.config.batch_kwargs()
    out = [model.select(build_teacher_batch(samples[i:i + batch_size], **kw).to(model.device), rescore=rescore)["waypoints"]
           for i in range(0, len(samples), batch_size)]
    return torch.cat(out).float().cpu().numpy().astype(np.float32)


def evaluate_teacher(model: PlanningTeacher, samples: list[PlanningSample], rescore: bool | None = None, batch_size: int = 32) -> dict:
    """Open-loop L2 / collision (``dsdrive.evaluation.metrics.planning``) on samples with complete futures.

    Returns:
        ``{"num_evaluated", "num_skipped_incomplete_future", "metrics"}``; ``metrics`` is
        :func:`summarize_by_command` output (L2 m, collision %, ST-P3 and UniAD protocols), empty
        when no sample has a complete future.
    """
    keep = complete_future_mask(samples)
    scored = [s for s, k in zip(samples, keep) if k]
    if not scored:
        return {"num_evaluated": 0, "num_skipped_incomplete_future": int((~keep).sum()), "metrics": {}}
    pred = predict_teacher(model, scored, batch_size=batch_size, rescore=rescore)
    return {"num_evaluated": len(scored), "num_skipped_incomplete_future": int((~keep).sum()),
            "metrics": summarize_by_command(evaluate_trajectories(pred, scored))}
