"""Fine-tune the camera student's VLM to write the waypoints as text (the text-trajectory VLA baseline).

Run as:
    python recipes/configs/tiny-vl/build_data.py --out /tmp/V/camera_planning
    accelerate launch recipes/text_trajectory.py --config recipes/configs/tiny-vl/text_trajectory.yaml
    python recipes/text_trajectory.py --config recipes/configs/tiny-vl/text_trajectory.yaml --max_steps 4 --output_dir /tmp/tt

This file is the ``accelerate launch`` entry point; the stage itself (arguments, data split, VLM,
LoRA, training, export, held-out evaluation) is :mod:`dsdrive.training.text_trajectory`, whose
docstring and ``--help`` describe every option.
"""

from __future__ import annotations

import sys

from dsdrive.training.text_trajectory import main

if __name__ == "__main__":
    sys.exit(main(prog="recipes/text_trajectory.py"))
