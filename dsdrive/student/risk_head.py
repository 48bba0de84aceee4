"""RiskHead: BEV risk map from BEV features, learnt from a VLM's per-object risk (RSD, arXiv 2511.14499).

RSD adds a RiskHead to the planner's BEV features: deformable attention, then a per-cell risk
map R in [0, 1], trained with L_risk = ||R_pred - R_gt||_1 against the VLM's per-object risk
matched to BEV cells; consistency of two risk annotations is measured by Diff_Risk, which RSD
names without a formula: dsdrive's definition is :mod:`dsdrive.evaluation.metrics.risk`. Training adds a
soft-target BCE on the risk logits to RSD's L1 (see :func:`risk_l1_loss`): with the L1 alone the
sigmoid map saturated at 0 everywhere.

Shapes: BEV features (B, C, H, W); risk maps (B, H, W); grid layout in :mod:`dsdrive.student.bev`.
"""

from __future__ import annotations

import torch
from torch import nn

from dsdrive.student.deformable_attention import DeformableAttention2D

RISK_PRIOR_LOGIT = -4.0
"""Initial bias of the risk logit (sigmoid ~0.018): about 2-3 % of the BEV cells are agent
footprints, so the map starts near its background level instead of at 0.5."""


class RiskHead(nn.Module):
    """BEV features (B, C, H, W) -> risk map (B, H, W) in [0, 1] (sigmoid).

    Queries are the BEV cells average-pooled by ``stride`` (H/stride x W/stride of them), plus a
    learned positional embedding; each of ``layers`` blocks is pre-norm deformable attention
    (reference point = the query's cell centre) then an MLP, both residual. The query map is
    upsampled bilinearly to (H, W), concatenated with the BEV features and a 1x1 conv gives the
    risk logit.
    """

    def __init__(self, dim: int, height: int, width: int, layers: int = 1, heads: int = 4, points: int = 4, stride: int = 2):
        super().__init__()
        self.stride = stride
        self.hq, self.wq = height // stride, width // stride
        self.pos_embed = nn.Parameter(torch.randn(self.hq * self.wq, dim) * 0.02)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.attns = nn.ModuleList(DeformableAttention2D(dim, heads, points) for _ in range(layers))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.ffns = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)) for _ in range(layers))
        self.out = nn.Conv2d(2 * dim, 1, kernel_size=1)
        nn.init.constant_(self.out.bias, RISK_PRIOR_LOGIT)  # start at the sparse maps' background level

    def _reference_points(self, like: torch.Tensor) -> torch.Tensor:
        """(Hq*Wq, 2) query cell centres in grid_sample coordinates (column, row); computed on the
        fly (not a buffer) so loading a checkpoint never leaves it uninitialised."""
        rows = (torch.arange(self.hq, dtype=like.dtype, device=like.device) + 0.5) / self.hq * 2 - 1
        cols = (torch.arange(self.wq, dtype=like.dtype, device=like.device) + 0.5) / self.wq * 2 - 1
        gr, gc = torch.meshgrid(rows, cols, indexing="ij")
        return torch.stack([gc, gr], -1).reshape(-1, 2)

    def forward(self, bev: torch.Tensor, return_logits: bool = False) -> torch.Tensor:
        """(B, C, H, W) BEV features -> (B, H, W) risk in [0, 1] (its logits with ``return_logits``)."""
        b, c, h, w = bev.shape
        q = nn.functional.avg_pool2d(bev, self.stride).flatten(2).transpose(1, 2) + self.pos_embed
        ref = self._reference_points(bev)[None].expand(b, -1, -1)
        for norm, attn, fnorm, ffn in zip(self.attn_norms, self.attns, self.ffn_norms, self.ffns):
            q = q + attn(norm(q), ref, bev)
            q = q + ffn(fnorm(q))
        qmap = q.transpose(1, 2).reshape(b, c, self.hq, self.wq)
        qmap = nn.functional.interpolate(qmap, size=(h, w), mode="bilinear", align_corners=False)
        logits = self.out(torch.cat([qmap, bev], 1)).squeeze(1)
        return logits if return_logits else torch.sigmoid(logits)


def risk_l1_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, footprint_weight: float = 1.0,
                 logits: torch.Tensor | None = None) -> torch.Tensor:
    """L_risk (RSD): L1 between predicted and target BEV risk maps, with a footprint term.

    ``L = mean_{valid samples, all cells} |R_pred - R_gt|
        + footprint_weight * mean_{valid samples, cells with R_gt > 0} |R_pred - R_gt|``.
    The first term is RSD's ||.||_1 normalised by the number of cells (it also teaches "no risk"
    on empty cells); the second keeps the few footprint cells from being drowned by the empty
    ones. Samples without a risk annotation (``valid`` False) are excluded; with none valid the
    loss is 0 (connected to the graph).

    With ``logits`` (the pre-sigmoid map), the same two-term weighting of a soft-target binary
    cross-entropy is added. The L1 of a sigmoid output has a vanishing gradient once the sigmoid
    saturates: trained with the L1 alone the map collapsed to 0 everywhere (max < 1e-3 on
    held-out samples whose targets peak at 0.05-0.96); the BCE gradient ``sigmoid(z) - R_gt`` does
    not vanish, so footprints keep pulling the map up.

    Args:
        pred, target: (B, H, W) in [0, 1].
        valid: (B,) bool, samples whose risk target is annotated; None = all.
        footprint_weight: weight of the footprint-restricted terms.
        logits: (B, H, W) pre-sigmoid risk (``pred == sigmoid(logits)``) or None.
    """
    if valid is None:
        valid = torch.ones(pred.shape[0], dtype=torch.bool, device=pred.device)
    if not bool(valid.any()):
        return pred.sum() * 0.0 + (logits.sum() * 0.0 if logits is not None else 0.0)
    tgt = target[valid]
    fp = tgt > 0
    errs = [(pred[valid] - tgt).abs()]
    if logits is not None:
        errs.append(nn.functional.binary_cross_entropy_with_logits(logits[valid], tgt, reduction="none"))
    loss = pred.new_zeros(())
    for err in errs:
        loss = loss + err.mean()
        if footprint_weight and bool(fp.any()):
            loss = loss + footprint_weight * err[fp].mean()
    return loss
