"""Open-loop planning metrics on nuScenes-style samples: L2 and collision rate, vectorised.

Follows the evaluation of SparseDrive / DistillDrive (``planning_eval.py``; facts in
``shared/research/distilldrive.md`` §Eval), which inherits ST-P3 / VAD / UniAD conventions.
Everything here is vectorised in numpy (float64) over samples, steps and agents; the per-sample
shapely loop in :mod:`dsdrive.evaluation.metrics.reference` is the slow reference it must agree with.

Frames and units: **ego frame of the current time** (x forward, y left, metres, radians);
the future grid is 6 steps at +0.5 ... +3.0 s (2 Hz). Samples are evaluated only when all 6
ground-truth future steps are valid (``ego_future_mask.all()``); callers filter with
:func:`complete_future_mask` and count the skips.

L2 (metres): per step, the Euclidean distance between the planned and the ground-truth x, y.

Collision: at each future step ``k`` the ego is the ego box of :mod:`dsdrive.constants`
(4.084 m x 1.85 m, the nuScenes ego length x width used by UniAD/VAD/SparseDrive) whose centre
lies :data:`~dsdrive.constants.EGO_CENTER_OFFSET_M` = 0.5 m ahead of the waypoint along the box
yaw (the waypoint is the rear-ish ego reference point, the LiDAR in the original code, so the
box centre sits ahead of it). The box yaw comes from finite differences of the *planned
positions*, not from a planner's own heading column (SparseDrive ``get_yaw``:
:func:`dsdrive.geometry.trajectory_yaw` with start yaw 0). It collides when it overlaps
(shapely ``intersects`` semantics: touching counts) the box of any agent valid at step ``k``,
placed at the agent's ground-truth future ``x, y, heading`` (``PlanningTargets.agent_futures``)
with its current length and width (``Agents.boxes`` columns 3, 4). A step counts as a planning
collision only if the ground-truth ego trajectory does *not* also collide at that step
(SparseDrive's ``box_coll & ~gt_box_coll``), which removes annotation artefacts such as agents
whose box overlaps the ego's own path.

Protocols (values at 1 s / 2 s / 3 s = steps 2 / 4 / 6, "avg" = mean of the three):

* ``stp3`` (ST-P3 / VAD / SparseDrive / DistillDrive): running mean of the per-step value over
  steps 1..k, for L2 and for collision alike.
* ``uniad`` (UniAD): the per-step value at step k itself. For collision this is the fraction of
  samples whose planned box collides *at step k* (not "any collision up to k", and not a
  maximum over earlier steps), exactly what UniAD's per-step ``obj_box_col`` row holds.

Collision rates are means over samples, reported in percent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dsdrive.constants import EGO_CENTER_OFFSET_M, EGO_LENGTH_M, EGO_WIDTH_M
from dsdrive.data.types import COMMANDS, FUTURE_STEPS, PlanningSample
from dsdrive.geometry import trajectory_yaw

HORIZON_STEPS = {"1s": 2, "2s": 4, "3s": 6}
"""Reported horizons -> number of 0.5 s steps."""
PROTOCOLS = ("stp3", "uniad")
"""ST-P3 (running mean over steps up to t) and UniAD (value at t)."""
PROTOCOL_TITLES = {
    "stp3": "ST-P3 protocol (running mean over steps up to t; VAD / SparseDrive / DistillDrive)",
    "uniad": "UniAD protocol (value at step t)",
}
"""Protocol -> table title."""


def complete_future_mask(samples: list[PlanningSample]) -> np.ndarray:
    """(B,) bool: True where all 6 ground-truth future steps are valid (evaluated samples)."""
    return np.array([bool(np.all(s.targets.ego_future_mask)) for s in samples], dtype=bool)


def ego_boxes(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ego box centres and yaws along a trajectory.

    Args:
        xy: (B, T, 2) ego-frame waypoints (m).

    Returns:
        centres (B, T, 2) (m) = waypoint + 0.5 m along the yaw, and yaws (B, T) (rad).
    """
    yaw = trajectory_yaw(xy)
    xy = np.asarray(xy, dtype=np.float64)[..., :2]
    centre = xy + EGO_CENTER_OFFSET_M * np.stack([np.cos(yaw), np.sin(yaw)], axis=-1)
    return centre, yaw


def boxes_overlap(
    centre_a: np.ndarray, yaw_a: np.ndarray, half_a: np.ndarray,
    centre_b: np.ndarray, yaw_b: np.ndarray, half_b: np.ndarray,
) -> np.ndarray:
    """Whether oriented rectangles overlap, by the separating axis theorem; fully broadcast.

    Args:
        centre_a, centre_b: (..., 2) box centres (m), one frame.
        yaw_a, yaw_b: (...) yaw of each box's length axis (rad).
        half_a, half_b: (..., 2) half length and half width (m).

    Returns:
        (...) bool, True when the boxes share at least one point (touching edges or corners
        count, matching shapely's ``intersects``). Two rectangles are disjoint iff their
        projections are disjoint on one of the four edge normals.
    """
    ca, sa = np.cos(yaw_a), np.sin(yaw_a)
    cb, sb = np.cos(yaw_b), np.sin(yaw_b)
    d = np.asarray(centre_b, np.float64) - np.asarray(centre_a, np.float64)
    dx, dy = d[..., 0], d[..., 1]
    la, wa = half_a[..., 0], half_a[..., 1]
    lb, wb = half_b[..., 0], half_b[..., 1]
    # cos of the relative yaw and sin of it: |u_a . u_b| = |v_a . v_b|, |u_a . v_b| = |v_a . u_b|
    cab = np.abs(ca * cb + sa * sb)
    sab = np.abs(ca * sb - sa * cb)
    rb_on_a = (lb * cab + wb * sab, lb * sab + wb * cab)  # b's radius on u_a, v_a
    ra_on_b = (la * cab + wa * sab, la * sab + wa * cab)  # a's radius on u_b, v_b
    separated = (
        (np.abs(dx * ca + dy * sa) > la + rb_on_a[0])
        | (np.abs(-dx * sa + dy * ca) > wa + rb_on_a[1])
        | (np.abs(dx * cb + dy * sb) > lb + ra_on_b[0])
        | (np.abs(-dx * sb + dy * cb) > wb + ra_on_b[1])
    )
    return ~separated


@dataclass
class FutureAgentBoxes:
    """Ground-truth agent boxes at the 6 future steps, padded over samples.

    Attributes:
        xy_yaw: (B, N, T, 3) float64 ego-frame ``x, y, heading`` (m, rad) at +0.5 ... +3.0 s.
        half_size: (B, N, 2) float64 half length, half width (m).
        mask: (B, N, T) bool, True where the agent exists at that step (padding is False).
    """

    xy_yaw: np.ndarray
    half_size: np.ndarray
    mask: np.ndarray

    @classmethod
    def from_samples(cls, samples: list[PlanningSample], steps: int = FUTURE_STEPS) -> "FutureAgentBoxes":
        """Pack ``targets.agent_futures[:, :steps]`` and ``inputs.agents.boxes[:, 3:5]`` of each sample.

        Raises:
            ValueError: a sample's agent futures and boxes disagree in count, naming the sample.
        """
        n_max = max([len(s.inputs.agents) for s in samples] + [0])
        b = len(samples)
        xy_yaw = np.zeros((b, n_max, steps, 3))
        half = np.zeros((b, n_max, 2))
        mask = np.zeros((b, n_max, steps), dtype=bool)
        for i, s in enumerate(samples):
            n = len(s.inputs.agents)
            fut, fmask = s.targets.agent_futures, s.targets.agent_future_masks
            if fut.shape[0] != n or fmask.shape[0] != n:
                raise ValueError(
                    f"sample {s.sample_id}: agent_futures has {fut.shape[0]} rows and agent_future_masks "
                    f"{fmask.shape[0]}, but agents.boxes has {n}"
                )
            if n == 0:
                continue
            xy_yaw[i, :n] = fut[:, :steps]
            half[i, :n] = 0.5 * np.asarray(s.inputs.agents.boxes[:, 3:5], np.float64)
            mask[i, :n] = fmask[:, :steps]
        return cls(xy_yaw, half, mask)


def per_step_l2(pred_xy: np.ndarray, gt_xy: np.ndarray) -> np.ndarray:
    """(B, T) per-step L2 (m) between planned and ground-truth ego-frame x, y ((B, T, >=2) each)."""
    pred = np.asarray(pred_xy, np.float64)[..., :2]
    gt = np.asarray(gt_xy, np.float64)[..., :2]
    if pred.shape != gt.shape:
        raise ValueError(f"per_step_l2: predictions {pred.shape} and ground truth {gt.shape} differ")
    return np.linalg.norm(pred - gt, axis=-1)


def per_step_box_collisions(xy: np.ndarray, agents: FutureAgentBoxes) -> np.ndarray:
    """(B, T) bool: the ego box along ``xy`` (B, T, 2) overlaps any valid agent box at that step."""
    centre, yaw = ego_boxes(xy)  # (B, T, 2), (B, T)
    if agents.xy_yaw.shape[1] == 0:
        return np.zeros(yaw.shape, dtype=bool)
    ego_half = np.array([EGO_LENGTH_M / 2.0, EGO_WIDTH_M / 2.0])
    hit = boxes_overlap(
        centre[:, None], yaw[:, None], ego_half,  # (B, 1, T, ...)
        agents.xy_yaw[..., :2], agents.xy_yaw[..., 2], agents.half_size[:, :, None, :],  # (B, N, T, ...)
    )
    return np.any(hit & agents.mask, axis=1)


@dataclass
class PerSampleMetrics:
    """Per-sample, per-step planning metrics of evaluated (complete-future) samples.

    Attributes:
        sample_ids: B sample ids.
        commands: B navigation commands (from :data:`dsdrive.data.types.COMMANDS`).
        l2: (B, 6) float64 per-step L2 (m).
        collision: (B, 6) bool planned-box collisions not shared by the ground truth.
        gt_collision: (B, 6) bool ground-truth ego box collisions (the excluded steps).
    """

    sample_ids: list[str]
    commands: list[str]
    l2: np.ndarray
    collision: np.ndarray
    gt_collision: np.ndarray = field(repr=False)

    def select(self, keep: np.ndarray) -> "PerSampleMetrics":
        """Subset by a (B,) bool mask."""
        idx = np.flatnonzero(keep)
        return PerSampleMetrics(
            [self.sample_ids[i] for i in idx], [self.commands[i] for i in idx],
            self.l2[idx], self.collision[idx], self.gt_collision[idx],
        )


def evaluate_trajectories(pred: np.ndarray, samples: list[PlanningSample]) -> PerSampleMetrics:
    """Per-step L2 and collision of planned trajectories against their samples' ground truth.

    Args:
        pred: (B, 6, >=2) ego-frame planned waypoints (m) at +0.5 ... +3.0 s, one per sample.
        samples: B samples, each with a complete ground-truth future.

    Returns:
        :class:`PerSampleMetrics` over the B samples.

    Raises:
        ValueError: shapes disagree, or a sample has an incomplete future (name given).
    """
    pred = np.asarray(pred, np.float64)
    if pred.ndim != 3 or pred.shape[0] != len(samples) or pred.shape[1] != FUTURE_STEPS or pred.shape[2] < 2:
        raise ValueError(f"evaluate_trajectories: expected ({len(samples)}, {FUTURE_STEPS}, >=2) predictions, got {pred.shape}")
    incomplete = [s.sample_id for s in samples if not np.all(s.targets.ego_future_mask)]
    if incomplete:
        raise ValueError(f"evaluate_trajectories: samples with incomplete ego_future_mask: {incomplete[:5]} ...")
    gt = np.stack([np.asarray(s.targets.ego_future, np.float64)[:, :2] for s in samples]) if samples else np.zeros((0, FUTURE_STEPS, 2))
    agents = FutureAgentBoxes.from_samples(samples)
    gt_coll = per_step_box_collisions(gt, agents) if samples else np.zeros((0, FUTURE_STEPS), bool)
    coll = per_step_box_collisions(pred[..., :2], agents) if samples else np.zeros((0, FUTURE_STEPS), bool)
    return PerSampleMetrics(
        sample_ids=[s.sample_id for s in samples],
        commands=[s.inputs.command for s in samples],
        l2=per_step_l2(pred, gt),
        collision=coll & ~gt_coll,
        gt_collision=gt_coll,
    )


def _at_horizons(per_step: np.ndarray, protocol: str) -> dict[str, float]:
    """Per-step values (T,) -> {"1s", "2s", "3s", "avg"} under a protocol."""
    if protocol == "stp3":
        vals = {h: float(np.mean(per_step[:k])) for h, k in HORIZON_STEPS.items()}
    elif protocol == "uniad":
        vals = {h: float(per_step[k - 1]) for h, k in HORIZON_STEPS.items()}
    else:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    vals["avg"] = float(np.mean(list(vals.values())))
    return vals


def summarize(metrics: PerSampleMetrics) -> dict:
    """Aggregate per-sample metrics into both protocols.

    Returns:
        ``{"num_samples": B, "stp3": {"L2": {...}, "collision": {...}}, "uniad": {...}}`` where
        each inner dict has keys ``1s, 2s, 3s, avg``; L2 in metres, collision in percent. With
        B = 0 the values are None (JSON null).
    """
    b = len(metrics.sample_ids)
    out: dict = {"num_samples": b}
    for protocol in PROTOCOLS:
        if b == 0:
            out[protocol] = {k: {h: None for h in (*HORIZON_STEPS, "avg")} for k in ("L2", "collision")}
            continue
        out[protocol] = {
            "L2": _at_horizons(metrics.l2.mean(axis=0), protocol),
            "collision": _at_horizons(100.0 * metrics.collision.mean(axis=0), protocol),
        }
    out["gt_collision_steps"] = int(metrics.gt_collision.sum())
    return out


def summarize_by_command(metrics: PerSampleMetrics) -> dict[str, dict]:
    """``{"ALL": summary, "LEFT": ..., "RIGHT": ..., "STRAIGHT": ...}`` (see :func:`summarize`)."""
    out = {"ALL": summarize(metrics)}
    commands = np.array(metrics.commands, dtype=object)
    for cmd in COMMANDS:
        out[cmd] = summarize(metrics.select(commands == cmd))
    return out
