"""One definition each: vehicle/timing constants, heading from waypoints, sine embedding; no import cycles."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dsdrive.geometry import STATIONARY_DISPLACEMENT_M, trajectory_yaw
from dsdrive.layers import sine_embedding, trajectory_yaw_tensor

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ("dsdrive", "data_builders", "eval", "recipes")


def _modules(*dirs: str):
    for d in dirs:
        for path in sorted((REPO / d).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


# ----------------------------------------------------------------------------- constants
def test_constants_are_assigned_only_in_dsdrive_constants():
    names = {t.id for n in ast.parse((REPO / "dsdrive/constants.py").read_text()).body if isinstance(n, ast.Assign)
             for t in n.targets if isinstance(t, ast.Name)}
    assert {"EGO_LENGTH_M", "EGO_WIDTH_M", "EGO_CENTER_OFFSET_M", "SIM_DT", "STEP_SECONDS"} <= names
    box_literals = {4.084, 1.85, 4.08, 1.73, 4.5, 1.9, 4.515, 1.852}  # every ego box the code has used
    found = []
    for path, tree in _modules(*CODE_DIRS):
        if path == REPO / "dsdrive/constants.py":
            continue
        for n in ast.walk(tree):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
            found += [f"{path.relative_to(REPO)}:{n.lineno} assigns {e.id}" for t in targets for e in ast.walk(t)
                      if isinstance(e, ast.Name) and e.id in names]
            if isinstance(n, ast.Constant) and isinstance(n.value, float) and n.value in box_literals:
                found.append(f"{path.relative_to(REPO)}:{n.lineno} literal {n.value}")
    assert found == []


def test_one_definition_of_heading_and_sine_embedding():
    defs = {}
    for path, tree in _modules("dsdrive"):
        for n in ast.walk(tree):
            if isinstance(n, ast.FunctionDef) and n.name in ("trajectory_yaw", "sine_embedding", "kmeans_anchors",
                                                             "nearest_agents", "agent_alias"):
                defs.setdefault(n.name, []).append(str(path.relative_to(REPO)))
    assert defs == {
        "trajectory_yaw": ["dsdrive/geometry.py"], "sine_embedding": ["dsdrive/layers.py"],
        "kmeans_anchors": ["dsdrive/distilldrive/kmeans_anchors.py"],
        "nearest_agents": ["dsdrive/annotation/scene_context.py"], "agent_alias": ["dsdrive/annotation/scene_context.py"],
    }


def test_no_import_cycles_in_dsdrive_even_through_function_level_imports():
    mods = {}
    for path, tree in _modules("dsdrive"):
        parts = path.relative_to(REPO).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = tree

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: set() for m in mods}
    for m, tree in mods.items():
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module:
                graph[m] |= {owner(f"{n.module}.{a.name}") for a in n.names}
            elif isinstance(n, ast.Import):
                graph[m] |= {owner(a.name) for a in n.names}
        graph[m] -= {None, m}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


# ----------------------------------------------------------------------------- heading from waypoints
def test_trajectory_yaw_broadcasts_and_uses_the_start_yaw_when_stationary():
    t = np.arange(1, 7, dtype=np.float64)[:, None]
    moving = np.concatenate([t, 0.5 * t], -1)  # a straight line at atan2(0.5, 1)
    standing = np.full((6, 2), 0.01) + 1e-3 * t  # first-to-last displacement 7 mm
    xy = np.stack([np.stack([moving, standing]), np.stack([-moving, standing])])  # (2, 2, 6, 2)
    yaw0 = np.array([[0.3, -1.2], [0.7, 2.5]])
    out = trajectory_yaw(xy, yaw0)
    assert out.shape == (2, 2, 6)
    np.testing.assert_allclose(out[0, 0], math.atan2(0.5, 1.0), atol=1e-12)
    np.testing.assert_allclose(out[1, 0], math.atan2(-0.5, -1.0), atol=1e-12)
    np.testing.assert_array_equal(out[:, 1], [[-1.2] * 6, [2.5] * 6])
    just_moving = np.stack([np.linspace(0.1, 0.1 + STATIONARY_DISPLACEMENT_M, 6), np.zeros(6)], -1)
    assert np.all(trajectory_yaw(just_moving, 1.0) == 0.0)  # exactly the threshold counts as moving


def test_trajectory_yaw_rejects_bad_shapes_naming_them():
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        trajectory_yaw(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="yaw0 of shape \\(3,\\)"):
        trajectory_yaw(np.ones((2, 6, 2)), np.zeros(3))


def test_tensor_yaw_matches_numpy_and_carries_no_gradient():
    g = torch.Generator().manual_seed(0)
    xy = (torch.randn(3, 4, 6, 2, generator=g) * 2.0).cumsum(-2)
    xy[0, 0] *= 0.01  # stationary
    yaw0 = torch.rand(3, 4, generator=g)
    xy.requires_grad_(True)
    out = trajectory_yaw_tensor(xy, yaw0)
    assert out.dtype == torch.float32 and not out.requires_grad and out.shape == (3, 4, 6)
    ref = trajectory_yaw(xy.detach().double().numpy(), yaw0.double().numpy())
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-6)
    assert torch.allclose(out[0, 0], yaw0[0, 0].expand(6))


# ----------------------------------------------------------------------------- sine embedding
def _detr_embedding_before(x, num_feats, temperature=10000.0):
    """The planning teacher's former ``distilldrive.layers.sine_embedding``, verbatim in effect."""
    dim_t = temperature ** (2 * torch.arange(num_feats // 2, dtype=torch.float32) / num_feats)
    pos = x.float().unsqueeze(-1) * (2 * math.pi) / dim_t
    return torch.stack([pos.sin(), pos.cos()], dim=-1).flatten(-2).flatten(-2)


def _student_embedding_before(xy, dim, scale):
    """The student's former ``scene_encoder.sine_embedding``."""
    quarter = dim // 4
    freq = torch.exp(torch.arange(quarter, dtype=xy.dtype) * (-math.log(1000.0) / max(quarter, 1)))
    a = (xy[..., :1] / scale) * freq * math.pi
    b = (xy[..., 1:2] / scale) * freq * math.pi
    return torch.cat([a.sin(), a.cos(), b.sin(), b.cos()], -1)


def test_sine_embedding_reproduces_both_former_embeddings():
    g = torch.Generator().manual_seed(0)
    pos = (torch.rand(4, 7, 2, generator=g) - 0.5) * 200.0  # metres, up to +-100 m
    torch.testing.assert_close(sine_embedding(pos, 64), _detr_embedding_before(pos, 64), rtol=0, atol=0)
    steps = torch.arange(13, dtype=torch.float32)[:, None] / 13
    torch.testing.assert_close(sine_embedding(steps, 32), _detr_embedding_before(steps, 32), rtol=0, atol=0)
    for dim, scale in ((64, 50.0), (128, 50.0), (8, 10.0)):
        new = sine_embedding(pos / scale, dim // 2, temperature=1000.0, scale=math.pi, interleave=False)
        torch.testing.assert_close(new, _student_embedding_before(pos, dim, scale), rtol=0, atol=2e-6)


def test_sine_embedding_dtype_and_errors():
    assert sine_embedding(torch.arange(3)[:, None], 4).dtype == torch.float32  # indices
    assert sine_embedding(torch.zeros(2, 1, dtype=torch.float64), 4).dtype == torch.float64
    with pytest.raises(ValueError, match="got 5"):
        sine_embedding(torch.zeros(2, 1), 5)

