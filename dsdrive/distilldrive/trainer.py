"""Training and held-out evaluation loops of the DistillDrive planning teacher (CPU or GPU).

Recipe (DistillDrive stage 0, facts in ``shared/research/distilldrive.md``): weight decay 1e-3,
gradient clipping at norm 25, cosine learning-rate decay, batch 48, lr 6e-4 with SOAP. SOAP is
not a dependency here, so AdamW is used (their stage-1 "adamax" config also runs AdamW); batch
size, steps and lr come from the recipe config. Deterministic under ``seed`` on CPU.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from tqdm import tqdm

from dsdrive.distilldrive.planning_teacher import PlanningTeacher
from dsdrive.distilldrive.teacher_inputs import build_teacher_batch
from dsdrive.evaluation.metrics.planning import (
    complete_future_mask,
    evaluate_trajectories,
    summarize_by_command,
)
from dsdrive.data.types import PlanningSample


def fit_teacher(
    model: PlanningTeacher, samples: list[PlanningSample], steps: int, batch_size: int = 16, lr: float = 6e-4,
    weight_decay: float = 1e-3, max_grad_norm: float = 25.0, seed: int = 0, progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place for ``steps`` optimiser steps over shuffled mini-batches.

    Returns:
        One log dict per step (every loss term, ``lr``, ``seconds`` since the start).

    Raises:
        ValueError: no samples, or ``steps`` < 1.
    """
    if not samples or steps < 1:
        raise ValueError(f"fit_teacher: need samples and steps >= 1 (got {len(samples)} samples, {steps} steps)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    kw = model.config.batch_kwargs()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    order: list[int] = []
    history, t0 = [], time.perf_counter()
    for step in tqdm(range(steps), desc="teacher", disable=not progress):
        if len(order) < batch_size:
            order += rng.permutation(len(samples)).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        batch = build_teacher_batch([samples[i] for i in idx], **kw).to(model.device)
        loss, logs = model.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        sched.step()
        logs.update(step=step + 1, lr=opt.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
        history.append(logs)
    model.eval()
    return history


@torch.no_grad()
def predict_teacher(model: PlanningTeacher, samples: list[PlanningSample], batch_size: int = 32, rescore: bool | None = None) -> np.ndarray:
    """(B, 6, 3) float32 selected waypoints (ego frame, m, rad) in eval mode."""
    model.eval()
    out = [model.select(build_teacher_batch(samples[i:i + batch_size], **model.config.batch_kwargs()).to(model.device), rescore=rescore)["waypoints"]
           for i in range(0, len(samples), batch_size)]
    return torch.cat(out).cpu().numpy().astype(np.float32)


def evaluate_teacher(model: PlanningTeacher, samples: list[PlanningSample], rescore: bool | None = None) -> dict:
    """Open-loop L2 / collision (``dsdrive.evaluation.metrics.planning``) on samples with complete futures.

    Returns:
        ``{"num_evaluated", "num_skipped_incomplete_future", "metrics"}``; ``metrics`` is
        :func:`summarize_by_command` output (L2 m, collision %, ST-P3 and UniAD protocols).
    """
    keep = complete_future_mask(samples)
    scored = [s for s, k in zip(samples, keep) if k]
    pred = predict_teacher(model, scored, rescore=rescore)
    return {"num_evaluated": len(scored), "num_skipped_incomplete_future": int((~keep).sum()),
            "metrics": summarize_by_command(evaluate_trajectories(pred, scored))}
