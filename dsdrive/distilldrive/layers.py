"""MLP blocks shared by the DistillDrive modules (the sine embedding they use is
:func:`dsdrive.layers.sine_embedding`, shared with the student).

Source: SparseDrive's ``linear_relu_ln`` (swc-17/SparseDrive), rewritten.
"""

from __future__ import annotations

from torch import nn


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
