"""Ego-status MLP baseline: plans from the ego's own state only (no agents, map or images).

AD-MLP ("Rethinking the Open-Loop Evaluation of End-to-End Autonomous Driving in nuScenes",
Zhai et al., arXiv 2305.10430) and NAVSIM's ``EgoStatusMLPAgent`` showed that an MLP on the
ego status and history reaches competitive nuScenes L2; it is the baseline any student must
beat with its scene understanding.

Input features (31, float32), all in the ego frame of the current time:
``ego_status`` (6, masked fields zeroed) | ``ego_status_mask`` (6) | ``ego_history`` x, y,
heading flattened (12, invalid poses zeroed) | ``ego_history_mask`` (4) | one-hot command (3,
order :data:`dsdrive.data.types.COMMANDS`). Features are standardised with the training set's mean
and standard deviation, stored as buffers in the state dict.

Output: (6, 3) ``x, y, heading`` at +0.5 ... +3.0 s (m, rad). Loss: L1 over the valid future
steps (``ego_future_mask``), as in AD-MLP / NAVSIM. A checkpoint is a folder with
``model.pt`` (torch state dict) and ``config.json`` (:class:`EgoMLPConfig`).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dsdrive.data.atomic_io import write_bytes_atomic, write_json_atomic
from dsdrive.geometry import wrap_angle
from dsdrive.planners.base import Planner
from dsdrive.data.types import COMMANDS, EGO_STATUS_FIELDS, FUTURE_STEPS, HISTORY_STEPS, PlanningInputs, PlanningSample

FEATURE_DIM = 2 * len(EGO_STATUS_FIELDS) + 3 * HISTORY_STEPS + HISTORY_STEPS + len(COMMANDS)
MODEL_FILE, CONFIG_FILE = "model.pt", "config.json"


def ego_features(inputs: PlanningInputs) -> np.ndarray:
    """(31,) float32 ego-only feature vector of one sample (see the module docstring).

    Raises:
        ValueError: the command is not one of :data:`dsdrive.data.types.COMMANDS` (names the sample).
    """
    status_mask = np.asarray(inputs.ego_status_mask, bool)
    status = np.where(status_mask, np.asarray(inputs.ego_status, np.float32), 0.0)
    hist_mask = np.asarray(inputs.ego_history_mask, bool)
    hist = np.where(hist_mask[:, None], np.asarray(inputs.ego_history, np.float32), 0.0)
    if inputs.command not in COMMANDS:
        raise ValueError(f"sample {inputs.sample_id}: command {inputs.command!r} not in {COMMANDS}")
    onehot = np.zeros(len(COMMANDS), np.float32)
    onehot[COMMANDS.index(inputs.command)] = 1.0
    return np.concatenate([status, status_mask, hist.reshape(-1), hist_mask, onehot]).astype(np.float32)


@dataclass
class EgoMLPConfig:
    """Architecture, training settings and provenance of an ego-status MLP.

    Attributes:
        hidden_dim: width of each hidden layer.
        num_hidden_layers: number of hidden Linear+ReLU layers.
        epochs, batch_size, lr, weight_decay: AdamW training on CPU.
        seed: seeds initialisation and batch order (training is deterministic given it).
        trained_on_scenes: scene ids of the training samples (filled by :func:`train_ego_mlp`).
        num_train_samples: number of training samples.
        final_train_loss: mean L1 (m / rad) of the last epoch.
    """

    hidden_dim: int = 256
    num_hidden_layers: int = 2
    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    trained_on_scenes: list[str] = field(default_factory=list)
    num_train_samples: int = 0
    final_train_loss: float | None = None


class EgoStatusMLP(nn.Module):
    """MLP (B, 31) standardised ego features -> (B, 6, 3) waypoints ``x, y, heading``."""

    def __init__(self, config: EgoMLPConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width = FEATURE_DIM
        for _ in range(config.num_hidden_layers):
            layers += [nn.Linear(width, config.hidden_dim), nn.ReLU()]
            width = config.hidden_dim
        layers.append(nn.Linear(width, FUTURE_STEPS * 3))
        self.net = nn.Sequential(*layers)
        self.register_buffer("feature_mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("feature_std", torch.ones(FEATURE_DIM))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, 31) raw :func:`ego_features` -> (B, 6, 3)."""
        x = (features - self.feature_mean) / self.feature_std
        return self.net(x).view(-1, FUTURE_STEPS, 3)


class EgoMLPPlanner(Planner):
    """A trained :class:`EgoStatusMLP` behind the :class:`Planner` interface (CPU, batched)."""

    name = "ego_mlp"

    def __init__(self, model: EgoStatusMLP, config: EgoMLPConfig):
        self.model = model.eval()
        self.config = config

    @torch.no_grad()
    def compute_trajectories(self, batch: list[PlanningInputs]) -> np.ndarray:
        """(B, 6, 3) float32 ego-frame ``x, y, heading`` at +0.5 ... +3.0 s."""
        if not batch:
            return np.zeros((0, FUTURE_STEPS, 3), np.float32)
        feats = torch.from_numpy(np.stack([ego_features(x) for x in batch]))
        return self.model(feats).numpy().astype(np.float32)

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """(6, 3) float32 ego-frame waypoints for one sample."""
        return self.compute_trajectories([inputs])[0]

    def save(self, checkpoint_dir: str | Path) -> Path:
        """Write ``model.pt`` and ``config.json`` into ``checkpoint_dir`` (created); returns it."""
        out = Path(checkpoint_dir)
        out.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(self.model.state_dict(), buffer)
        write_bytes_atomic(out / MODEL_FILE, buffer.getvalue())
        write_json_atomic(out / CONFIG_FILE, asdict(self.config))
        return out

    @classmethod
    def load(cls, checkpoint_dir: str | Path) -> "EgoMLPPlanner":
        """Load a folder written by :meth:`save`.

        Raises:
            FileNotFoundError: ``model.pt`` or ``config.json`` is missing (path named).
        """
        d = Path(checkpoint_dir)
        for name in (MODEL_FILE, CONFIG_FILE):
            if not (d / name).is_file():
                raise FileNotFoundError(
                    f"{d / name}: missing; an ego_mlp checkpoint folder holds {MODEL_FILE} and {CONFIG_FILE} "
                    "(train one with `python recipes/train_ego_mlp.py --data DIR --out CKPT`)"
                )
        config = EgoMLPConfig(**json.loads((d / CONFIG_FILE).read_text()))
        model = EgoStatusMLP(config)
        model.load_state_dict(torch.load(d / MODEL_FILE, map_location="cpu", weights_only=True))
        return cls(model, config)


def train_ego_mlp(samples: list[PlanningSample], config: EgoMLPConfig | None = None, progress: bool = True) -> EgoMLPPlanner:
    """Train an ego-status MLP with masked L1 on ``samples`` (CPU, deterministic under ``config.seed``).

    The caller chooses the samples; pass training scenes only (:func:`dsdrive.data.splits.split_scenes`).
    Training runs on one intra-op thread (restored afterwards): for a model this small, more
    threads only add synchronisation cost, which on a busy machine is ten times the work.

    Raises:
        ValueError: no sample has a valid future step.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(samples, config or EgoMLPConfig(), progress)
    finally:
        torch.set_num_threads(threads)


def _train(samples: list[PlanningSample], config: EgoMLPConfig, progress: bool) -> EgoMLPPlanner:
    from tqdm import tqdm

    samples = [s for s in samples if np.any(s.targets.ego_future_mask)]
    if not samples:
        raise ValueError("train_ego_mlp: no training sample has a valid future step (ego_future_mask all False)")
    feats = torch.from_numpy(np.stack([ego_features(s.inputs) for s in samples]))
    target = np.stack([np.asarray(s.targets.ego_future, np.float32) for s in samples])
    target[..., 2] = wrap_angle(target[..., 2])
    target_t = torch.from_numpy(target.astype(np.float32))
    mask = torch.from_numpy(np.stack([np.asarray(s.targets.ego_future_mask, bool) for s in samples])).float()

    torch.manual_seed(config.seed)
    model = EgoStatusMLP(config)
    model.feature_mean.copy_(feats.mean(dim=0))
    model.feature_std.copy_(feats.std(dim=0, unbiased=False).clamp_min(1e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    n = len(samples)
    epoch_loss = float("nan")
    model.train()
    for _ in tqdm(range(config.epochs), desc="train ego_mlp", disable=not progress):
        order = torch.randperm(n, generator=gen)
        total, weight = 0.0, 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            err = (model(feats[idx]) - target_t[idx]).abs().sum(dim=-1) * mask[idx]  # (b, 6)
            denom = mask[idx].sum().clamp_min(1.0)
            loss = err.sum() / (3.0 * denom)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * denom.item()
            weight += denom.item()
        epoch_loss = total / weight
    config.trained_on_scenes = sorted({s.scene_id for s in samples})
    config.num_train_samples = n
    config.final_train_loss = epoch_loss
    return EgoMLPPlanner(model.eval(), config)


def train_ego_mlp_on_split(data_dir: str | Path, config: EgoMLPConfig | None = None, val_scenes: tuple[str, ...] | list[str] | None = None, progress: bool = True) -> EgoMLPPlanner:
    """Train on the training scenes of a planning dataset (``split_scenes``; validation scenes never seen).

    Args:
        data_dir: a dataset written by :func:`dsdrive.data.dataset.save_samples`.
        val_scenes: held-out scenes (default :data:`dsdrive.data.splits.DEFAULT_VAL_SCENES`).

    Raises:
        ValueError: the split leaves no training scene.
    """
    from dsdrive.data.dataset import load_dataset_dir, load_samples
    from dsdrive.data.splits import DEFAULT_VAL_SCENES, split_scenes

    scene_ids = list(load_dataset_dir(data_dir)["scene_id"])
    train, _ = split_scenes(scene_ids, DEFAULT_VAL_SCENES if val_scenes is None else val_scenes)
    if not train:
        raise ValueError(f"{data_dir}: no training scene left after holding out validation scenes (scenes: {sorted(set(scene_ids))})")
    return train_ego_mlp(load_samples(data_dir, scenes=train), config, progress=progress)
