"""Planning vocabulary: k-means anchors over training ego futures, per command (DistillDrive).

DistillDrive / SparseDrive build a (3, 6, 6, 2) vocabulary: for each navigation command, 6
k-means centroids of the training ego futures (6 waypoints at 0.5 s, cumulative x, y in the ego
frame). Multi-mode planning heads (the student's waypoint head, the planning teacher's 18 ego
queries) are anchored on it, so a teacher mode and a student mode mean the same thing.

Command order is :data:`dsdrive.types.COMMANDS`. Anchors are metres in the ego frame
(x forward, y left) of the current time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from dsdrive.types import COMMANDS, FUTURE_STEPS, PlanningSample

VOCAB_FILE = "planning_vocabulary.json"


@dataclass
class PlanningVocabulary:
    """Anchors (num_commands=3, modes, 6, 2), float32, ego frame metres."""

    anchors: np.ndarray
    seed: int = 0

    @property
    def modes(self) -> int:
        return int(self.anchors.shape[1])

    @classmethod
    def fit(cls, samples: list[PlanningSample], modes: int = 6, seed: int = 0) -> "PlanningVocabulary":
        """k-means (scikit-learn, seeded, n_init=10) over the fully valid ego futures of each command.

        A command with fewer than ``modes`` distinct futures repeats its centroids; a command
        with no sample at all (e.g. no RIGHT turn in a small split) gets constant-speed arcs
        from :func:`_synthetic_turn_anchors`, so the shape is always (3, modes, 6, 2).

        Raises:
            ValueError: no sample has a fully valid future.
        """
        futures = {c: [] for c in COMMANDS}
        for s in samples:
            if bool(np.all(s.targets.ego_future_mask)):
                futures[s.inputs.command].append(np.asarray(s.targets.ego_future[:, :2], np.float32))
        if not any(futures.values()):
            raise ValueError("PlanningVocabulary.fit: no sample with a fully valid ego_future")
        anchors = np.zeros((len(COMMANDS), modes, FUTURE_STEPS, 2), np.float32)
        for ci, command in enumerate(COMMANDS):
            data = np.stack(futures[command]) if futures[command] else None
            if data is None:
                anchors[ci] = _synthetic_turn_anchors(futures, command, modes)
                continue
            flat = data.reshape(len(data), -1)
            k = min(modes, len(np.unique(flat.round(3), axis=0)))
            km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(flat)
            centres = km.cluster_centers_.reshape(k, FUTURE_STEPS, 2)
            order = np.argsort(centres[:, -1, 0])  # sort modes by travelled distance, for readability
            centres = centres[order]
            if k < modes:
                centres = np.concatenate([centres, centres[np.arange(modes - k) % k]], axis=0)
            anchors[ci] = centres
        return cls(anchors=anchors, seed=seed)

    def save(self, directory: str | Path) -> Path:
        """Write ``planning_vocabulary.json`` into ``directory``; returns the path."""
        path = Path(directory) / VOCAB_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"commands": list(COMMANDS), "seed": self.seed, "anchors": self.anchors.tolist()}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PlanningVocabulary":
        """Read a vocabulary written by :meth:`save` (a folder or the JSON file itself).

        Raises:
            FileNotFoundError / ValueError: missing file, or anchors not shaped (3, modes, 6, 2).
        """
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        data = json.loads(path.read_text())
        anchors = np.asarray(data["anchors"], np.float32)
        if anchors.ndim != 4 or anchors.shape[0] != len(COMMANDS) or anchors.shape[2:] != (FUTURE_STEPS, 2):
            raise ValueError(f"{path}: field 'anchors' has shape {anchors.shape}, expected (3, modes, 6, 2)")
        return cls(anchors=anchors, seed=int(data.get("seed", 0)))


def _synthetic_turn_anchors(futures: dict, command: str, modes: int) -> np.ndarray:
    """Anchors for a command absent from the data: constant-speed arcs turning left/right.

    Speeds span the data's observed range; the arc bends the endpoint 4 m laterally (twice the
    command threshold). Used only when a split has no sample of that command.
    """
    all_f = np.concatenate([np.stack(v) for v in futures.values() if v])
    speeds = np.linspace(max(1.0, np.percentile(all_f[:, -1, 0], 10) / 3.0), max(2.0, np.percentile(all_f[:, -1, 0], 90) / 3.0), modes)
    sign = 1.0 if command == "LEFT" else (-1.0 if command == "RIGHT" else 0.0)
    t = np.arange(1, FUTURE_STEPS + 1) * 0.5
    out = np.zeros((modes, FUTURE_STEPS, 2), np.float32)
    for m, v in enumerate(speeds):
        out[m, :, 0] = v * t
        out[m, :, 1] = sign * 4.0 * (t / t[-1]) ** 2
    return out
