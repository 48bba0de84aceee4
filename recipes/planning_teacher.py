"""Train the DistillDrive planning teacher (privileged: ground-truth agents + map) and score it
open-loop on the held-out scenes. A thin wrapper of :mod:`dsdrive.training.planning_teacher`
(``dsdrive planning-teacher``), kept as the ``accelerate launch`` entry point.

Run as:
    python recipes/planning_teacher.py --config recipes/configs/planning_teacher/train_distribution.yaml
    python recipes/planning_teacher.py --config recipes/configs/planning_teacher/train_label.yaml \
        --data outputs/main/planning --output_dir outputs/ckpt/teacher_label --max_steps 400
    accelerate launch --config_file recipes/accelerate_configs/cpu_ddp_gloo.yaml recipes/planning_teacher.py \
        --config recipes/configs/planning_teacher/train_distribution.yaml        # 2 CPU processes (gloo)

``--config`` sets defaults, flags override; ``--help`` lists every flag.
"""

from __future__ import annotations

import sys

from dsdrive.training.planning_teacher import main

if __name__ == "__main__":
    sys.exit(main())
