"""Trainer of the text-trajectory VLA baseline: supervised fine-tuning on the waypoint text.

Why ``transformers.Trainer`` and not trl's ``SFTTrainer``: the baseline must read exactly the camera
student's pixels (the benchmark compares the two on the same images), and those come from
:func:`dsdrive.student.vision_backbone.collate_cameras`, which decodes each sample's camera files
lazily at its calibrated, pixel-budgeted size. ``SFTTrainer``'s vision path wants decoded PIL
images in an ``images`` column and resizes them itself, and would tokenise its own chat
rendering; the batch here is already ``input_ids`` / ``labels`` / ``pixel_values`` /
``image_grid_thw`` from :class:`dsdrive.student.text_trajectory_vla.TextTrajectoryProcessor`, so
the Trainer with a collator is the smaller fit. The loss lives in one overridable
:meth:`TextTrajectoryTrainer.compute_loss`, where EvoDriveVLA's distillation terms (logit T²·KL,
hidden states; arXiv 2603.09465) are to be added.

Loss: the token cross-entropy of the answer (the trajectory text and its eos); prompt and image
tokens are -100. Batches are left-padded, so every answer ends at the last position and only the
last ``max answer length + 1`` positions need logits (``logits_to_keep``; the full-vocabulary
logits of 1,400 image tokens are never made). With ``num_items_in_batch`` (the Trainer's count of
label tokens over the accumulated micro-batches) the loss is the sum over that count, so batch
1 x 8 accumulation equals batch 8 x 1; without it, the mean over the batch's answer tokens. The
per-token mean is logged as ``trajectory_ce``.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from dsdrive.training.loss_terms import LossTermsTrainer


class TextTrajectoryItems(Dataset):
    """PlanningSamples encoded once by a TextTrajectoryProcessor (prompt + answer ids, image headers only).

    Raises:
        ValueError: a sample without a fully valid future or a missing camera (the processor's message).
    """

    def __init__(self, samples, processor):
        self.items = [processor.encode_sample(s) for s in tqdm(samples, desc="encode", unit="sample", leave=False)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def answer_window(labels: torch.Tensor) -> int:
    """Positions whose logits the loss needs in a left-padded batch: the longest answer + 1."""
    return int((labels != -100).sum(1).max()) + 1


def trajectory_token_ce(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy of the answer tokens.

    Args:
        logits: (B, K, V) logits of the last K positions; labels: (B, K) the same positions' labels
            (-100 = not a target); position j's logits predict label j + 1.
        num_items_in_batch: label-token count to divide the sum by (gradient accumulation); None = mean.

    Returns:
        ``(loss, per-token mean)``; both 0 (graph-connected) when no label is set.
    """
    target = labels[:, 1:]
    flat = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    total = torch.nn.functional.cross_entropy(flat, target.reshape(-1), ignore_index=-100, reduction="sum")
    n = (target != -100).sum()
    mean = total / n.clamp(min=1)
    if num_items_in_batch is None:
        return mean, mean
    denom = num_items_in_batch.to(total.device) if torch.is_tensor(num_items_in_batch) else float(num_items_in_batch)
    return total / denom, mean


class TextTrajectoryTrainer(LossTermsTrainer):
    """``Trainer`` of the baseline; pass ``data_collator=processor.collate`` (module docstring)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Answer-token cross-entropy (module docstring); override to add distillation terms.

        Raises:
            ValueError: the batch has no ``labels`` (a batch of inputs only).
        """
        if "labels" not in inputs:
            raise ValueError(f"TextTrajectoryTrainer: batch without labels (keys {sorted(inputs)})")
        labels = inputs["labels"]
        keep = answer_window(labels)
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep)
        loss, mean = trajectory_token_ce(outputs.logits, labels[:, -keep:], num_items_in_batch)
        self._terms["train" if model.training else "eval"]["trajectory_ce"].append(float(mean.detach()))
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation: the loss only (plans are scored open-loop by :mod:`dsdrive.evaluation.open_loop`)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


__all__ = ["TextTrajectoryItems", "answer_window", "trajectory_token_ce", "TextTrajectoryTrainer"]
