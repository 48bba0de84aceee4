"""BEV grid, risk rasterisation, deformable attention, RiskHead, L_risk and Diff_Risk (RSD)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers_student import one_thread  # noqa: F401

from dsdrive.student.bev import BevGrid, rasterize_risk, scatter_to_bev
from dsdrive.student.deformable_attention import DeformableAttention2D
from dsdrive.evaluation.metrics.risk import diff_risk_agents, diff_risk_map
from dsdrive.student.risk_head import RiskHead, risk_l1_loss
from dsdrive.data.types import Agents

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = BevGrid()  # x [-16, 48), y [-32, 32), 32 x 32 cells of 2 m


def _agents(boxes, ids=None):
    boxes = np.asarray(boxes, np.float32)
    ids = ids or [f"a{i}" for i in range(len(boxes))]
    return Agents(ids, ["VEHICLE"] * len(boxes), boxes, np.zeros((len(boxes), 2), np.float32))


def test_rasterize_risk_paints_the_oriented_footprint():
    # 8 m x 4 m box centred on cell corners at (10, 0): cells with centres |dx|<=4, |dy|<=2
    agents = _agents([[10.0, 0.0, 0, 8.0, 4.0, 1.5, 0.0], [30.0, 10.0, 0, 8.0, 4.0, 1.5, math.pi / 2]])
    r = rasterize_risk(agents, {"a0": 0.7, "a1": 0.4}, GRID)
    centres = GRID.cell_centres()
    in0 = (np.abs(centres[..., 0] - 10) <= 4) & (np.abs(centres[..., 1]) <= 2)
    in1 = (np.abs(centres[..., 0] - 30) <= 2) & (np.abs(centres[..., 1] - 10) <= 4)  # rotated 90 deg
    assert in0.sum() == 8 and in1.sum() == 8
    np.testing.assert_allclose(r[in0], 0.7)
    np.testing.assert_allclose(r[in1], 0.4)
    assert (r[~(in0 | in1)] == 0).all()


def test_rasterize_risk_small_outside_and_unknown():
    agents = _agents([[20.3, 5.1, 0, 0.6, 0.6, 1.7, 0.0], [100.0, 0, 0, 4, 2, 1.5, 0.0]], ids=["ped", "far"])
    r = rasterize_risk(agents, {"ped": 0.5, "far": 1.0, "ghost": 0.9}, GRID)
    assert (r > 0).sum() == 1  # nearest cell only; the far agent is outside the grid; ghost unknown
    i, j = np.argwhere(r > 0)[0]
    assert abs(GRID.cell_centres()[i, j, 0] - 20.3) <= 1 and abs(GRID.cell_centres()[i, j, 1] - 5.1) <= 1
    with pytest.raises(ValueError, match="ped"):
        rasterize_risk(agents, {"ped": 1.5}, GRID)
    assert rasterize_risk(Agents.empty(), {"x": 0.3}, GRID).sum() == 0


def test_scatter_to_bev_bilinear_weights():
    c = GRID.cell_centres()
    feats = torch.tensor([[[2.0]]])
    pts = torch.tensor(c[5, 7])[None, None, None]  # exactly a cell centre -> one cell, weight 1
    f, w = scatter_to_bev(feats, pts, torch.ones(1, 1, 1, dtype=torch.bool), GRID)
    assert float(w[0, 0, 5, 7]) == pytest.approx(1.0) and float(w.sum()) == pytest.approx(1.0)
    assert float(f[0, 0, 5, 7]) == pytest.approx(2.0)
    mid = torch.tensor((c[5, 7] + c[6, 8]) / 2)[None, None, None]  # between four centres -> 0.25 each
    _, w = scatter_to_bev(feats, mid, torch.ones(1, 1, 1, dtype=torch.bool), GRID)
    np.testing.assert_allclose(w[0, 0, 5:7, 7:9].numpy(), 0.25, atol=1e-6)
    _, w = scatter_to_bev(feats, mid, torch.zeros(1, 1, 1, dtype=torch.bool), GRID)  # masked point
    assert float(w.sum()) == 0


def test_deformable_attention_shapes_and_gradients():
    torch.manual_seed(0)
    attn = DeformableAttention2D(16, heads=4, points=3)
    q = torch.randn(2, 10, 16, requires_grad=True)
    ref = (torch.rand(2, 10, 2) * 2 - 1).requires_grad_(True)
    v = torch.randn(2, 16, 8, 12, requires_grad=True)
    out = attn(q, ref, v)
    assert out.shape == (2, 10, 16)
    out.square().sum().backward()
    for t in (q, ref, v):
        assert t.grad is not None and t.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attn.parameters())
    with pytest.raises(ValueError):
        attn(q, ref, torch.randn(2, 8, 8, 12))


def test_deformable_attention_samples_the_value_at_the_reference():
    # offsets 0 and one point -> output = output_proj(value_proj(v at ref)); a constant map gives a constant
    attn = DeformableAttention2D(4, heads=1, points=1)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
        for lin in (attn.value_proj, attn.output_proj):
            lin.weight.copy_(torch.eye(4))
            lin.bias.zero_()
    v = torch.arange(4.0).reshape(1, 4, 1, 1).expand(1, 4, 6, 6).contiguous()
    out = attn(torch.randn(1, 3, 4), torch.zeros(1, 3, 2), v)
    torch.testing.assert_close(out, torch.arange(4.0).expand(1, 3, 4))


def test_risk_head_range_and_loss():
    torch.manual_seed(0)
    head = RiskHead(8, 16, 16, layers=1, heads=2, points=2, stride=2)
    r = head(torch.randn(3, 8, 16, 16))
    assert r.shape == (3, 16, 16) and (r >= 0).all() and (r <= 1).all()
    tgt = torch.zeros(3, 16, 16)
    tgt[:, 4, 4] = 1.0
    loss = risk_l1_loss(r, tgt, torch.tensor([True, True, False]), footprint_weight=1.0)
    expected = (r[:2] - tgt[:2]).abs().mean() + (1 - r[:2, 4, 4]).mean()
    torch.testing.assert_close(loss, expected)
    assert float(risk_l1_loss(tgt, tgt)) == 0.0
    assert float(risk_l1_loss(r.detach(), tgt, torch.zeros(3, dtype=torch.bool))) == 0.0


def test_diff_risk():
    a = np.zeros((4, 4), np.float32)
    b = np.zeros((4, 4), np.float32)
    assert diff_risk_map(a, b) == 0.0
    a[0, 0], b[0, 0], b[1, 1] = 0.8, 0.6, 0.4
    assert diff_risk_map(a, b) == pytest.approx((0.2 + 0.4) / 2)  # union of supports: 2 cells
    assert diff_risk_map(a, a) == 0.0
    with pytest.raises(ValueError):
        diff_risk_map(a, np.zeros((3, 3)))
    # union of rated agents, a missing rating counts as 0: (|0.8-0.5| + |0.1-0| + |0-1.0|) / 3
    assert diff_risk_agents({"x": 0.8, "y": 0.1}, {"x": 0.5, "z": 1.0}) == pytest.approx(1.4 / 3)
    assert diff_risk_agents({"x": 0.8}, {"z": 0.8}) == pytest.approx(0.8)
    assert math.isnan(diff_risk_agents({}, {}))
