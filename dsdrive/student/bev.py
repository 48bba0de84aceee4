"""Bird's-eye-view (BEV) grid of the student: cell geometry, feature scatter, risk rasterisation.

Frame: the ego frame of the current time (x forward, y left, metres). A :class:`BevGrid` covers
x in ``[x_min, x_max)`` with ``height`` rows and y in ``[y_min, y_max)`` with ``width`` columns;
cell (i, j) has its centre at ``x = x_min + (i + 0.5) * dx``, ``y = y_min + (j + 0.5) * dy``.
Row 0 is the rearmost strip, column 0 the rightmost (most negative y).

RSD (arXiv 2511.14499) projects camera features to BEV and matches the VLM's per-object risk
to BEV cells by nearest neighbour; our student has no camera branch, so its BEV map is built by
scattering encoded instances (agents, map polylines, ego) into the grid
(:func:`scatter_to_bev`), and the risk target is rasterised on the agents' oriented footprints
(:func:`rasterize_risk`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dsdrive.data.types import Agents


@dataclass(frozen=True)
class BevGrid:
    """A regular BEV grid in the ego frame (metres); see the module docstring for the layout."""

    x_min: float = -16.0
    x_max: float = 48.0
    y_min: float = -32.0
    y_max: float = 32.0
    height: int = 32
    width: int = 32

    @classmethod
    def from_config(cls, config) -> "BevGrid":
        """Grid of a :class:`~dsdrive.student.configuration_student.StudentConfig`."""
        return cls(config.bev_x_min, config.bev_x_max, config.bev_y_min, config.bev_y_max, config.bev_height, config.bev_width)

    @property
    def dx(self) -> float:
        """Cell size along x (forward), metres; rows index x."""
        return (self.x_max - self.x_min) / self.height

    @property
    def dy(self) -> float:
        """Cell size along y (left), metres; columns index y."""
        return (self.y_max - self.y_min) / self.width

    def cell_centres(self) -> np.ndarray:
        """(H, W, 2) float32 ego-frame x, y of every cell centre (metres)."""
        xs = self.x_min + (np.arange(self.height) + 0.5) * self.dx
        ys = self.y_min + (np.arange(self.width) + 0.5) * self.dy
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        return np.stack([gx, gy], axis=-1).astype(np.float32)

    def to_normalized(self, xy: torch.Tensor) -> torch.Tensor:
        """Ego-frame (..., 2) x, y metres -> ``grid_sample`` coordinates (..., 2) in [-1, 1].

        Output order is (column = y, row = x), as ``torch.nn.functional.grid_sample`` expects
        with ``align_corners=False``.
        """
        u = (xy[..., 1] - self.y_min) / (self.y_max - self.y_min) * 2.0 - 1.0
        v = (xy[..., 0] - self.x_min) / (self.x_max - self.x_min) * 2.0 - 1.0
        return torch.stack([u, v], dim=-1)


def scatter_to_bev(features: torch.Tensor, points: torch.Tensor, point_mask: torch.Tensor, grid: BevGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear splat of per-instance features at their points into the BEV grid (differentiable).

    Each instance's feature vector is splatted at each of its valid points with bilinear
    weights over the four nearest cell centres; points outside the grid contribute nothing.

    Args:
        features: (B, T, C) instance features.
        points: (B, T, P, 2) ego-frame x, y (metres) of each instance's points (e.g. box
            centre + corners for an agent, the 20 points of a map polyline).
        point_mask: (B, T, P) bool, valid points (padded instances all False).
        grid: the BEV grid.

    Returns:
        ``(feature_sum (B, C, H, W), weight_sum (B, 1, H, W))``: the weighted feature sum and the
        sum of splat weights (divide for a mean, or use as a density channel).
    """
    b, t, c = features.shape
    p = points.shape[2]
    h, w = grid.height, grid.width
    # continuous cell coordinates: centre of cell (i, j) at (i, j)
    fi = (points[..., 0] - grid.x_min) / grid.dx - 0.5
    fj = (points[..., 1] - grid.y_min) / grid.dy - 0.5
    i0, j0 = torch.floor(fi), torch.floor(fj)
    feat_sum = features.new_zeros(b, h * w, c)
    w_sum = features.new_zeros(b, h * w)
    flat_feat = features[:, :, None, :].expand(b, t, p, c).reshape(b, t * p, c)
    for di in (0, 1):
        for dj in (0, 1):
            ii, jj = i0 + di, j0 + dj
            wt = (1.0 - (fi - ii).abs()) * (1.0 - (fj - jj).abs())
            ok = point_mask & (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
            wt = torch.where(ok, wt, torch.zeros_like(wt)).reshape(b, t * p)
            idx = (ii.clamp(0, h - 1) * w + jj.clamp(0, w - 1)).long().reshape(b, t * p)
            feat_sum.scatter_add_(1, idx[..., None].expand(b, t * p, c), flat_feat * wt[..., None])
            w_sum.scatter_add_(1, idx, wt)
    return feat_sum.transpose(1, 2).reshape(b, c, h, w), w_sum.reshape(b, 1, h, w)


def rasterize_risk(agents: Agents, risks: dict[str, float], grid: BevGrid) -> np.ndarray:
    """Teacher per-agent risk (RSD) -> (H, W) float32 BEV risk target in [0, 1].

    Each agent whose id is in ``risks`` paints its risk on every cell whose centre lies inside
    its oriented footprint (``boxes`` x, y, length, width, yaw in the ego frame); an agent
    smaller than a cell paints the single cell nearest to its centre (RSD's nearest-neighbour
    match of object risk to BEV cells). Overlaps keep the maximum; cells without an annotated
    agent are 0; agents outside the grid are skipped.

    Args:
        agents: current agents (ego frame), as in ``PlanningInputs.agents``.
        risks: agent_id -> risk in [0, 1] (``Annotation.risks``); ids not among the agents are ignored.
        grid: the BEV grid.

    Raises:
        ValueError: a risk outside [0, 1], naming the agent id and value.
    """
    out = np.zeros((grid.height, grid.width), np.float32)
    if not risks or len(agents) == 0:
        return out
    centres = grid.cell_centres().reshape(-1, 2)
    index = {aid: k for k, aid in enumerate(agents.ids)}
    for aid, risk in risks.items():
        if not 0.0 <= float(risk) <= 1.0:
            raise ValueError(f"rasterize_risk: risk of agent {aid!r} is {risk}, expected [0, 1]")
        k = index.get(aid)
        if k is None:
            continue
        x, y, _, length, width, _, yaw = (float(v) for v in agents.boxes[k])
        c, s = np.cos(yaw), np.sin(yaw)
        d = centres - np.array([x, y], np.float32)
        u = c * d[:, 0] + s * d[:, 1]
        v = -s * d[:, 0] + c * d[:, 1]
        inside = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
        if not inside.any():
            if not (grid.x_min <= x < grid.x_max and grid.y_min <= y < grid.y_max):
                continue
            inside = np.zeros(len(centres), bool)
            inside[int(np.argmin((d**2).sum(1)))] = True
        flat = out.reshape(-1)
        flat[inside] = np.maximum(flat[inside], float(risk))
    return out


def agent_points(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 7) boxes ``x, y, z, l, w, h, yaw`` -> (..., 5, 2) centre + 4 footprint corners (ego frame, m)."""
    x, y, length, width, yaw = boxes[..., 0], boxes[..., 1], boxes[..., 3], boxes[..., 4], boxes[..., 6]
    c, s = torch.cos(yaw), torch.sin(yaw)
    dx = boxes.new_tensor([0.0, 0.5, -0.5, -0.5, 0.5])
    dy = boxes.new_tensor([0.0, 0.5, 0.5, -0.5, -0.5])
    lx, ly = length[..., None] * dx, width[..., None] * dy
    px = x[..., None] + c[..., None] * lx - s[..., None] * ly
    py = y[..., None] + s[..., None] * lx + c[..., None] * ly
    return torch.stack([px, py], dim=-1)


__all__ = ["BevGrid", "scatter_to_bev", "rasterize_risk", "agent_points"]
