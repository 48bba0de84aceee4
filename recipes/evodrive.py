"""EvoDriveVLA's distillation on the text-trajectory VLA: oracle teacher -> soft targets -> student.

Run as:
    python recipes/configs/tiny-vl/build_data.py --out /tmp/V/camera_planning
    python recipes/evodrive.py --config recipes/configs/tiny-vl/evodrive.yaml --output_dir /tmp/evo

This file is the entry point; the stages (resumable: each is skipped when its output exists) are
:mod:`dsdrive.training.evodrive`, whose docstring and ``--help`` describe every option.
"""

from __future__ import annotations

import sys

from dsdrive.training.evodrive import main

if __name__ == "__main__":
    sys.exit(main(prog="recipes/evodrive.py"))
