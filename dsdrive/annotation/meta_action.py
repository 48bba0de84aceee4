"""Meta-actions from a trajectory: the GPT-Driver / Agent-Driver behaviour x speed vocabulary.

A meta-action (see :class:`dsdrive.annotation.schema.MetaAction`) names what a trajectory *does*:
a path behaviour (STOP, MOVE FORWARD, TURN LEFT/RIGHT, CHANGE LANE TO LEFT/RIGHT) and a speed
class (CONSTANT, (QUICK) DECELERATION, DECELERATION TO ZERO, (QUICK) ACCELERATION). GPT-Driver
(arXiv 2310.01415) and Agent-Driver (arXiv 2311.10813) derive it from the ground-truth future by
rules; Senna (arXiv 2410.22313) publishes its rules (STOP if max speed < 2 m/s, +-3 m/s speed
change, a turn vs a lane change by lateral offset > 4 m and heading change > 5 deg). The rules
here adapt those to the nuScenes planning horizon (6 waypoints at 0.5 s, 3 s).

The same pure function labels the annotator's ground-truth future (rule annotator) and checks the
student's reasoning/plan consistency (the meta-action its own waypoints imply), so it only reads
positions: headings are estimated from the waypoints, never read from a third column, and a
(6, 2) student trajectory and a (6, 3) ground-truth trajectory are judged alike.

Thresholds (module constants, all documented below):

* **STOP**: the path travels less than :data:`STOP_PATH_LENGTH_M` = 0.5 m over the horizon
  (mean speed < 0.17 m/s over 3 s). Its speed class is DECELERATION TO ZERO when the ego moves
  now (current speed >= :data:`MOVING_SPEED_MPS` = 1 m/s), else CONSTANT.
* **Speed class** (not STOP), from the mean acceleration
  ``a = (v_late - v_now) / (t_late - t_now)`` where ``v_late`` is the mean speed over the last
  1 s of the horizon (centred at 2.5 s for 6 waypoints) and ``v_now`` the current speed:
  DECELERATION TO ZERO if the speed over the last 0.5 s is < :data:`ZERO_SPEED_MPS` = 0.5 m/s
  while ``v_now`` >= 1 m/s; else CONSTANT if ``|a| <=`` :data:`CONSTANT_ACCEL_MPS2` = 0.5 m/s^2;
  (DE|AC)CELERATION up to :data:`QUICK_ACCEL_MPS2` = 2 m/s^2; QUICK beyond.
* **Path** (not STOP), from the final lateral offset ``y_end`` (m, left positive) and the
  heading change ``dpsi`` (deg, counter-clockwise positive) of the last chord >= 1 m:
  TURN if ``|dpsi| >= 20`` deg, or ``|y_end| >= 4`` m with ``|dpsi| >= 5`` deg (Senna), or
  ``|y_end| >= 2`` m with ``|dpsi| >= 10`` deg (side from ``dpsi``, or from ``y_end`` if the two
  disagree on a mild curve); else CHANGE LANE if ``|y_end| >= 2`` m (the command threshold
  of :data:`dsdrive.data.types.COMMAND_LATERAL_THRESHOLD_M`, about half a 3.5 m lane plus slack)
  with the small final heading change left by the turn rules; else MOVE FORWARD.

Limitation: without the map a gentle curve with 2-4 m lateral offset and < 10 deg heading
change reads as a lane change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsdrive.annotation.schema import MetaAction
from dsdrive.data.types import STEP_SECONDS

STOP_PATH_LENGTH_M = 0.5
"""Path length (m) over the horizon below which the trajectory is a STOP."""
MOVING_SPEED_MPS = 1.0
"""Current speed (m/s) at or above which the ego counts as moving (DECELERATION TO ZERO)."""
ZERO_SPEED_MPS = 0.5
"""Final speed (m/s) below which a moving ego decelerates to zero."""
CONSTANT_ACCEL_MPS2 = 0.5
"""Mean |acceleration| (m/s^2) up to which the speed counts as CONSTANT."""
QUICK_ACCEL_MPS2 = 2.0
"""Mean |acceleration| (m/s^2) beyond which the change is QUICK."""
TURN_HEADING_DEG = 20.0
"""Heading change (deg) that alone makes a turn."""
TURN_LATERAL_M = 4.0
"""Lateral offset (m) that makes a turn together with :data:`TURN_MIN_HEADING_DEG` (Senna)."""
TURN_MIN_HEADING_DEG = 5.0
"""Heading change (deg) that, with >= 4 m lateral offset, makes a turn (Senna)."""
LANE_CHANGE_LATERAL_M = 2.0
"""Lateral offset (m) from which the path leaves the lane (a lane change or a turn)."""
LANE_CHANGE_MAX_HEADING_DEG = 10.0
"""Heading change (deg) at or above which a 2-4 m lateral offset is a turn, not a lane change."""
HEADING_CHORD_M = 1.0
"""Minimum chord length (m) used to estimate the final heading from positions. Deliberately not
the per-waypoint yaw of :func:`dsdrive.geometry.trajectory_yaw`, whose last step follows the last
0.5 s of motion: on the 275 complete-future nuScenes-mini samples it would turn 4 stopping
trajectories (millimetre backward jitter at the stop) into TURN labels."""


@dataclass(frozen=True)
class TrajectoryFeatures:
    """Kinematic features of a trajectory, the inputs of the meta-action rules.

    Attributes:
        v_now: current speed (m/s).
        v_late: mean speed over the last 1 s of the horizon (m/s).
        v_final: mean speed over the last 0.5 s (m/s).
        accel: mean acceleration ``(v_late - v_now) / (t_late - t_now)`` (m/s^2).
        path_length: travelled distance along the waypoints from the origin (m).
        lateral: final lateral offset y (m, ego frame, left positive).
        heading_change_deg: final heading minus current heading (deg, CCW positive).
        horizon: time of the last valid waypoint (s).
    """

    v_now: float
    v_late: float
    v_final: float
    accel: float
    path_length: float
    lateral: float
    heading_change_deg: float
    horizon: float


def _valid_prefix(waypoints: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    wp = np.asarray(waypoints, dtype=np.float64)
    if wp.ndim != 2 or wp.shape[1] not in (2, 3) or wp.shape[0] < 1:
        raise ValueError(f"waypoints: expected shape (T, 2) or (T, 3) with T >= 1, got {wp.shape}")
    wp = wp[:, :2]
    if mask is not None:
        m = np.asarray(mask, dtype=bool).reshape(-1)
        if m.shape[0] != wp.shape[0]:
            raise ValueError(f"mask: expected shape ({wp.shape[0]},), got {m.shape}")
        n = int(np.argmin(m)) if not m.all() else len(m)
        wp = wp[:n]
        if n == 0:
            raise ValueError("mask: no valid waypoint (mask[0] is False)")
    if not np.isfinite(wp).all():
        raise ValueError(f"waypoints: non-finite value in {wp.tolist()}")
    return wp


def speed_from_history(history: np.ndarray, history_mask: np.ndarray | None = None) -> float | None:
    """Current speed (m/s) estimated from the last history pose (-0.5 s) to the origin.

    Args:
        history: (H, 2|3) ego-frame poses at -H*0.5 ... -0.5 s (x, y[, heading]).
        history_mask: (H,) bool; the last pose must be valid.

    Returns:
        The speed, or None when the last pose is masked or non-finite.
    """
    h = np.asarray(history, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] == 0:
        return None
    if history_mask is not None and not bool(np.asarray(history_mask, bool).reshape(-1)[-1]):
        return None
    last = h[-1, :2]
    if not np.isfinite(last).all():
        return None
    return float(np.linalg.norm(last)) / STEP_SECONDS


def trajectory_features(
    waypoints: np.ndarray,
    current_speed: float | None,
    history: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    dt: float = STEP_SECONDS,
) -> TrajectoryFeatures:
    """Kinematic features of an ego-frame trajectory (see the module docstring).

    Args:
        waypoints: (T, 2) or (T, 3) ego-frame positions at dt, 2*dt, ... (m); a third column
            (heading) is ignored.
        current_speed: current speed (m/s); None or NaN -> estimated from ``history``, else
            from the first waypoint (mean speed over the first step).
        history: optional (H, 2|3) ego-frame history poses, the last one at -dt.
        mask: optional (T,) bool; only the valid prefix (up to the first False) is used.
        dt: waypoint spacing (s).

    Raises:
        ValueError: wrong shape, no valid waypoint, or non-finite values (the message names them).
    """
    wp = _valid_prefix(waypoints, mask)
    pts = np.vstack([np.zeros((1, 2)), wp])  # (T+1, 2) with the origin at t = 0
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)  # (T,)
    seg_speed = seg / dt
    v_now = None if current_speed is None or not np.isfinite(current_speed) else float(current_speed)
    t_now = 0.0
    if v_now is None and history is not None:
        v_now = speed_from_history(history)
    if v_now is None:
        v_now, t_now = float(seg_speed[0]), 0.5 * dt
    n = len(wp)
    k = min(2, n)  # last 1 s (two steps) when available
    v_late = float(seg[-k:].sum() / (k * dt))
    t_late = (n - 0.5 * k) * dt
    accel = (v_late - v_now) / max(t_late - t_now, dt)
    # final heading from the last chord of at least HEADING_CHORD_M
    chord = pts[-1] - pts[:-1]
    long_enough = np.linalg.norm(chord, axis=1) >= HEADING_CHORD_M
    if long_enough.any():
        c = chord[np.nonzero(long_enough)[0][-1]]
        dpsi = float(np.degrees(np.arctan2(c[1], c[0])))
    else:
        dpsi = 0.0
    return TrajectoryFeatures(
        v_now=v_now,
        v_late=v_late,
        v_final=float(seg_speed[-1]),
        accel=float(accel),
        path_length=float(seg.sum()),
        lateral=float(wp[-1, 1]),
        heading_change_deg=dpsi,
        horizon=n * dt,
    )


def speed_class(f: TrajectoryFeatures) -> str:
    """Speed part of the meta-action from features (thresholds in the module docstring)."""
    if f.v_final < ZERO_SPEED_MPS and f.v_now >= MOVING_SPEED_MPS:
        return "DECELERATION TO ZERO"
    a = f.accel
    if abs(a) <= CONSTANT_ACCEL_MPS2:
        return "CONSTANT"
    if a > 0:
        return "QUICK ACCELERATION" if a > QUICK_ACCEL_MPS2 else "ACCELERATION"
    return "QUICK DECELERATION" if a < -QUICK_ACCEL_MPS2 else "DECELERATION"


def path_behaviour(f: TrajectoryFeatures) -> str:
    """Path part of the meta-action (not STOP) from features (thresholds in the module docstring)."""
    y, h = f.lateral, f.heading_change_deg
    ay, ah = abs(y), abs(h)
    is_turn = (
        ah >= TURN_HEADING_DEG
        or (ay >= TURN_LATERAL_M and ah >= TURN_MIN_HEADING_DEG)
        or (ay >= LANE_CHANGE_LATERAL_M and ah >= LANE_CHANGE_MAX_HEADING_DEG)
    )
    if is_turn:
        left = h > 0 if ah >= TURN_HEADING_DEG or np.sign(h) == np.sign(y) else y > 0
        return "TURN LEFT" if left else "TURN RIGHT"
    if ay >= LANE_CHANGE_LATERAL_M:
        return "CHANGE LANE TO LEFT" if y > 0 else "CHANGE LANE TO RIGHT"
    return "MOVE FORWARD"


def meta_action_from_features(f: TrajectoryFeatures) -> MetaAction:
    """Meta-action from :class:`TrajectoryFeatures` (rules in the module docstring)."""
    if f.path_length < STOP_PATH_LENGTH_M:
        speed = "DECELERATION TO ZERO" if f.v_now >= MOVING_SPEED_MPS else "CONSTANT"
        return MetaAction(behaviour="STOP", speed=speed)
    return MetaAction(behaviour=path_behaviour(f), speed=speed_class(f))


def meta_action_from_trajectory(
    waypoints: np.ndarray,
    current_speed: float | None,
    history: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> MetaAction:
    """The GPT-Driver / Agent-Driver meta-action a trajectory implies. Pure, deterministic.

    Args:
        waypoints: (6, 2) or (6, 3) ego-frame waypoints at +0.5 ... +3.0 s (x forward, y left,
            metres; a heading column is ignored). Fewer rows are accepted (a shorter horizon).
        current_speed: current ego speed (m/s); None/NaN -> from ``history`` or the first step.
        history: optional (4, 2|3) ego-frame history at -2.0 ... -0.5 s.
        mask: optional (6,) bool validity; the valid prefix is used.

    Returns:
        :class:`dsdrive.annotation.schema.MetaAction` (behaviour x speed).

    Raises:
        ValueError: bad shape, no valid waypoint or non-finite input.
    """
    return meta_action_from_features(trajectory_features(waypoints, current_speed, history, mask))
