"""Planning vocabulary: k-means anchors over training ego futures, per command (DistillDrive).

DistillDrive / SparseDrive build a (3, 6, 6, 2) vocabulary: for each navigation command, 6
k-means centroids of the training ego futures (6 waypoints at 0.5 s, cumulative x, y in the ego
frame). Multi-mode planning heads (the student's waypoint head, the planning teacher's 18 ego
queries) are anchored on it, so a teacher mode and a student mode mean the same thing.

Command order is :data:`dsdrive.data.types.COMMANDS`. Anchors are metres in the ego frame
(x forward, y left) of the current time.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsdrive.data.dataset import load_dataset_dir, load_samples
from dsdrive.data.splits import DEFAULT_VAL_SCENES, split_scenes
from dsdrive.data.types import COMMANDS, FUTURE_STEPS, STEP_SECONDS, PlanningSample
from dsdrive.distilldrive.kmeans_anchors import kmeans_anchors
from dsdrive.distilldrive.motion_vocabulary import MotionVocabulary

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

        :func:`dsdrive.distilldrive.kmeans_anchors.kmeans_anchors` per command. A command with
        fewer than ``modes`` distinct futures repeats its centroids; a command
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
            if futures[command]:
                anchors[ci] = kmeans_anchors(np.stack(futures[command]), modes, seed)
            else:
                anchors[ci] = _synthetic_turn_anchors(futures, command, modes)
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
    t = np.arange(1, FUTURE_STEPS + 1) * STEP_SECONDS
    out = np.zeros((modes, FUTURE_STEPS, 2), np.float32)
    for m, v in enumerate(speeds):
        out[m, :, 0] = v * t
        out[m, :, 1] = sign * 4.0 * (t / t[-1]) ** 2
    return out


def main(argv: list[str] | None = None) -> int:
    """``dsdrive vocab``: rebuild the planning (3, 6, 6, 2) and motion (classes, 6, 12, 2)
    vocabularies from the training scenes of a planning dataset and write both JSON files.

    Returns 0; 2 on a missing dataset.
    """
    ap = argparse.ArgumentParser(prog="dsdrive vocab", description=main.__doc__)
    ap.add_argument("--data", required=True, help="planning dataset folder (dsdrive build --out)")
    ap.add_argument("--out", required=True, help="folder for planning_vocabulary.json and motion_vocabulary.json")
    ap.add_argument("--modes", type=int, default=6, help="planning modes per command")
    ap.add_argument("--motion-modes", type=int, default=6, help="motion modes per agent class")
    ap.add_argument("--val-scenes", default=",".join(DEFAULT_VAL_SCENES), help="held-out scenes, never fitted on")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        scene_ids = list(load_dataset_dir(args.data)["scene_id"])
    except FileNotFoundError as e:
        print(f"dsdrive vocab: {e}", file=sys.stderr)
        return 2
    train_scenes, val_scenes = split_scenes(scene_ids, tuple(v for v in args.val_scenes.split(",") if v))
    train = load_samples(args.data, scenes=train_scenes)
    plan = PlanningVocabulary.fit(train, modes=args.modes, seed=args.seed)
    motion = MotionVocabulary.fit(train, modes=args.motion_modes, seed=args.seed)
    print(f"fitted on {len(train)} samples of {train_scenes} (held out: {val_scenes})")
    print(f"planning vocabulary {plan.anchors.shape} -> {plan.save(args.out)}")
    print(f"motion vocabulary {motion.anchors.shape} -> {motion.save(args.out)}")
    return 0
