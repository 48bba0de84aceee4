"""Shared fixtures of the DistillDrive tests: synthetic samples with maps, tiny teacher configs, and
a short ``transformers.Trainer`` run of the planning teacher (:func:`train_teacher`)."""

from __future__ import annotations

import tempfile

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


def train_teacher(model: PlanningTeacher, samples: list[PlanningSample], steps: int, batch_size: int = 4, lr: float = 1e-2,
                  weight_decay: float = 1e-3, **args) -> list[dict]:
    """Train ``model`` in place for ``steps`` steps with :class:`PlanningTeacherTrainer` (CPU, seed 0,
    nothing saved); returns the Trainer's per-step log entries (``loss`` and every loss term)."""
    from transformers import PrinterCallback

    from dsdrive.training.planning_teacher_config import PlanningTeacherTrainingConfig
    from dsdrive.training.planning_teacher_trainer import PlanningTeacherTrainer

    with tempfile.TemporaryDirectory(prefix="teacher_trainer_") as tmp:
        cfg = PlanningTeacherTrainingConfig(output_dir=tmp, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
                                            weight_decay=weight_decay, use_cpu=True, disable_tqdm=True, dataloader_pin_memory=False, **args)
        trainer = PlanningTeacherTrainer(model=model, args=cfg, train_dataset=samples)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    model.eval()
    return [h for h in trainer.state.log_history if "loss" in h]
