"""Paired closed-loop comparison of two planners over the same scenes and seeds, with 95 % CIs by scene.

Each side is ``PLANNER=OUT[,OUT...]``: the planner's row in ``OUT/report.json`` of ``dsdrive
closed-loop`` runs (one per seed, e.g. ``--cv-seed 0, 1, 2``). Per scene, each figure is averaged over
that side's runs: route completion (RC), PDMS (None counts 0), at fault (1 if the rollout has an
``at-fault overlap`` event) and goal met (RC >= 0.9 and no at-fault overlap; issue 14's goal). Printed:
per run the means over scenes (RC, PDMS) and counts (at fault, goal met); per scene both sides; and the
paired difference A - B of each figure with its 95 % percentile interval from the scene bootstrap of
:func:`dsdrive.evaluation.statistics.paired_difference_ci` (one value per scene, 2000 draws, seed 0).
An interval that includes 0 reads "no measurable difference".

Run:
    python eval/compare_closed_loop.py --a student_checked=/tmp/c0,/tmp/c1,/tmp/c2 --b student=/tmp/u0,/tmp/u1,/tmp/u2

Bad input (a missing report, a planner the report lacks, sides with different scenes) exits 2 with
one line naming the file and the value.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dsdrive.evaluation.statistics import paired_difference_ci

FIGURES = ("rc", "pdms", "at_fault", "goal")
GOAL_RC = 0.9
"""Route completion a scene needs for the goal (with no at-fault overlap)."""


def scene_figures(report: dict, planner: str, where: str) -> dict[str, dict[str, float]]:
    """{scene id: {figure: value}} of ``planner``'s scenarios in one closed-loop ``report``.

    Raises:
        ValueError: the report has no row ``planner`` (names ``where`` and the planners it has).
    """
    rows = report.get("planners", {})
    if planner not in rows:
        raise ValueError(f"{where}: no planner {planner!r} (it has {sorted(rows)})")
    out = {}
    for m in rows[planner]["scenarios"]:
        at_fault = any(e.get("kind") == "at-fault overlap" for e in m.get("events", []))
        rc = float(m["route_completion"])
        out[m["scene_id"]] = {"rc": rc, "pdms": float(m.get("pdms") or 0.0), "at_fault": float(at_fault),
                              "goal": float(rc >= GOAL_RC and not at_fault)}
    return out


def load_side(spec: str) -> tuple[str, list[dict[str, dict[str, float]]]]:
    """``PLANNER=OUT[,OUT...]`` -> (planner, one :func:`scene_figures` per run).

    Raises:
        ValueError: no ``=``, or a run whose report is missing or lacks the planner (names the file).
    """
    planner, sep, dirs = spec.partition("=")
    if not sep or not planner or not dirs:
        raise ValueError(f"{spec!r}: expected PLANNER=OUT[,OUT...]")
    runs = []
    for d in dirs.split(","):
        path = Path(d) / "report.json"
        if not path.is_file():
            raise ValueError(f"{path}: missing (not a dsdrive closed-loop output)")
        runs.append(scene_figures(json.loads(path.read_text()), planner, str(path)))
    return planner, runs


def compare(a: list[dict], b: list[dict]) -> dict:
    """Per-run summaries of both sides, per-scene means and the paired differences A - B (module docstring).

    Raises:
        ValueError: the runs do not all hold the same scenes (names the difference).
    """
    scenes = sorted(a[0])
    for i, run in enumerate(a + b):
        if sorted(run) != scenes:
            raise ValueError(f"run {i} holds scenes {sorted(run)}, the first run of A {scenes}")

    def per_scene(runs: list[dict]) -> np.ndarray:  # (S, F), seeds averaged
        return np.array([[np.mean([run[s][f] for run in runs]) for f in FIGURES] for s in scenes])

    def per_run(runs: list[dict]) -> list[dict]:
        return [{"rc": float(np.mean([run[s]["rc"] for s in scenes])), "pdms": float(np.mean([run[s]["pdms"] for s in scenes])),
                 "at_fault": int(sum(run[s]["at_fault"] for s in scenes)), "goal": int(sum(run[s]["goal"] for s in scenes))} for run in runs]

    sa, sb = per_scene(a), per_scene(b)
    ci = paired_difference_ci(sa, sb, scenes)
    diff = {f: {"mean": float(ci.mean[k]), "low": float(ci.low[k]), "high": float(ci.high[k])} for k, f in enumerate(FIGURES)}
    return {"scenes": scenes, "runs_a": per_run(a), "runs_b": per_run(b),
            "per_scene_a": {s: dict(zip(FIGURES, map(float, row))) for s, row in zip(scenes, sa)},
            "per_scene_b": {s: dict(zip(FIGURES, map(float, row))) for s, row in zip(scenes, sb)}, "difference": diff}


def render(name_a: str, name_b: str, res: dict) -> str:
    """Markdown: per-run summaries, per-scene RC and at-fault counts, paired differences."""
    lines = ["| side | run | RC | at fault | goal met | PDMS |", "|---|---|---|---|---|---|"]
    for name, runs in ((name_a, res["runs_a"]), (name_b, res["runs_b"])):
        lines += [f"| {name} | {i} | {r['rc']:.3f} | {r['at_fault']}/{len(res['scenes'])} | {r['goal']}/{len(res['scenes'])} | {r['pdms']:.3f} |"
                  for i, r in enumerate(runs)]
    lines += ["", f"| scene | {name_a} RC | {name_a} at fault (share of runs) | {name_b} RC | {name_b} at fault |", "|---|---|---|---|---|"]
    lines += [f"| {s} | {res['per_scene_a'][s]['rc']:.3f} | {res['per_scene_a'][s]['at_fault']:.2f} | {res['per_scene_b'][s]['rc']:.3f} | "
              f"{res['per_scene_b'][s]['at_fault']:.2f} |" for s in res["scenes"]]
    lines += ["", f"Paired {name_a} - {name_b}, seeds averaged per scene, 95 % scene bootstrap:"]
    for f, d in res["difference"].items():
        verdict = "no measurable difference" if d["low"] <= 0.0 <= d["high"] else ("A higher" if d["low"] > 0 else "A lower")
        lines.append(f"- {f}: {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] ({verdict})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring)."""
    ap = argparse.ArgumentParser(prog="python eval/compare_closed_loop.py", description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="PLANNER=OUT[,OUT...] (side A)")
    ap.add_argument("--b", required=True, help="PLANNER=OUT[,OUT...] (side B)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    try:
        (name_a, a), (name_b, b) = load_side(args.a), load_side(args.b)
        res = compare(a, b)
    except ValueError as e:
        print(f"compare_closed_loop: {e}", file=sys.stderr)
        return 2
    print(render(name_a, name_b, res))
    if args.json:
        Path(args.json).write_text(json.dumps({"a": name_a, "b": name_b, **res}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
