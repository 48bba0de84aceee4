"""Open-loop evaluation of planners on held-out nuScenes scenes: L2 and collision rate.

Run as (the two forms are the same command, :func:`dsdrive.evaluation.open_loop.main`):
    dsdrive open-loop --data outputs/main/planning \
        --planner constant_velocity ego_mlp --train-ego-mlp-if-missing --out outputs/open_loop/baselines.json
    python eval/open_loop.py --data outputs/main/planning \
        --planner constant_velocity ego_mlp --train-ego-mlp-if-missing --out outputs/open_loop/baselines.json
    python eval/open_loop.py --data DIR --planner ego_mlp --checkpoint CKPT_DIR --scenes val --out ol.json
    python eval/open_loop.py --data DIR --planner student --checkpoint ego_mlp=CKPT1 student=CKPT2 ...

Writes FILE.json (all figures) and FILE.md (tables for the ST-P3 and UniAD protocols, all
samples and per command) and prints the tables. ``--scenes`` defaults to ``val``: every held-out
scene of :data:`dsdrive.data.splits.DEFAULT_VAL_SCENES`; a folder without them is an error (pass
``--scenes all`` or scene ids). The scene ids and the sample count used are always printed.

ego_mlp without a checkpoint: with ``--train-ego-mlp-if-missing`` it is trained on the scenes of
the same ``--data`` that are neither evaluated nor held out, saved to ``FILE_ego_mlp/`` beside the
report, and this is printed; without the flag it is an error.
"""

from __future__ import annotations

import sys

from dsdrive.evaluation.open_loop import main

if __name__ == "__main__":
    sys.exit(main(prog="python eval/open_loop.py"))
