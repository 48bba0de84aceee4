"""Closed-loop report: one JSON file and one self-contained HTML page per run.

The page (jinja2 template ``dsdrive/evaluation/closed_loop/templates/closed_loop_report.html.j2``, which
extends the shared ``dsdrive/evaluation/templates/base.html.j2``; see :mod:`dsdrive.evaluation.report_common`)
opens from disk with no server: BEV plots are matplotlib PNGs embedded as base64 ``data:`` URIs. Sections:

* **Metrics**: one row per planner (run aggregates of :mod:`dsdrive.evaluation.closed_loop.metrics`),
  then one row per planner x scenario.
* **Failures**: scenarios MetaDrive rejected and planner failures, with the reason.
* **Reasoning-plan consistency**: per planner, the share of plans whose stated meta-action equals
  the one its waypoints imply (planners that state none: not applicable).
* **Scenarios**: per planner x scenario, a BEV plot (simulator frame, metres: map, logged ego
  path, driven ego path, agents at the end with their driven paths, planned waypoints at every
  replanning step, events; event labels are placed so that none overlaps another,
  :func:`place_labels`), the events with the explanation in force at that moment, and the
  per-step explanations (text, stated and implied meta-action, mode scores, top-risk objects,
  latency).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from dsdrive.data.atomic_io import write_json_atomic, write_text_atomic
from dsdrive.evaluation.report_common import (
    AGENT_COLORS,
    draw_boxes,
    draw_map,
    jsonable,
    new_figure,
    report_environment,
    square_view,
)
from dsdrive.geometry import box_corners

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE = "closed_loop_report.html.j2"


LABEL_OFFSETS_PT = [(6, 6), (6, -14), (-6, 6), (-6, -14), (6, 20), (-6, 20), (6, -28), (-6, -28), (6, 34), (-6, 34),
                    (6, -42), (-6, -42), (6, 48), (-6, 48)]
"""Candidate offsets (points) of an event label from its marker, tried in order."""


def place_labels(ax, points: np.ndarray, texts: list[str], **kw) -> list:
    """Annotate ``points`` (N, 2) (data coordinates) with ``texts`` so that no two labels overlap.

    Each label takes the first offset of :data:`LABEL_OFFSETS_PT` (left-aligned to the right of
    the point for positive x offsets, right-aligned for negative ones) whose box overlaps no
    label placed before it, measured with the figure's renderer; if every candidate overlaps, it
    goes below the lowest label placed so far. Returns the ``Annotation`` artists.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    placed, boxes = [], []
    for p, text in zip(points, texts):
        ann = None
        for dx, dy in LABEL_OFFSETS_PT:
            cand = ax.annotate(text, p, xytext=(dx, dy), textcoords="offset points", ha="left" if dx >= 0 else "right", **kw)
            box = cand.get_window_extent(renderer).expanded(1.05, 1.15)
            if not any(box.overlaps(b) for b in boxes):
                ann = cand
                break
            cand.remove()
        if ann is None:
            low = min((b.y0 for b in boxes), default=0.0)
            disp = ax.transData.transform(p)
            dy = (low - disp[1]) * 72.0 / fig.dpi - 16
            ann = ax.annotate(text, p, xytext=(6, dy), textcoords="offset points", ha="left", **kw)
            box = ann.get_window_extent(renderer).expanded(1.05, 1.15)
        placed.append(ann)
        boxes.append(box)
    return placed


def bev_figure(sr, metrics: dict, margin: float = 25.0, dpi: int = 90):
    """BEV plot of one rollout (simulator frame, metres, equal axes): ``(fig, event labels)``."""
    fig, ax = new_figure((7.5, 7.5), dpi)
    pts = np.vstack([sr.ego_xy, sr.log_xy[sr.log_valid]]) if len(sr.ego_xy) else sr.log_xy
    lo, hi = square_view(pts, margin)
    if sr.map is not None:
        draw_map(ax, sr.map.types, sr.map.polylines, lo, hi)
    if sr.agents:
        seen_ids = {}
        for ag in sr.agents[:: 5]:
            for i, aid in enumerate(ag.ids):
                seen_ids.setdefault(aid, (ag.types[i], []))[1].append(ag.xy[i])
        for aid, (typ, xy) in seen_ids.items():
            xy = np.asarray(xy)
            if len(xy) > 1:
                ax.plot(xy[:, 0], xy[:, 1], color=AGENT_COLORS.get(typ, "#777"), lw=0.5, alpha=0.4, zorder=2)
        last = sr.agents[-1]
        if len(last.ids):
            draw_boxes(ax, last.types, last.xy[:, 0], last.xy[:, 1], last.lwh[:, 0], last.lwh[:, 1], last.yaw)
    log = sr.log_xy[sr.log_valid]
    ax.plot(log[:, 0], log[:, 1], color="#2ca02c", lw=2.0, ls="--", label="logged ego path", zorder=4)
    for p in sr.plans:
        w = np.asarray(p.waypoints_world)
        ax.plot(w[:, 0], w[:, 1], color="#ff7f0e", lw=0.8, marker=".", ms=2, alpha=0.8, zorder=5)
    ax.plot([], [], color="#ff7f0e", marker=".", label="planned waypoints (every 0.5 s)")
    if len(sr.ego_xy):
        ax.plot(sr.ego_xy[:, 0], sr.ego_xy[:, 1], color="#1f3fbf", lw=2.0, label="driven ego path", zorder=6)
        for k, col in ((0, "#9fb3ff"), (-1, "#1f3fbf")):
            c = box_corners(sr.ego_xy[k, 0], sr.ego_xy[k, 1], sr.ego_length, sr.ego_width, sr.ego_yaw[k])
            ax.fill(c[:, 0], c[:, 1], color=col, alpha=0.9, zorder=7)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, simulator frame)")
    ax.set_ylabel("y (m)")
    ax.set_title(f"{sr.scene_id} - {sr.planner}")
    ax.legend(loc="upper right", fontsize=7)
    labels = []
    if len(sr.ego_xy):
        events = metrics.get("events", [])
        pts = np.array([sr.ego_xy[min(e["step"], len(sr.ego_xy) - 1)] for e in events]).reshape(-1, 2)
        for p in pts:
            ax.plot(*p, "x", color="red", ms=11, mew=2.5, zorder=8)
        fig.tight_layout()
        labels = place_labels(ax, pts, [f"{e['kind']} ({e['t']:.1f} s)" for e in events], color="red", fontsize=7, zorder=9,
                              bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7))
    return fig, labels


def bev_png(sr, metrics: dict, margin: float = 25.0, dpi: int = 90) -> str:
    """BEV plot of one rollout as a base64 PNG string (see :func:`bev_figure`)."""
    import matplotlib.pyplot as plt

    fig, _ = bev_figure(sr, metrics, margin, dpi)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # no second tight_layout: it would move the axes under the placed labels
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _explanation_at(sr, step: int) -> dict | None:
    """The explanation of the latest plan made at or before ``step``."""
    before = [p for p in sr.plans if p.step <= step]
    return before[-1].explanation | {"plan_t": before[-1].t} if before else None


def write_report(out_dir: str | Path, runs: dict[str, dict], config: dict) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir``.

    Args:
        runs: planner name -> {"aggregate": dict, "scenarios": list of (ScenarioRollout, metrics dict)}.
        config: the run's options (shown and stored).

    Returns:
        (json path, html path).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"config": config, "planners": {}}
    view = []
    for name, run in runs.items():
        scen_view, scen_json = [], []
        for sr, m in run["scenarios"]:
            events = [e | {"explanation": _explanation_at(sr, e["step"])} for e in m.get("events", [])]
            plans = [dict(step=p.step, t=p.t, command=p.command, waypoints_ego=p.waypoints_ego,
                          latency_ms=p.latency_ms, explanation=p.explanation) for p in sr.plans]
            scen_json.append(jsonable(m | {"events": events, "plans": plans, "file": sr.file, "warnings": sr.warnings}))
            scen_view.append(dict(metrics=m, events=events, plans=plans, file=sr.file,
                                  png=bev_png(sr, m) if len(sr.ego_xy) else None))
        doc["planners"][name] = {"aggregate": jsonable(run["aggregate"]), "scenarios": scen_json}
        view.append(dict(name=name, aggregate=run["aggregate"], scenarios=scen_view))
    json_path = out / "report.json"
    write_json_atomic(json_path, doc, indent=1)
    html = report_environment(TEMPLATE_DIR).get_template(TEMPLATE).render(config=config, runs=view)
    html_path = out / "report.html"
    write_text_atomic(html_path, html)
    return json_path, html_path
