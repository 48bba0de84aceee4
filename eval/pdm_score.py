"""NAVSIM-style PDM score of planners on every planning sample (kinematic bicycle + LQR against the logged agents).

Run as (the two forms are the same command, :func:`dsdrive.evaluation.pdm_score.main`):
    dsdrive pdm-score --data outputs/main/planning --planner ground_truth constant_velocity --scenes all --out pdm.json
    python eval/pdm_score.py --data outputs/main/planning --planner ground_truth constant_velocity --scenes all --out pdm.json
    python eval/pdm_score.py --data DIR --planner ego_mlp --checkpoint CKPT_DIR --scenes val --out pdm.json

Writes FILE.json (per planner: NC, DAC, TTC, C, EP, PDMS means and per-sample scores, skipped and
failed samples with reasons) and FILE.md (the table, with NAVSIM's published anchors). ``--help``
lists the options; :mod:`dsdrive.evaluation.pdm_score` states NAVSIM's definitions and where ours
differ (3 s horizon, no traffic lights in nuScenes, the logged future as EP reference).
"""

from __future__ import annotations

import sys

from dsdrive.evaluation.pdm_score import main

if __name__ == "__main__":
    sys.exit(main(prog="python eval/pdm_score.py"))
