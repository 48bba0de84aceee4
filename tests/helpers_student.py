"""Shared fixtures of the student tests: synthetic samples with an annotation, a tiny student.

Samples are built by hand in the ego frame (x forward, y left, metres): the ego drives at
``speed`` with a lead vehicle 12 m ahead (id ``lead``) and a pedestrian at (20, 6) (id ``ped``),
two map polylines; annotated samples carry a rule-like Annotation with risks for both agents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsdrive.annotation.schema import AgentRisk, Annotation, KeyObject, MetaAction
from dsdrive.data.types import (
    AGENT_FUTURE_STEPS,
    Agents,
    MapPolylines,
    PlanningInputs,
    PlanningSample,
    PlanningTargets,
    command_from_future,
)

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nuscenes-mini-scenarionet"


def make_inputs(sample_id: str = "s0", speed: float = 6.0, n_agents: int = 2, n_map: int = 2, lateral: float = 0.0) -> PlanningInputs:
    """PlanningInputs with up to 2 agents (lead vehicle, pedestrian) and up to 2 polylines."""
    boxes = np.array([[12.0, 0.0, 0.0, 4.5, 1.9, 1.6, 0.0], [20.0, 6.0, 0.0, 0.6, 0.6, 1.7, 1.2]], np.float32)[:n_agents]
    vel = np.array([[speed * 0.8, 0.0], [0.0, -1.0]], np.float32)[:n_agents]
    agents = Agents(["lead", "ped"][:n_agents], ["VEHICLE", "PEDESTRIAN"][:n_agents], boxes, vel)
    xs = np.linspace(-10, 50, 20, dtype=np.float32)
    pts = np.stack([np.stack([xs, np.full(20, 1.75, np.float32)], -1), np.stack([xs, np.full(20, -1.75, np.float32)], -1)])[:n_map]
    hist = np.array([[-speed * t, 0.0, 0.0] for t in (2.0, 1.5, 1.0, 0.5)], np.float32)
    t = np.arange(1, 7) * 0.5
    future = np.stack([speed * t, lateral * (t / 3.0) ** 2], -1)
    return PlanningInputs(
        sample_id=sample_id, scene_id="synthetic", ego_history=hist, ego_history_mask=np.ones(4, bool),
        ego_status=np.array([speed, 0, 0, 0, 0, 0], np.float32), ego_status_mask=np.array([1, 1, 1, 1, 1, 0], bool),
        command=command_from_future(future), agents=agents, map=MapPolylines(["lane_divider", "road_edge"][:n_map], pts),
    )


def make_sample(sample_id: str = "s0", speed: float = 6.0, annotated: bool = True, lateral: float = 0.0, **kw) -> PlanningSample:
    """A PlanningSample whose future drives on at ``speed`` (bending ``lateral`` m at +3 s)."""
    inputs = make_inputs(sample_id, speed, lateral=lateral, **kw)
    t = np.arange(1, 7) * 0.5
    x, y = speed * t, lateral * (t / 3.0) ** 2
    future = np.stack([x, y, np.arctan2(np.gradient(y), np.gradient(x) + 1e-6)], -1).astype(np.float32)
    n = len(inputs.agents)
    targets = PlanningTargets(future, np.ones(6, bool), np.zeros((n, AGENT_FUTURE_STEPS, 3), np.float32), np.ones((n, AGENT_FUTURE_STEPS), bool))
    ann = None
    if annotated:
        risks = [AgentRisk(agent_id=a, risk=r, rank=k + 1) for k, (a, r) in enumerate([("lead", 0.8), ("ped", 0.3)][:n])]
        ann = Annotation(
            sample_id=sample_id, teacher="test", prompt_version="test/v1", scene_summary=f"Urban road, ego at {speed:.0f} m/s.",
            key_objects=[KeyObject(agent_id="lead", category="car", position=(12.0, 0.0), reason="slower car ahead")][:n],
            meta_action=MetaAction(behaviour="MOVE FORWARD", speed="DECELERATION"), explanation="Keep a safe gap to the lead car.",
            risks=risks,
        ).model_dump(mode="json")
    return PlanningSample("synthetic", "test-map", 0.0, inputs, targets, ann)


def make_samples(num: int = 8) -> list[PlanningSample]:
    """Mixed commands, speeds, annotated and not."""
    lats = [0.0, 3.0, -3.0, 0.0]
    return [make_sample(f"s{i}", speed=2.0 + i, annotated=i % 3 != 2, lateral=lats[i % 4]) for i in range(num)]


_CACHE: dict = {}


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests with one torch thread (restored after): tiny models on a shared 2-core
    machine are an order of magnitude slower with 2 threads (oversubscription)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_student(samples=None, hidden: int = 32, tie: bool = False, **config_kw):
    """(model, processor) with a tokenizer trained on ``samples`` and a tiny Qwen2 backbone (seeded)."""
    import torch

    from dsdrive.distilldrive.planning_vocabulary import PlanningVocabulary
    from dsdrive.student import StudentConfig, StudentModel, StudentProcessor
    from dsdrive.student.backbone import tiny_qwen2_config
    from dsdrive.student.tokenizer import build_tokenizer

    key = None if samples is None else tuple(x.sample_id for x in samples)
    if key not in _CACHE:  # tokenizer + k-means vocabulary, reused across tests (both deterministic)
        samples = samples or make_samples()
        _CACHE[key] = (build_tokenizer(samples, vocab_size=300), PlanningVocabulary.fit(samples))
    tok, vocab = _CACHE[key]
    bb = tiny_qwen2_config(len(tok), hidden_size=hidden, layers=2, heads=4, kv_heads=2, tie_word_embeddings=tie,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    cfg = StudentConfig(backbone_config=bb.to_dict(), scene_dim=16, scene_layers=1, scene_heads=2, max_agents=8, max_map=8,
                        bev_height=16, bev_width=16, risk_heads=2, risk_points=2, **config_kw)
    torch.manual_seed(0)
    model = StudentModel(cfg)
    model.set_planning_vocabulary(vocab)
    return model, StudentProcessor(tok, cfg, max_prompt_tokens=96, max_reasoning_tokens=64)
