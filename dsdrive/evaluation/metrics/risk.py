"""Diff_Risk: the consistency of two risk annotations, per agent and on the BEV grid.

RSD (Risk Semantic Distillation, arXiv 2511.14499) checks its VLM risk labels with an
annotation-consistency metric it calls Diff_Risk but publishes no formula for
(``shared/research/papers.md``: "formula not found"). dsdrive defines it here, once, for every
caller (teacher-vs-teacher agreement in :mod:`dsdrive.annotation.pv_bev_matching`, the student's
RiskHead against its teacher on validation):

* **per agent** (:func:`diff_risk_agents`): mean |r_a - r_b| over the agents either annotation
  rates, a missing rating counting as 0 (so "one says 0.8, the other ignores it" costs 0.8);
* **on the BEV grid** (:func:`diff_risk_map`): mean |R_a - R_b| over the cells where either map
  is above a threshold (the union of the two risk supports, so empty road does not dilute it);
* **over samples** (:func:`diff_risk`): the per-agent value averaged over paired samples, with
  Kendall's tau-b on the agents both rate and the top-1 agreement.

Lower Diff_Risk is more consistent; risks are in [0, 1].
"""

from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau


def diff_risk_agents(risks_a: dict[str, float], risks_b: dict[str, float]) -> float:
    """Per-agent Diff_Risk of one sample: mean |r_a - r_b| over the union of rated agent ids.

    Args:
        risks_a, risks_b: agent id -> risk in [0, 1].

    Returns:
        The mean absolute difference (a missing rating counts as 0); NaN when neither rates any
        agent (undefined, not zero).
    """
    union = sorted(set(risks_a) | set(risks_b))
    if not union:
        return float("nan")
    return float(np.mean([abs(float(risks_a.get(k, 0.0)) - float(risks_b.get(k, 0.0))) for k in union]))


def diff_risk_map(risk_a, risk_b, threshold: float = 0.0) -> float:
    """BEV Diff_Risk: mean |R_a - R_b| over cells where either map exceeds ``threshold``.

    Args:
        risk_a, risk_b: (H, W) or (B, H, W) maps in [0, 1] on the same ego-frame grid (numpy or
            torch).

    Returns:
        The mean over the union of supports; 0.0 when both maps are empty.

    Raises:
        ValueError: the shapes differ.
    """
    a = np.asarray(risk_a.detach().cpu() if hasattr(risk_a, "detach") else risk_a, dtype=np.float64)
    b = np.asarray(risk_b.detach().cpu() if hasattr(risk_b, "detach") else risk_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"diff_risk_map: shapes differ {a.shape} vs {b.shape}")
    support = (a > threshold) | (b > threshold)
    if not support.any():
        return 0.0
    return float(np.abs(a - b)[support].mean())


def diff_risk(first, second) -> dict:
    """Diff_Risk between two risk annotations of the same samples.

    Args:
        first, second: :class:`dsdrive.annotation.schema.Annotation` lists with ``risks[*].agent_id``
            filled (e.g. by :func:`dsdrive.annotation.pv_bev_matching.align_annotation`); paired by
            ``sample_id``; samples in only one list are ignored.

    Returns:
        ``{"samples", "mae", "kendall_tau", "kendall_samples", "top1_agreement", "top1_samples"}``:
        ``mae`` is the mean of :func:`diff_risk_agents` over paired samples with any rating;
        ``kendall_tau`` the mean tau-b over samples with >= 2 agents rated by both;
        ``top1_agreement`` the share of samples (both non-empty) with the same rank-1 agent.
        A statistic with no sample to average is ``None``.
    """

    def rated(a) -> dict[str, float]:
        return {r.agent_id: r.risk for r in a.risks if r.agent_id is not None}

    b_by_id = {a.sample_id: a for a in second}
    maes, taus, top1 = [], [], []
    for a in first:
        b = b_by_id.get(a.sample_id)
        if b is None:
            continue
        ra, rb = rated(a), rated(b)
        if ra or rb:
            maes.append(diff_risk_agents(ra, rb))
        both = sorted(set(ra) & set(rb))
        if len(both) >= 2:
            tau = kendalltau([ra[k] for k in both], [rb[k] for k in both]).statistic
            if np.isfinite(tau):
                taus.append(float(tau))
        if ra and rb:
            top_a = min((r for r in a.risks if r.agent_id), key=lambda r: r.rank).agent_id
            top_b = min((r for r in b.risks if r.agent_id), key=lambda r: r.rank).agent_id
            top1.append(top_a == top_b)

    def mean(v):
        return float(np.mean(v)) if v else None

    return {
        "samples": len(maes), "mae": mean(maes), "kendall_tau": mean(taus), "kendall_samples": len(taus),
        "top1_agreement": mean(top1), "top1_samples": len(top1),
    }
