"""Map encoder of the DistillDrive planning teacher: PointNet over polyline segments.

Each polyline (20 points, ego frame) is 19 segments x 6 channels (start and end relative to the
polyline midpoint, unit direction; see :mod:`dsdrive.distilldrive.teacher_inputs`). A shared
per-segment MLP, a max-pool over segments and a second MLP on ``[segment, pooled]`` then a
final max-pool give one token per polyline (PointNet / VectorNet style), plus a class embedding
and a sine embedding of the midpoint through an MLP as the map position embedding. Source:
DistillDrive's MapEncoder (facts in ``shared/research/distilldrive.md``), rewritten.
"""

from __future__ import annotations

import torch
from torch import nn

from dsdrive.distilldrive.layers import mlp
from dsdrive.layers import sine_embedding
from dsdrive.distilldrive.teacher_inputs import MAP_SEGMENT_CHANNELS


class MapEncoder(nn.Module):
    """PointNet polyline encoder.

    Args:
        dim: token size D.
        num_classes: number of map classes (the config's ``map_classes``).
        pos_feats: sine features per coordinate of the midpoint embedding.
    """

    def __init__(self, dim: int, num_classes: int, pos_feats: int = 64):
        super().__init__()
        self.pos_feats = pos_feats
        self.point_mlp = mlp(MAP_SEGMENT_CHANNELS, dim, dim, layers=2)
        self.fuse_mlp = mlp(2 * dim, dim, dim, layers=2)
        self.class_embed = nn.Embedding(num_classes, dim)
        self.pos_mlp = mlp(2 * pos_feats, dim, dim, layers=2)

    def forward(self, segments: torch.Tensor, mid: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode polylines.

        Args:
            segments: (B, M, 19, 6) segment channels (m).
            mid: (B, M, 2) polyline midpoints, ego frame (m).
            cls: (B, M) long map class.

        Returns:
            feature (B, M, D) and position embedding (B, M, D).
        """
        x = self.point_mlp(segments)
        pooled = x.max(dim=2, keepdim=True).values.expand_as(x)
        x = self.fuse_mlp(torch.cat([x, pooled], dim=-1)).max(dim=2).values
        return x + self.class_embed(cls), self.pos_mlp(sine_embedding(mid, self.pos_feats))
