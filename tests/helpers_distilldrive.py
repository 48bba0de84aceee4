"""Shared fixtures of the DistillDrive tests: synthetic samples with maps, tiny teacher configs."""

from __future__ import annotations

import numpy as np

from dsdrive.distilldrive.motion_vocabulary import MotionVocabulary
from dsdrive.distilldrive.planning_teacher import PlanningTeacher, PlanningTeacherConfig
from dsdrive.evaluation.metrics.synthetic import random_samples
from dsdrive.distilldrive.planning_vocabulary import PlanningVocabulary
from dsdrive.data.types import (
    AGENT_TYPES,
    MAP_POINTS,
    MAP_TYPES,
    MapPolylines,
    PlanningSample,
)


def synthetic_samples(num: int = 12, seed: int = 0) -> list[PlanningSample]:
    """Random samples (dsdrive.evaluation.metrics.synthetic) with mixed agent classes and random map lines."""
    rng = np.random.default_rng(seed + 1)
    samples = random_samples(num, seed=seed)
    for s in samples:
        a = s.inputs.agents
        a.types = [AGENT_TYPES[int(rng.integers(0, 3))] for _ in range(len(a))]
        m = int(rng.integers(1, 6))
        start = rng.uniform(-20, 20, (m, 1, 2))
        direction = rng.normal(0, 1, (m, 1, 2))
        pts = start + direction * np.linspace(0, 10, MAP_POINTS)[None, :, None]
        s.inputs.map = MapPolylines([MAP_TYPES[int(rng.integers(0, len(MAP_TYPES)))] for _ in range(m)], pts.astype(np.float32))
    return samples


def tiny_config(**overrides) -> PlanningTeacherConfig:
    """A CPU-sized teacher config (D = 16)."""
    kw = {"hidden_dim": 16, "agent_layers": 1, "num_heads": 2, "ffn_dim": 32, "dropout": 0.0, "pos_feats": 4, "num_layers": 1,
              "cvae_latent": 4, "cvae_hidden": 8, "cvae_layers": 2}
    kw.update(overrides)
    return PlanningTeacherConfig(**kw)


def tiny_teacher(samples: list[PlanningSample], **overrides) -> PlanningTeacher:
    """A tiny teacher with vocabularies fitted on ``samples``."""
    model = PlanningTeacher(tiny_config(**overrides))
    model.set_vocabularies(PlanningVocabulary.fit(samples).anchors, MotionVocabulary.fit(samples).anchors)
    return model
