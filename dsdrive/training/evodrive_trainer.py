"""The text-trajectory student's trainer with EvoDriveVLA's distillation losses (arXiv 2603.09465).

    loss = CE_GT + 0.1 * T^2 * KL(p_T* || p_S)  (T = 5)  + 0.2 * SmoothL1(h_S, h_T*)  + 0.05 * L_enc

* ``CE_GT``: the baseline's answer cross-entropy
  (:func:`~dsdrive.training.text_trajectory_trainer.trajectory_token_ce`, summed over
  ``num_items_in_batch`` under gradient accumulation, as the baseline).
* ``KL(p_T* || p_S)`` (``logit_kd``): forward KL per answer token between the picked soft target
  (:mod:`dsdrive.training.soft_targets`) and the student at temperature T, x T^2 (Hinton et al.
  2015), averaged over the batch's answer tokens. The divergence is trl's
  (:func:`dsdrive.training.token_kd.sparse_topk_kd`, trl >= 1.16 ``server_distillation``'s
  ``_jsd_divergence`` with beta 0); with the whole vocabulary stored it is the dense KL, with a
  top-k it is renormalised on the teacher's top-k.
* ``SmoothL1(h_S, h_T*)`` (``hidden_kd``): between the student's and the teacher's final hidden
  states (the LM heads' inputs) at the positions predicting answer tokens, mean over tokens and
  channels (teacher and student share the architecture, so the sizes match).
* ``L_enc`` (``self_anchor``): :class:`dsdrive.student.anchor_former.SelfAnchor` on the student's
  merged vision-tower features of the same forward pass (``image_outputs`` of the VLM's output,
  so the tower runs once for the student; the frozen anchor runs once more, without grad).

The KD and anchor terms are per-batch means (not divided by ``num_items_in_batch``). Each term is
logged (``trajectory_ce``, ``logit_kd``, ``hidden_kd``, ``anchor_enc``). With every switch off,
:meth:`EvoDriveTrainer.compute_loss` *is* the baseline's (it calls it; tested equal).

Why a ``Trainer`` subclass and not trl's ``DistillationTrainer`` / ``ServerDistillationTrainer``:
they distil on-policy from a teacher run during training and take text-only causal-LM batches;
EvoDriveVLA's targets are offline (picked among four teacher candidates before the student
trains, no teacher loaded) and the batch is the camera VLM's (``pixel_values``, ``image_grid_thw``),
with hidden-state and vision-tower terms beside the logits. trl's divergence code is reused.
"""

from __future__ import annotations

import torch

from dsdrive.training.soft_targets import SOFT_KEYS, collate_soft_targets
from dsdrive.training.text_trajectory_trainer import TextTrajectoryTrainer, answer_window, trajectory_token_ce
from dsdrive.training.token_kd import sparse_topk_kd


def evodrive_collator(processor):
    """``processor.collate`` plus the soft-target tensors of :func:`collate_soft_targets` (when the items carry them)."""

    def collate(items):
        batch = processor.collate(items)
        batch.update(collate_soft_targets(items))
        return batch

    return collate


class EvoDriveTrainer(TextTrajectoryTrainer):
    """``Trainer`` of the EvoDriveVLA student (module docstring).

    Args (beyond ``Trainer``'s): ``args`` an :class:`~dsdrive.training.evodrive_config.EvoDriveConfig`;
    ``self_anchor`` a :class:`~dsdrive.student.anchor_former.SelfAnchor` built from the student
    before training (required with ``args.self_anchor``; its AnchorFormer joins the optimizer as an
    extra group without weight decay). Pass ``data_collator=evodrive_collator(processor)``.

    Raises:
        ValueError: ``self_anchor`` switched on without a SelfAnchor; a KD switch on but a batch
            without soft targets (naming the switch).
    """

    def __init__(self, *args, self_anchor=None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.self_anchor and self_anchor is None:
            raise ValueError("EvoDriveTrainer: self_anchor is on but no SelfAnchor was given")
        self.self_anchor = self_anchor.to(self.args.device) if (self_anchor is not None and self.args.self_anchor) else None

    def create_optimizer(self, model=None):
        """The ``Trainer``'s optimizer plus the AnchorFormer's parameters (no weight decay)."""
        opt = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if self.self_anchor is not None and not getattr(self, "_anchor_group_added", False):
            params = [p for p in self.self_anchor.former.parameters() if p.requires_grad]
            self.optimizer.add_param_group({"params": params, "weight_decay": 0.0})
            self._anchor_group_added = True
        return opt

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """CE_GT + the switched-on EvoDriveVLA terms (module docstring).

        Raises:
            ValueError: no ``labels``, or a KD switch on and the batch has no soft targets.
        """
        soft = {k: inputs.pop(k) for k in SOFT_KEYS if k in inputs}
        args = self.args
        if not args.distills:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if "labels" not in inputs:
            raise ValueError(f"EvoDriveTrainer: batch without labels (keys {sorted(inputs)})")
        if (args.logit_kd or args.hidden_kd) and not soft:
            raise ValueError(f"EvoDriveTrainer: logit_kd={args.logit_kd} / hidden_kd={args.hidden_kd} but the batch has no soft targets "
                             f"(soft_targets={args.soft_targets!r})")
        mode = "train" if model.training else "eval"
        vlm = self.accelerator.unwrap_model(model)
        vlm = vlm.get_base_model() if hasattr(vlm, "get_base_model") else vlm
        labels = inputs["labels"]
        keep = answer_window(labels)
        out = vlm.model(**{k: v for k, v in inputs.items() if k != "labels"})
        hidden = out.last_hidden_state[:, -keep:]
        logits = vlm.lm_head(hidden)
        loss, mean = trajectory_token_ce(logits, labels[:, -keep:], num_items_in_batch)
        self._terms[mode]["trajectory_ce"].append(float(mean.detach()))
        if soft:
            w = keep - 1
            ids, lps, th, tm = (soft[k].to(logits.device) for k in SOFT_KEYS)
            if ids.shape[1] > w:
                raise ValueError(f"EvoDriveTrainer: soft targets of {ids.shape[1]} answer tokens for an answer window of {w}")
            pad = w - ids.shape[1]  # right-aligned: pad on the left up to the window
            ids = torch.nn.functional.pad(ids, (0, 0, pad, 0))
            lps = torch.nn.functional.pad(lps, (0, 0, pad, 0), value=float("-inf"))
            th = torch.nn.functional.pad(th, (0, 0, pad, 0))
            tm = torch.nn.functional.pad(tm, (pad, 0), value=False)
            if not torch.equal(tm, labels[:, -keep:][:, 1:] != -100):
                raise ValueError("EvoDriveTrainer: the soft targets' answer positions differ from the batch's labels")
            if args.logit_kd:
                kd = sparse_topk_kd(logits[:, :-1], ids, lps, tm, "forward_kl", temperature=args.kd_temperature)
                loss = loss + args.logit_kd_weight * kd
                self._terms[mode]["logit_kd"].append(float(kd.detach()))
            if args.hidden_kd:
                hs = hidden[:, :-1][tm]
                sl1 = torch.nn.functional.smooth_l1_loss(hs.float(), th[tm].float())
                loss = loss + args.hidden_kd_weight * sl1
                self._terms[mode]["hidden_kd"].append(float(sl1.detach()))
        if args.self_anchor:
            feats = out.image_outputs.pooler_output
            feats = torch.cat(list(feats), 0) if isinstance(feats, (tuple, list)) else feats
            embeds = vlm.model.get_input_embeddings()(inputs["input_ids"])
            enc = self.self_anchor(feats, inputs["pixel_values"], inputs["image_grid_thw"], inputs["input_ids"], inputs["attention_mask"], embeds)
            loss = loss + args.self_anchor_weight * enc
            self._terms[mode]["anchor_enc"].append(float(enc.detach()))
        return (loss, out) if return_outputs else loss


__all__ = ["evodrive_collator", "EvoDriveTrainer"]
