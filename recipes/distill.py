"""Distil the annotators' labels into the compact student (DSDrive dual head + DistillDrive vocabulary + RSD RiskHead).

Run as:
    python recipes/distill.py --config recipes/configs/tiny/distill.yaml
    dsdrive distill --config recipes/configs/tiny/distill.yaml                # the same command
    python recipes/distill.py --config recipes/configs/tiny/distill.yaml --max_steps 20 --output_dir outputs/ckpt/s
    python recipes/distill.py --config recipes/configs/tiny/distill.yaml --max_steps 4 --save_steps 2 \
        --save_strategy steps --output_dir outputs/ckpt/s --resume_from_checkpoint outputs/ckpt/s/checkpoint-2
    python recipes/distill.py --config recipes/configs/tiny/distill.yaml --val_scenes none   # every scene, no evaluation
    accelerate launch --config_file recipes/accelerate_configs/cpu_ddp_gloo.yaml recipes/distill.py \
        --config recipes/configs/tiny/distill.yaml --max_steps 20            # 2 CPU processes (gloo)
    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml recipes/distill.py \
        --config recipes/configs/qwen2.5-0.5b/distill_qlora.yaml            # QLoRA, N GPUs

This file is the ``accelerate launch`` entry point; the stage itself (arguments, data split,
student, training, export, held-out evaluation) is :mod:`dsdrive.training.distill`, whose
docstring and ``--help`` describe every option.
"""

from __future__ import annotations

import sys

from dsdrive.training.distill import main

if __name__ == "__main__":
    sys.exit(main(prog="recipes/distill.py"))
