"""Trainer of the DistillDrive planning teacher: a ``transformers.Trainer`` whose loss is the teacher's own.

DistillDrive (ICCV 2025, arXiv 2508.05402) stage 0 trains the privileged planner on ground-truth
agents, their futures and the map. :class:`dsdrive.distilldrive.PlanningTeacher` already computes
every term itself (:meth:`~dsdrive.distilldrive.PlanningTeacher.compute_loss`: planning cls + reg on
the command's 6 modes, motion cls + reg, status L1, optional KL of the conditional VAE and the DQN
state-optimisation loss); this trainer only feeds it batches and reports the terms, so resuming
(``resume_from_checkpoint``), DDP (``accelerate launch``), mixed precision and evaluation come
from ``Trainer``.

* **Data**: the train / eval datasets are lists of :class:`dsdrive.data.types.PlanningSample`
  (whole samples: the teacher is privileged); :class:`TeacherCollator` turns a list into the
  tensors of :func:`dsdrive.distilldrive.teacher_inputs.build_teacher_batch` with the model's
  ``batch_kwargs`` (ego frame, metres).
* **Loss**: ``model(batch)`` (through the DDP wrapper when there is one) then the unwrapped
  teacher's ``compute_loss(batch, out)``. Every term is logged, averaged over the logging window
  (keys ``plan_cls``, ``plan_reg``, ``motion_cls``, ``motion_reg``, ``status``, ``kl``, ``dqn``,
  ``dqn_reward``; ``eval_`` prefixed in evaluation), as trl's trainers report their metrics.
* **Weight decay** applies to every trainable parameter (biases and norms too), as DistillDrive's
  mmcv AdamW config and the former hand-written loop did (``Trainer`` exempts biases and norms by
  default).
* **Evaluation**: the teacher's loss on the eval samples, plus held-out open-loop planning through
  :mod:`dsdrive.evaluation.metrics.planning` on the samples with a complete 3 s future (config's
  collision rescoring): ``eval_l2_1s``, ``eval_l2_2s``, ``eval_l2_3s``, ``eval_l2_avg`` (ST-P3
  running mean, m), ``eval_collision_avg`` (ST-P3, %), ``eval_uniad_l2_avg`` (m),
  ``eval_num_open_loop`` (samples scored). ``metric_for_best_model="eval_l2_avg"`` with
  ``greater_is_better=False`` keeps the best checkpoint.
"""

from __future__ import annotations

from dataclasses import fields

import torch

from dsdrive.data.types import PlanningSample
from dsdrive.training.loss_terms import LossTermsTrainer
from dsdrive.distilldrive.teacher_inputs import TeacherBatch, build_teacher_batch
from dsdrive.distilldrive.teacher_evaluation import evaluate_teacher

LOSS_TERMS = ("plan_cls", "plan_reg", "motion_cls", "motion_reg", "status", "kl", "dqn", "dqn_reward")
"""Loss terms of :meth:`PlanningTeacher.compute_loss` logged by the trainer (those present)."""


class TeacherCollator:
    """List of :class:`PlanningSample` -> dict of the :class:`TeacherBatch` fields (tensors + ``sample_ids``).

    A plain dict lets ``Trainer`` / ``accelerate`` move the tensors to the device; the trainer turns
    it back into a :class:`TeacherBatch`.

    Args:
        batch_kwargs: :meth:`PlanningTeacherConfig.batch_kwargs` (map classes, agent caps, ROI).

    Raises:
        ValueError: from :func:`build_teacher_batch` (empty list, unknown command or map type).
    """

    def __init__(self, batch_kwargs: dict):
        self.batch_kwargs = dict(batch_kwargs)

    def __call__(self, samples: list[PlanningSample]) -> dict:
        batch = build_teacher_batch(list(samples), **self.batch_kwargs)
        return {f.name: getattr(batch, f.name) for f in fields(batch)}


def to_teacher_batch(inputs: dict) -> TeacherBatch:
    """Rebuild a :class:`TeacherBatch` from a :class:`TeacherCollator` dict.

    Raises:
        ValueError: a field is missing (names it and the keys present).
    """
    names = [f.name for f in fields(TeacherBatch)]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"PlanningTeacherTrainer: batch misses {missing} (keys {sorted(inputs)}); use TeacherCollator")
    return TeacherBatch(**{n: inputs[n] for n in names})


class PlanningTeacherTrainer(LossTermsTrainer):
    """``Trainer`` for :class:`dsdrive.distilldrive.PlanningTeacher` (see the module docstring).

    Args:
        model: the teacher, vocabularies installed (:meth:`PlanningTeacher.set_vocabularies`).
        args: :class:`dsdrive.training.planning_teacher_config.PlanningTeacherTrainingConfig`
            (any ``TrainingArguments`` works).
        train_dataset, eval_dataset: lists of :class:`PlanningSample`.
        data_collator: default :class:`TeacherCollator` with the model's ``batch_kwargs``.
    """

    def __init__(self, model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None, **kwargs):
        if data_collator is None and model is not None:
            data_collator = TeacherCollator(model.config.batch_kwargs())
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, **kwargs)
        self.loss_is_scaled_for_ga = False  # the teacher's loss is a per-batch mean
        self._open_loop_samples: list[PlanningSample] | None = None

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        """Every trainable parameter decays (DistillDrive's AdamW; see the module docstring)."""
        return [n for n, p in model.named_parameters() if p.requires_grad]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The teacher's total loss on one batch (terms stored for :meth:`log`)."""
        batch = to_teacher_batch(inputs)
        out = model(batch)  # through DDP when wrapped, so gradients are synchronised
        loss, logs = self.accelerator.unwrap_model(model).compute_loss(batch, out)
        mode = "train" if model.training else "eval"
        for k in LOSS_TERMS:
            if k in logs:
                self._terms[mode][k].append(logs[k])
        return (loss, out) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation batches give the loss only; plans are scored in :meth:`evaluation_loop`."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Loss and held-out open-loop metrics (see the module docstring) of ``eval_dataset`` (default: the trainer's)."""
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        self._open_loop_samples = list(dataset) if isinstance(dataset, list) else None
        try:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._open_loop_samples = None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        """Trainer's loss loop plus open-loop L2 / collision of the selected plans."""
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self._open_loop_samples:
            model = self.accelerator.unwrap_model(self.model)
            report = evaluate_teacher(model, self._open_loop_samples, batch_size=self.args.per_device_eval_batch_size)
            if report["num_evaluated"]:
                all_ = report["metrics"]["ALL"]
                stp3, uniad = all_["stp3"], all_["uniad"]
                for t in ("1s", "2s", "3s", "avg"):
                    output.metrics[f"{metric_key_prefix}_l2_{t}"] = round(float(stp3["L2"][t]), 5)
                output.metrics[f"{metric_key_prefix}_collision_avg"] = round(float(stp3["collision"]["avg"]), 5)
                output.metrics[f"{metric_key_prefix}_uniad_l2_avg"] = round(float(uniad["L2"]["avg"]), 5)
            output.metrics[f"{metric_key_prefix}_num_open_loop"] = report["num_evaluated"]
        return output
