"""Trainer of student distillation: a ``transformers.Trainer`` whose loss is the student's dual-head loss.

The student (:class:`dsdrive.student.StudentModel`, possibly wrapped by peft) computes every
term itself from one batch of :class:`dsdrive.student.StudentProcessor`: waypoint L1 and mode
cross-entropy (DistillDrive planning vocabulary), reasoning cross-entropy (DSDrive sequence-level
distillation of the teacher's chain-of-thought), BEV risk L1 (RSD) and meta-action
cross-entropy. :meth:`DistillTrainer.compute_loss` returns their weighted sum and accumulates
each term, which :meth:`DistillTrainer.log` reports averaged over the logging window (keys
``waypoint_l1``, ``mode_ce``, ``reasoning_ce``, ``risk_l1``, ``meta_action_ce``; ``eval_``
prefixed in evaluation), like trl's GKD/DPO trainers report their metrics. Batches that carry
cached planning-teacher outputs (:mod:`dsdrive.training.planning_kd`) add the DistillDrive KD terms
``kd_feature``, ``kd_mode_kl``, ``kd_regression`` (logged the same way). Batches that carry an
annotator's cached top-k log-probs (:mod:`dsdrive.training.token_kd`, ``token_kd_weight`` > 0) add
``token_kd_weight`` x the token-level KD term on the reasoning tokens (logged unweighted as
``token_kd``); with weight 0 nothing is attached and the loss is the baseline's exactly.
``query_hidden_kd_weight`` > 0 adds EvoDriveVLA's hidden-state KD on the planning queries from a
frozen same-shape student (:mod:`dsdrive.training.query_hidden_kd`, logged as ``query_hidden_kd``);
at 0 nothing is loaded.
"""

from __future__ import annotations


import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from dsdrive.training.planning_kd import KD_TERMS, planning_kd_terms, pop_teacher_outputs
from dsdrive.data.types import PlanningSample
from dsdrive.training.loss_terms import LossTermsTrainer
from dsdrive.training.token_kd import pop_token_kd, token_kd_term

LOSS_TERMS = ("waypoint_l1", "mode_ce", "reasoning_ce", "risk_l1", "meta_action_ce", "cvae_kl")


class EncodedSamples(Dataset):
    """PlanningSamples encoded once by a StudentProcessor (inputs + targets per item, numpy).

    Args:
        samples: the samples; processor: the StudentProcessor.
        teacher_logprobs: optional :class:`dsdrive.annotation.logprobs.LogprobCache`; samples it
            holds learn the annotator's own tokens and carry its top-k (token-level KD).
        cross_tokenizer: the cache's tokenizer differs from the processor's (ULD).
    """

    def __init__(self, samples: list[PlanningSample], processor, teacher_logprobs=None, cross_tokenizer: bool = False):
        cache = teacher_logprobs
        self.items = [processor.encode_sample(s, teacher_tokens=cache.get(s.sample_id) if cache is not None and s.sample_id in cache else None,
                                              teacher_tokens_cross_tokenizer=cross_tokenizer)
                      for s in tqdm(samples, desc="encode", unit="sample", leave=False)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class DistillTrainer(LossTermsTrainer):
    """``Trainer`` for the student; pass ``data_collator=StudentDataCollator(processor)``."""

    def create_optimizer(self, model=None):
        """The ``Trainer``'s optimizer; with ``args.head_learning_rate_scale`` != 1 each of its parameter
        groups is split so that the waypoint head's parameters (``waypoint_head.`` in the name: the
        planning residual, the mode classifier, the kinematic prior blend) learn at ``lr x scale``
        (the scheduler, created after, scales every group alike).

        Raises:
            ValueError: a scale != 1 on a model without waypoint-head parameters.
        """
        opt = super().create_optimizer(model)
        scale = float(getattr(self.args, "head_learning_rate_scale", 1.0))
        if scale == 1.0:
            return opt
        head = {id(p) for n, p in (self.model if model is None else model).named_parameters() if "waypoint_head." in n}
        if not head:
            raise ValueError("DistillTrainer: head_learning_rate_scale != 1 but the model has no waypoint_head parameter")
        groups = []
        for g in opt.param_groups:
            for in_head in (False, True):
                params = [p for p in g["params"] if (id(p) in head) == in_head]
                if params:
                    groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": params,
                                   "lr": g["lr"] * (scale if in_head else 1.0)})
        opt.param_groups.clear()
        for g in groups:
            opt.add_param_group(g)
        return opt

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Weighted sum of the student's loss terms (weights from ``StudentConfig.loss_weights``).

        Raises:
            ValueError: the batch carries no target (the model returned no loss).
        """
        teacher = pop_teacher_outputs(inputs)  # planning KD: cached teacher tensors never reach the student
        token_teacher = pop_token_kd(inputs)  # token KD: the annotator's cached top-k, likewise
        outputs = model(**inputs)
        if outputs.loss is None:
            raise ValueError(f"DistillTrainer: batch without targets (keys {sorted(inputs)})")
        mode = "train" if model.training else "eval"
        for k in LOSS_TERMS:
            v = getattr(outputs, k, None)
            if v is not None:
                self._terms[mode][k].append(float(v.detach()))
        if teacher:  # DistillDrive planning KD (dsdrive.training.planning_kd), terms already weighted
            kd = planning_kd_terms(model, outputs, teacher)
            outputs.loss = outputs.loss + kd["total"]
            for k in KD_TERMS:
                self._terms[mode][k].append(float(kd[k].detach()))
        weight = float(getattr(self.args, "token_kd_weight", 0.0))
        if token_teacher and weight > 0:  # token-level KD (dsdrive.training.token_kd)
            tkd = token_kd_term(outputs, token_teacher, inputs.get("reasoning_mask"), self.args)
            outputs.loss = outputs.loss + weight * tkd
            self._terms[mode]["token_kd"].append(float(tkd.detach()))
        qweight = float(getattr(self.args, "query_hidden_kd_weight", 0.0))
        if qweight > 0:  # EvoDriveVLA hidden-state KD on the planning queries (dsdrive.training.query_hidden_kd)
            from dsdrive.training.query_hidden_kd import query_hidden_kd_term

            qkd = query_hidden_kd_term(self, outputs, inputs)
            outputs.loss = outputs.loss + qweight * qkd
            self._terms[mode]["query_hidden_kd"].append(float(qkd.detach()))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation: the loss only (the student's predictions are scored by dsdrive.evaluation.open_loop)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None
