"""PDM-Closed's scoring applied to a learned planner's modes: the student proposes, the rules check.

PDM-Closed (Dauner et al., CoRL 2023) scores each of its proposals with the PDM sub-scores and
drives the best; PDM-Hybrid and the learned scorers of NAVSIM (Hydra-MDP, Li et al., 2024) keep
the rule-based check on top of learned proposals. :func:`check_modes` does that for the student's
M modes: each mode's waypoints are tracked by the kinematic bicycle + LQR of
:mod:`dsdrive.evaluation.trajectory_tracking` for 4 s (the 3 s plan extended at its last
velocity), scored by :func:`dsdrive.planners.pdm_closed.score_proposals` against the agents of the
planning inputs at constant velocity (:class:`dsdrive.planners.pdm_closed.AgentForecast`) and the
map's road edges (:func:`dsdrive.planners.pdm_closed.road_edge_test`), and chosen:

1. the modes with NC = 1 and DAC = 1 are kept (else, when every mode collides or leaves the road,
   PDM-Closed's fallback: the most NC, the latest first at-fault overlap, DAC, then the student's
   score);
2. among them the mode with the highest ``log p + w log((5 TTC + 5 EP + 2 C) / 12)`` is driven:
   ``p`` the student's mode probability, ``w`` = ``progress_weight`` (Hydra-MDP's weighted sum of
   the imitation log-score and the log sub-scores). ``w`` = 0 drives the student's favourite safe
   mode (TTC does not veto: a mode with TTC = 0 stays a candidate); a large ``w`` drives
   PDM-Closed's choice among the student's modes.

It reads only :class:`dsdrive.data.types.PlanningInputs` (no route, no future), so the checked
student is not privileged. Progress (EP) runs along the command's lane walk
(:func:`dsdrive.student.lane_prior.command_centerline`). Frames: ego frame (x forward, y left, m).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsdrive.constants import SIM_DT, STEP_SECONDS
from dsdrive.data.types import PlanningInputs
from dsdrive.evaluation.trajectory_tracking import BicycleState, reference_from_plan, track
from dsdrive.planners.pdm_closed import (
    HORIZON_STEPS, AgentForecast, Proposal, initial_state, road_edge_test, safety_order, score_proposals)
from dsdrive.student.lane_prior import IDM_MODES_TOP_SPEED_MPS, LANE_MARGIN_M, command_centerline


@dataclass
class ModeCheck:
    """The check of one input's modes: ``best`` (the chosen mode), ``proposals`` (one scored
    :class:`~dsdrive.planners.pdm_closed.Proposal` per mode, ``speed`` = the mode's speed at +3 s),
    ``safe`` (whether the chosen mode has NC = 1 and DAC = 1; False: the fallback) and
    ``preferred`` (the mode the student scores highest)."""

    best: int
    proposals: list[Proposal]
    safe: bool
    preferred: int

    def explanation(self) -> dict:
        """``{"chosen", "preferred", "safe", "nc", "dac", "ttc", "ep"}`` for the closed-loop report (per mode lists)."""
        return {"chosen": self.best, "preferred": self.preferred, "safe": self.safe,
                "nc": [p.nc for p in self.proposals], "dac": [p.dac for p in self.proposals],
                "ttc": [p.ttc for p in self.proposals], "ep": [round(p.ep, 3) for p in self.proposals]}


def track_plan(inputs: PlanningInputs, waypoints: np.ndarray) -> np.ndarray:
    """(HORIZON_STEPS + 1, 6) states ``x, y, yaw, v, a, steer`` (ego frame; m, rad, m/s, m/s^2, rad) of
    the ego tracking ``waypoints`` (T, 2 or 3) at +0.5 ... +T*0.5 s from its current state
    (:func:`dsdrive.planners.pdm_closed.initial_state`); knots past the plan continue at its last
    segment's velocity. A heading column is taken from the waypoints, else from the path.

    Raises:
        ValueError: non-finite waypoints (from :func:`reference_from_plan`).
    """
    wp = np.asarray(waypoints, np.float64)
    init = initial_state(inputs)
    xy = np.vstack([np.zeros((1, 2)), wp[:, :2]])
    if wp.shape[1] >= 3:
        yaw = np.concatenate([[0.0], wp[:, 2]])
    else:
        d = np.gradient(xy, axis=0)
        yaw = np.arctan2(d[:, 1], d[:, 0])
    horizon = HORIZON_STEPS * SIM_DT
    extra = int(np.ceil(horizon / STEP_SECONDS - 1e-9)) - (len(xy) - 1)
    if extra > 0:
        step = xy[-1] - xy[-2]
        xy = np.vstack([xy, xy[-1] + np.arange(1, extra + 1)[:, None] * step])
        yaw = np.concatenate([yaw, np.full(extra, yaw[-1])])
    times = STEP_SECONDS * np.arange(len(xy))
    ref = reference_from_plan(times, xy, np.unwrap(yaw), np.array([init.v, 0.0]))
    return track(ref, BicycleState(**vars(init)), HORIZON_STEPS, SIM_DT)


def check_modes(inputs: PlanningInputs, modes: np.ndarray, scores: np.ndarray, progress_weight: float = 0.0) -> ModeCheck:
    """Score ``modes`` (M, T, 2 or 3) ego-frame waypoints at +0.5 s steps with the PDM sub-scores and
    choose one by the rules of the module docstring; ``scores`` (M,) are the student's mode
    probabilities, ``progress_weight`` (>= 0) the weight of the log TTC / EP / comfort term.

    Raises:
        ValueError: ``modes`` not (M, T, >=2) with M >= 1, ``scores`` not (M,), or a negative
            ``progress_weight`` (names the value).
    """
    modes, scores = np.asarray(modes, np.float64), np.asarray(scores, np.float64)
    if modes.ndim != 3 or modes.shape[0] < 1 or modes.shape[2] < 2 or scores.shape != (modes.shape[0],):
        raise ValueError(f"check_modes: modes {modes.shape} must be (M, T, 2|3) and scores {scores.shape} (M,)")
    if not progress_weight >= 0:
        raise ValueError(f"check_modes: progress_weight {progress_weight} must be >= 0")
    speed = float(initial_state(inputs).v)
    reach = max(speed, IDM_MODES_TOP_SPEED_MPS) * HORIZON_STEPS * SIM_DT + LANE_MARGIN_M  # the idm_modes proposals' reach
    cl, _, _ = command_centerline(inputs, speed, reach)
    proposals = []
    for wp in modes:
        p = Proposal(speed=float(np.linalg.norm(wp[-1, :2] - wp[-2, :2]) / STEP_SECONDS) if len(wp) > 1 else 0.0, offset=0.0)
        p.states = track_plan(inputs, wp)
        proposals.append(p)
    score_proposals(proposals, AgentForecast.build(inputs, cl), road_edge_test(inputs.map), cl)
    preferred = int(np.argmax(scores))
    safe = [i for i, p in enumerate(proposals) if p.nc == 1 and p.dac == 1]
    if safe:
        def combined(i: int) -> tuple:
            p = proposals[i]
            return (np.log(max(scores[i], 1e-12)) + progress_weight * np.log((5 * p.ttc + 5 * p.ep + 2 * p.comfort) / 12), -i)

        return ModeCheck(int(max(safe, key=combined)), proposals, True, preferred)
    best = max(range(len(proposals)), key=lambda i: (*safety_order(proposals[i]), scores[i], -i))
    return ModeCheck(int(best), proposals, False, preferred)
