"""Small building blocks shared by the DistillDrive modules: sine position embedding and MLPs.

Source: SparseDrive's ``pos2posemb2d`` / ``linear_relu_ln`` (swc-17/SparseDrive), rewritten.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sine_embedding(x: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sine/cosine embedding of each scalar of ``x`` (Transformer / DETR style, scale 2*pi).

    Args:
        x: (..., C) float tensor (metres, seconds or indices; used as-is times 2*pi).
        num_feats: features per scalar; must be even.

    Returns:
        (..., C * num_feats) float tensor, per scalar ``[sin(x/t_0), cos(x/t_0), sin(x/t_1), ...]``.

    Raises:
        ValueError: ``num_feats`` is odd.
    """
    if num_feats % 2:
        raise ValueError(f"sine_embedding: num_feats must be even, got {num_feats}")
    dim_t = torch.arange(num_feats // 2, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * dim_t / num_feats)
    pos = x.float().unsqueeze(-1) * (2 * math.pi) / dim_t  # (..., C, F/2)
    emb = torch.stack([pos.sin(), pos.cos()], dim=-1).flatten(-2)  # (..., C, F)
    return emb.flatten(-2)


def mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, layer_norm: bool = True) -> nn.Sequential:
    """``layers`` Linear blocks (Linear -> ReLU [-> LayerNorm]) with a plain Linear output.

    Args:
        in_dim, hidden_dim, out_dim: feature sizes; ``layers`` >= 1 (1 = a single Linear).
    """
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden_dim), nn.ReLU(inplace=True)]
        if layer_norm:
            mods.append(nn.LayerNorm(hidden_dim))
        d = hidden_dim
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)
