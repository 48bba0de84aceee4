"""Train the ego-status MLP baseline on the training scenes. A thin wrapper of
:mod:`dsdrive.training.ego_mlp` (``dsdrive ego-mlp``).

Run as:
    python recipes/train_ego_mlp.py --data outputs/main/planning --out outputs/ckpt/ego_mlp
    python eval/open_loop.py --data outputs/main/planning --planner ego_mlp --checkpoint outputs/ckpt/ego_mlp --out outputs/open_loop/ego_mlp.json

``--help`` lists every flag.
"""

from __future__ import annotations

import sys

from dsdrive.training.ego_mlp import main

if __name__ == "__main__":
    sys.exit(main())
