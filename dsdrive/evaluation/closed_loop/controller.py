"""Waypoints -> MetaDrive actions: pure pursuit (steering) + PID (throttle/brake) at 10 Hz.

A planner replans at 2 Hz and returns (6, 3) ego-frame waypoints at +0.5 ... +3.0 s; the rollout
turns them into the simulator frame once (:meth:`WaypointController.set_plan`) and, at every
simulator step (0.1 s), the controller tracks them:

* **Steering: pure pursuit** (Coulter, "Implementation of the Pure Pursuit Path Tracking
  Algorithm", CMU-RI-TR-92-01, 1992): a look-ahead point at distance
  ``L_d = clip(k_v * v + L_0, L_min, L_max)`` along the planned path (starting at the ego's
  projection on it), curvature ``kappa = 2 y / L_d^2`` with ``y`` its lateral offset in the ego
  frame, front-wheel angle ``delta = atan(wheelbase * kappa)``; MetaDrive's action is
  ``delta / max_steering`` in [-1, 1] (positive = left, counter-clockwise).
* **Speed: PID** on the reference speed of the plan at ``tau + preview`` (the speed of the
  piecewise-linear plan between its 0.5 s waypoints, the current position prepended at t=0);
  output in MetaDrive's throttle/brake [-1, 1] (negative = brake). When the plan's speed is
  below ``stop_speed`` the controller brakes fully (a plan that stops must stop the car).

The same controller drives every planner, so differences between planners are the planners'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dsdrive.geometry import ego_to_global, global_to_ego
from dsdrive.data.types import FUTURE_STEPS, STEP_SECONDS


@dataclass
class ControllerConfig:
    """Gains and limits (SI units; defaults tuned on MetaDrive's DefaultVehicle at 10 Hz)."""

    wheelbase: float = 2.46888  # m, DefaultVehicle FRONT_WHEELBASE + REAR_WHEELBASE
    max_steering_deg: float = 40.0  # MetaDrive DefaultVehicle max_steering
    lookahead_gain: float = 0.6  # s
    lookahead_min: float = 3.0  # m
    lookahead_max: float = 15.0  # m
    kp: float = 0.5
    ki: float = 0.05
    kd: float = 0.02
    preview: float = 0.3  # s, look ahead in the speed profile
    stop_speed: float = 0.3  # m/s
    dt: float = 0.1  # s per control step


@dataclass
class WaypointController:
    """Tracks the latest plan; :meth:`act` returns ``[steering, throttle_brake]``."""

    config: ControllerConfig = field(default_factory=ControllerConfig)
    _path: np.ndarray | None = None  # (7, 2) simulator frame, t = 0, 0.5, ..., 3.0 s
    _t_plan: float = 0.0
    _integral: float = 0.0
    _prev_err: float | None = None

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
        self._t_plan = t_now

    def reference_speed(self, t_now: float) -> float:
        """Plan speed (m/s) at ``t_now + preview`` (0 beyond +3 s)."""
        if self._path is None:
            return 0.0
        tau = t_now - self._t_plan + self.config.preview
        seg = np.linalg.norm(np.diff(self._path, axis=0), axis=1) / STEP_SECONDS
        k = int(np.clip(tau // STEP_SECONDS, 0, len(seg) - 1))
        return float(seg[k])

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
        # --- speed (PID)
        err = v_ref - speed
        self._integral = float(np.clip(self._integral + err * c.dt, -5.0, 5.0))
        deriv = 0.0 if self._prev_err is None else (err - self._prev_err) / c.dt
        self._prev_err = err
        throttle = c.kp * err + c.ki * self._integral + c.kd * deriv
        if v_ref < c.stop_speed:
            throttle = -1.0
            self._integral = 0.0
        # --- steering (pure pursuit)
        local = global_to_ego(self._path, ego_xy, ego_yaw)
        path_len = np.linalg.norm(np.diff(self._path, axis=0), axis=1).sum()
        steer = 0.0
        if path_len > 0.5:
            ld = float(np.clip(c.lookahead_gain * max(speed, v_ref) + c.lookahead_min, c.lookahead_min, c.lookahead_max))
            target = _lookahead_point(local, ld)
            ld_eff = max(float(np.hypot(*target)), 1e-3)
            kappa = 2.0 * target[1] / ld_eff**2
            delta = np.arctan(c.wheelbase * kappa)
            steer = float(delta / np.deg2rad(c.max_steering_deg))
        return np.array([np.clip(steer, -1.0, 1.0), np.clip(throttle, -1.0, 1.0)])


def _lookahead_point(local_path: np.ndarray, ld: float) -> np.ndarray:
    """Point of a path (P, 2), ego frame, at arc length ``ld`` past the ego's projection on it;
    extrapolates the last segment when the path is shorter."""
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
    # extend along the last non-degenerate segment
    nz = np.flatnonzero(seg_len > 1e-6)
    if len(nz) == 0:
        return local_path[-1]
    i = nz[-1]
    return local_path[-1] + seg[i] / seg_len[i] * (s - cum[-1])
