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
    "build": ("data_builders.build", "build planning samples from ScenarioNet / nuScenes / DriveLM / MetaDrive"),
    "annotate": ("dsdrive.annotation.annotate", "annotate planning samples with a teacher (rule | qwen-vl | openai)"),
    "merge": ("dsdrive.annotation.annotate", "join annotation shards into a planning dataset by sample id"),
    "vocab": ("dsdrive.distilldrive.planning_vocabulary", "rebuild the planning and motion vocabularies (k-means) from the training scenes"),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``dsdrive <command> ...`` to the command's module; returns its exit code (2 for
    an unknown command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in SUBCOMMANDS:
        width = max(map(len, SUBCOMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
        msg = "usage: dsdrive <command> [options]\n\ncommands:\n" + "\n".join(lines)
        if argv and argv[0] not in {"-h", "--help"}:
            print(f"dsdrive: unknown command {argv[0]!r}\n\n{msg}", file=sys.stderr)
            return 2
        print(msg)
        return 0
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    if argv[0] == "merge":
        return int(module.merge_main(argv[1:]) or 0)
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
