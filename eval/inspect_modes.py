"""What a student's waypoint head does with a sample: its prior blend, mode scores and mode endpoints.

Run as:
    python eval/inspect_modes.py --checkpoint CKPT --data DIR --samples scene-1094_0 scene-1094_10 scene-1094_20
    python eval/inspect_modes.py --checkpoint CKPT --data DIR --scene scene-0061 --every 10 --json out.json

For each sample (its own command) it prints the logged 3 s endpoint, the plan's endpoint, and each
of the M modes' score (softmax of the mode logits) and 3 s endpoint (x forward, y left, metres, ego
frame of the sample's current time), and for the ``kinematic`` head the blend table's mean weight
per command over (constant velocity, CTRV, lane following[, lane IDM])
(:class:`dsdrive.student.waypoint_head.WaypointHead`). The last line is the mode-score spread: the
largest standard deviation over the printed samples of one mode's score, per command group. A
head whose scores do not move between samples (spread near 0) picks its modes from a marginal,
not from the scene: the reading behind README's "On-policy distillation" diagnosis.

Raises (as a one-line error, exit 2): a checkpoint without a student, a sample id not in the data
(names it), a scene with no sample.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from dsdrive.data.dataset import load_samples
from dsdrive.evaluation.cross_validate import is_recorded_ego
from dsdrive.planners.student import StudentPlanner
from dsdrive.student.waypoint_head import KINEMATIC_PRIORS


def sample_index(sample_id: str) -> int:
    """The log step in ``scene_step[_suffix]`` sample ids (-1 when there is none)."""
    parts = sample_id.split("_")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1


def inspect(planner: StudentPlanner, samples: list) -> dict:
    """Mode scores and endpoints of ``samples`` (one forward each batch of 16) -> a JSON-able dict."""
    rows = []
    for i in range(0, len(samples), 16):
        chunk = samples[i:i + 16]
        out = planner.plan([s.inputs for s in chunk], risk_map=False)
        for j, s in enumerate(chunk):
            fut = np.asarray(s.targets.ego_future, np.float64)[:, :2]
            mask = np.asarray(s.targets.ego_future_mask, bool)
            rows.append({
                "sample_id": s.sample_id, "command": s.inputs.command,
                "logged_3s": fut[-1].round(2).tolist() if mask[-1] else None,
                "plan_3s": out.waypoints[j, -1, :2].numpy().round(2).tolist(),
                "mode_scores": out.mode_scores[j].numpy().round(3).tolist(),
                "mode_3s": out.mode_waypoints[j, :, -1, :2].numpy().round(2).tolist(),
            })
    head = planner.model.waypoint_head
    blend = None
    if getattr(head, "prior", None) in KINEMATIC_PRIORS:
        blend = torch.softmax(head.prior_blend.detach().float(), 1).mean((2, 3)).numpy().round(3).tolist()
    spread = {}
    by_cmd = defaultdict(list)
    for r in rows:
        by_cmd[r["command"]].append(r["mode_scores"])
    for cmd, scores in by_cmd.items():
        spread[cmd] = round(float(np.asarray(scores).std(0).max()), 4) if len(scores) > 1 else None
    return {"prior_blend": blend, "samples": rows, "mode_score_spread": spread}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a student checkpoint folder (dsdrive distill output)")
    ap.add_argument("--data", required=True, help="a planning dataset folder")
    ap.add_argument("--samples", nargs="*", default=[], help="sample ids")
    ap.add_argument("--scene", default=None, help="every recorded-ego sample of this scene (with --every)")
    ap.add_argument("--every", type=int, default=1, help="with --scene: every N-th log step")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    try:
        data = {s.sample_id: s for s in load_samples(args.data)}
        picked = []
        for sid in args.samples:
            if sid not in data:
                raise ValueError(f"{args.data}: no sample {sid!r}")
            picked.append(data[sid])
        if args.scene:
            own = sorted((s for s in data.values() if s.scene_id == args.scene and is_recorded_ego(s)),
                         key=lambda s: sample_index(s.sample_id))
            if not own:
                raise ValueError(f"{args.data}: no recorded-ego sample of scene {args.scene!r}")
            picked += own[::max(args.every, 1)]
        if not picked:
            raise ValueError("give --samples or --scene")
        planner = StudentPlanner(args.checkpoint)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"inspect_modes: {e}", file=sys.stderr)
        return 2
    rep = inspect(planner, picked)
    if rep["prior_blend"] is not None:
        print("prior blend (CV, CTRV, lane[, lane IDM]) per command:", rep["prior_blend"])
    for r in rep["samples"]:
        print(f"{r['sample_id']} {r['command']}: logged 3 s {r['logged_3s']}, plan 3 s {r['plan_3s']}")
        for m, (p, xy) in enumerate(zip(r["mode_scores"], r["mode_3s"])):
            print(f"    mode {m}: score {p:.3f}, 3 s ({xy[0]:.1f}, {xy[1]:.1f})")
    print("mode-score spread (largest std over samples of one mode's score), per command:", rep["mode_score_spread"])
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
