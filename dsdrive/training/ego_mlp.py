"""Train the ego-status MLP baseline (AD-MLP / NAVSIM EgoStatusMLP) on the training scenes.

Run as:
    dsdrive ego-mlp --data outputs/main/planning --out outputs/ckpt/ego_mlp
    python recipes/train_ego_mlp.py --data outputs/main/planning --out outputs/ckpt/ego_mlp --epochs 300 --seed 1
    python eval/open_loop.py --data outputs/main/planning --planner ego_mlp --checkpoint outputs/ckpt/ego_mlp --out outputs/open_loop/ego_mlp.json

Held-out scenes (``--val-scenes``, default :data:`dsdrive.data.splits.DEFAULT_VAL_SCENES`) are never
used for training. Training runs through ``transformers.Trainer`` on CPU (:class:`EgoMLPTrainer`,
:func:`fit_ego_mlp`; ``dsdrive.planners.ego_mlp.train_ego_mlp`` calls it), a few seconds,
deterministic under ``--seed``.
Output folder: ``model.pt`` + ``config.json`` (:class:`dsdrive.planners.ego_mlp.EgoMLPConfig`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np
import torch
from transformers import PrinterCallback, Trainer, TrainingArguments

from dsdrive.data.dataset import load_dataset_dir, load_samples
from dsdrive.data.splits import DEFAULT_VAL_SCENES, split_scenes
from dsdrive.data.types import PlanningSample
from dsdrive.geometry import wrap_angle
from dsdrive.planners.ego_mlp import (
    EgoMLPConfig,
    EgoMLPPlanner,
    EgoStatusMLP,
    ego_features,
    masked_l1,
)


class EgoMLPTrainer(Trainer):
    """``Trainer`` for :class:`EgoStatusMLP` (a plain ``nn.Module``): batches ``{"features" (B, 31) raw,
    "target" (B, 6, 3) ego-frame x, y, heading, "mask" (B, 6)}``, loss :func:`masked_l1` (AD-MLP's L1).

    Weight decay applies to every parameter, as the pre-Trainer loop's ``torch.optim.AdamW`` did
    (``Trainer`` exempts biases by default).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_is_scaled_for_ga = False  # per-batch mean

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        """Every trainable parameter decays (see the class docstring)."""
        return [n for n, p in model.named_parameters() if p.requires_grad]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Masked L1 of the model's waypoints on one batch."""
        pred = model(inputs["features"])
        loss = masked_l1(pred, inputs["target"], inputs["mask"])
        return (loss, pred) if return_outputs else loss


class IndexCollator:
    """Dataset items are row indices; a batch is one gather from the pre-built tensors (no per-row
    collation: at 64 rows x 600 steps that is most of the step time of so small a model)."""

    def __init__(self, **tensors: torch.Tensor):
        self.tensors = tensors

    def __call__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(rows, dtype=torch.long)
        return {k: v[idx] for k, v in self.tensors.items()}


def fit_ego_mlp(samples: list[PlanningSample], config: EgoMLPConfig, progress: bool = True) -> EgoMLPPlanner:
    """Train an :class:`EgoStatusMLP` on ``samples`` with :class:`EgoMLPTrainer` (CPU, one thread, seeded).

    ``config`` gives the epochs, batch size, lr (constant), weight decay and seed; its provenance
    fields (scenes, sample count, final masked L1 of the trained model on its training samples) are
    filled in. One intra-op thread (restored afterwards): for a model this small more threads only
    add synchronisation cost. Samples without any valid future step are dropped.

    Raises:
        ValueError: no sample has a valid future step.
    """
    samples = [s for s in samples if np.any(s.targets.ego_future_mask)]
    if not samples:
        raise ValueError("train_ego_mlp: no training sample has a valid future step (ego_future_mask all False)")
    feats = torch.from_numpy(np.stack([ego_features(s.inputs) for s in samples]))
    target = np.stack([np.asarray(s.targets.ego_future, np.float32) for s in samples])
    target[..., 2] = wrap_angle(target[..., 2])
    target_t = torch.from_numpy(np.nan_to_num(target).astype(np.float32))
    mask = torch.from_numpy(np.stack([np.asarray(s.targets.ego_future_mask, bool) for s in samples])).float()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(config.seed)
        model = EgoStatusMLP(config)
        model.fit_normalisation(feats)
        with tempfile.TemporaryDirectory(prefix="ego_mlp_trainer_") as tmp:
            args = TrainingArguments(
                output_dir=tmp, num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
                learning_rate=config.lr, weight_decay=config.weight_decay, lr_scheduler_type="constant", optim="adamw_torch",
                max_grad_norm=0.0, seed=config.seed, logging_strategy="no", save_strategy="no", report_to="none",
                disable_tqdm=not progress, use_cpu=True, remove_unused_columns=False, dataloader_pin_memory=False,
            )
            trainer = EgoMLPTrainer(model=model, args=args, train_dataset=list(range(len(samples))),
                                    data_collator=IndexCollator(features=feats, target=target_t, mask=mask))
            trainer.remove_callback(PrinterCallback)
            trainer.train()
        model.eval()
        with torch.no_grad():
            config.final_train_loss = float(masked_l1(model(feats), target_t, mask))
    finally:
        torch.set_num_threads(threads)
    config.trained_on_scenes = sorted({s.scene_id for s in samples})
    config.num_train_samples = len(samples)
    return EgoMLPPlanner(model, config)


def train_ego_mlp(samples: list[PlanningSample], config: EgoMLPConfig | None = None, progress: bool = True) -> EgoMLPPlanner:
    """Train an ego-status MLP with masked L1 on ``samples`` through ``transformers.Trainer``
    (:func:`fit_ego_mlp`; CPU, deterministic under ``config.seed``).

    The caller chooses the samples; pass training scenes only (:func:`dsdrive.data.splits.split_scenes`).

    Raises:
        ValueError: no sample has a valid future step.
    """
    return fit_ego_mlp(samples, config or EgoMLPConfig(), progress=progress)


def train_ego_mlp_on_split(data_dir: str | Path, config: EgoMLPConfig | None = None, val_scenes: tuple[str, ...] | list[str] | None = None, progress: bool = True) -> EgoMLPPlanner:
    """Train on the training scenes of a planning dataset (``split_scenes``; validation scenes never seen).

    Args:
        data_dir: a dataset written by :func:`dsdrive.data.dataset.save_samples`.
        val_scenes: held-out scenes (default :data:`dsdrive.data.splits.DEFAULT_VAL_SCENES`).

    Raises:
        ValueError: the split leaves no training scene.
    """
    scene_ids = list(load_dataset_dir(data_dir)["scene_id"])
    train, _ = split_scenes(scene_ids, DEFAULT_VAL_SCENES if val_scenes is None else val_scenes)
    if not train:
        raise ValueError(f"{data_dir}: no training scene left after holding out validation scenes (scenes: {sorted(set(scene_ids))})")
    return train_ego_mlp(load_samples(data_dir, scenes=train), config, progress=progress)


def main(argv: list[str] | None = None) -> int:
    """Train, save and summarise an ego-status MLP; returns 0.

    Raises:
        ValueError: the split leaves no training scene, or no training sample has a future.
    """
    defaults = EgoMLPConfig()
    ap = argparse.ArgumentParser(prog="dsdrive ego-mlp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="planning dataset folder (dsdrive build output)")
    ap.add_argument("--out", required=True, help="checkpoint folder to write (model.pt + config.json)")
    ap.add_argument("--val-scenes", default=",".join(DEFAULT_VAL_SCENES), help="comma-separated held-out scene ids")
    ap.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training samples")
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size, help="samples per optimiser step")
    ap.add_argument("--hidden-dim", type=int, default=defaults.hidden_dim, help="width of each hidden layer")
    ap.add_argument("--num-hidden-layers", type=int, default=defaults.num_hidden_layers, help="hidden Linear+ReLU layers")
    ap.add_argument("--lr", type=float, default=defaults.lr, help="AdamW learning rate (constant)")
    ap.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay")
    ap.add_argument("--absolute", action="store_true", help="regress absolute waypoints (AD-MLP) instead of the correction to constant velocity")
    ap.add_argument("--seed", type=int, default=defaults.seed, help="initialisation and batch-order seed")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    config = EgoMLPConfig(hidden_dim=args.hidden_dim, num_hidden_layers=args.num_hidden_layers, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                          cv_residual=not args.absolute)
    val = tuple(s for s in args.val_scenes.split(",") if s)
    planner = train_ego_mlp_on_split(args.data, config, val_scenes=val, progress=not args.no_progress)
    out = planner.save(args.out)
    c = planner.config
    print(f"trained on {c.num_train_samples} samples from {c.trained_on_scenes}; final train L1 {c.final_train_loss:.4f}; saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
