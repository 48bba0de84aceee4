"""Training arguments of EvoDriveVLA's distillation on the text-trajectory VLA (trl-style config).

EvoDriveVLA (arXiv 2603.09465; code hey-cjj/EvoDriveVLA) distils a future-aware *oracle teacher*
(the same VLM, which also sees future ego states and, where they exist, future frames) into the
text-trajectory student with

    loss = CE_GT + 0.1 * T^2 * KL(p_T* || p_S)  (T = 5)  + 0.2 * SmoothL1(h_S, h_T*)  + 0.05 * L_enc

where ``p_T*`` / ``h_T*`` are the per-sample best of four teacher candidates (teacher logits; the
best of 10 MC-dropout samples, p 0.1 on the final hidden state; the coarse-to-fine refined answer;
the best of 10 dropout samples of the refined answer; :mod:`dsdrive.training.soft_targets`) and
``L_enc`` is the self-anchored visual distillation (:mod:`dsdrive.student.anchor_former`).

:class:`EvoDriveConfig` is :class:`~dsdrive.training.text_trajectory_config.TextTrajectoryConfig`
plus these switches. Every switch's OFF state is the baseline: with ``logit_kd``, ``hidden_kd``
and ``self_anchor`` all false, :class:`dsdrive.training.evodrive_trainer.EvoDriveTrainer` computes
exactly :class:`~dsdrive.training.text_trajectory_trainer.TextTrajectoryTrainer`'s loss (tested).

Groups (every field has ``metadata["help"]``):

* **Student losses**: ``logit_kd`` / ``logit_kd_weight`` (0.1) / ``kd_temperature`` (5);
  ``hidden_kd`` / ``hidden_kd_weight`` (0.2); ``soft_targets`` (the folder the soft-target stage
  wrote; needed by either KD term); ``self_anchor`` / ``self_anchor_weight`` (0.05) /
  ``anchor_temperature`` (2: ``w_i = sigmoid(ranker(h_i * h_q) / 2)``).
* **Oracle teacher**: ``oracle_prompt_version`` (``prompts/oracle/<version>.jinja``),
  ``refine_prob`` (0.5, coarse-to-fine), ``teacher_max_steps`` (0 = ``max_steps``).
* **Soft targets**: ``mc_samples`` (10), ``mc_dropout`` (0.1), ``soft_target_top_k`` (0 = the
  whole vocabulary; else the teacher's top-k logits per token, the KL renormalised on them).

Raises:
    ValueError: on construction, a field out of range (named with its value). A KD switch on
        without ``soft_targets`` is an error of the trainer (the recipe fills it in between stages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dsdrive.training.text_trajectory_config import TextTrajectoryConfig

ORACLE_PROMPT_VERSION = "v1"
"""Default version of ``prompts/oracle/<version>.jinja`` (the oracle teacher's privileged prompt)."""


@dataclass
class EvoDriveConfig(TextTrajectoryConfig):
    """``TextTrajectoryConfig`` plus EvoDriveVLA's switches (module docstring).

    Raises:
        ValueError: on construction, for any out-of-range field (named with its value).
    """

    # student losses
    logit_kd: bool = field(default=False, metadata={"help": "0.1 * T^2 * KL(p_T* || p_S) on the answer tokens (needs soft_targets)"})
    logit_kd_weight: float = field(default=0.1, metadata={"help": "weight of the logit KD term (EvoDriveVLA: 0.1)"})
    kd_temperature: float = field(default=5.0, metadata={"help": "KD temperature T (EvoDriveVLA: 5); the term is scaled by T^2"})
    hidden_kd: bool = field(default=False, metadata={"help": "SmoothL1(h_S, h_T*) on the answer positions' final hidden states (needs soft_targets)"})
    hidden_kd_weight: float = field(default=0.2, metadata={"help": "weight of the hidden-state KD term (EvoDriveVLA: 0.2)"})
    soft_targets: str | None = field(default=None, metadata={"help": "soft-target folder written by the soft-target stage"})
    self_anchor: bool = field(default=False, metadata={"help": "self-anchored visual distillation L_enc (frozen copy of the vision tower)"})
    self_anchor_weight: float = field(default=0.05, metadata={"help": "weight of L_enc (EvoDriveVLA: 0.05)"})
    anchor_temperature: float = field(default=2.0, metadata={"help": "w_i = sigmoid(ranker(h_i * h_q) / anchor_temperature)"})
    # oracle teacher
    oracle_prompt_version: str = field(default=ORACLE_PROMPT_VERSION, metadata={"help": "prompts/oracle/<version>.jinja"})
    refine_prob: float = field(default=0.5, metadata={
        "help": "oracle training: probability that a sample is a coarse-to-fine refinement (its own argmax answer in the prompt)"})
    teacher_max_steps: int = field(default=0, metadata={"help": "oracle teacher's optimizer steps (0 = max_steps)"})
    # soft targets
    mc_samples: int = field(default=10, metadata={"help": "MC-dropout samples per prompt variant (EvoDriveVLA: 10)"})
    mc_dropout: float = field(default=0.1, metadata={"help": "dropout on the final hidden state for MC sampling (EvoDriveVLA: 0.1)"})
    soft_target_top_k: int = field(default=0, metadata={"help": "teacher logits kept per answer token (0 = the whole vocabulary)"})

    def _validate(self) -> None:
        super()._validate()

        def bad(name, why):
            raise ValueError(f"EvoDriveConfig: {name}={getattr(self, name)!r} {why}")

        for name in ("logit_kd_weight", "hidden_kd_weight", "self_anchor_weight"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                bad(name, "must be a finite number >= 0")
        for name in ("kd_temperature", "anchor_temperature"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                bad(name, "must be > 0")
        if not 0.0 <= float(self.refine_prob) <= 1.0:
            bad("refine_prob", "must lie in [0, 1]")
        if int(self.mc_samples) < 0:
            bad("mc_samples", "must be >= 0")
        if not 0.0 <= float(self.mc_dropout) < 1.0:
            bad("mc_dropout", "must lie in [0, 1)")
        if int(self.soft_target_top_k) < 0:
            bad("soft_target_top_k", "must be >= 0 (0 = whole vocabulary)")
        if int(self.teacher_max_steps) < 0:
            bad("teacher_max_steps", "must be >= 0")

    @property
    def distills(self) -> bool:
        """True when any EvoDriveVLA term is on (False: the baseline's loss exactly)."""
        return bool(self.logit_kd or self.hidden_kd or self.self_anchor)


__all__ = ["ORACLE_PROMPT_VERSION", "EvoDriveConfig"]
