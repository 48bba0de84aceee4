"""A kinematic bicycle model and an LQR tracker: how the PDM score turns a plan into driven states.

NAVSIM (Dauner et al., "NAVSIM: Data-Driven Non-Reactive Autonomous Vehicle Simulation and
Benchmarking", NeurIPS 2024 D&B) does not score a planner's waypoints directly: its PDM
simulator tracks them with nuPlan's LQR controller on a kinematic bicycle model at 10 Hz, and
scores the *driven* states. This module is our own implementation of that pipeline (written
from the model equations, not from nuPlan's code):

* **Reference** (:func:`reference_from_plan`): the plan's poses at t = 0 (the current pose),
  0.5, ..., T s joined by a cubic spline in time per coordinate whose start slope is the current
  velocity (the car cannot jump), natural at the end; sampled every ``REF_DT`` = 0.01 s for
  position, velocity, acceleration, arc length, heading (path tangent; the plan's own heading
  column where the reference speed is below ``REF_MIN_SPEED``) and curvature. nuPlan instead fits
  velocity and curvature profiles by penalised least squares; both smooth a 2 Hz plan.
* **Model** (:class:`KinematicBicycle`): rear-axle reference point, state ``x, y, yaw, v, a,
  steer``; inputs an acceleration command and a steering-rate command; first-order lags on
  acceleration (``accel_time_constant`` 0.2 s) and steering (0.05 s) and a steering limit of
  pi/3, as nuPlan's ``KinematicBicycleModel``; forward Euler at 10 Hz; speed never negative
  (no reversing). Wheelbase 2.588 m (the nuScenes Renault Zoe).
* **Tracker** (:class:`LQRTracker`), decoupled like nuPlan's: a longitudinal LQR on the
  along-path position error and the speed error (a double integrator, so it tracks the plan's
  timing, not only its speed; nuPlan's tracks speed only) with the reference acceleration as
  feed-forward; a lateral LQR on (cross-track error, heading error, steering error) of the
  bicycle linearised at the current speed (gain re-solved per speed, cached by 0.25 m/s), with
  the reference curvature's steering angle as feed-forward. Lateral errors are taken at the
  ego's projection on the reference path, the longitudinal error at the reference time.

Frames: one global metric frame (metres, rad counter-clockwise). Times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.linalg import solve_discrete_are

from dsdrive.geometry import wrap_angle

WHEELBASE_M = 2.588
"""Wheelbase (m) of the nuScenes ego (Renault Zoe)."""
REF_DT = 0.01
"""Sampling step (s) of the dense reference."""
REF_MIN_SPEED = 0.2
"""Below this reference speed (m/s) the reference heading is the plan's heading column."""


@dataclass
class Reference:
    """A dense reference trajectory (``REF_DT`` steps, R samples), global frame.

    Attributes:
        t: (R,) s. xy: (R, 2) m. vel: (R, 2) m/s. speed: (R,) m/s (signed along ``yaw``).
        accel: (R,) m/s^2 along the path. s: (R,) arc length (m). yaw: (R,) rad.
        curvature: (R,) 1/m (left positive).
    """

    t: np.ndarray
    xy: np.ndarray
    vel: np.ndarray
    speed: np.ndarray
    accel: np.ndarray
    s: np.ndarray
    yaw: np.ndarray
    curvature: np.ndarray

    def index_at(self, t: float) -> int:
        """Sample index at time ``t`` (held at the ends)."""
        return int(np.clip(round(t / REF_DT), 0, len(self.t) - 1))

    def project(self, xy: np.ndarray, start: int = 0, window: int = 150) -> int:
        """Index of the reference sample nearest to ``xy`` (2,) among ``start`` ... ``start + window``
        (a forward search window, so a path that passes near itself is not confused)."""
        lo, hi = max(start - 10, 0), min(start + window, len(self.t))
        d = np.linalg.norm(self.xy[lo:hi] - np.asarray(xy)[None, :2], axis=1)
        return lo + int(np.argmin(d))


def reference_from_plan(times: np.ndarray, xy: np.ndarray, heading: np.ndarray, v0: np.ndarray) -> Reference:
    """Build the dense reference (see the module docstring).

    Args:
        times: (K,) s, strictly increasing, ``times[0] = 0`` (the current pose).
        xy: (K, 2) poses (m, global frame); ``xy[0]`` is the current position.
        heading: (K,) rad; ``heading[0]`` is the current heading.
        v0: (2,) current velocity (m/s, global frame): the spline's start slope.

    Raises:
        ValueError: shapes disagree, non-finite values, or times not increasing from 0.
    """
    times, xy, heading = np.asarray(times, np.float64), np.asarray(xy, np.float64), np.asarray(heading, np.float64)
    if xy.shape != (len(times), 2) or heading.shape != times.shape or len(times) < 2:
        raise ValueError(f"reference_from_plan: times {times.shape}, xy {xy.shape}, heading {heading.shape} do not match")
    if not (np.isfinite(xy).all() and np.isfinite(heading).all() and np.isfinite(v0).all()):
        raise ValueError("reference_from_plan: non-finite plan or initial velocity")
    if abs(times[0]) > 1e-9 or np.any(np.diff(times) <= 0):
        raise ValueError(f"reference_from_plan: times must start at 0 and increase, got {times.tolist()}")
    spline = CubicSpline(times, xy, axis=0, bc_type=((1, np.asarray(v0, np.float64)), (2, np.zeros(2))))
    t = np.arange(0.0, times[-1] + 1e-9, REF_DT)
    p, v, a = spline(t), spline(t, 1), spline(t, 2)
    speed = np.linalg.norm(v, axis=1)
    plan_yaw = np.interp(t, times, np.unwrap(heading))
    yaw = np.where(speed >= REF_MIN_SPEED, np.arctan2(v[:, 1], v[:, 0]), plan_yaw)
    yaw = np.unwrap(yaw)
    tangent = np.stack([np.cos(yaw), np.sin(yaw)], 1)
    signed = np.einsum("ij,ij->i", v, tangent)
    acc = np.einsum("ij,ij->i", a, tangent)
    cross = v[:, 0] * a[:, 1] - v[:, 1] * a[:, 0]
    curvature = np.where(speed >= REF_MIN_SPEED, cross / np.maximum(speed, REF_MIN_SPEED) ** 3, 0.0)
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    return Reference(t, p, v, signed, acc, s, yaw, curvature)


@dataclass
class BicycleState:
    """Kinematic bicycle state (rear axle, global frame): ``x, y`` m, ``yaw`` rad, ``v`` m/s
    (>= 0), ``a`` m/s^2 (applied acceleration), ``steer`` rad (front-wheel angle, left positive)."""

    x: float
    y: float
    yaw: float
    v: float
    a: float = 0.0
    steer: float = 0.0

    def as_array(self) -> np.ndarray:
        """(6,) ``x, y, yaw, v, a, steer``."""
        return np.array([self.x, self.y, self.yaw, self.v, self.a, self.steer])


@dataclass
class KinematicBicycle:
    """nuPlan-style kinematic bicycle with actuator lags (see the module docstring).

    Attributes:
        wheelbase: m. max_steer: rad. accel_time_constant, steer_time_constant: s (first-order lags).
        accel_limits: (min, max) m/s^2 applied to the acceleration command.
    """

    wheelbase: float = WHEELBASE_M
    max_steer: float = np.pi / 3
    accel_time_constant: float = 0.2
    steer_time_constant: float = 0.05
    accel_limits: tuple[float, float] = (-10.0, 6.0)

    def step(self, st: BicycleState, accel_cmd: float, steer_rate_cmd: float, dt: float) -> BicycleState:
        """Propagate one step of ``dt`` s (forward Euler)."""
        accel_cmd = float(np.clip(accel_cmd, *self.accel_limits))
        a = st.a + dt / (dt + self.accel_time_constant) * (accel_cmd - st.a)
        steer_ideal = st.steer + steer_rate_cmd * dt
        steer = st.steer + dt / (dt + self.steer_time_constant) * (steer_ideal - st.steer)
        steer = float(np.clip(steer, -self.max_steer, self.max_steer))
        x = st.x + st.v * np.cos(st.yaw) * dt
        y = st.y + st.v * np.sin(st.yaw) * dt
        yaw = st.yaw + st.v * np.tan(st.steer) / self.wheelbase * dt
        v = max(st.v + a * dt, 0.0)
        return BicycleState(float(x), float(y), float(yaw), float(v), float(a), steer)


@dataclass
class LQRTracker:
    """Decoupled LQR trajectory tracker (see the module docstring).

    Attributes:
        q_lon: weights of (along-path position error m, speed error m/s). r_lon: acceleration weight.
        q_lat: weights of (cross-track error m, heading error rad, steering error rad).
        r_lat: steering-rate weight. dt: control period (s). wheelbase: m.
    """

    q_lon: tuple[float, float] = (2.0, 4.0)
    r_lon: float = 1.0
    q_lat: tuple[float, float, float] = (1.0, 10.0, 0.0)
    r_lat: float = 1.0
    dt: float = 0.1
    wheelbase: float = WHEELBASE_M

    def lon_gain(self) -> np.ndarray:
        """(2,) gain on (position error, speed error) of the longitudinal LQR."""
        dt = self.dt
        a = ((1.0, dt), (0.0, 1.0))
        b = ((0.5 * dt * dt,), (dt,))
        return _lqr_gain(a, b, tuple(self.q_lon), self.r_lon)

    def lat_gain(self, speed: float) -> np.ndarray:
        """(3,) gain on (cross-track, heading, steering) errors at ``speed`` (m/s, >= 0.5 used,
        rounded to 0.25 m/s so gains are cached)."""
        v, dt, wb = round(max(speed, 0.5) * 4) / 4, self.dt, self.wheelbase
        a = ((1.0, v * dt, 0.0), (0.0, 1.0, v / wb * dt), (0.0, 0.0, 1.0))
        b = ((0.0,), (0.0,), (dt,))
        return _lqr_gain(a, b, tuple(self.q_lat), self.r_lat)

    def control(self, ref: Reference, st: BicycleState, t: float, proj_hint: int = 0) -> tuple[float, float, int]:
        """Commands at time ``t`` (s from the plan start) for state ``st``.

        Returns:
            (acceleration m/s^2, steering rate rad/s, projection index for the next call).
        """
        k = ref.index_at(t)
        j = ref.project(np.array([st.x, st.y]), proj_hint)
        # --- longitudinal: along-path position and speed, at the reference time
        e_s = ref.s[j] - ref.s[k]
        tangent_j = np.array([np.cos(ref.yaw[j]), np.sin(ref.yaw[j])])
        e_s += float(np.dot(np.array([st.x, st.y]) - ref.xy[j], tangent_j))
        e_v = st.v - ref.speed[k]
        accel = ref.accel[k] - float(self.lon_gain() @ np.array([e_s, e_v]))
        # --- lateral: at the projection
        if ref.s[-1] < 0.5:  # a standing plan: hold the wheel straight
            return accel, -st.steer / max(self.dt, 1e-3), j
        normal = np.array([-np.sin(ref.yaw[j]), np.cos(ref.yaw[j])])
        e_y = float(np.dot(np.array([st.x, st.y]) - ref.xy[j], normal))
        e_yaw = float(wrap_angle(st.yaw - ref.yaw[j]))
        steer_ref = float(np.arctan(self.wheelbase * ref.curvature[j]))
        e_d = st.steer - steer_ref
        j_next = min(j + int(round(self.dt / REF_DT)), len(ref.t) - 1)
        steer_ref_rate = (float(np.arctan(self.wheelbase * ref.curvature[j_next])) - steer_ref) / self.dt
        steer_rate = steer_ref_rate - float(self.lat_gain(st.v) @ np.array([e_y, e_yaw, e_d]))
        return accel, steer_rate, j


@lru_cache(maxsize=4096)
def _lqr_gain(a: tuple, b: tuple, q: tuple, r: float) -> np.ndarray:
    """Infinite-horizon discrete LQR gain ``K`` (u = -K x) of (A, B, diag(q), r), cached."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    qm, rm = np.diag(np.asarray(q, np.float64)) + 1e-9 * np.eye(len(q)), np.array([[float(r)]])
    p = solve_discrete_are(a, b, qm, rm)
    k = np.linalg.solve(rm + b.T @ p @ b, b.T @ p @ a).reshape(-1)
    k.setflags(write=False)
    return k


def track(ref: Reference, initial: BicycleState, steps: int, dt: float = 0.1,
          model: KinematicBicycle | None = None, tracker: LQRTracker | None = None) -> np.ndarray:
    """Drive the bicycle along the reference for ``steps`` steps of ``dt``.

    Args:
        ref: the reference (:func:`reference_from_plan`).
        initial: the state at t = 0.
        steps: number of steps (30 = 3 s at 10 Hz).

    Returns:
        (steps + 1, 6) states ``x, y, yaw, v, a, steer`` at t = 0, dt, ..., steps * dt.
    """
    model = model or KinematicBicycle()
    tracker = tracker or LQRTracker(dt=dt, wheelbase=model.wheelbase)
    st, hint = initial, 0
    out = [st.as_array()]
    for i in range(steps):
        accel, steer_rate, hint = tracker.control(ref, st, i * dt, hint)
        st = model.step(st, accel, steer_rate, dt)
        out.append(st.as_array())
    return np.asarray(out)
