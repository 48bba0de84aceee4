"""Motion vocabulary: k-means anchors of agent futures per agent class (SparseDrive / DistillDrive).

SparseDrive clusters the training agents' 12-step (6 s) futures into 6 anchors per detection
class (``kmeans_motion`` -> (10, 6, 12, 2)); the motion head's mode queries embed them. Here the
classes are :data:`dsdrive.data.types.AGENT_TYPES`, so the vocabulary is (6 classes, 6, 12, 2).

Frame: each future is expressed in the **agent's own frame at the current time** (x along its
yaw, y to its left, origin at its centre), cumulative displacement in metres, so that one set
of anchors serves agents at any pose. Only futures valid at all 12 steps are clustered. A class
with fewer distinct futures than modes repeats its centroids; a class absent from the data gets
all-zero (static) anchors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsdrive.data.types import AGENT_FUTURE_STEPS, AGENT_TYPES, PlanningSample
from dsdrive.distilldrive.kmeans_anchors import kmeans_anchors

MOTION_VOCAB_FILE = "motion_vocabulary.json"


def to_agent_frame(future_xy: np.ndarray, pos: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Ego-frame future positions (N, T, 2) -> each agent's frame (pos (N, 2), yaw (N,))."""
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    d = future_xy - pos[:, None]
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1).astype(np.float32)


@dataclass
class MotionVocabulary:
    """Anchors (len(AGENT_TYPES), modes, 12, 2) float32, agent frame, metres."""

    anchors: np.ndarray
    seed: int = 0

    @classmethod
    def fit(cls, samples: list[PlanningSample], modes: int = 6, seed: int = 0) -> MotionVocabulary:
        """Seeded scikit-learn k-means (n_init=10) per class over fully valid agent futures."""
        per_class: dict[str, list[np.ndarray]] = {t: [] for t in AGENT_TYPES}
        for s in samples:
            a, tg = s.inputs.agents, s.targets
            if len(a) == 0:
                continue
            full = np.asarray(tg.agent_future_masks, bool).all(axis=1)
            if not full.any():
                continue
            boxes = np.asarray(a.boxes, np.float32)
            local = to_agent_frame(np.asarray(tg.agent_futures, np.float32)[:, :, :2], boxes[:, :2], boxes[:, 6])
            for i in np.where(full)[0]:
                per_class[a.types[i] if a.types[i] in per_class else "OTHER"].append(local[i])
        anchors = np.zeros((len(AGENT_TYPES), modes, AGENT_FUTURE_STEPS, 2), np.float32)
        for ci, name in enumerate(AGENT_TYPES):
            if not per_class[name]:
                continue
            centres = kmeans_anchors(np.stack(per_class[name]), modes, seed, decimals=2)
            anchors[ci] = centres
        return cls(anchors=anchors, seed=seed)

    def save(self, directory: str | Path) -> Path:
        """Write ``motion_vocabulary.json`` into ``directory``; returns its path."""
        path = Path(directory) / MOTION_VOCAB_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"classes": list(AGENT_TYPES), "seed": self.seed, "anchors": self.anchors.tolist()}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> MotionVocabulary:
        """Read :meth:`save`'s file (or its folder).

        Raises:
            ValueError: anchors not shaped (len(AGENT_TYPES), modes, 12, 2), naming the file.
        """
        path = Path(path)
        if path.is_dir():
            path = path / MOTION_VOCAB_FILE
        data = json.loads(path.read_text())
        anchors = np.asarray(data["anchors"], np.float32)
        if anchors.ndim != 4 or anchors.shape[0] != len(AGENT_TYPES) or anchors.shape[2:] != (AGENT_FUTURE_STEPS, 2):
            raise ValueError(f"{path}: field 'anchors' has shape {anchors.shape}, expected ({len(AGENT_TYPES)}, modes, 12, 2)")
        return cls(anchors=anchors, seed=int(data.get("seed", 0)))
