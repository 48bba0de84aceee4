"""Single-scale 2D deformable attention in pure PyTorch (Deformable DETR, Zhu et al., ICLR 2021).

Used by the RSD RiskHead (arXiv 2511.14499) on the student's BEV map. No custom CUDA kernel:
sampling is ``torch.nn.functional.grid_sample`` (bilinear, zero padding), so it runs on CPU and
GPU alike and is differentiable in the queries, the reference points and the value map.

For each query q, head h and point p the module predicts a sampling offset Delta_{qhp}
(in cells) and an attention weight A_{qhp} (softmax over the points of a head), and returns

    out_q = W_o concat_h sum_p A_{qhp} * V_h(ref_q + Delta_{qhp})
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DeformableAttention2D(nn.Module):
    """Deformable attention of queries over one 2D feature map.

    Args:
        dim: channel width C of queries and values (divisible by ``heads``).
        heads: attention heads.
        points: sampling points per head.
    """

    def __init__(self, dim: int, heads: int = 4, points: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"DeformableAttention2D: dim={dim} not divisible by heads={heads}")
        self.dim, self.heads, self.points = dim, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * points * 2)
        self.attention_weights = nn.Linear(dim, heads * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR init: offsets start on a ring of growing radius per point, one direction per head."""
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        ring = torch.stack([theta.cos(), theta.sin()], -1)
        ring = ring / ring.abs().max(-1, keepdim=True)[0]
        bias = ring[:, None, :].repeat(1, self.points, 1) * torch.arange(1, self.points + 1, dtype=torch.float32)[None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        # small (not zero) weights so every parameter receives gradient from the first step
        nn.init.normal_(self.attention_weights.weight, std=0.01)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Attend from queries to a feature map.

        Args:
            query: (B, Q, C) query features.
            reference_points: (B, Q, 2) reference location of each query in ``grid_sample``
                coordinates (column, row) in [-1, 1] (``align_corners=False``).
            value: (B, C, H, W) value map.

        Returns:
            (B, Q, C).

        Raises:
            ValueError: mismatched channel widths.
        """
        b, q, c = query.shape
        if value.shape[1] != c or c != self.dim:
            raise ValueError(f"DeformableAttention2D: query C={c}, value C={value.shape[1]}, module dim={self.dim}")
        h, w = value.shape[-2:]
        nh, npt = self.heads, self.points
        v = self.value_proj(value.flatten(2).transpose(1, 2))  # (B, HW, C)
        v = v.reshape(b, h * w, nh, c // nh).permute(0, 2, 3, 1).reshape(b * nh, c // nh, h, w)
        offsets = self.sampling_offsets(query).reshape(b, q, nh, npt, 2)
        # offsets are in cells; one cell spans 2/W (columns) and 2/H (rows) in normalised units
        scale = query.new_tensor([2.0 / w, 2.0 / h])
        loc = reference_points[:, :, None, None, :] + offsets * scale  # (B, Q, nh, P, 2)
        attn = self.attention_weights(query).reshape(b, q, nh, npt).softmax(-1)
        grid = loc.permute(0, 2, 1, 3, 4).reshape(b * nh, q, npt, 2)
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B*nh, C/nh, Q, P)
        attn = attn.permute(0, 2, 1, 3).reshape(b * nh, 1, q, npt)
        out = (sampled * attn).sum(-1)  # (B*nh, C/nh, Q)
        out = out.reshape(b, nh, c // nh, q).permute(0, 3, 1, 2).reshape(b, q, c)
        return self.output_proj(out)
