"""On-policy closed-loop distillation (DAgger with PDM-Closed labels; Learning by Cheating's on-policy stage).

Run as:
    python recipes/dagger.py --data outputs/main/planning_annotated --out outputs/dagger --folds 4 --fold 0 --iterations 3
    dsdrive dagger --data outputs/main/planning_annotated --out outputs/dagger --fold 1    # the same command, another fold
    python recipes/dagger.py --data DIR --out OUT --summary-only                          # rebuild the table of the folds run

The stage (rollouts with DART perturbations, PDM-Closed labels, aggregation, retraining with the
main job's distill YAML, held-out closed-loop and open-loop evaluation, resume) is
:mod:`dsdrive.training.dagger`; flags it does not know go to ``dsdrive distill`` (e.g. ``--max_steps``).
"""

from __future__ import annotations

import sys

from dsdrive.training.dagger import main

if __name__ == "__main__":
    sys.exit(main(prog="recipes/dagger.py"))
