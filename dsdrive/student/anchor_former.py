"""Self-anchored visual distillation (EvoDriveVLA, arXiv 2603.09465; code hey-cjj/EvoDriveVLA).

Fine-tuning a VLM's vision tower on driving data lets its features drift from what the pretrained
tower knew. EvoDriveVLA anchors them to a *frozen copy of the student's own vision tower* (the
"anchor", taken before fine-tuning) and weights the anchoring per region by how much the region
matters for the drive, judged from the instruction, the ego state and the ground-truth future:

* :class:`AnchorFormer`: a copy of the LLM's first decoder layer (pretrained weights, made
  bidirectional), a learnable query token and a linear ranker. Its input per sample is
  ``[anchor region features (n, D); embeddings of the prompt text (instruction, ego state) and the
  ground-truth answer tokens (m, D); query (1, D)]``; its outputs ``h_i`` (regions) and ``h_q``
  (the query) give ``w_i = sigmoid(ranker(h_i * h_q) / tau)`` with ``tau = 2``.
* :func:`anchor_loss`: ``L_enc = sum_i w_i * mean_c (f_anchor_i,c - f_student_i,c)^2 / sum_i w_i``,
  averaged over the samples of the batch; weight 0.05 in the student loss
  (:mod:`dsdrive.training.evodrive_trainer`).

Regions are the vision tower's merged tokens (one per 28 x 28 pixels of a camera image, the
``pooler_output`` of Qwen2.5-VL's vision tower; D = the LLM's hidden size). The ranker starts at
zero (every ``w_i`` = 0.5: a plain mean until it learns); the AnchorFormer is trained by ``L_enc``
itself, as the loss is written, through an extra optimizer group (its weights are not part of the
exported VLM). ``sigmoid`` keeps every ``w_i`` in (0, 1), so no region's anchoring is switched off.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def frozen_anchor(vision_tower: nn.Module) -> nn.Module:
    """A frozen deep copy of ``vision_tower`` in eval mode (the anchor; its parameters never train)."""
    anchor = copy.deepcopy(vision_tower).eval()
    anchor.requires_grad_(False)
    return anchor


def language_model_of(vlm) -> nn.Module:
    """The text decoder (``Qwen2_5_VLTextModel``) of a Qwen2-VL-family VLM, peft-wrapped or not.

    Raises:
        ValueError: the model has no ``model.language_model`` with ``layers`` (not Qwen2-VL family).
    """
    base = vlm.get_base_model() if hasattr(vlm, "get_base_model") else vlm
    lm = getattr(getattr(base, "model", None), "language_model", None)
    if lm is None or not hasattr(lm, "layers"):
        raise ValueError(f"AnchorFormer: {type(base).__name__} has no model.language_model.layers (not a Qwen2-VL-family VLM)")
    return lm


class AnchorFormer(nn.Module):
    """Region weights from the instruction, ego state and ground-truth future (module docstring).

    Args:
        vlm: the student VLM (Qwen2-VL family); its first decoder layer, final norm and rotary
            embedding are *copied* (the copy trains, the student's layer is untouched).
        temperature: ``tau`` in ``sigmoid(ranker(h_i * h_q) / tau)`` (EvoDriveVLA: 2).

    Raises:
        ValueError: ``vlm`` is not of the Qwen2-VL family, or ``temperature`` <= 0.
    """

    def __init__(self, vlm, temperature: float = 2.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"AnchorFormer: temperature={temperature!r} must be > 0")
        lm = language_model_of(vlm)
        self.layer = copy.deepcopy(lm.layers[0])
        self.layer.self_attn.is_causal = False  # regions read the text and the query reads everything
        self.norm = copy.deepcopy(lm.norm)
        self.rotary = copy.deepcopy(lm.rotary_emb)
        self.layer.requires_grad_(True)
        self.norm.requires_grad_(True)
        hidden = int(lm.config.hidden_size)
        self.query = nn.Parameter(torch.randn(hidden) * 0.02)
        self.ranker = nn.Linear(hidden, 1)
        nn.init.zeros_(self.ranker.weight)
        nn.init.zeros_(self.ranker.bias)
        self.temperature = float(temperature)

    def forward(self, regions: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Weights of one sample's regions.

        Args:
            regions: (n, D) region features (the anchor's, detached by the caller).
            text: (m, D) token embeddings of the prompt text and the ground-truth answer.

        Returns:
            (n,) weights in (0, 1).
        """
        x = torch.cat([regions, text, self.query[None].to(regions.dtype)], 0)[None]  # (1, n + m + 1, D)
        pos = torch.arange(x.shape[1], device=x.device)[None]
        h = self.norm(self.layer(x, position_embeddings=self.rotary(x, pos), position_ids=pos))[0]
        hq, hi = h[-1], h[: regions.shape[0]]
        return torch.sigmoid(self.ranker(hi * hq).squeeze(-1) / self.temperature)


def anchor_loss(student_feats: torch.Tensor, anchor_feats: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``L_enc`` of one sample: ``sum_i w_i * mean_c (f_anchor - f_student)^2 / sum_i w_i``.

    Args:
        student_feats, anchor_feats: (n, D) region features of the student's and the frozen anchor's tower.
        weights: (n,) region weights (> 0).

    Raises:
        ValueError: shapes that disagree (naming them).
    """
    if student_feats.shape != anchor_feats.shape or weights.shape != student_feats.shape[:1]:
        raise ValueError(f"anchor_loss: student {tuple(student_feats.shape)}, anchor {tuple(anchor_feats.shape)}, "
                         f"weights {tuple(weights.shape)}; expected (n, D), (n, D), (n,)")
    per_region = (anchor_feats.float() - student_feats.float()).pow(2).mean(-1)
    return (weights.float() * per_region).sum() / weights.float().sum()


class SelfAnchor(nn.Module):
    """The frozen anchor tower and the AnchorFormer of one student: ``L_enc`` of a batch.

    Args:
        vlm: the student VLM, *before* fine-tuning (the anchor is its vision tower now).
        temperature: the AnchorFormer's ``tau``.
    """

    def __init__(self, vlm, temperature: float = 2.0):
        super().__init__()
        base = vlm.get_base_model() if hasattr(vlm, "get_base_model") else vlm
        self.anchor = frozen_anchor(base.model.visual)
        self.former = AnchorFormer(vlm, temperature)
        self.image_token_id = int(base.config.image_token_id)

    def train(self, mode: bool = True):
        """The anchor stays in eval mode whatever the mode."""
        super().train(mode)
        self.anchor.eval()
        return self

    def forward(self, student_feats: torch.Tensor, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor,
                input_ids: torch.Tensor, attention_mask: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Mean ``L_enc`` over the batch's samples.

        Args:
            student_feats: (N, D) the student's merged region features of all images of the batch,
                in batch order (``image_outputs.pooler_output`` concatenated).
            pixel_values, image_grid_thw: the batch's images (the anchor re-encodes them, no grad).
            input_ids, attention_mask: (B, L) the batch (prompt + ground-truth answer, left-padded).
            text_embeds: (B, L, D) token embeddings of ``input_ids`` (the student's embedding table).

        Raises:
            ValueError: the image-token count of the batch differs from the number of regions.
        """
        with torch.no_grad():
            out = self.anchor(pixel_values, grid_thw=image_grid_thw)
            anchor_feats = (out.pooler_output if hasattr(out, "pooler_output") else out).to(student_feats.dtype)
        is_image = input_ids == self.image_token_id
        counts = is_image.sum(1).tolist()
        if sum(counts) != student_feats.shape[0] or anchor_feats.shape != student_feats.shape:
            raise ValueError(f"SelfAnchor: {sum(counts)} image tokens in the batch, student regions {tuple(student_feats.shape)}, "
                             f"anchor regions {tuple(anchor_feats.shape)}")
        losses, start = [], 0
        for i, n in enumerate(counts):
            if n == 0:
                continue
            s, a = student_feats[start:start + n], anchor_feats[start:start + n]
            start += n
            text = text_embeds[i][(attention_mask[i] == 1) & ~is_image[i]].detach()
            w = self.former(a.detach(), text.to(a.dtype))
            losses.append(anchor_loss(s, a, w))
        if not losses:
            return student_feats.sum() * 0.0
        return torch.stack(losses).mean()


__all__ = ["frozen_anchor", "language_model_of", "AnchorFormer", "anchor_loss", "SelfAnchor"]
