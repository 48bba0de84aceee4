"""The privileged rule annotator: annotations computed from ground truth (GPT-Driver / Agent-Driver).

GPT-Driver (arXiv 2310.01415) and Agent-Driver (arXiv 2311.10813) generate their chain-of-thought
labels by rules over the nuScenes ground truth: notable objects by a collision test of the ego's
future against the agents' futures within 20 m, and a meta-action from the ego's future. This
teacher does the same over a :class:`dsdrive.data.types.PlanningSample` and fills the common
:class:`dsdrive.annotation.schema.Annotation` schema:

* ``scene_summary``: ego speed, command, counts of agents by class within 30 m, a pedestrian
  crossing ahead when the map has one;
* ``key_objects``: notable objects (:func:`dsdrive.annotation.risk.notable_objects`), highest risk first,
  at most 5, each with its ego-frame position and why it matters;
* ``meta_action``: :func:`dsdrive.annotation.meta_action.meta_action_from_trajectory` on the ground-truth
  future;
* ``explanation``: one sentence joining the meta-action with its cause;
* ``risks``: :func:`dsdrive.annotation.risk.sample_risk` for agents within 30 m or notable, top 10;
* ``waypoints``: the ground-truth future x, y (6 points; None when part of it is masked).

It reads the ground-truth future, so every annotation has ``hindsight=True`` (VLM-AD / DSDrive
hindsight labels): the explanation describes why the recorded driver did what it did, which
the student learns without ever seeing the future itself.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from dsdrive.annotation.schema import AgentRisk, Annotation, AnnotationFailure, KeyObject, MetaAction
from dsdrive.annotation.meta_action import MOVING_SPEED_MPS, meta_action_from_features, trajectory_features
from dsdrive.annotation.risk import agent_positions, ego_positions, notable_objects, risk_scores
from dsdrive.annotation.annotators.base import Annotator
from dsdrive.data.types import AGENT_TYPES, PlanningSample

SCENE_RADIUS_M = 30.0
"""Agents and map elements within this distance (m) of the ego are described and risk-scored."""
MAX_KEY_OBJECTS = 5
MAX_RISKS = 10
_PLURAL = {"VEHICLE": "vehicles", "PEDESTRIAN": "pedestrians", "CYCLIST": "cyclists",
           "TRAFFIC_CONE": "traffic cones", "TRAFFIC_BARRIER": "traffic barriers", "OTHER": "other objects"}


def category_name(agent_type: str) -> str:
    """``TRAFFIC_CONE`` -> ``traffic cone`` (the category text of key objects)."""
    return agent_type.lower().replace("_", " ")


def direction_phrase(x: float, y: float) -> str:
    """Ego-frame direction of a point: ahead / ahead-left / left / behind-right ..."""
    lon = "ahead" if x > 2.0 else "behind" if x < -2.0 else ""
    lat = "left" if y > 2.0 else "right" if y < -2.0 else ""
    if lon and lat:
        return f"{lon}-{lat}"
    return lon or (f"on the {lat}" if lat else "alongside")


def motion_phrase(vx: float, vy: float, ego_speed: float) -> str:
    """Agent motion relative to the ego heading: stationary / same direction / oncoming / crossing."""
    v = float(np.hypot(vx, vy))
    if v < 0.5:
        return "stationary"
    c = vx / v
    if c > 0.7:
        return "slower, same direction" if v < ego_speed - 1.0 else "same direction"
    if c < -0.7:
        return "oncoming"
    return "crossing"


class RuleAnnotator(Annotator):
    """Ground-truth rule annotator (privileged, hindsight). See the module docstring."""

    teacher_id = "rule"
    prompt_version = "rule/v1"

    def annotate(self, samples: list[PlanningSample]) -> list[Annotation | AnnotationFailure]:
        """One :class:`Annotation` per valid sample; an :class:`AnnotationFailure` with the
        reason for a sample that cannot be annotated (no valid ground-truth future, NaNs)."""
        out: list[Annotation | AnnotationFailure] = []
        for s in samples:
            self.usage.requests += 1
            try:
                out.append(self.annotate_one(s))
            except ValueError as e:
                out.append(AnnotationFailure(sample_id=s.sample_id, teacher=self.teacher_id,
                                             prompt_version=self.prompt_version, reason=str(e)))
        return out

    def annotate_one(self, s: PlanningSample) -> Annotation:
        """Annotate one sample. Raises ValueError (with the field and value) when it cannot."""
        inp, tgt = s.inputs, s.targets
        fmask = np.asarray(tgt.ego_future_mask, bool)
        if not fmask.any() or not fmask[0]:
            raise ValueError(f"{s.sample_id}: ego_future_mask is {fmask.tolist()}: no ground-truth future to label")
        fut = np.asarray(tgt.ego_future, np.float64)
        if not np.isfinite(fut[fmask]).all():
            raise ValueError(f"{s.sample_id}: ego_future has non-finite values {fut.tolist()}")
        speed = inp.speed if bool(inp.ego_status_mask[:2].all()) and np.isfinite(inp.speed) else None
        hist = inp.ego_history if bool(inp.ego_history_mask[-1]) else None
        feats = trajectory_features(fut, speed, hist, fmask)
        meta = meta_action_from_features(feats)

        boxes = np.asarray(inp.agents.boxes, np.float64).reshape(-1, 7)
        vel = np.asarray(inp.agents.velocities, np.float64).reshape(-1, 2)
        status = inp.ego_status if bool(inp.ego_status_mask[0]) else None
        ego_xy = ego_positions(fut, fmask, status)
        agent_xy, agent_gt = agent_positions(boxes, vel, tgt.agent_futures, tgt.agent_future_masks)
        risk = risk_scores(ego_xy, agent_xy, boxes[:, 3], boxes[:, 4], vel)
        notable = notable_objects(ego_xy, agent_xy, agent_gt, boxes[:, 4])

        types = list(inp.agents.types)
        ids = list(inp.agents.ids)
        key_idx = sorted(notable.indices.tolist(), key=lambda i: (-risk.risk[i], risk.distance_now[i]))[:MAX_KEY_OBJECTS]
        t_conflict = dict(zip(notable.indices.tolist(), notable.conflict_time.tolist()))
        key_objects = []
        for i in key_idx:
            x, y = boxes[i, 0], boxes[i, 1]
            why = f"{motion_phrase(vel[i, 0], vel[i, 1], feats.v_now)}, {direction_phrase(x, y)}"
            why += ", on the ego path" if t_conflict[i] == 0 else f", reaches the ego path at {t_conflict[i]:.1f} s"
            key_objects.append(KeyObject(agent_id=ids[i], category=category_name(types[i]),
                                         position=(round(float(x), 2), round(float(y), 2)), reason=why))

        near = np.nonzero((risk.distance_now <= SCENE_RADIUS_M) | np.isin(np.arange(len(ids)), notable.indices))[0]
        near = near[np.lexsort((risk.distance_now[near], -risk.risk[near]))][:MAX_RISKS]
        risks = []
        for r, i in enumerate(near, start=1):
            why = f"gap {risk.min_gap[i]:.1f} m at {risk.min_gap_time[i]:.1f} s"
            if np.isfinite(risk.ttc[i]) and risk.ttc[i] <= 6.0:
                why += f", conflict in {risk.ttc[i]:.1f} s"
            risks.append(AgentRisk(agent_id=ids[i], risk=round(float(risk.risk[i]), 4), rank=r, reason=why))

        waypoints = [(round(float(a), 3), round(float(b), 3)) for a, b in fut[:, :2]] if fmask.all() else None
        return Annotation(
            sample_id=s.sample_id,
            teacher=self.teacher_id,
            prompt_version=self.prompt_version,
            hindsight=True,
            scene_summary=self._scene_summary(s, feats.v_now, risk.distance_now),
            key_objects=key_objects,
            meta_action=meta,
            explanation=self._explanation(meta, feats.v_now, s.inputs.command, key_idx, boxes, types, s),
            risks=risks,
            waypoints=waypoints,
        )

    @staticmethod
    def _crossing_ahead(s: PlanningSample) -> float | None:
        """Distance (m) to the nearest pedestrian-crossing point ahead within 30 m, or None."""
        pts = [p for t, p in zip(s.inputs.map.types, s.inputs.map.points) if t == "ped_crossing"]
        if not pts:
            return None
        p = np.concatenate([np.asarray(q, np.float64).reshape(-1, 2) for q in pts])
        d = np.hypot(p[:, 0], p[:, 1])
        ahead = (p[:, 0] > 0) & (d <= SCENE_RADIUS_M)
        return float(d[ahead].min()) if ahead.any() else None

    def _scene_summary(self, s: PlanningSample, v_now: float, dist_now: np.ndarray) -> str:
        counts = Counter(t for t, d in zip(s.inputs.agents.types, dist_now) if d <= SCENE_RADIUS_M)
        state = "moving" if v_now >= 0.5 else "stopped"
        order = list(AGENT_TYPES) + sorted(set(counts) - set(AGENT_TYPES))
        parts = [f"{counts[t]} {_PLURAL.get(t, category_name(t) + 's') if counts[t] > 1 else category_name(t)}"
                 for t in order if counts.get(t)]
        text = f"Ego {state} at {v_now:.1f} m/s, command {s.inputs.command}. "
        text += f"Within {SCENE_RADIUS_M:.0f} m: {', '.join(parts)}." if parts else f"No agents within {SCENE_RADIUS_M:.0f} m."
        crossing = self._crossing_ahead(s)
        if crossing is not None:
            text += f" Pedestrian crossing {crossing:.1f} m ahead."
        return text

    def _explanation(self, meta: MetaAction, v_now: float, command: str, key_idx: list[int],
                     boxes: np.ndarray, types: list[str], s: PlanningSample) -> str:
        lead = next((i for i in key_idx if boxes[i, 0] > 2.0), None)  # the highest-risk key object ahead
        cause = None
        if lead is not None:
            cause = f"the {category_name(types[lead])} {np.hypot(boxes[lead, 0], boxes[lead, 1]):.1f} m {direction_phrase(boxes[lead, 0], boxes[lead, 1])}"
        crossing = self._crossing_ahead(s)
        if meta.behaviour == "STOP":
            verb = "Stop" if v_now >= MOVING_SPEED_MPS else "Stay stopped"
            if cause:
                return f"{verb} for {cause}."
            if crossing is not None:
                return f"{verb} before the pedestrian crossing {crossing:.1f} m ahead."
            return f"{verb}: no agent blocks the path, so the ego is likely yielding or waiting for a signal."
        path = {"MOVE FORWARD": "Keep the lane", "TURN LEFT": f"Turn left for the {command} command",
                "TURN RIGHT": f"Turn right for the {command} command",
                "CHANGE LANE TO LEFT": "Change lane to the left", "CHANGE LANE TO RIGHT": "Change lane to the right"}[meta.behaviour]
        if "DECELERATION" in meta.speed:
            why = f"slow down for {cause}" if cause else (
                f"slow down before the pedestrian crossing {crossing:.1f} m ahead" if crossing is not None
                else "slow down for the turn" if meta.behaviour.startswith("TURN") else "slow down, no agent ahead on the path")
        elif "ACCELERATION" in meta.speed:
            why = f"speed up, keeping clear of {cause}" if cause else "speed up, the path ahead is clear"
        else:
            why = f"keep speed behind {cause}" if cause else "keep speed, the path ahead is clear"
        return f"{path} and {why}."
