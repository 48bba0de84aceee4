"""The ``dsdrive`` console script.

Run as:
    dsdrive build --source scenarionet --input ../shared/data/nuscenes-mini-scenarionet --out data/planning
    dsdrive annotate --teacher rule --data data/planning --out data/annotations
    dsdrive merge --data data/planning --annotations data/annotations --out data/planning_annotated
    dsdrive vocab --data data/planning --out data/vocabulary

Each subcommand lives in the module named below and exposes ``main(argv)``; this file only
dispatches, so ``dsdrive <cmd> --help`` shows that module's own options.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    # data
    "build": ("data_builders.build", "main", "build planning samples from ScenarioNet / nuScenes / DriveLM / MetaDrive"),
    # annotation
    "annotate": ("dsdrive.annotation.annotate", "main", "annotate planning samples with an annotator (rule | qwen-vl | openai)"),
    "merge": ("dsdrive.annotation.annotate", "merge_main", "join annotation shards into a planning dataset by sample id"),
    # training
    "vocab": ("dsdrive.distilldrive.planning_vocabulary", "main", "rebuild the planning and motion vocabularies (k-means) from the training scenes"),
    "planning-teacher": ("dsdrive.training.planning_teacher", "main", "train the DistillDrive planning teacher (privileged: ground-truth agents and map)"),
    "ego-mlp": ("dsdrive.training.ego_mlp", "main", "train the ego-status MLP baseline (AD-MLP style)"),
    "distill": ("dsdrive.training.distill", "main", "distil the student (same as `accelerate launch recipes/distill.py`)"),
    "dagger": ("dsdrive.training.dagger", "main", "on-policy distillation: student rollouts in MetaDrive labelled by PDM-Closed, aggregated, retrained (DAgger)"),
    # evaluation
    "open-loop": ("dsdrive.evaluation.open_loop", "main", "open-loop L2 / collision of planners (ST-P3 and UniAD protocols)"),
    "pdm-score": ("dsdrive.evaluation.pdm_score", "main", "NAVSIM-style PDM score per sample (bicycle + LQR against the logged agents)"),
    "closed-loop": ("dsdrive.evaluation.closed_loop.cli", "main", "closed-loop rollouts in MetaDrive with an HTML report"),
    "cross-validate": ("dsdrive.evaluation.cross_validate", "main", "k-fold cross-validation by scene x seeds with bootstrap CIs (cv.json, cv.md)"),
}
"""Stage name -> (module, function taking argv, help). Stages in pipeline order."""


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``dsdrive <command> ...`` to the command's module; returns its exit code (2 for
    an unknown command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in SUBCOMMANDS:
        width = max(map(len, SUBCOMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
        msg = "usage: dsdrive <command> [options]\n\ncommands:\n" + "\n".join(lines)
        if argv and argv[0] not in {"-h", "--help"}:
            print(f"dsdrive: unknown command {argv[0]!r}\n\n{msg}", file=sys.stderr)
            return 2
        print(msg)
        return 0
    module_name, function, _ = SUBCOMMANDS[argv[0]]
    return int(getattr(importlib.import_module(module_name), function)(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
