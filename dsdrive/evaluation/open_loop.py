"""Open-loop evaluation: run planners over planning samples, score L2 / collision, render tables.

The library side of ``eval/open_loop.py``. Metrics are :mod:`dsdrive.evaluation.metrics.planning`
(SparseDrive / DistillDrive ``planning_eval.py`` conventions; ST-P3 and UniAD protocols),
broken down by navigation command (LEFT / RIGHT / STRAIGHT) beside the all-sample aggregate.
Only samples with all 6 ground-truth future steps valid are scored; the others are counted as
skipped. Waypoints are in the ego frame of each sample's current time (x forward, y left, m).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dsdrive.evaluation.metrics.planning import HORIZON_STEPS, PROTOCOLS, complete_future_mask, evaluate_trajectories, summarize_by_command
from dsdrive.planners.base import Planner
from dsdrive.data.splits import DEFAULT_VAL_SCENES, split_scenes
from dsdrive.data.types import COMMANDS, FUTURE_STEPS, PlanningSample

PROTOCOL_TITLES = {
    "stp3": "ST-P3 protocol (running mean over steps up to t; VAD / SparseDrive / DistillDrive)",
    "uniad": "UniAD protocol (value at step t)",
}


def select_scenes(scene_ids: list[str], spec: str, val_scenes: tuple[str, ...] | list[str] = DEFAULT_VAL_SCENES) -> list[str]:
    """Scenes to evaluate from a ``--scenes`` value.

    Args:
        scene_ids: scene ids present in the dataset (duplicates allowed).
        spec: ``val`` (held-out scenes, :func:`dsdrive.data.splits.split_scenes`), ``train``, ``all``,
            or a comma-separated list of scene ids.

    Raises:
        ValueError: a named scene is not in the dataset, or the selection is empty (lists
            the available scenes).
    """
    present = sorted(set(scene_ids))
    train, val = split_scenes(present, val_scenes)
    if spec == "val":
        chosen = val
    elif spec == "train":
        chosen = train
    elif spec == "all":
        chosen = present
    else:
        chosen = [s.strip() for s in spec.split(",") if s.strip()]
        missing = [s for s in chosen if s not in present]
        if missing:
            raise ValueError(f"--scenes {spec}: not in the dataset: {missing}; available: {present}")
    if not chosen:
        raise ValueError(f"--scenes {spec}: selects no scene; available: {present}")
    return chosen


def plan_samples(planner: Planner, samples: list[PlanningSample], batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Run ``planner`` on the samples' inputs (never their targets), in batches.

    A planner marked ``privileged = True`` (the DistillDrive planning teacher, which reads
    ground-truth agent futures) is given the whole samples through
    ``compute_trajectories_privileged``; its results are flagged ``"privileged"``.

    Returns:
        (B, 6, 3) float32 ego-frame waypoints.

    Raises:
        ValueError: the planner returns a wrong shape or non-finite values (planner and sample named).
    """
    from tqdm import tqdm

    out = np.zeros((len(samples), FUTURE_STEPS, 3), np.float32)
    for start in tqdm(range(0, len(samples), batch_size), desc=f"plan {planner.name}", disable=not progress):
        chunk = samples[start : start + batch_size]
        if getattr(planner, "privileged", False):  # e.g. the DistillDrive planning teacher: reads GT agent futures
            traj = np.asarray(planner.compute_trajectories_privileged(chunk), np.float32)
        else:
            traj = np.asarray(planner.compute_trajectories([s.inputs for s in chunk]), np.float32)
        if traj.shape != (len(chunk), FUTURE_STEPS, 3):
            raise ValueError(f"planner {planner.name}: returned {traj.shape}, expected ({len(chunk)}, {FUTURE_STEPS}, 3)")
        bad = ~np.isfinite(traj).all(axis=(1, 2))
        if bad.any():
            raise ValueError(f"planner {planner.name}: non-finite waypoints for sample {chunk[int(np.argmax(bad))].sample_id}")
        out[start : start + len(chunk)] = traj
    return out


def evaluate_planner(planner: Planner, samples: list[PlanningSample], batch_size: int = 64, progress: bool = True) -> dict:
    """Plan and score the samples with complete futures.

    Returns:
        ``{"num_evaluated", "num_skipped_incomplete_future", "plan_seconds", "metrics"}`` where
        ``metrics`` is :func:`dsdrive.evaluation.metrics.planning.summarize_by_command` output (keys ``ALL``,
        ``LEFT``, ``RIGHT``, ``STRAIGHT``; L2 in m, collision in %).
    """
    keep = complete_future_mask(samples)
    scored = [s for s, k in zip(samples, keep) if k]
    t0 = time.perf_counter()
    pred = plan_samples(planner, scored, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    per_sample = evaluate_trajectories(pred, scored)
    return {
        "num_evaluated": len(scored),
        "privileged": bool(getattr(planner, "privileged", False)),
        "num_skipped_incomplete_future": int((~keep).sum()),
        "plan_seconds": round(seconds, 4),
        "metrics": summarize_by_command(per_sample),
    }


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_markdown(results: dict[str, dict], title: str = "Open-loop planning") -> str:
    """Markdown tables, one per protocol: a row per planner x {ALL, LEFT, RIGHT, STRAIGHT}.

    Args:
        results: planner name -> :func:`evaluate_planner` output; planners flagged
            ``privileged`` (they read ground-truth agent futures) are marked in their rows.
    """
    horizons = [*HORIZON_STEPS, "avg"]
    head = (
        "| planner | command | N | " + " | ".join(f"L2 {h} (m)" for h in horizons) + " | "
        + " | ".join(f"Col. {h} (%)" for h in horizons) + " |"
    )
    sep = "|" + "---|" * (3 + 2 * len(horizons))
    lines = [f"# {title}", ""]
    for protocol in PROTOCOLS:
        lines += [f"## {PROTOCOL_TITLES[protocol]}", "", head, sep]
        for name, res in results.items():
            label = f"{name} (privileged)" if res.get("privileged") else name
            for cmd in ("ALL", *COMMANDS):
                summary = res["metrics"][cmd]
                l2 = summary[protocol]["L2"]
                col = summary[protocol]["collision"]
                lines.append(
                    f"| {label} | {cmd} | {summary['num_samples']} | "
                    + " | ".join(_fmt(l2[h], 3) for h in horizons) + " | "
                    + " | ".join(_fmt(col[h], 2) for h in horizons) + " |"
                )
        lines.append("")
    lines.append(
        "L2: ego-frame x, y distance to the ground-truth future. Collision: ego box 4.084 x 1.85 m "
        "(centre 0.5 m ahead of the waypoint) overlapping a ground-truth agent box at the same future "
        "step, counted only where the ground-truth trajectory does not collide there. Samples with an "
        "incomplete 3 s ground-truth future are skipped. (privileged): the planner reads ground-truth "
        "agent futures (the DistillDrive planning teacher), so its row is not comparable."
    )
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_json: str | Path) -> tuple[Path, Path]:
    """Write the JSON report and the markdown tables beside it (same stem, ``.md``).

    The files are written to temporary names and renamed, so an interrupted run never leaves a
    half-written report over an earlier one.
    """
    import json

    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_md = out_json.with_suffix(".md")
    from dsdrive.data.atomic_io import write_text_atomic

    for path, text in ((out_json, json.dumps(report, indent=2)), (out_md, render_markdown(report["planners"]))):
        write_text_atomic(path, text)
    return out_json, out_md
