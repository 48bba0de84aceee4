"""Train the ego-status MLP baseline (AD-MLP / NAVSIM EgoStatusMLP) on the training scenes.

Run as:
    python recipes/train_ego_mlp.py --data outputs/main/planning --out outputs/ckpt/ego_mlp
    python eval/open_loop.py --data outputs/main/planning --planner ego_mlp --checkpoint outputs/ckpt/ego_mlp --out outputs/open_loop/ego_mlp.json

Held-out scenes (``--val-scenes``, default :data:`dsdrive.data.splits.DEFAULT_VAL_SCENES`) are never
used for training. CPU, a few seconds; deterministic under ``--seed``.
"""

from __future__ import annotations

import argparse
import sys

from dsdrive.planners.ego_mlp import EgoMLPConfig, train_ego_mlp_on_split
from dsdrive.data.splits import DEFAULT_VAL_SCENES


def main(argv: list[str] | None = None) -> int:
    defaults = EgoMLPConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="planning dataset folder")
    ap.add_argument("--out", required=True, help="checkpoint folder to write (model.pt + config.json)")
    ap.add_argument("--val-scenes", default=",".join(DEFAULT_VAL_SCENES), help="comma-separated held-out scene ids")
    ap.add_argument("--epochs", type=int, default=defaults.epochs)
    ap.add_argument("--hidden-dim", type=int, default=defaults.hidden_dim)
    ap.add_argument("--lr", type=float, default=defaults.lr)
    ap.add_argument("--seed", type=int, default=defaults.seed)
    args = ap.parse_args(argv)

    config = EgoMLPConfig(epochs=args.epochs, hidden_dim=args.hidden_dim, lr=args.lr, seed=args.seed)
    val = tuple(s for s in args.val_scenes.split(",") if s)
    planner = train_ego_mlp_on_split(args.data, config, val_scenes=val)
    out = planner.save(args.out)
    c = planner.config
    print(f"trained on {c.num_train_samples} samples from {c.trained_on_scenes}; final L1 {c.final_train_loss:.4f}; saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
