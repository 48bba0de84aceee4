"""Scene encoder of the student: current-frame perception -> scene tokens and a BEV feature map.

Inputs (ego frame of the current time, x forward, y left, metres; NO future value):

* agents (B, N, 9): box ``x, y, z, length, width, height, yaw`` + velocity ``vx, vy`` (m/s),
  agent_types (B, N) long over :data:`dsdrive.data.types.AGENT_TYPES`, agents_mask (B, N) bool;
* map_points (B, M, 20, 2), map_types (B, M) long over :data:`dsdrive.data.types.MAP_TYPES`, map_mask (B, M);
* ego (B, 28): ego_status (6) and its mask (6), history x, y, heading (4 x 3) and its mask (4)
  (:data:`EGO_FEATURES`); command (B,) long over COMMANDS.

Each instance becomes one token (ego token, N agent tokens, M polyline tokens; a PointNet over
the 19 segments of a polyline as in DistillDrive's map encoder), plus a sine embedding of its
position; a transformer encoder lets tokens see each other (padding masked). The tokens are
(a) projected to the LLM hidden size and put in front of the prompt (DSDrive's visual tokens
-> Q-Former -> LLM role), and (b) splatted into the BEV grid (:func:`dsdrive.student.bev.scatter_to_bev`)
followed by two 3x3 convolutions, the BEV map for the RiskHead (RSD).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dsdrive.constants import EGO_LENGTH_M, EGO_WIDTH_M
from dsdrive.layers import sine_embedding
from dsdrive.student.bev import BevGrid, agent_points, scatter_to_bev
from dsdrive.student.waypoint_head import STATUS_SCALE

EGO_FEATURES = 28
"""ego vector: ego_status (6), ego_status_mask (6), ego_history x, y, heading (4 x 3) flattened,
ego_history_mask (4); masks as 0/1 floats."""
AGENT_FEATURES = 9
"""agent vector: box (7) + velocity (2)."""


def _mlp(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, o), nn.GELU(), nn.Linear(o, o))


def ego_token_features(ego: torch.Tensor, position_scale: float) -> torch.Tensor:
    """(B, 28) ego vector (:data:`EGO_FEATURES`) -> (B, 32) normalised input of the ego token's MLP:
    status / :data:`~dsdrive.student.waypoint_head.STATUS_SCALE` (masked), its mask, history x, y /
    ``position_scale`` with cos, sin of the heading (masked), the history mask."""
    status, smask = ego[:, :6], ego[:, 6:12]
    hist, hmask = ego[:, 12:24].reshape(-1, 4, 3), ego[:, 24:28]
    h = torch.cat([hist[..., :2] / position_scale, hist[..., 2:].cos(), hist[..., 2:].sin()], -1) * hmask[..., None]
    return torch.cat([status * smask / status.new_tensor(STATUS_SCALE), smask, h.flatten(1), hmask], -1)


class EgoEncoder(nn.Module):
    """The camera student's only non-image scene token: ego status, history and command -> (B, 1, C).

    These are not perception (the ego's own CAN bus / odometry and the route), so a camera-only
    student keeps them; it builds no agent or map token. Same features as :class:`SceneEncoder`'s
    ego token (:func:`ego_token_features`), then a LayerNorm.

    Args:
        dim: token width C; num_commands: command embedding size; position_scale: metres.
    """

    def __init__(self, dim: int, num_commands: int, position_scale: float = 50.0):
        super().__init__()
        self.scale = position_scale
        self.ego_mlp = _mlp(32, dim)
        self.command = nn.Embedding(num_commands, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ego: torch.Tensor, command: torch.Tensor) -> torch.Tensor:
        """ego (B, 28), command (B,) long -> (B, 1, C)."""
        return self.norm(self.ego_mlp(ego_token_features(ego, self.scale)) + self.command(command))[:, None]


class SceneEncoder(nn.Module):
    """Instances -> scene tokens (B, T=1+N+M, C) + mask, and BEV features (B, C, H, W).

    Args:
        dim: token / BEV width C (divisible by 4 and by ``heads``).
        layers, heads: transformer encoder over the tokens.
        num_agent_types, num_map_types, num_commands: embedding table sizes.
        grid: the BEV grid.
        position_scale: metres dividing positions before the MLPs.
    """

    def __init__(self, dim: int, layers: int, heads: int, num_agent_types: int, num_map_types: int, num_commands: int, grid: BevGrid, position_scale: float = 50.0):
        super().__init__()
        if dim % 4:
            raise ValueError(f"SceneEncoder: dim={dim} must be divisible by 4 (sine embedding)")
        self.dim, self.grid, self.scale = dim, grid, position_scale
        self.agent_mlp = _mlp(10, dim)
        self.agent_type = nn.Embedding(num_agent_types, dim)
        self.point_mlp = _mlp(6, dim)  # PointNet over segments: start xy, end xy, direction
        self.map_out = nn.Linear(dim, dim)
        self.map_type = nn.Embedding(num_map_types, dim)
        self.ego_mlp = _mlp(32, dim)
        self.command = nn.Embedding(num_commands, dim)
        self.token_kind = nn.Embedding(3, dim)  # ego, agent, map
        self.pos_mlp = _mlp(dim, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.bev_conv = nn.Sequential(nn.Conv2d(dim + 1, dim, 3, padding=1), nn.GELU(), nn.Conv2d(dim, dim, 3, padding=1))

    def _agent_tokens(self, agents: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        s = self.scale
        yaw = agents[..., 6]
        x = torch.stack(
            [agents[..., 0] / s, agents[..., 1] / s, agents[..., 2] / 5, agents[..., 3] / 10, agents[..., 4] / 10, agents[..., 5] / 5,
             yaw.cos(), yaw.sin(), agents[..., 7] / 10, agents[..., 8] / 10], -1)
        return self.agent_mlp(x) + self.agent_type(types)

    def _map_tokens(self, points: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        p = points / self.scale
        a, b = p[..., :-1, :], p[..., 1:, :]
        seg = torch.cat([a, b, (b - a) * 10], -1)  # (B, M, 19, 6)
        return self.map_out(self.point_mlp(seg).max(-2)[0]) + self.map_type(types)

    def _ego_token(self, ego: torch.Tensor, command: torch.Tensor) -> torch.Tensor:
        return self.ego_mlp(ego_token_features(ego, self.scale)) + self.command(command)

    def forward(self, agents, agent_types, agents_mask, map_points, map_types, map_mask, ego, command, with_bev: bool = True):
        """Encode one batch (shapes in the module docstring).

        ``with_bev`` False skips the BEV splat and its convolutions (only the RiskHead reads them;
        ``StudentModel.plan(risk_map=False)``); the tokens are the same either way.

        Returns:
            ``tokens`` (B, 1+N+M, C), ``token_mask`` (B, 1+N+M) bool (ego always True), ``bev``
            (B, C, H, W), None when ``with_bev`` is False.
        """
        b = ego.shape[0]
        ego_tok = self._ego_token(ego, command)[:, None]
        ag_tok = self._agent_tokens(agents, agent_types)
        mp_tok = self._map_tokens(map_points, map_types)
        tokens = torch.cat([ego_tok + self.token_kind.weight[0], ag_tok + self.token_kind.weight[1], mp_tok + self.token_kind.weight[2]], 1)
        pos = torch.cat([ego.new_zeros(b, 1, 2), agents[..., :2], map_points.mean(-2)], 1)
        # dim/4 frequencies pi / 1000**(4i/dim) per coordinate, blocks [sin x, cos x, sin y, cos y]
        pos_emb = sine_embedding(pos / self.scale, self.dim // 2, temperature=1000.0, scale=math.pi, interleave=False)
        tokens = tokens + self.pos_mlp(pos_emb)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=ego.device), agents_mask.bool(), map_mask.bool()], 1)
        tokens = self.norm(self.encoder(tokens, src_key_padding_mask=~mask))
        tokens = tokens * mask[..., None].to(tokens.dtype)
        return tokens, mask, self._bev(tokens, agents, agents_mask, map_points, map_mask) if with_bev else None

    def _bev(self, tokens, agents, agents_mask, map_points, map_mask) -> torch.Tensor:
        b, n = tokens.shape[0], agents.shape[1]
        ego_box = tokens.new_tensor([0, 0, 0, EGO_LENGTH_M, EGO_WIDTH_M, 1.5, 0]).expand(b, 1, 7)
        ag_pts = agent_points(torch.cat([ego_box, agents[..., :7]], 1))  # (B, 1+N, 5, 2)
        ag_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=tokens.device), agents_mask.bool()], 1)
        f1, w1 = scatter_to_bev(tokens[:, : 1 + n], ag_pts, ag_mask[..., None].expand(-1, -1, 5), self.grid)
        f2, w2 = scatter_to_bev(tokens[:, 1 + n :], map_points, map_mask.bool()[..., None].expand(-1, -1, map_points.shape[2]), self.grid)
        wsum = w1 + w2
        feat = (f1 + f2) / wsum.clamp(min=1.0)
        return self.bev_conv(torch.cat([feat, torch.log1p(wsum)], 1))
