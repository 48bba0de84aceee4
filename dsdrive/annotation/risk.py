"""Per-agent risk from ground-truth futures, and GPT-Driver-style notable objects.

RSD (arXiv 2511.14499) distils a per-object risk score and rank into a BEV RiskHead; its teacher
is a VLM. This module is the privileged (hindsight) version used by the rule annotator: it reads
the ego's and the agents' ground-truth futures.

Frames and grids: everything is in the ego frame of the current time (x forward, y left,
metres). Step 0 is now (ego at the origin, agents at their box centres); steps 1..K are
+0.5 ... +K*0.5 s. The ego future covers 3 s (K = 6), the agents' futures 6 s: risk compares the
**common 3 s** by default (``horizon_steps=6``); a longer horizon extends the ego by constant
velocity from its last two points.

Missing values:
* ego: the valid prefix of the future is used (up to the first masked step); when even the
  first step is masked, a constant-acceleration rollout from the current ``ego_status`` (vx, ax;
  the speed never goes below zero) replaces it; later masked steps continue at constant
  velocity from the last valid points.
* agents: a masked step continues the agent at constant velocity from its last valid position
  (the current velocity until a second valid point exists).

Footprints are circles of radius ``(length + width) / 4`` (the mean half-extent); the ego is
the ego box of :mod:`dsdrive.constants` (nuScenes' 4.084 m x 1.85 m, the DistillDrive/SparseDrive
collision box).

Risk of agent i (all terms in [0, 1]):

    gap_t   = max(0, |p_agent(t) - p_ego(t)| - r_ego - r_agent)              (m, t = 0..K)
    P       = max_t exp(-gap_t / D0)                                         (proximity, D0 = 3 m)
    TTC_t   = first time tau >= 0 at which the constant-relative-velocity extrapolation from step
              t brings the centres within r_ego + r_agent (circle TTC; inf if never), relative
              velocity from the step t -> t+1 difference (t-1 -> t at the last step)
    T       = max_t exp(-(t*dt + TTC_t) / TAU)                               (TAU = 2 s)
    risk    = 1 - (1 - P) * (1 - T)                                          (noisy-OR, in [0, 1])

Ranks sort risk descending (ties: nearer now first), rank 1 = most dangerous.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsdrive.constants import AGENT_FUTURE_STEPS, EGO_LENGTH_M, EGO_WIDTH_M, STEP_SECONDS
from dsdrive.data.types import PlanningSample

PROXIMITY_SCALE_M = 3.0
"""D0: the gap (m) at which the proximity term falls to 1/e."""
TTC_SCALE_S = 2.0
"""TAU: the time-to-collision (s) at which the TTC term falls to 1/e."""
NOTABLE_RADIUS_M = 20.0
"""Notable objects are searched within this distance of the ego now (GPT-Driver: 20 m)."""
NOTABLE_LATERAL_MARGIN_M = 1.0
"""Clearance added to the two half-widths for the notable-object corridor test."""
NOTABLE_LOOKAHEAD_M = 10.0
"""The notable-object corridor extends the ego's future path this far (m) along its final direction."""


def _radius(length: np.ndarray, width: np.ndarray) -> np.ndarray:
    return (np.asarray(length, np.float64) + np.asarray(width, np.float64)) / 4.0


def constant_acceleration_rollout(v0: float, a0: float, steps: int, dt: float = STEP_SECONDS, vy: float = 0.0) -> np.ndarray:
    """Straight ego-frame rollout, (steps, 2) m at dt..steps*dt: x from v0 (m/s), a0 (m/s^2), the
    speed clipped at 0 (no reversing); y from a constant lateral velocity vy (m/s)."""
    t = dt * np.arange(1, steps + 1)
    if a0 < 0 and v0 > 0:
        t_stop = v0 / -a0
        tc = np.minimum(t, t_stop)
        x = v0 * tc + 0.5 * a0 * tc**2
    else:
        x = np.maximum(v0, 0.0) * t + 0.5 * a0 * t**2 if v0 >= 0 else np.zeros_like(t)
    return np.stack([x, vy * t], axis=-1)


def ego_positions(
    ego_future: np.ndarray,
    ego_future_mask: np.ndarray,
    ego_status: np.ndarray | None = None,
    horizon_steps: int = 6,
    dt: float = STEP_SECONDS,
) -> np.ndarray:
    """Ego centre positions (horizon_steps + 1, 2) at 0, dt, ... (ego frame, m), gaps filled.

    Args:
        ego_future: (6, 2|3) ground-truth future; ego_future_mask: (6,) bool.
        ego_status: (6,) ``vx, vy, ax, ay, yaw_rate, steering`` used when no step is valid.
    """
    fut = np.asarray(ego_future, np.float64)[:, :2]
    mask = np.asarray(ego_future_mask, bool).reshape(-1) & np.isfinite(fut).all(axis=1)
    k = fut.shape[0]
    out = np.zeros((horizon_steps + 1, 2))
    if not mask[0]:
        st = np.zeros(6) if ego_status is None else np.nan_to_num(np.asarray(ego_status, np.float64))
        out[1:] = constant_acceleration_rollout(st[0], st[2], horizon_steps, dt, vy=st[1])
        return out
    n_valid = int(np.argmin(mask)) if not mask.all() else k  # valid prefix, >= 1 here
    pts = np.vstack([np.zeros((1, 2)), fut[:n_valid]])
    vel = (pts[-1] - pts[-2]) / dt if len(pts) >= 2 else np.zeros(2)
    m = min(len(pts), horizon_steps + 1)
    out[:m] = pts[:m]
    for s in range(m, horizon_steps + 1):
        out[s] = out[s - 1] + vel * dt
    return out


def agent_positions(
    boxes: np.ndarray,
    velocities: np.ndarray,
    agent_futures: np.ndarray,
    agent_future_masks: np.ndarray,
    horizon_steps: int = 6,
    dt: float = STEP_SECONDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Agent centres (N, horizon_steps + 1, 2) (ego frame, m) with masked steps filled by constant
    velocity, and the (N, horizon_steps + 1) bool mask of ground-truth (not filled) steps."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    n = boxes.shape[0]
    fut = np.asarray(agent_futures, np.float64).reshape(n, AGENT_FUTURE_STEPS, 3)[:, :horizon_steps, :2]
    fmask = np.asarray(agent_future_masks, bool).reshape(n, AGENT_FUTURE_STEPS)[:, :horizon_steps] & np.isfinite(fut).all(-1)
    if fut.shape[1] < horizon_steps:
        raise ValueError(f"agent_futures: {fut.shape[1]} steps < horizon_steps={horizon_steps}")
    pos = np.zeros((n, horizon_steps + 1, 2))
    gt = np.zeros((n, horizon_steps + 1), bool)
    pos[:, 0] = boxes[:, :2]
    gt[:, 0] = True
    vel = np.nan_to_num(np.asarray(velocities, np.float64).reshape(n, 2))
    for s in range(1, horizon_steps + 1):  # loop over <= 12 steps, vectorised over agents
        ok = fmask[:, s - 1]
        pos[:, s] = np.where(ok[:, None], fut[:, s - 1], pos[:, s - 1] + vel * dt)
        # velocity estimate from the last two ground-truth-backed positions
        vel = np.where((ok & gt[:, s - 1])[:, None], (pos[:, s] - pos[:, s - 1]) / dt, vel)
        gt[:, s] = ok
    return pos, gt


@dataclass
class RiskScores:
    """Per-agent risk (arrays over the N agents, in input order).

    Attributes:
        risk: (N,) in [0, 1]; rank: (N,) int, 1 = most dangerous.
        proximity: (N,) P term; ttc_term: (N,) T term.
        min_gap: (N,) smallest footprint gap over the horizon (m); min_gap_time: (N,) its time (s).
        ttc: (N,) earliest conflict time t + TTC_t (s; inf if none).
        distance_now: (N,) centre distance now (m).
    """

    risk: np.ndarray
    rank: np.ndarray
    proximity: np.ndarray
    ttc_term: np.ndarray
    min_gap: np.ndarray
    min_gap_time: np.ndarray
    ttc: np.ndarray
    distance_now: np.ndarray


def _circle_ttc(rel_p: np.ndarray, rel_v: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Smallest tau >= 0 with |rel_p + rel_v tau| <= radius; inf if never. Shapes broadcast (..., 2)."""
    a = (rel_v**2).sum(-1)
    b = 2.0 * (rel_p * rel_v).sum(-1)
    c = (rel_p**2).sum(-1) - radius**2
    disc = b**2 - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
    tau = np.where((disc >= 0) & (a > 1e-9) & (tau >= 0), tau, np.inf)
    return np.where(c <= 0, 0.0, tau)


def risk_scores(
    ego_xy: np.ndarray,
    agent_xy: np.ndarray,
    agent_length: np.ndarray,
    agent_width: np.ndarray,
    agent_velocity: np.ndarray | None = None,
    dt: float = STEP_SECONDS,
) -> RiskScores:
    """Risk of every agent against the ego (formula in the module docstring). Vectorised.

    Args:
        ego_xy: (K+1, 2) ego positions at 0..K*dt (ego frame, m), e.g. from :func:`ego_positions`.
        agent_xy: (N, K+1, 2) agent positions on the same grid, e.g. from :func:`agent_positions`.
        agent_length, agent_width: (N,) box sizes (m).
        agent_velocity: (N, 2) current velocities (m/s), used only when K = 0 (no future).
    """
    ego_xy = np.asarray(ego_xy, np.float64)
    agent_xy = np.asarray(agent_xy, np.float64)
    n = agent_xy.shape[0]
    if n == 0:
        e = np.zeros(0)
        return RiskScores(e, np.zeros(0, int), e, e, e, e, e, e)
    if agent_xy.shape[1:] != ego_xy.shape:
        raise ValueError(f"agent_xy {agent_xy.shape} does not match ego_xy {ego_xy.shape} on (K+1, 2)")
    r_sum = _radius(EGO_LENGTH_M, EGO_WIDTH_M) + _radius(agent_length, agent_width)  # (N,)
    rel = agent_xy - ego_xy[None]  # (N, K+1, 2)
    dist = np.linalg.norm(rel, axis=-1)
    gap = np.maximum(dist - r_sum[:, None], 0.0)
    prox = np.exp(-gap / PROXIMITY_SCALE_M).max(axis=1)
    steps = ego_xy.shape[0]
    rel_v = np.zeros_like(rel)
    if steps >= 2:
        rel_v[:, :-1] = np.diff(rel, axis=1) / dt
        rel_v[:, -1] = rel_v[:, -2]  # the last step keeps the last difference
    elif agent_velocity is not None:  # only the current state: agents move, the ego is taken as static
        rel_v[:, 0] = np.asarray(agent_velocity, np.float64).reshape(n, 2)
    tau = _circle_ttc(rel, rel_v, r_sum[:, None])  # (N, K+1)
    conflict = tau + dt * np.arange(steps)[None]
    ttc = conflict.min(axis=1)
    ttc_term = np.exp(-ttc / TTC_SCALE_S)
    risk = np.clip(1.0 - (1.0 - prox) * (1.0 - ttc_term), 0.0, 1.0)
    order = np.lexsort((dist[:, 0], -risk))
    rank = np.empty(n, int)
    rank[order] = np.arange(1, n + 1)
    k_min = gap.argmin(axis=1)
    return RiskScores(
        risk=risk,
        rank=rank,
        proximity=prox,
        ttc_term=ttc_term,
        min_gap=gap[np.arange(n), k_min],
        min_gap_time=k_min * dt,
        ttc=ttc,
        distance_now=dist[:, 0],
    )


def sample_risk(sample: PlanningSample, horizon_steps: int = 6) -> RiskScores:
    """:func:`risk_scores` for every agent of a sample, from its ground-truth futures (hindsight)."""
    i, t = sample.inputs, sample.targets
    ego = ego_positions(t.ego_future, t.ego_future_mask, i.ego_status if i.ego_status_mask[0] else None, horizon_steps)
    pos, _ = agent_positions(i.agents.boxes, i.agents.velocities, t.agent_futures, t.agent_future_masks, horizon_steps)
    b = np.asarray(i.agents.boxes, np.float64).reshape(-1, 7)
    return risk_scores(ego, pos, b[:, 3], b[:, 4], i.agents.velocities)


@dataclass
class NotableObjects:
    """Agents whose future enters the ego's future corridor (indices into the agent list).

    Attributes:
        indices: (M,) int agent indices, nearest conflict along the ego path first.
        path_distance: (M,) smallest distance (m) from the agent's centre to the ego path.
        conflict_time: (M,) time (s) of the agent step closest to the ego path.
        along_path: (M,) arc length (m) of the ego path at that closest point.
    """

    indices: np.ndarray
    path_distance: np.ndarray
    conflict_time: np.ndarray
    along_path: np.ndarray


def _final_direction(ego_xy: np.ndarray, min_chord: float = 1.0) -> np.ndarray:
    """Unit direction of the last chord >= ``min_chord`` m of a path (+x when the path is shorter)."""
    chord = ego_xy[-1] - ego_xy[:-1]
    length = np.linalg.norm(chord, axis=1)
    ok = np.nonzero(length >= min_chord)[0]
    return chord[ok[-1]] / length[ok[-1]] if len(ok) else np.array([1.0, 0.0])


def notable_objects(
    ego_xy: np.ndarray,
    agent_xy: np.ndarray,
    agent_valid: np.ndarray,
    agent_width: np.ndarray,
    radius_m: float = NOTABLE_RADIUS_M,
    lateral_margin_m: float = NOTABLE_LATERAL_MARGIN_M,
    lookahead_m: float = NOTABLE_LOOKAHEAD_M,
    dt: float = STEP_SECONDS,
) -> NotableObjects:
    """GPT-Driver / Agent-Driver style notable objects, by a corridor test on ground-truth futures.

    An agent is notable when it is within ``radius_m`` (20 m) of the ego now and one of its
    ground-truth positions (now or future, steps where ``agent_valid``) comes within
    ``ego_width/2 + agent_width/2 + lateral_margin_m`` of the ego's corridor: the polyline
    through ``ego_xy`` extended by ``lookahead_m`` (10 m) along its final direction, at any time.
    Lead vehicles (also the one a stopped ego queues behind), crossing pedestrians and obstacles
    on the path count; oncoming traffic in the next lane does not. Vectorised over agents x
    steps x segments.

    Args:
        ego_xy: (K+1, 2) ego positions from now (ego frame, m).
        agent_xy: (N, K+1, 2) agent positions; agent_valid: (N, K+1) bool ground-truth steps.
        agent_width: (N,) agent widths (m).
    """
    ego_xy = np.asarray(ego_xy, np.float64)
    agent_xy = np.asarray(agent_xy, np.float64)
    n = agent_xy.shape[0]
    if n == 0:
        z = np.zeros(0)
        return NotableObjects(np.zeros(0, int), z, z, z)
    path = np.vstack([ego_xy, ego_xy[-1] + lookahead_m * _final_direction(ego_xy)])
    a, b = path[:-1], path[1:]  # (S, 2) path segments, the look-ahead last
    ab = b - a
    seg_len2 = np.maximum((ab**2).sum(-1), 1e-12)
    ap = agent_xy[:, :, None, :] - a[None, None]  # (N, K+1, S, 2)
    u = np.clip((ap * ab).sum(-1) / seg_len2, 0.0, 1.0)
    d = np.linalg.norm(ap - u[..., None] * ab, axis=-1)  # (N, K+1, S)
    d = np.where(np.asarray(agent_valid, bool)[:, :, None], d, np.inf)
    flat = d.reshape(n, -1).argmin(axis=1)
    k_best, s_best = np.unravel_index(flat, d.shape[1:])
    dmin = d.reshape(n, -1)[np.arange(n), flat]
    cum = np.concatenate([[0.0], np.cumsum(np.sqrt((ab**2).sum(-1)))])
    along = cum[s_best] + u[np.arange(n), k_best, s_best] * np.sqrt(seg_len2[s_best])
    margin = EGO_WIDTH_M / 2 + np.asarray(agent_width, np.float64) / 2 + lateral_margin_m
    near_now = np.linalg.norm(agent_xy[:, 0] - ego_xy[0], axis=-1) <= radius_m
    keep = np.nonzero(near_now & (dmin <= margin))[0]
    keep = keep[np.argsort(along[keep], kind="stable")]
    return NotableObjects(keep, dmin[keep], k_best[keep] * dt, along[keep])
