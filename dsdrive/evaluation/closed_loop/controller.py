"""Waypoints -> MetaDrive actions: pure pursuit (steering) + PID on the plan's timing (throttle/brake) at 10 Hz.

A planner replans at 2 Hz and returns (6, 3) ego-frame waypoints at +0.5 ... +3.0 s; the rollout
turns them into the simulator frame once (:meth:`WaypointController.set_plan`) and, at every
simulator step (0.1 s), the controller tracks them:

* **Steering: pure pursuit** (Coulter, "Implementation of the Pure Pursuit Path Tracking
  Algorithm", CMU-RI-TR-92-01, 1992): a look-ahead point at distance
  ``L_d = clip(k_v * v + L_0, L_min, L_max)`` along the planned path (starting at the ego's
  projection on it), curvature ``kappa = 2 y / L_d^2`` with ``y`` its lateral offset in the ego
  frame, front-wheel angle ``delta = atan(wheelbase * kappa)``; MetaDrive's action is
  ``delta / max_steering`` in [-1, 1] (positive = left, counter-clockwise).
* **Speed: feedback on the plan's timing.** The plan is a time-parameterised path: its arc
  length at t = 0 (the ego), 0.5, ..., 3.0 s is joined by a monotone cubic (PCHIP, Fritsch &
  Carlson 1980, so a plan never asks to reverse), giving ``s_ref(t)`` and ``v_ref(t)``. The
  desired acceleration is ``a = k_v (v_ref(t + preview) - v) + k_s (s_ref(t) - s_ego) + k_i
  integral`` with ``s_ego`` the ego's projection on the planned path (a critically damped
  double-integrator loop, ``k_s = w^2``, ``k_v = 2 w``; the integral removes rolling-resistance
  bias). When the plan *stands* -- its speed stays below ``stop_speed`` over the next
  ``stop_window`` (1 s) -- the controller brakes at least ``stop_decel`` (a plan that stops must
  stop the car) and holds the brake at rest. A plan that pulls away gently from rest (an IDM ramp
  from 0.1 m/s) is below ``stop_speed`` for its first few tenths of a second only; braking it then,
  as the controller did while it read the speed at ``t + preview`` alone, kept a standing ego
  standing for ever, since every replanned ramp started again from rest.
* **Actuator model**: MetaDrive's throttle/brake action is linear in acceleration, but with very
  different slopes (measured on ``DefaultVehicle``, MetaDrive 0.4.x, at 3-14 m/s: +2.76 m/s^2 per
  unit throttle, -16.26 m/s^2 per unit brake, -0.36 m/s^2 at exactly 0); the desired acceleration
  is divided by the slope of its sign. (A plain PID on the action overshoots into hard braking
  every replanning period: a 1 m/s error gave 8 m/s^2 of braking.)

The same controller drives every planner, so differences between planners are the planners'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import PchipInterpolator

from dsdrive.geometry import ego_to_global, global_to_ego
from dsdrive.data.types import FUTURE_STEPS, STEP_SECONDS


MIN_DIRECTION_SEGMENT_M = 0.25
"""A plan segment shorter than this (m) is position jitter: it gives no direction to steer along."""


@dataclass
class ControllerConfig:
    """Gains and limits (SI units; defaults tuned on MetaDrive's DefaultVehicle at 10 Hz)."""

    wheelbase: float = 2.46888  # m, DefaultVehicle FRONT_WHEELBASE + REAR_WHEELBASE
    max_steering_deg: float = 40.0  # MetaDrive DefaultVehicle max_steering
    lookahead_gain: float = 0.6  # s
    lookahead_min: float = 3.0  # m
    lookahead_max: float = 15.0  # m
    omega: float = 1.2  # rad/s, bandwidth of the longitudinal loop (k_s = omega^2, k_v = 2 omega)
    ki: float = 0.3  # 1/s^2, integral of the speed error
    preview: float = 0.2  # s, look ahead in the speed profile
    stop_speed: float = 0.3  # m/s
    stop_decel: float = 4.0  # m/s^2, least braking while the plan stands
    stop_window: float = 1.0  # s, the plan stands when its speed stays below stop_speed this long (from t + preview)
    accel_per_throttle: float = 2.76  # m/s^2 per unit of MetaDrive throttle
    decel_per_brake: float = 16.26  # m/s^2 per unit of MetaDrive brake
    dt: float = 0.1  # s per control step


@dataclass
class WaypointController:
    """Tracks the latest plan; :meth:`act` returns ``[steering, throttle_brake]``."""

    config: ControllerConfig = field(default_factory=ControllerConfig)
    _path: np.ndarray | None = None  # (7, 2) simulator frame, t = 0, 0.5, ..., 3.0 s
    _s_knots: np.ndarray | None = None  # (7,) arc length of the path's vertices
    _profile: PchipInterpolator | None = None  # s_ref(t)
    _t_plan: float = 0.0
    _integral: float = 0.0

    def set_plan(self, waypoints_ego: np.ndarray, ego_xy: np.ndarray, ego_yaw: float, t_now: float) -> None:
        """Adopt a new plan.

        Args:
            waypoints_ego: (6, 2+) ego-frame waypoints (x forward, y left, m) at +0.5 ... +3.0 s.
            ego_xy, ego_yaw: the ego pose at planning time (simulator frame, m, rad).
            t_now: simulator time of the plan (s).

        Raises:
            ValueError: wrong shape or non-finite values.
        """
        wp = np.asarray(waypoints_ego, np.float64)
        if wp.ndim != 2 or wp.shape[0] != FUTURE_STEPS or wp.shape[1] < 2 or not np.isfinite(wp[:, :2]).all():
            raise ValueError(f"controller: expected finite ({FUTURE_STEPS}, 2+) waypoints, got shape {wp.shape}")
        pts = np.vstack([[0.0, 0.0], wp[:, :2]])
        self._path = ego_to_global(pts, ego_xy, ego_yaw)
        self._s_knots = np.concatenate([[0.0], np.cumsum(forward_lengths(pts))])
        self._profile = PchipInterpolator(STEP_SECONDS * np.arange(FUTURE_STEPS + 1), self._s_knots)
        self._t_plan = t_now

    def reference_speed(self, t_now: float) -> float:
        """Plan speed (m/s) at ``t_now + preview`` (0 beyond +3 s, or without a plan)."""
        if self._profile is None:
            return 0.0
        tau = t_now - self._t_plan + self.config.preview
        if tau >= FUTURE_STEPS * STEP_SECONDS:
            return 0.0
        return float(max(self._profile(max(tau, 0.0), 1), 0.0))

    def plan_stands(self, t_now: float) -> bool:
        """True when the plan's speed stays below ``stop_speed`` from ``t_now + preview`` over
        ``stop_window`` (sampled every ``dt``; no plan: True)."""
        c = self.config
        n = max(int(round(c.stop_window / c.dt)), 0)
        return max(self.reference_speed(t_now + k * c.dt) for k in range(n + 1)) < c.stop_speed

    def reference_progress(self, t_now: float) -> float:
        """Plan arc length (m) at ``t_now`` (held at the plan's end)."""
        tau = float(np.clip(t_now - self._t_plan, 0.0, FUTURE_STEPS * STEP_SECONDS))
        return float(self._profile(tau))

    def throttle_for(self, accel: float) -> float:
        """MetaDrive throttle/brake in [-1, 1] for a desired acceleration (m/s^2) (see the module docstring)."""
        c = self.config
        u = accel / c.accel_per_throttle if accel >= 0 else accel / c.decel_per_brake
        return float(np.clip(u, -1.0, 1.0))

    def act(self, ego_xy: np.ndarray, ego_yaw: float, speed: float, t_now: float) -> np.ndarray:
        """One control step.

        Args:
            ego_xy, ego_yaw: current ego pose (simulator frame); speed: current speed (m/s).
            t_now: simulator time (s).

        Returns:
            (2,) float ``[steering, throttle_brake]`` in [-1, 1] (MetaDrive's action space).
        """
        c = self.config
        if self._path is None:
            return np.array([0.0, -1.0])
        v_ref = self.reference_speed(t_now)
        local = global_to_ego(self._path, ego_xy, ego_yaw)
        s_ego = _progress_on(local, self._s_knots)
        # --- speed: feedback on the plan's timing
        err_v = v_ref - speed
        err_s = self.reference_progress(t_now) - s_ego
        self._integral = float(np.clip(self._integral + err_v * c.dt, -3.0, 3.0))
        accel = 2.0 * c.omega * err_v + c.omega**2 * err_s + c.ki * self._integral
        if self.plan_stands(t_now):
            self._integral = 0.0
            accel = min(accel, -c.stop_decel) if speed > c.stop_speed else -c.stop_decel
        throttle = self.throttle_for(accel)
        # --- steering (pure pursuit)
        steer = 0.0
        if self._s_knots[-1] > 0.5:
            ld = float(np.clip(c.lookahead_gain * max(speed, v_ref) + c.lookahead_min, c.lookahead_min, c.lookahead_max))
            target = _lookahead_point(local, ld)
            if target is not None and target[0] > 0.0:  # never steer towards a point behind the car
                ld_eff = max(float(np.hypot(*target)), 1e-3)
                kappa = 2.0 * target[1] / ld_eff**2
                delta = np.arctan(c.wheelbase * kappa)
                steer = float(delta / np.deg2rad(c.max_steering_deg))
        return np.array([np.clip(steer, -1.0, 1.0), throttle])


def forward_lengths(local_path: np.ndarray) -> np.ndarray:
    """(P - 1,) segment lengths (m) of a path (P, 2) in the ego frame of its first point, with
    segments that turn back by more than 90 deg from the direction travelled so far (initially
    the ego's heading, +x) counted as 0: the car cannot reverse, so a waypoint behind it (e.g.
    the log when the ego is ahead of it) means "wait", not "drive back"."""
    seg = np.diff(local_path, axis=0)
    n = np.linalg.norm(seg, axis=1)
    out, heading = np.zeros(len(seg)), np.array([1.0, 0.0])
    for i, (d, length) in enumerate(zip(seg, n)):
        if length < 1e-9 or d @ heading < 0.0:
            continue
        out[i] = length
        if length >= MIN_DIRECTION_SEGMENT_M:
            heading = d / length
    return out


def _progress_on(local_path: np.ndarray, cum: np.ndarray) -> float:
    """Arc length (m) of the ego's (the origin's) projection on a path (P, 2) in its ego frame."""
    seg = np.diff(local_path, axis=0)
    n2 = (seg * seg).sum(1)
    u = np.clip(-(local_path[:-1] * seg).sum(1) / np.maximum(n2, 1e-12), 0.0, 1.0)
    d = np.linalg.norm(local_path[:-1] + u[:, None] * seg, axis=1)
    d = np.where(n2 < 1e-12, np.inf, d)
    if not np.isfinite(d).any():
        return 0.0
    i = int(np.argmin(d))
    return float(cum[i] + u[i] * np.sqrt(n2[i]))


def _lookahead_point(local_path: np.ndarray, ld: float) -> np.ndarray | None:
    """Point of a path (P, 2), ego frame, at arc length ``ld`` past the ego's projection on it;
    past the path's end, extrapolated along its last segment of at least
    :data:`MIN_DIRECTION_SEGMENT_M` (shorter ones are position jitter of a standing plan, with no
    direction); None when the path has no such segment."""
    seg = np.diff(local_path, axis=0)
    seg_len = np.linalg.norm(seg, axis=1)
    # projection of the origin (the ego) on each segment
    best, best_s, cum = np.inf, 0.0, np.concatenate([[0.0], np.cumsum(seg_len)])
    for i, (p, d, n) in enumerate(zip(local_path[:-1], seg, seg_len)):
        if n < 1e-6:
            continue
        u = float(np.clip(-(p @ d) / (n * n), 0.0, 1.0))
        dist = float(np.linalg.norm(p + u * d))
        if dist < best:
            best, best_s = dist, cum[i] + u * n
    s = best_s + ld
    if s <= cum[-1]:
        return np.array([np.interp(s, cum, local_path[:, 0]), np.interp(s, cum, local_path[:, 1])])
    # extend along the last segment long enough to have a direction
    nz = np.flatnonzero(seg_len >= MIN_DIRECTION_SEGMENT_M)
    if len(nz) == 0:
        return None
    i = nz[-1]
    return local_path[-1] + seg[i] / seg_len[i] * (s - cum[-1])
