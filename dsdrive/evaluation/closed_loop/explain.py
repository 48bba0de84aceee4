"""A planner's explanation at one replanning step, normalised for the closed-loop report.

Planners that explain themselves (the student) expose ``plan_and_explain(inputs) ->
(waypoints, explanation)`` or ``explain(inputs) -> explanation``; the explanation may be a
string, a dict, or a pydantic model such as :class:`dsdrive.annotation.schema.Annotation`. Recognised
fields: ``reasoning`` / ``explanation`` / ``text`` / ``scene_summary`` (text), ``meta_action``
(a :class:`~dsdrive.annotation.schema.MetaAction`, its dict or a string), ``mode_scores`` (list or
dict), ``risks`` / ``top_risk`` (per-object risk, RSD).

For planners without explanations (baselines, log replay) a short description is generated from
the waypoints: the meta-action they imply (:func:`dsdrive.annotation.meta_action.meta_action_from_trajectory`,
GPT-Driver / Agent-Driver vocabulary) and the distance/speed over the 3 s horizon.

**Reasoning-plan consistency** (from the text alone): the meta-action the explanation *text* states
(:func:`dsdrive.annotation.meta_action_text.parse_stated_meta_action`: a ``Plan:`` line
or a JSON ``meta_action``) is compared with the meta-action its own waypoints imply (same behaviour
and speed class -> consistent); None when the text states none. A ``meta_action`` field given beside
the text (e.g. a student's meta-action head) is shown in the report but never enters the metric.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from dsdrive.annotation.meta_action import meta_action_from_trajectory
from dsdrive.data.types import STEP_SECONDS
from dsdrive.annotation.meta_action_text import parse_stated_meta_action


def _to_dict(obj: Any) -> dict:
    if obj is None:
        return {}
    if isinstance(obj, str):
        return {"text": obj}
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    if isinstance(obj, dict):
        return dict(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return {"text": str(obj)}


def _meta_str(m: Any) -> str | None:
    if m is None:
        return None
    if isinstance(m, dict) and "behaviour" in m:
        return m["behaviour"] if m["behaviour"] == "STOP" else f"{m['behaviour']} with {m.get('speed', '')}".strip()
    return str(m)


def implied_meta_action(waypoints: np.ndarray, speed: float) -> str:
    """Meta-action implied by (6, 2|3) ego-frame waypoints at the current ``speed`` (m/s)."""
    try:
        return str(meta_action_from_trajectory(np.asarray(waypoints)[:, :2], speed))
    except ValueError as e:
        return f"undetermined ({e})"


def describe_plan(waypoints: np.ndarray, speed: float, explanation: Any = None, log_replay: bool = False) -> dict:
    """Normalised explanation record of one plan.

    Args:
        waypoints: (6, 3) ego-frame plan (m, rad).
        speed: current ego speed (m/s).
        explanation: what the planner returned (None: none).
        log_replay: the plan is the logged expert future.

    Returns:
        dict with ``source`` (planner | auto), ``text``, ``meta_action`` (stated or None),
        ``meta_action_source`` (where the planner says it stated it, e.g. its reasoning text or a
        meta-action head),
        ``stated_in_text`` (the meta-action the text states, or None), ``implied_meta_action``,
        ``consistent`` (text-stated == implied; None when the text states none), ``mode_scores``, ``top_risk``
        (list of {agent_id, risk, rank, reason}), and the planner's ``mode_check`` where it gives one
        (:meth:`dsdrive.planners.mode_check.ModeCheck.explanation`).
    """
    implied = implied_meta_action(waypoints, speed)
    d = _to_dict(explanation)
    if d:
        text = next((str(d[k]) for k in ("reasoning", "explanation", "text", "scene_summary") if d.get(k)), "")
        stated = _meta_str(d.get("meta_action"))
        risks = d.get("top_risk") or d.get("risks") or []
        top = []
        for r in list(risks)[:5]:
            r = _to_dict(r)
            top.append({k: r.get(k) for k in ("agent_id", "risk", "rank", "reason") if k in r})
        scores = d.get("mode_scores")
        in_text = parse_stated_meta_action(text)
        in_text = None if in_text is None else str(in_text)
        if isinstance(scores, np.ndarray):
            scores = scores.tolist()
        return {
            "source": "planner",
            "text": text,
            "meta_action": stated,
            "meta_action_source": d.get("meta_action_source") if stated is not None else None,
            "stated_in_text": in_text,
            "implied_meta_action": implied,
            "consistent": None if in_text is None else in_text == implied,
            "mode_scores": scores,
            "top_risk": top,
            **({"mode_check": d["mode_check"]} if d.get("mode_check") else {}),
        }
    wp = np.asarray(waypoints)
    dist = float(np.linalg.norm(np.diff(np.vstack([[0, 0], wp[:, :2]]), axis=0), axis=1).sum())
    v_end = float(np.linalg.norm(wp[-1, :2] - wp[-2, :2]) / STEP_SECONDS)
    who = "Logged expert future" if log_replay else "No explanation from this planner; its waypoints imply"
    text = f"{who}: {implied} ({dist:.1f} m in 3 s, speed {speed:.1f} -> {v_end:.1f} m/s)."
    return {"source": "auto", "text": text, "meta_action": None, "meta_action_source": None, "stated_in_text": None,
            "implied_meta_action": implied,
            "consistent": None, "mode_scores": None, "top_risk": []}
