"""Open-loop HTML report: where and why the student loses to the baselines, one static page.

``write_open_loop_report(out_dir, ...)`` writes ``index.html`` (jinja2 template
``dsdrive/evaluation/templates/open_loop_report.html.j2``, same look and machinery as the
closed-loop report: :mod:`dsdrive.evaluation.report_common`), its matplotlib PNGs under ``img/``
and ``report.json`` (everything the page shows). Sections:

* **Metrics**: every planner x {ALL, LEFT, RIGHT, STRAIGHT}, ST-P3 and UniAD protocols (L2 m,
  collision %, :mod:`dsdrive.evaluation.metrics.planning`), with the 95 % intervals of an optional
  cross-validation summary beside the averages ("—" where none is given).
* **Per scene**: the same metrics per planner x scene.
* **Student vs constant velocity**: histogram of the per-sample L2 difference (student minus
  ``constant_velocity``; the best baseline when that planner was not run), stacked by command.
* **Worst samples**: the N samples where the student's L2 exceeds the best baseline's the most
  (best baseline: the non-privileged, non-student planner with the lowest ST-P3 L2 avg over all
  samples). Each has a BEV plot in the sample's ego frame (x forward, y left, metres): map
  polylines, agents at the current time with their ground-truth futures, the logged ego future,
  every planner's waypoints, and for each planned collision the planned ego box and the agent box
  it hits at that step; beside it the student's generated reasoning, its mode scores, the
  meta-action it states and the one its waypoints imply
  (:func:`dsdrive.annotation.meta_action.meta_action_from_trajectory`), and per planner L2,
  collision steps and implied meta-action.

* **Reasoning-plan consistency** (text only, :mod:`dsdrive.evaluation.metrics.reasoning_consistency`):
  the student explains every evaluated sample; the meta-action stated in its generated text (no
  fallback to its meta-action head) is compared with the one its waypoints of the same pass imply;
  parse rate and agreement are reported apart, per sample in ``report.json``.

Per-sample L2 is the ST-P3 "avg" of that sample (mean of the running means at 1, 2 and 3 s), so
the mean of the histogram equals the difference of the ST-P3 L2 avg of the two table rows.
Reasoning is generated (slow) only for the N worst samples.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsdrive.data.atomic_io import write_bytes_atomic, write_json_atomic, write_text_atomic
from dsdrive.data.types import COMMANDS, FUTURE_STEPS, PlanningSample
from dsdrive.evaluation.closed_loop.explain import describe_plan, implied_meta_action
from dsdrive.evaluation.metrics.reasoning_consistency import reasoning_consistency
from dsdrive.evaluation.metrics.planning import (
    EGO_LENGTH_M,
    EGO_WIDTH_M,
    HORIZON_STEPS,
    PROTOCOL_TITLES,
    PROTOCOLS,
    FutureAgentBoxes,
    PerSampleMetrics,
    boxes_overlap,
    complete_future_mask,
    ego_boxes,
    evaluate_trajectories,
    summarize,
    summarize_by_command,
)
from dsdrive.planners.base import plan_samples
from dsdrive.evaluation.report_common import (
    AGENT_COLORS,
    draw_boxes,
    draw_map,
    figure_png_bytes,
    jsonable,
    new_figure,
    outline_box,
    report_environment,
    square_view,
)

TEMPLATE = "open_loop_report.html.j2"
DEFAULT_WORST = 12
"""Default number of worst samples plotted (``--report-worst``)."""
HISTOGRAM_BASELINE = "constant_velocity"
PLANNER_COLORS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
STUDENT_COLOR = "#1f3fbf"
COMMAND_COLORS = {"LEFT": "#e377c2", "RIGHT": "#17becf", "STRAIGHT": "#7f7f7f"}
_STP3_AVG_WEIGHTS = np.mean([np.r_[np.full(k, 1.0 / k), np.zeros(FUTURE_STEPS - k)] for k in HORIZON_STEPS.values()], axis=0)


def stp3_l2_avg(l2: np.ndarray) -> np.ndarray:
    """(B,) per-sample ST-P3 "avg" L2 (m) from (B, 6) per-step L2: mean of the running means at 1, 2, 3 s."""
    return np.asarray(l2, np.float64) @ _STP3_AVG_WEIGHTS


@dataclass
class WorstSample:
    """One of the samples where the student loses most to the best baseline.

    Attributes:
        index: position in :attr:`OpenLoopReportInputs.samples`.
        delta_l2: student minus best-baseline per-sample ST-P3 L2 avg (m).
        explanation: :func:`dsdrive.evaluation.closed_loop.explain.describe_plan` record of the
            student's plan_and_explain (text, stated / implied meta-action, mode scores, top risks),
            with ``explain_waypoint_gap_m`` (max distance between the waypoints of the explaining
            pass and the evaluated ones); None when the student cannot explain itself.
    """

    index: int
    delta_l2: float
    explanation: dict | None = None


@dataclass
class OpenLoopReportInputs:
    """What the open-loop report draws, for the evaluated (complete-future) samples.

    Attributes:
        samples: B evaluated samples.
        predictions: planner name -> (B, 6, 3) ego-frame waypoints (x forward, y left, m; heading rad).
        metrics: planner name -> :class:`PerSampleMetrics` (per-step L2 m, collisions).
        privileged: planner name -> True when it reads ground-truth agent futures (the DistillDrive
            planning teacher); such rows are not comparable and never the reference baseline.
        student: the student planner's name, or None when it was not evaluated.
        best_baseline: the reference baseline (lowest ST-P3 L2 avg among the others), or None.
        worst: the worst samples, worst first.
        num_skipped: samples left out for an incomplete ground-truth future.
        reasoning_consistency: :func:`dsdrive.evaluation.metrics.reasoning_consistency.reasoning_consistency`
            of the student's generated reasoning over all B samples, or None (no student, or it cannot explain).
    """

    samples: list[PlanningSample]
    predictions: dict[str, np.ndarray]
    metrics: dict[str, PerSampleMetrics]
    privileged: dict[str, bool]
    student: str | None
    best_baseline: str | None
    worst: list[WorstSample] = field(default_factory=list)
    num_skipped: int = 0
    reasoning_consistency: dict | None = None


def explain_samples(planner, samples: list[PlanningSample], batch_size: int = 64) -> tuple[list[str], np.ndarray] | None:
    """The planner's generated reasoning and the (B, 6, 3) waypoints of the same pass (ego frame, m),
    with ``plan_and_explain_batch`` (the student) or ``plan_and_explain`` per sample; None when it has neither."""
    if hasattr(planner, "plan_and_explain_batch"):
        texts, wps = [], []
        for b in range(0, len(samples), batch_size):
            out, t = planner.plan_and_explain_batch([s.inputs for s in samples[b:b + batch_size]])
            texts += list(t)
            wps.append(out.waypoints.float().cpu().numpy())
        return texts, np.concatenate(wps) if wps else np.zeros((0, FUTURE_STEPS, 3), np.float32)
    if hasattr(planner, "plan_and_explain"):
        pairs = [planner.plan_and_explain(s.inputs) for s in samples]
        texts = [str((e or {}).get("reasoning") or "") if isinstance(e, dict) else str(e or "") for _, e in pairs]
        return texts, np.stack([np.asarray(w, np.float32) for w, _ in pairs]) if pairs else np.zeros((0, FUTURE_STEPS, 3), np.float32)
    return None


def _implied(waypoints: np.ndarray, sample: PlanningSample) -> str:
    return implied_meta_action(waypoints, sample.inputs.speed)


def collect_report_inputs(planners: Mapping[str, object], samples: list[PlanningSample], student: str = "student",
                          worst_n: int = DEFAULT_WORST, predictions: Mapping[str, np.ndarray] | None = None,
                          batch_size: int = 64, progress: bool = False, consistency: bool = True) -> OpenLoopReportInputs:
    """Plan (or take given plans), score per sample, rank the student's worst samples and explain them.

    Args:
        planners: name -> :class:`dsdrive.planners.base.Planner` (loaded), in table order.
        samples: the evaluated scenes' samples; those without a complete 6-step future are skipped.
        student: name of the student planner among ``planners``; its ``plan_and_explain`` (if it
            has one) is called on the ``worst_n`` worst samples only.
        worst_n: number of worst samples (>= 0).
        predictions: optional name -> (B, 6, 3) waypoints already planned for the B complete-future
            samples (in order), to avoid planning twice; missing planners are planned here.
        consistency: have the student explain every sample and measure the text-only
            reasoning-plan consistency (:func:`explain_samples`, generation: the slow part).

    Raises:
        ValueError: ``worst_n`` < 0, no sample has a complete future, or a given prediction has
            the wrong shape (planner named).
    """

    if worst_n < 0:
        raise ValueError(f"worst_n: expected >= 0, got {worst_n}")
    keep = complete_future_mask(samples)
    scored = [s for s, k in zip(samples, keep) if k]
    if not scored:
        raise ValueError(f"open-loop report: none of the {len(samples)} samples has a complete 6-step ground-truth future")
    predictions = dict(predictions or {})
    preds, metrics, privileged = {}, {}, {}
    for name, planner in planners.items():
        pred = predictions.get(name)
        if pred is None:
            pred = plan_samples(planner, scored, batch_size=batch_size, progress=progress)
        pred = np.asarray(pred, np.float32)
        if pred.shape != (len(scored), FUTURE_STEPS, 3):
            raise ValueError(f"predictions[{name!r}]: shape {pred.shape}, expected ({len(scored)}, {FUTURE_STEPS}, 3) "
                             "(one row per complete-future sample, in order)")
        preds[name], metrics[name] = pred, evaluate_trajectories(pred, scored)
        privileged[name] = bool(getattr(planner, "privileged", False))
    student = student if student in planners else None
    baselines = [n for n in planners if n != student and not privileged[n]]
    best = min(baselines, key=lambda n: float(stp3_l2_avg(metrics[n].l2).mean())) if baselines else None
    out = OpenLoopReportInputs(scored, preds, metrics, privileged, student, best, num_skipped=int((~keep).sum()))
    explained = explain_samples(planners[student], scored, batch_size) if student is not None and consistency else None
    if explained is not None:
        texts, wps = explained
        out.reasoning_consistency = reasoning_consistency(texts, wps, [s.inputs.speed for s in scored], [s.sample_id for s in scored])
    if student is None or best is None:
        return out
    delta = stp3_l2_avg(metrics[student].l2) - stp3_l2_avg(metrics[best].l2)
    explainer = getattr(planners[student], "plan_and_explain", None)
    for i in np.argsort(-delta, kind="stable")[:worst_n]:
        ws = WorstSample(int(i), float(delta[i]))
        if explainer is not None:
            s, wp = scored[i], preds[student][i]
            wp_explained, expl = explainer(s.inputs)
            ws.explanation = describe_plan(wp, s.inputs.speed, expl)
            gap = np.linalg.norm(np.asarray(wp_explained, np.float64)[:, :2] - wp[:, :2], axis=-1).max()
            ws.explanation["explain_waypoint_gap_m"] = round(float(gap), 4)
        out.worst.append(ws)
    return out


def _collision_hits(xy: np.ndarray, sample: PlanningSample, collision: np.ndarray) -> list[tuple[int, np.ndarray, float, list[int]]]:
    """For each step k with a counted collision: (k, ego box centre (2,), ego yaw, hit agent indices)."""
    if not collision.any():
        return []
    agents = FutureAgentBoxes.from_samples([sample])
    centre, yaw = ego_boxes(np.asarray(xy, np.float64)[None, :, :2])
    half = np.array([EGO_LENGTH_M / 2.0, EGO_WIDTH_M / 2.0])
    hit = boxes_overlap(centre[:, None], yaw[:, None], half, agents.xy_yaw[..., :2], agents.xy_yaw[..., 2],
                        agents.half_size[:, :, None, :]) & agents.mask  # (1, N, T)
    return [(int(k), centre[0, k], float(yaw[0, k]), np.flatnonzero(hit[0, :, k]).tolist()) for k in np.flatnonzero(collision)]


def bev_figure(inputs: OpenLoopReportInputs, ws: WorstSample, margin: float = 12.0, dpi: int = 90):
    """One worst sample's BEV plot (a matplotlib Figure), ego frame of the sample (x forward, y left, metres).

    Map polylines, agents at t = 0 (filled by type) with their ground-truth futures (solid to 3 s,
    dotted to 6 s), the logged ego future, each planner's waypoints, and for every counted planned
    collision the planned ego box (planner colour) and the agent box it hits (red) at that step;
    an inset zooms on the waypoints at +2.5 and +3.0 s, where the trajectories part.
    """
    from matplotlib.lines import Line2D  # deferred like pyplot (report_common.new_figure): matplotlib loads only to draw
    from matplotlib.patches import Patch

    s = inputs.samples[ws.index]
    a, t = s.inputs.agents, s.targets
    gt = np.asarray(t.ego_future, np.float64)
    pts = np.vstack([np.zeros((1, 2)), gt[:, :2], *[p[ws.index, :, :2] for p in inputs.predictions.values()]])
    lo, hi = square_view(pts, margin)
    fig, ax = new_figure((7.0, 7.0), dpi)
    draw_map(ax, s.inputs.map.types, s.inputs.map.points, lo, hi)
    handles = []
    if len(a):
        draw_boxes(ax, a.types, a.boxes[:, 0], a.boxes[:, 1], a.boxes[:, 3], a.boxes[:, 4], a.boxes[:, 6], alpha=0.55)
        for j in range(len(a)):
            f, m = t.agent_futures[j], t.agent_future_masks[j]
            col = AGENT_COLORS.get(a.types[j], "#777")
            near, far = np.vstack([a.boxes[j, :2], f[:FUTURE_STEPS][m[:FUTURE_STEPS], :2]]), f[FUTURE_STEPS - 1 :][m[FUTURE_STEPS - 1 :], :2]
            ax.plot(near[:, 0], near[:, 1], color=col, lw=0.8, marker=".", ms=2.5, alpha=0.8, zorder=2)
            ax.plot(far[:, 0], far[:, 1], color=col, lw=0.6, ls=":", alpha=0.6, zorder=2)
        handles += [Patch(color=AGENT_COLORS.get(ty, "#777"), alpha=0.55, label=f"{ty.lower()} (t=0)") for ty in sorted(set(a.types))]
        handles.append(Line2D([], [], color="#555", marker=".", lw=0.8, label="agent GT future (3 s solid, 6 s dotted)"))
    draw_boxes(ax, ["EGO"], 0.5, 0.0, EGO_LENGTH_M, EGO_WIDTH_M, 0.0, alpha=0.35, zorder=4, edgecolor="k")
    ax.plot(gt[:, 0], gt[:, 1], color="#2ca02c", lw=2.2, ls="--", marker="o", ms=3, zorder=5)
    handles.append(Line2D([], [], color="#2ca02c", lw=2.2, ls="--", marker="o", ms=3, label="logged ego future"))
    zoom = ax.inset_axes([0.5, 0.03, 0.48, 0.22])
    zoom.plot(gt[4:, 0], gt[4:, 1], color="#2ca02c", lw=2.2, ls="--", marker="o", ms=3)
    others = iter(PLANNER_COLORS)
    for name, pred in inputs.predictions.items():
        is_student = name == inputs.student
        col = STUDENT_COLOR if is_student else next(others, "#777")
        wp = np.vstack([np.zeros((1, 2)), pred[ws.index, :, :2]])
        style = dict(color=col, lw=2.4 if is_student else 1.4, marker="o" if is_student else "s", ms=4 if is_student else 3)
        ax.plot(wp[:, 0], wp[:, 1], zorder=7 if is_student else 6, **style)
        zoom.plot(wp[4:, 0], wp[4:, 1], **style)
        m = inputs.metrics[name]
        hits = _collision_hits(pred[ws.index], s, m.collision[ws.index])
        for k, c, yaw, agents_hit in hits:
            outline_box(ax, c[0], c[1], EGO_LENGTH_M, EGO_WIDTH_M, yaw, color=col, lw=1.8, zorder=8)
            ax.annotate(f"{0.5 * (k + 1):.1f}s", c, color=col, fontsize=7, xytext=(3, 3), textcoords="offset points", zorder=9)
            for j in agents_hit:
                fx, fy, fyaw = t.agent_futures[j, k]
                outline_box(ax, fx, fy, a.boxes[j, 3], a.boxes[j, 4], fyaw, color="red", lw=1.8, zorder=8)
        label = f"{name}: L2 {stp3_l2_avg(m.l2[ws.index:ws.index + 1])[0]:.2f} m" + (f", {len(hits)} coll. step(s)" if hits else "")
        handles.append(Line2D([], [], color=col, lw=2.4 if is_student else 1.4, marker="o" if is_student else "s", ms=4, label=label))
    if any(inputs.metrics[n].collision[ws.index].any() for n in inputs.predictions):
        handles += [Line2D([], [], color="#333", lw=1.8, label="planned ego box at a collision step"),
                    Line2D([], [], color="red", lw=1.8, label="agent box hit (GT, same step)")]
    late = np.vstack([gt[4:, :2], *[p[ws.index, 4:, :2] for p in inputs.predictions.values()]])
    zoom.set(xlim=(late[:, 0].min() - 0.8, late[:, 0].max() + 0.8), ylim=(late[:, 1].min() - 0.8, late[:, 1].max() + 0.8))
    zoom.set_aspect("equal", adjustable="box")  # both limits fixed: the inset box takes the aspect
    zoom.set_title("zoom on +2.5 and +3.0 s (m, ego frame)", fontsize=7)
    zoom.tick_params(labelsize=6)
    zoom.grid(alpha=0.3)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.grid(alpha=0.25)
    ax.set_xlabel("x (m, ego frame, forward)")
    ax.set_ylabel("y (m, ego frame, left)")
    ax.set_title(f"{s.scene_id} | sample {s.sample_id} | command {s.inputs.command}\n"
                 f"student L2 {ws.delta_l2:+.2f} m vs {inputs.best_baseline}", fontsize=10)
    ax.legend(handles=handles, loc="upper left", fontsize=7, framealpha=0.85)
    return fig


def histogram_figure(inputs: OpenLoopReportInputs, baseline: str, dpi: int = 90):
    """(matplotlib Figure, (B,) differences): histogram of the per-sample L2 difference (student minus
    ``baseline``, m), stacked by command."""
    diff = stp3_l2_avg(inputs.metrics[inputs.student].l2) - stp3_l2_avg(inputs.metrics[baseline].l2)
    cmds = np.array([s.inputs.command for s in inputs.samples])
    bins = np.histogram_bin_edges(diff, bins=min(40, max(8, len(diff) // 4)))
    fig, ax = new_figure((8.0, 4.2), dpi)
    present = [c for c in COMMANDS if (cmds == c).any()]
    ax.hist([diff[cmds == c] for c in present], bins=bins, stacked=True, color=[COMMAND_COLORS[c] for c in present],
            label=[f"command {c} ({int((cmds == c).sum())})" for c in present])
    ax.axvline(0.0, color="k", lw=1.0, label="no difference")
    ax.axvline(float(diff.mean()), color=STUDENT_COLOR, lw=1.5, ls="--", label=f"mean {diff.mean():+.3f} m")
    scenes = sorted({s.scene_id for s in inputs.samples})
    ax.set_xlabel(f"per-sample L2 difference (m, ego frame x-y), {inputs.student} - {baseline}; > 0: student worse")
    ax.set_ylabel("samples")
    ax.set_title(f"{len(diff)} samples from {', '.join(scenes)} (all commands); student worse on {int((diff > 0).sum())}", fontsize=10)
    ax.legend(fontsize=8)
    return fig, diff


def _check_cv(cv_summary: dict | None) -> dict:
    """Validate ``{"method": str, "intervals": {planner: {command: {protocol: {metric: {horizon: [lo, hi]}}}}}}``."""
    if cv_summary is None:
        return {}
    if not isinstance(cv_summary, dict) or not isinstance(cv_summary.get("intervals"), dict):
        raise ValueError(f"cv_summary: expected a dict with an 'intervals' dict, got {type(cv_summary).__name__} "
                         f"with keys {list(cv_summary) if isinstance(cv_summary, dict) else '-'}")
    for p, by_cmd in cv_summary["intervals"].items():
        for c, by_prot in by_cmd.items():
            for prot, by_metric in by_prot.items():
                for metric, by_h in by_metric.items():
                    for h, ci in by_h.items():
                        ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci) and ci[0] <= ci[1]
                        if not ok:
                            raise ValueError(f"cv_summary.intervals.{p}.{c}.{prot}.{metric}.{h}: expected [lo, hi] with lo <= hi, got {ci!r}")
    return cv_summary["intervals"]


def _ci(intervals: dict, *keys) -> str:
    node = intervals
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
        if node is None:
            return "—"
    return f"[{node[0]:.3g}, {node[1]:.3g}]"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def write_open_loop_report(out_dir: str | Path, inputs: OpenLoopReportInputs, config: dict | None = None,
                           cv_summary: dict | None = None) -> Path:
    """Write ``index.html``, ``img/*.png`` and ``report.json`` into ``out_dir``; returns the html path.

    Args:
        inputs: :func:`collect_report_inputs` output.
        config: the run's options (data folder, scenes, checkpoints), shown and stored.
        cv_summary: optional cross-validation summary ``{"method": "95 % bootstrap over scenes ...",
            "intervals": {planner: {command: {protocol: {"L2" | "collision": {horizon: [lo, hi]}}}}}}``
            (commands ALL/LEFT/RIGHT/STRAIGHT, protocols stp3/uniad, horizons 1s/2s/3s/avg; L2 m,
            collision %); the averages' intervals are shown, "—" where absent.

    Raises:
        ValueError: a malformed ``cv_summary`` (path of the bad entry named).
    """
    intervals = _check_cv(cv_summary)
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    scenes = sorted({s.scene_id for s in inputs.samples})
    scene_of = np.array([s.scene_id for s in inputs.samples])
    by_command = {n: summarize_by_command(m) for n, m in inputs.metrics.items()}
    by_scene = {n: {sc: summarize(m.select(scene_of == sc)) for sc in scenes} for n, m in inputs.metrics.items()}
    ci = {n: {c: {p: {k: _ci(intervals, n, c, p, k, "avg") for k in ("L2", "collision")} for p in PROTOCOLS}
              for c in ("ALL", *COMMANDS)} for n in inputs.metrics}
    hist = None
    if inputs.student is not None and inputs.best_baseline is not None:
        base = HISTOGRAM_BASELINE if HISTOGRAM_BASELINE in inputs.metrics else inputs.best_baseline
        fig, diff = histogram_figure(inputs, base)
        write_bytes_atomic(out / "img" / "l2_difference_histogram.png", figure_png_bytes(fig))
        hist = dict(png="img/l2_difference_histogram.png", baseline=base, mean=float(diff.mean()), median=float(np.median(diff)),
                    worse=int((diff > 0).sum()), n=len(diff),
                    per_sample={s.sample_id: round(float(d), 4) for s, d in zip(inputs.samples, diff)})
    worst = []
    for rank, ws in enumerate(inputs.worst, 1):
        s = inputs.samples[ws.index]
        png = f"img/worst_{rank:02d}_{_safe(s.sample_id)}.png"
        write_bytes_atomic(out / png, figure_png_bytes(bev_figure(inputs, ws)))
        rows = []
        for n, m in inputs.metrics.items():
            rows.append(dict(planner=n, l2_avg=float(stp3_l2_avg(m.l2[ws.index:ws.index + 1])[0]), l2_3s=float(m.l2[ws.index, -1]),
                             collision_s=[0.5 * (k + 1) for k in np.flatnonzero(m.collision[ws.index])],
                             implied=_implied(inputs.predictions[n][ws.index], s)))
        ann = (s.annotation or {}).get("meta_action")
        worst.append(dict(rank=rank, scene_id=s.scene_id, sample_id=s.sample_id, command=s.inputs.command,
                          speed=float(s.inputs.speed), delta_l2=ws.delta_l2, png=png, planners=rows,
                          explanation=ws.explanation, logged_implied=_implied(s.targets.ego_future, s),
                          annotation_meta_action=(str(ann["behaviour"]) if ann and ann.get("behaviour") == "STOP"
                                                  else f"{ann['behaviour']} with {ann['speed']}" if ann else None),
                          annotator=(s.annotation or {}).get("teacher")))
    doc = dict(config=config or {}, scenes=scenes, num_evaluated=len(inputs.samples), num_skipped_incomplete_future=inputs.num_skipped,
               student=inputs.student, best_baseline=inputs.best_baseline, privileged=inputs.privileged,
               metrics_by_command=by_command, metrics_by_scene=by_scene, cv_summary=cv_summary, histogram=hist, worst=worst,
               reasoning_consistency=inputs.reasoning_consistency)
    write_json_atomic(out / "report.json", jsonable(doc), indent=1)

    html = report_environment(Path(__file__).resolve().parent / "templates").get_template(TEMPLATE).render(
        doc=doc, ci=ci, cv_method=(cv_summary or {}).get("method"), protocols=PROTOCOL_TITLES,
        horizons=[*HORIZON_STEPS, "avg"], commands=("ALL", *COMMANDS))
    html_path = out / "index.html"
    write_text_atomic(html_path, html)
    return html_path


def build_open_loop_report(out_dir: str | Path, planners: Mapping[str, object], samples: list[PlanningSample],
                           worst_n: int = DEFAULT_WORST, student: str = "student", config: dict | None = None,
                           cv_summary: dict | None = None, predictions: Mapping[str, np.ndarray] | None = None,
                           batch_size: int = 64, progress: bool = False) -> Path:
    """:func:`collect_report_inputs` then :func:`write_open_loop_report`; returns ``out_dir/index.html``.

    What the open-loop ``main`` calls for ``--report DIR --report-worst N``.
    """
    inputs = collect_report_inputs(planners, samples, student=student, worst_n=worst_n, predictions=predictions,
                                   batch_size=batch_size, progress=progress)
    return write_open_loop_report(out_dir, inputs, config=config, cv_summary=cv_summary)
