"""Agent encoder of the DistillDrive planning teacher (YuruiAI/DistillDrive, stage-0 "DLP").

Each agent is a 13-token sequence: its current box (t = 0) and its **ground-truth future**
(t = 1..12 at 0.5 s), 9 channels per token (see
:data:`dsdrive.distilldrive.teacher_inputs.AGENT_STEP_CHANNELS`). Tokens go through an MLP
(9 -> D -> D) plus a sine embedding of the step index, a post-norm Transformer encoder over time
(DistillDrive: 4 layers, d 256, 8 heads, ffn 1024, dropout 0.1), and the t = 0 token is the
agent's feature. A sine embedding of the current (x, y) through an MLP is the agent's position
embedding, added to the feature, plus a learnt class embedding (an addition of ours: the motion
vocabulary is per class, so the teacher is told the class it indexes with).
"""

from __future__ import annotations

import torch
from torch import nn

from dsdrive.distilldrive.layers import mlp
from dsdrive.layers import sine_embedding
from dsdrive.distilldrive.teacher_inputs import AGENT_STEP_CHANNELS
from dsdrive.data.types import AGENT_TYPES


class AgentEncoder(nn.Module):
    """Temporal Transformer over each agent's privileged GT future.

    Args:
        dim: feature size D.
        layers, heads, ffn_dim, dropout: the time encoder (post-norm ``nn.TransformerEncoder``).
        pos_feats: sine features per coordinate for the time and position embeddings.
    """

    def __init__(self, dim: int, layers: int = 4, heads: int = 8, ffn_dim: int = 1024, dropout: float = 0.1, pos_feats: int = 64):
        super().__init__()
        self.pos_feats = pos_feats
        self.step_mlp = mlp(AGENT_STEP_CHANNELS, dim, dim, layers=2)
        self.time_mlp = nn.Linear(pos_feats, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pos_mlp = mlp(2 * pos_feats, dim, dim, layers=2)
        self.class_embed = nn.Embedding(len(AGENT_TYPES), dim)

    def forward(self, steps: torch.Tensor, pos: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode agents.

        Args:
            steps: (B, N, T, 9) per-step channels; channel 8 is the step-valid flag (t = 0 always 1
                for real agents).
            pos: (B, N, 2) current centre, ego frame (m).
            cls: (B, N) long class index into :data:`AGENT_TYPES`.

        Returns:
            feature (B, N, D) and position embedding (B, N, D).
        """
        b, n, t, _ = steps.shape
        x = self.step_mlp(steps.reshape(b * n, t, -1))
        tidx = torch.arange(t, device=steps.device, dtype=torch.float32)[:, None] / t
        x = x + self.time_mlp(sine_embedding(tidx, self.pos_feats))
        pad = steps.reshape(b * n, t, -1)[..., -1] < 0.5
        pad[:, 0] = False  # t = 0 always attends (padded agents are masked later)
        x = self.encoder(x, src_key_padding_mask=pad)[:, 0].reshape(b, n, -1)
        pos_embed = self.pos_mlp(sine_embedding(pos, self.pos_feats))
        return x + self.class_embed(cls), pos_embed
