"""K-fold cross-validation by scene with seeds and 95 % bootstrap intervals over scenes.

Run as (the two forms are the same command, :func:`dsdrive.evaluation.cross_validate.main`):
    python eval/cross_validate.py --data outputs/main/planning_annotated --folds 4 --seeds 3 \
        --planner constant_velocity ego_mlp student student_no_ego --out outputs/cv
    dsdrive cross-validate --data outputs/main/planning_annotated --folds 4 --seeds 3 \
        --planner constant_velocity ego_mlp student student_no_ego --out outputs/cv

Writes OUT/cv.json (every figure, timings) and OUT/cv.md (mean [95 % CI] per planner and protocol,
seed spread, paired differences); each (planner, fold, seed) run is kept under OUT/runs/ and a
rerun resumes. See ``dsdrive cross-validate --help`` for the fold rule and the statistics.
"""

from __future__ import annotations

import sys

from dsdrive.evaluation.cross_validate import main

if __name__ == "__main__":
    sys.exit(main(prog="python eval/cross_validate.py"))
