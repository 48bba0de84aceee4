"""``dsdrive build``: planning samples from ScenarioNet, nuScenes, DriveLM or MetaDrive scenes.

Run as:
    dsdrive build --source scenarionet --input ../shared/data/nuscenes-mini-scenarionet --out /tmp/planning
    dsdrive build --source scenarionet --keyframe-step 1 --out /tmp/planning-10hz   # every 10 Hz step
    dsdrive build --source scenarionet --agents-as-ego --mirror --out /tmp/planning-aug  # every vehicle as ego + mirrored copies
    dsdrive build --source nuscenes --input ~/data/nuscenes --version v1.0-mini --out /tmp/planning-nusc
    dsdrive build --source metadrive-pg --num-scenarios 8 --out /tmp/planning-pg

Writes the samples with :func:`dsdrive.data.dataset.save_samples` (atomic: an interrupted build leaves
the previous dataset in place) and ``build_report.json`` inside the output folder (samples per
scene, command counts, every skipped file / scene / keyframe / agent with its reason, and
``sample_counts``: samples per scene x command x ego source x mirrored, with ``agent_ego``: the
agent-as-ego counters per scene, parked vehicles skipped among them).
``--source scenarionet`` is built here; the other sources are dispatched to
``data_builders.<source>.build(args)``, imported only when asked for.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

SOURCES = ("scenarionet", "nuscenes", "drivelm", "metadrive-pg")
_OTHER_BUILDERS = {"nuscenes": "data_builders.nuscenes", "drivelm": "data_builders.drivelm", "metadrive-pg": "data_builders.metadrive_pg"}


def build_parser() -> argparse.ArgumentParser:
    """The ``dsdrive build`` argument parser (shared by every source's ``build(args)``)."""
    p = argparse.ArgumentParser(prog="dsdrive build", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=SOURCES, default="scenarionet", help="input kind (default: scenarionet)")
    p.add_argument("--input", default=None, help="input folder; scenarionet default: $DSDRIVE_SCENARIOS or ../shared/data/nuscenes-mini-scenarionet")
    p.add_argument("--out", required=True, help="output dataset folder (replaced atomically)")
    p.add_argument("--version", default="v1.0-mini", help="nuScenes version (nuscenes source)")
    p.add_argument("--keyframe-step", type=int, default=None, help="steps between samples; scenarionet: default 0.5 s (5 at 10 Hz), 1 = every 10 Hz step")
    p.add_argument("--radius", type=float, default=50.0, help="agents within this distance of the ego (m)")
    p.add_argument("--map-roi", type=float, nargs=2, default=(50.0, 30.0), metavar=("HALF_X", "HALF_Y"), help="ego-frame map box half extents (m)")
    p.add_argument("--max-polylines", type=int, default=100, help="map polylines kept per sample, nearest first")
    p.add_argument("--agents-as-ego", action="store_true",
                   help="scenarionet: also make a sample of every logged vehicle with a valid -2 s ... +3 s window, in its own ego frame (LAV)")
    p.add_argument("--parked-fraction", type=float, default=0.0, metavar="F",
                   help="with --agents-as-ego: share of parked candidates kept per scene (0 = none, the default; 1 = all)")
    p.add_argument("--parked-motion", type=float, default=0.5, metavar="M",
                   help="with --agents-as-ego: a vehicle whose 5 s window stays within M metres of its current position is parked")
    p.add_argument("--mirror", action="store_true", help="scenarionet: add a left-right mirrored copy of every sample (y, heading flipped; LEFT <-> RIGHT)")
    p.add_argument("--num-scenarios", type=int, default=None, help="use only the first N scenarios")
    p.add_argument("--seed", type=int, default=0, help="metadrive-pg: first procedural-map seed")
    p.add_argument("--episode-steps", type=int, default=None, help="metadrive-pg: simulator steps recorded per scenario")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable file instead of skipping it")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def write_report(out_dir: Path, report: dict) -> Path:
    """Write ``build_report.json`` into ``out_dir`` (temporary file + rename)."""
    from dsdrive.data.atomic_io import write_json_atomic

    return write_json_atomic(out_dir / "build_report.json", report)


def sample_counts(samples: list) -> list[dict]:
    """Samples per scene x command x ego source x mirrored, as rows ``{"scene_id", "command",
    "ego_source", "mirrored", "samples"}`` sorted by those keys (``build_report.json`` key ``sample_counts``)."""
    c = Counter((s.scene_id, s.inputs.command, s.ego_source, bool(s.mirrored)) for s in samples)
    return [{"scene_id": k[0], "command": k[1], "ego_source": k[2], "mirrored": k[3], "samples": n} for k, n in sorted(c.items())]


def subset_commands(counts: list[dict]) -> dict[str, dict[str, int]]:
    """Command counts per subset ``"<ego_source>"`` / ``"<ego_source> mirrored"`` from :func:`sample_counts` rows."""
    out: dict[str, Counter] = {}
    for r in counts:
        out.setdefault(r["ego_source"] + (" mirrored" if r["mirrored"] else ""), Counter())[r["command"]] += r["samples"]
    return {k: dict(v) for k, v in sorted(out.items())}


def _print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title=f"dsdrive build --source {report['source']}  ({report['input']})")
    for col in ("scene", "samples", *report["commands_order"]):
        table.add_column(col, justify="right" if col != "scene" else "left")
    for scene, n in report["samples_per_scene"].items():
        cmds = report["commands_per_scene"].get(scene, {})
        table.add_row(scene, str(n), *(str(cmds.get(c, 0)) for c in report["commands_order"]))
    table.add_row("total", str(report["samples"]), *(str(report["commands"].get(c, 0)) for c in report["commands_order"]), style="bold")
    console.print(table)
    subsets = report.get("commands_per_subset", {})
    if set(subsets) - {"recorded_ego"}:
        sub = Table(title="samples per ego source x mirrored (sample_counts in build_report.json)")
        for col in ("subset", "samples", *report["commands_order"]):
            sub.add_column(col, justify="right" if col != "subset" else "left")
        for name, cmds in subsets.items():
            sub.add_row(name, str(sum(cmds.values())), *(str(cmds.get(c, 0)) for c in report["commands_order"]))
        console.print(sub)
    if report.get("agent_ego"):
        tot = Counter()
        for counts in report["agent_ego"].values():
            tot.update(counts)
        console.print(f"agents as ego: {tot['samples']} samples from {tot['vehicle_keyframes']} vehicle keyframes; "
                      f"{tot['no_full_window']} without a valid -2 s ... +3 s window; parked {tot['parked_candidates']} "
                      f"(kept {tot['parked_kept']}, skipped {tot['parked_skipped']})", highlight=False)
    if report["skip_reasons"]:
        skips = Table(title="counted skips (details in build_report.json)")
        skips.add_column("kind: reason")
        skips.add_column("count", justify="right")
        for reason, n in sorted(report["skip_reasons"].items()):
            skips.add_row(reason, str(n))
        console.print(skips)
    for s in report["skips"]:
        if s["kind"] == "file":
            console.print(f"[yellow]skipped file[/] {escape(s['file'])}: {escape(s['reason'])}", highlight=False)
    console.print(f"files read: {report['files_seen']}, scenes built: {len(report['samples_per_scene'])}, samples: {report['samples']}, "
                  f"{report['seconds']:.1f} s -> {report['out']}", highlight=False)


def build_scenarionet(args: argparse.Namespace) -> int:
    """Build a ScenarioNet folder (``args`` from :func:`build_parser`); returns an exit code."""
    from data_builders.scenarionet import BuildOptions, build_folder
    from dsdrive.data.paths import default_scenarios_dir
    from dsdrive.data.types import COMMANDS

    t0 = time.perf_counter()
    try:
        folder = default_scenarios_dir(args.input)
    except FileNotFoundError as exc:
        print(f"dsdrive build: {exc}", file=sys.stderr)
        return 2
    try:
        options = BuildOptions(keyframe_step=args.keyframe_step, radius=args.radius, map_roi=tuple(args.map_roi), max_polylines=args.max_polylines,
                               agents_as_ego=args.agents_as_ego, parked_fraction=args.parked_fraction,
                               parked_motion_m=args.parked_motion, mirror=args.mirror)
    except ValueError as exc:
        print(f"dsdrive build: {exc}", file=sys.stderr)
        return 2
    try:
        samples, rep = build_folder(folder, options, num_scenarios=args.num_scenarios, strict=args.strict, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, pickle.UnpicklingError) as exc:
        print(f"dsdrive build: {exc}", file=sys.stderr)
        return 1
    per_scene: dict[str, Counter] = {}
    for s in samples:
        per_scene.setdefault(s.scene_id, Counter())[s.inputs.command] += 1
    report = {
        "source": "scenarionet",
        "input": str(folder),
        "out": str(Path(args.out).resolve()),
        "options": asdict(options),
        "files_seen": rep.files_seen,
        "samples": len(samples),
        "samples_per_scene": rep.samples_per_scene,
        "commands_order": list(COMMANDS),
        "commands": dict(sum(per_scene.values(), Counter())),
        "commands_per_scene": {k: dict(v) for k, v in per_scene.items()},
        "skip_counts": rep.skip_counts(),
        "skip_reasons": rep.reason_counts(),
        "skips": [asdict(s) for s in rep.skips],
        "agent_ego": rep.agent_ego,
    }
    return save_build(samples, Path(args.out), report, t0, folder)


def save_build(samples: list, out: Path, report: dict, t0: float, source: Path) -> int:
    """Write the samples (atomically) and ``build_report.json`` to ``out`` and print the summary.
    Adds ``sample_counts`` (:func:`sample_counts`) and ``commands_per_subset`` (:func:`subset_commands`)
    to ``report`` when absent.

    Returns 0, or 1 (nothing written, any earlier output kept) when ``samples`` is empty.
    """
    from dsdrive.data.dataset import save_samples

    report.setdefault("sample_counts", sample_counts(samples))
    report.setdefault("commands_per_subset", subset_commands(report["sample_counts"]))
    report["seconds"] = time.perf_counter() - t0
    if not samples:
        _print_summary(report)
        print(f"dsdrive build: no samples built from {source}; nothing written to {out}", file=sys.stderr)
        return 1
    save_samples(samples, out)
    report["seconds"] = time.perf_counter() - t0
    write_report(out, report)
    _print_summary(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dsdrive build``; returns the exit code (0 ok, 1 build failed, 2 bad input path or option value)."""
    args = build_parser().parse_args(argv)
    if args.source == "scenarionet":
        return build_scenarionet(args)
    import importlib

    module_name = _OTHER_BUILDERS[args.source]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"dsdrive build: --source {args.source} needs {module_name}, which is not installed in this checkout", file=sys.stderr)
        return 2
    return int(module.build(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
