"""Ego-status MLP baseline: plans from the ego's own state only (no agents, map or images).

AD-MLP ("Rethinking the Open-Loop Evaluation of End-to-End Autonomous Driving in nuScenes",
Zhai et al., arXiv 2305.10430) and NAVSIM's ``EgoStatusMLPAgent`` showed that an MLP on the
ego status and history reaches competitive nuScenes L2; it is the baseline any student must
beat with its scene understanding.

Input features (31, float32), all in the ego frame of the current time (x forward, y left):
``ego_status`` (6, masked fields zeroed) | ``ego_status_mask`` (6) | ``ego_history`` x, y,
heading flattened (12, invalid poses zeroed) | ``ego_history_mask`` (4) | one-hot command (3,
order :data:`dsdrive.data.types.COMMANDS`). The training set's per-feature mean, standard deviation,
minimum and maximum are buffers in the state dict.

Output: (6, 3) ``x, y, heading`` at +0.5 ... +3.0 s (m, rad). With ``cv_residual`` (default) the
MLP predicts the correction to the constant-velocity rollout of the *measured* velocity
(:func:`dsdrive.planners.constant_velocity.ego_velocity`: ``ego_status`` vx, vy, else the last
history step, else 0), so the plan extrapolates in speed as physics does; the original AD-MLP
regresses absolute waypoints (``cv_residual=False``, the behaviour of checkpoints saved before the
flag existed). Loss: L1 over the valid future steps (``ego_future_mask``), as in AD-MLP / NAVSIM.

Out-of-range rule (so the planner stays finite and plausible on inputs its training never saw):

1. **Unseen command**: a command whose one-hot column never was 1 in training is replaced by
   the training mean of all three command columns (after standardisation: zeros, "no command
   information"); the MLP then plans the average training behaviour for that ego state.
2. **Clamp**: every other feature is clamped to its training [min, max] before standardisation,
   so the MLP is only evaluated inside the box it was fitted on (e.g. a speed of 60 m/s is read as
   the fastest training speed; with ``cv_residual`` the rollout itself still uses 60 m/s).
3. **Zero variance**: a feature whose training standard deviation is below
   :data:`MIN_FEATURE_STD` carries no information; its standardised value is 0 (no division by
   ~0). The pre-fix code divided by ``max(std, 1e-3)`` and, given a RIGHT command never seen in
   training, planned waypoints ~650 m away.

Training runs through ``transformers.Trainer`` (:class:`dsdrive.training.ego_mlp.EgoMLPTrainer`, a
``compute_loss`` override on this plain ``nn.Module``): AdamW with constant lr, weight decay on
every parameter, no clipping, seeded batch order. A checkpoint is a folder with ``model.pt`` (torch state dict) and
``config.json`` (:class:`EgoMLPConfig`).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dsdrive.data.atomic_io import write_bytes_atomic, write_json_atomic
from dsdrive.data.types import (
    COMMANDS,
    EGO_STATUS_FIELDS,
    FUTURE_STEPS,
    HISTORY_STEPS,
    STEP_SECONDS,
    PlanningInputs,
    PlanningSample,
)
from dsdrive.planners.base import Planner
from dsdrive.planners.constant_velocity import MIN_HEADING_SPEED

FEATURE_DIM = 2 * len(EGO_STATUS_FIELDS) + 3 * HISTORY_STEPS + HISTORY_STEPS + len(COMMANDS)
MODEL_FILE, CONFIG_FILE = "model.pt", "config.json"
MIN_FEATURE_STD = 1e-4
"""A feature with a smaller training standard deviation is treated as constant (standardised to 0)."""
_NS = len(EGO_STATUS_FIELDS)
_VX, _VY = EGO_STATUS_FIELDS.index("vx"), EGO_STATUS_FIELDS.index("vy")
_HIST = 2 * _NS  # first ego_history feature
_HIST_MASK = _HIST + 3 * HISTORY_STEPS
_CMD = _HIST_MASK + HISTORY_STEPS  # first command feature


def ego_features(inputs: PlanningInputs) -> np.ndarray:
    """(31,) float32 ego-only feature vector of one sample (see the module docstring).

    Raises:
        ValueError: the command is not one of :data:`dsdrive.data.types.COMMANDS` (names the sample).
    """
    status_mask = np.asarray(inputs.ego_status_mask, bool)
    status = np.where(status_mask, np.nan_to_num(np.asarray(inputs.ego_status, np.float32)), 0.0)
    hist_mask = np.asarray(inputs.ego_history_mask, bool)
    hist = np.where(hist_mask[:, None], np.nan_to_num(np.asarray(inputs.ego_history, np.float32)), 0.0)
    if inputs.command not in COMMANDS:
        raise ValueError(f"sample {inputs.sample_id}: command {inputs.command!r} not in {COMMANDS}")
    onehot = np.zeros(len(COMMANDS), np.float32)
    onehot[COMMANDS.index(inputs.command)] = 1.0
    return np.concatenate([status, status_mask, hist.reshape(-1), hist_mask, onehot]).astype(np.float32)


def constant_velocity_waypoints(features: torch.Tensor) -> torch.Tensor:
    """(B, 31) raw :func:`ego_features` -> (B, 6, 3) constant-velocity rollout ``x, y, heading``.

    Velocity as :func:`dsdrive.planners.constant_velocity.ego_velocity`: ``ego_status`` vx, vy when
    both are measured, else (origin - last history pose) / 0.5 s when that pose is valid, else 0;
    heading ``atan2(vy, vx)`` (0 below :data:`MIN_HEADING_SPEED`). Ego frame, metres, radians.
    """
    status_ok = (features[:, _NS + _VX] > 0.5) & (features[:, _NS + _VY] > 0.5)
    last = _HIST + 3 * (HISTORY_STEPS - 1)
    hist_ok = features[:, _HIST_MASK + HISTORY_STEPS - 1] > 0.5
    v_status = features[:, [_VX, _VY]]
    v_hist = -features[:, last:last + 2] / STEP_SECONDS
    v = torch.where(status_ok[:, None], v_status, torch.where(hist_ok[:, None], v_hist, torch.zeros_like(v_status)))
    heading = torch.where(v.norm(dim=-1) >= MIN_HEADING_SPEED, torch.atan2(v[:, 1], v[:, 0]), torch.zeros_like(v[:, 0]))
    t = STEP_SECONDS * torch.arange(1, FUTURE_STEPS + 1, dtype=features.dtype, device=features.device)
    xy = v[:, None, :] * t[None, :, None]
    return torch.cat([xy, heading[:, None, None].expand(-1, FUTURE_STEPS, 1)], dim=-1)


@dataclass
class EgoMLPConfig:
    """Architecture, training settings and provenance of an ego-status MLP.

    Attributes:
        hidden_dim: width of each hidden layer.
        num_hidden_layers: number of hidden Linear+ReLU layers.
        epochs, batch_size, lr, weight_decay: AdamW training (``transformers.Trainer``, CPU).
        seed: seeds initialisation and batch order (training is deterministic given it).
        cv_residual: predict the correction to the constant-velocity rollout (module docstring);
            checkpoints written before this field load with False (absolute waypoints).
        trained_on_scenes: scene ids of the training samples (filled by :func:`train_ego_mlp`).
        num_train_samples: number of training samples.
        final_train_loss: masked L1 (m / rad) of the trained model on its training samples.
    """

    hidden_dim: int = 256
    num_hidden_layers: int = 2
    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    cv_residual: bool = True
    trained_on_scenes: list[str] = field(default_factory=list)
    num_train_samples: int = 0
    final_train_loss: float | None = None


class EgoStatusMLP(nn.Module):
    """MLP (B, 31) raw ego features -> (B, 6, 3) waypoints ``x, y, heading`` (ego frame, m, rad).

    Buffers (training-set statistics, set by :meth:`fit_normalisation`): ``feature_mean``,
    ``feature_std``, ``feature_min``, ``feature_max`` (31,). Before they are fitted the range is
    unbounded and every feature counts as informative.
    """

    def __init__(self, config: EgoMLPConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width = FEATURE_DIM
        for _ in range(config.num_hidden_layers):
            layers += [nn.Linear(width, config.hidden_dim), nn.ReLU()]
            width = config.hidden_dim
        layers.append(nn.Linear(width, FUTURE_STEPS * 3))
        self.net = nn.Sequential(*layers)
        self.cv_residual = bool(config.cv_residual)
        self.register_buffer("feature_mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("feature_std", torch.ones(FEATURE_DIM))
        self.register_buffer("feature_min", torch.full((FEATURE_DIM,), -torch.inf))
        self.register_buffer("feature_max", torch.full((FEATURE_DIM,), torch.inf))

    @torch.no_grad()
    def fit_normalisation(self, features: torch.Tensor) -> None:
        """Store mean, std (population), min and max of the (N, 31) training features."""
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(features.std(dim=0, unbiased=False))
        self.feature_min.copy_(features.min(dim=0).values)
        self.feature_max.copy_(features.max(dim=0).values)

    def normalise(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 31) raw -> (B, 31) standardised features with the out-of-range rule (module docstring)."""
        x = features
        cmd = x[:, _CMD:]
        unseen = ((cmd > 0.5) & (self.feature_max[_CMD:] < 0.5)).any(dim=-1, keepdim=True)  # (B, 1)
        cmd = torch.where(unseen, self.feature_mean[_CMD:].expand_as(cmd), cmd)
        x = torch.cat([x[:, :_CMD], cmd], dim=-1)
        x = torch.maximum(torch.minimum(x, self.feature_max), self.feature_min)
        informative = self.feature_std >= MIN_FEATURE_STD
        scale = torch.where(informative, 1.0 / self.feature_std.clamp_min(MIN_FEATURE_STD), torch.zeros_like(self.feature_std))
        return (x - self.feature_mean) * scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, 31) raw :func:`ego_features` -> (B, 6, 3) ego-frame ``x, y, heading``."""
        out = self.net(self.normalise(features)).view(-1, FUTURE_STEPS, 3)
        return out + constant_velocity_waypoints(features) if self.cv_residual else out


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over valid steps and the 3 channels: (B, 6, 3), (B, 6, 3), (B, 6) -> scalar."""
    err = (pred - target).abs().sum(dim=-1) * mask
    return err.sum() / (3.0 * mask.sum().clamp_min(1.0))


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
        """Load a folder written by :meth:`save` (also one saved before ``cv_residual`` and the
        min / max buffers existed: absolute waypoints, unbounded range, zero-variance rule on).

        Raises:
            FileNotFoundError: ``model.pt`` or ``config.json`` is missing (path named).
            ValueError: ``config.json`` has unknown fields, or the weights miss keys (names them).
        """
        d = Path(checkpoint_dir)
        for name in (MODEL_FILE, CONFIG_FILE):
            if not (d / name).is_file():
                raise FileNotFoundError(
                    f"{d / name}: missing; an ego_mlp checkpoint folder holds {MODEL_FILE} and {CONFIG_FILE} "
                    "(train one with `dsdrive ego-mlp --data DIR --out CKPT`)"
                )
        raw = json.loads((d / CONFIG_FILE).read_text())
        unknown = sorted(set(raw) - {f.name for f in fields(EgoMLPConfig)})
        if unknown:
            raise ValueError(f"{d / CONFIG_FILE}: unknown fields {unknown} for EgoMLPConfig")
        raw.setdefault("cv_residual", False)  # written before the flag: absolute waypoints
        config = EgoMLPConfig(**raw)
        model = EgoStatusMLP(config)
        state = torch.load(d / MODEL_FILE, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"feature_min", "feature_max"}:
            raise ValueError(f"{d / MODEL_FILE}: does not match {CONFIG_FILE} (missing {missing}, unexpected {unexpected})")
        if missing:  # saved before the range buffers: its std was floored at 1e-3, so <= 1e-3 meant constant
            with torch.no_grad():
                model.feature_std[model.feature_std <= 1e-3] = 0.0
        return cls(model, config)

