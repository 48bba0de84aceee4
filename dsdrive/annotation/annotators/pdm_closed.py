"""The PDM-Closed annotator: labels any state with the plan of the PDM-Closed planner.

``dsdrive annotate --annotator pdm-closed --data DIR --out DIR [--hindsight]``

The label writer is the privileged rule-based planner PDM-Closed (Dauner et al., CoRL 2023;
:mod:`dsdrive.planners.pdm_closed`): it plans from the current state alone (ego status, agents
now, map, route), so it can label states that have no logged future, e.g. the states a student
visits in closed loop (DAgger: Ross, Gordon & Bagnell, AISTATS 2011). Per sample:

* **plan**: :meth:`~dsdrive.planners.pdm_closed.PDMClosedPlanner.plan` with the route, by
  default none (the lanes walked by the command: the sample's future is never read); with
  ``--hindsight`` the sample's logged future (:func:`~dsdrive.planners.pdm_closed.sample_route`)
  where it has one; a caller that knows the route (a closed-loop world state) passes it to
  :meth:`PDMClosedAnnotator.annotate_one`;
* **labels**: the rule annotator's rules (:class:`~dsdrive.annotation.annotators.rule.RuleAnnotator`,
  its meta-action, key objects, risk and rule-template explanation) applied to a copy of the
  sample whose future is the plan and whose agents move at constant velocity (their logged
  futures are not read): so the meta-action is the plan's
  (:mod:`dsdrive.annotation.meta_action`), the risk is :mod:`dsdrive.annotation.risk` against
  the plan and the forecasts, and the explanation names the object the plan reacts to;
* **schema**: :class:`~dsdrive.annotation.schema.Annotation` with teacher ``pdm-closed``,
  prompt version ``pdm-closed/v1``, ``hindsight`` True only when the logged future was the route,
  ``waypoints`` the plan (ego frame, x forward, y left, m, at +0.5 ... +3.0 s).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dsdrive.annotation.annotators.base import Annotator
from dsdrive.annotation.annotators.rule import RuleAnnotator
from dsdrive.annotation.schema import Annotation, AnnotationFailure
from dsdrive.constants import AGENT_FUTURE_STEPS, FUTURE_STEPS, STEP_SECONDS
from dsdrive.data.types import PlanningSample, PlanningTargets
from dsdrive.planners.pdm_closed import PDMClosedPlanner, sample_route


def constant_velocity_futures(sample: PlanningSample) -> tuple[np.ndarray, np.ndarray]:
    """The agents' futures at constant velocity, heading held: (N, 12, 3) ``x, y, heading`` at
    +0.5 ... +6.0 s in the ego frame, and (N, 12) masks (all True)."""
    boxes = np.asarray(sample.inputs.agents.boxes, np.float64).reshape(-1, 7)
    vel = np.asarray(sample.inputs.agents.velocities, np.float64).reshape(-1, 2)
    t = STEP_SECONDS * np.arange(1, AGENT_FUTURE_STEPS + 1)
    xy = boxes[:, None, :2] + t[None, :, None] * vel[:, None]
    yaw = np.repeat(boxes[:, None, 6:7], AGENT_FUTURE_STEPS, axis=1)
    return np.concatenate([xy, yaw], -1).astype(np.float32), np.ones((len(boxes), AGENT_FUTURE_STEPS), bool)


class PDMClosedAnnotator(Annotator):
    """Labels samples with PDM-Closed's plan (see the module docstring).

    Args:
        hindsight: use the sample's logged future as the route where it has a valid one.
        planner: the planner (default :class:`PDMClosedPlanner` with its defaults).
    """

    teacher_id = "pdm-closed"
    prompt_version = "pdm-closed/v1"

    def __init__(self, hindsight: bool = False, planner: PDMClosedPlanner | None = None) -> None:
        super().__init__()
        self.hindsight = bool(hindsight)
        self.planner = planner or PDMClosedPlanner()
        self._rules = RuleAnnotator()

    def annotate(self, samples: list[PlanningSample]) -> list[Annotation | AnnotationFailure]:
        """One :class:`Annotation` per sample, or an :class:`AnnotationFailure` naming why (bad
        inputs, e.g. non-finite ego status or an unknown command)."""
        out: list[Annotation | AnnotationFailure] = []
        for s in samples:
            self.usage.requests += 1
            try:
                out.append(self.annotate_one(s))
            except ValueError as e:
                out.append(AnnotationFailure(sample_id=s.sample_id, teacher=self.teacher_id,
                                             prompt_version=self.prompt_version, reason=f"{s.sample_id}: {e}"))
        return out

    def annotate_one(self, sample: PlanningSample, route_xy: np.ndarray | None = None) -> Annotation:
        """Annotate one sample.

        Args:
            sample: the state (its targets are read only with ``hindsight`` and no ``route_xy``).
            route_xy: (R, 2) ego-frame route in driving order (e.g. a closed-loop world state's
                logged path), overriding the hindsight/command choice.

        Raises:
            ValueError: the plan cannot be made or labelled (the message names the field).
        """
        used_log = False
        if route_xy is None and self.hindsight:
            route_xy = sample_route(sample)
            used_log = route_xy is not None
        plan = self.planner.plan(sample.inputs, route_xy).waypoints
        if not np.isfinite(plan).all():
            raise ValueError(f"PDM-Closed returned non-finite waypoints {plan.tolist()}")
        futures, masks = constant_velocity_futures(sample)
        proxy = replace(sample, targets=PlanningTargets(plan, np.ones(FUTURE_STEPS, bool), futures, masks), annotation=None)
        ann = self._rules.annotate_one(proxy)
        return ann.model_copy(update={"teacher": self.teacher_id, "prompt_version": self.prompt_version, "hindsight": used_log,
                                      "waypoints": [(round(float(x), 3), round(float(y), 3)) for x, y in plan[:, :2]]})
