"""Closed-loop evaluation in MetaDrive on ScenarioNet scenes, with an HTML + JSON report.

Run as (the two forms are the same command, :func:`dsdrive.evaluation.closed_loop.cli.main`):
    dsdrive closed-loop --scenarios ../shared/data/nuscenes-mini-scenarionet \
        --planner log_replay constant_velocity --out /tmp/closed_loop
    python eval/closed_loop.py --scenarios ../shared/data/nuscenes-mini-scenarionet \
        --planner log_replay constant_velocity --out /tmp/closed_loop
    python eval/closed_loop.py --planner ego_mlp --checkpoint runs/ego_mlp --traffic reactive \
        --scenes scene-0061 scene-0655 --out /tmp/closed_loop_mlp
    python eval/closed_loop.py --planner log_replay ego_mlp student \
        --checkpoint ego_mlp=runs/ego_mlp student=runs/student --out /tmp/closed_loop_cmp
    python eval/closed_loop.py --planner log_replay ego_mlp --data outputs/main/planning \
        --train-ego-mlp-if-missing --out /tmp/closed_loop_mlp
    python eval/closed_loop.py --planner log_waypoints constant_velocity --traffic reactive --out /tmp/closed_loop_reactive

Every planner (``log_replay`` = the logged expert, teleported; ``log_waypoints`` = the logged
future through the controller, the harness check) is rolled out on every selected scene and
reported in ``OUT/report.html`` and ``OUT/report.json``; ``--help`` lists the options and
:mod:`dsdrive.evaluation.closed_loop.cli` documents them. Bad input (no scenario, a ``--scenes``
string that matches no file, an ambiguous ``--checkpoint``) -> exit 2 with a clear message.
"""

from __future__ import annotations

from dsdrive.evaluation.closed_loop.cli import build_parser, load, main, resolve_checkpoints  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main(prog="python eval/closed_loop.py"))
