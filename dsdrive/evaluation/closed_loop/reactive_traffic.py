"""Reactive traffic for the closed loop: logged vehicles that brake for the ego (IDM on logged paths).

MetaDrive's own ``reactive_traffic`` switch hands a vehicle to its ``TrajectoryIDMPolicy`` only if
it spawns behind the ego, and then drives it at a fixed 40 km/h target speed along its logged
path, so nearly every reactive row differs from replay for reasons that have nothing to do with
the ego, while a vehicle that spawns ahead of or beside the ego never reacts. This module instead
keeps every vehicle on its log *unless the ego (or a vehicle that already left its log) is in
its way*, so reactive rows differ from replay only where interaction happens:

* **Who reacts**: every logged ``VEHICLE`` track that moves (its valid positions span more than
  :data:`MIN_PATH_M`); pedestrians, cyclists, parked vehicles and static objects are replayed.
* **Path and clock**: a reactive vehicle keeps its logged path (positions and headings at its
  valid steps, parametrised by arc length ``s``); on schedule its ``s`` at step k is the logged
  ``s_log(k)`` (= replay).
* **Leaders**: the ego, and any reactive vehicle that is behind its own log (it braked). A
  candidate leads when its centre projects ahead on the follower's remaining path within
  ``(w_follower + w_leader) / 2 + LATERAL_MARGIN_M`` of it; the gap is the distance along the
  path minus half of both lengths. Vehicles following their logs do not react to each other
  (those interactions are in the log already).
* **IDM** (Treiber, Hennecke & Helbing, "Congested traffic states in empirical observations and
  microscopic simulations", Phys. Rev. E 62, 2000): ``a = a_max [1 - (v / v0)^4 - (s* / gap)^2]``,
  ``s* = s0 + max(0, v T + v dv / (2 sqrt(a_max b)))``, ``dv = v - v_leader`` (along the path),
  ``v0`` = the logged speed now (at least 1 m/s). Each step the vehicle takes the smaller of
  (a) the speed that puts it back on its logged place (this is replay when on schedule; when
  behind, at most ``a_max`` more than now and :data:`CATCH_UP_MPS` above the logged speed) and (b) the IDM speed, but (b) only while following its log would
  bring it within ``s*`` of a leader. Deceleration is capped at ``max_decel``; speed >= 0.
* **Setting the state**: after every simulator step the rollout calls :meth:`ReactiveTraffic.after_step`,
  which puts each lagging vehicle at its path pose (position, heading, velocity along the path)
  in MetaDrive (``set_position`` / ``set_heading_theta`` / ``set_velocity``); MetaDrive's replay
  policy moves it back to the log in its own ``after_step``, so the override is applied after
  every step. A lagging vehicle leaves the scene when its log ends (MetaDrive removes it).

Parameters (:class:`IDMParams`): nuPlan's IDM agents use ``s0`` 1 m, ``T`` 1.5 s, ``a_max`` 1 m/s^2,
``b`` 3 m/s^2; ours are ``s0`` 2 m, ``T`` 1.0 s, ``a_max`` 1.5 m/s^2, ``b`` 3 m/s^2, ``max_decel``
8 m/s^2 (a hard stop is allowed when the ego stops abruptly in front).

Frame: MetaDrive's simulator frame (the centralised scenario frame), metres, rad, m/s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dsdrive.constants import METADRIVE_EGO_LENGTH_M, METADRIVE_EGO_WIDTH_M, SIM_DT

MIN_PATH_M = 2.0
"""A vehicle whose valid positions span less than this (m) is parked: replayed, never reactive."""
LATERAL_MARGIN_M = 0.3
"""Extra lateral clearance (m) within which a candidate counts as being in the follower's way."""
CATCH_UP_MPS = 2.0
"""A vehicle behind its log catches up at most this much (m/s) faster than its logged speed."""


@dataclass
class IDMParams:
    """IDM constants (see the module docstring): ``s0`` m, ``headway`` s, ``a_max`` m/s^2,
    ``b`` m/s^2 (comfortable deceleration), ``max_decel`` m/s^2, ``delta`` (exponent)."""

    s0: float = 2.0
    headway: float = 1.0
    a_max: float = 1.5
    b: float = 3.0
    max_decel: float = 8.0
    delta: float = 4.0


def idm_desired_gap(v: float, v_lead: float, params: IDMParams) -> float:
    """IDM desired gap ``s* = s0 + max(0, v T + v (v - v_lead) / (2 sqrt(a_max b)))`` (m), for the
    follower speed ``v`` and the leader speed ``v_lead`` along the path (m/s)."""
    p = params
    return p.s0 + max(0.0, v * p.headway + v * (v - v_lead) / (2.0 * np.sqrt(p.a_max * p.b)))


def idm_acceleration(v: float, v0: float, gap: float, v_lead: float, params: IDMParams) -> float:
    """The IDM law (Treiber et al. 2000; see the module docstring), the one definition shared by the
    reactive traffic and the PDM-Closed planner (:mod:`dsdrive.planners.pdm_closed`).

    Args:
        v: follower speed (m/s). v0: desired speed (m/s; at least 1 m/s is used).
        gap: bumper-to-bumper distance to the leader (m; ``inf`` for a free road, at least 0.1 m used).
        v_lead: leader speed along the follower's path (m/s).

    Returns:
        ``a_max [1 - (v / v0)^delta - (s* / gap)^2]`` (m/s^2), never below ``-max_decel``.
    """
    p = params
    acc = p.a_max * (1.0 - (v / max(v0, 1.0)) ** p.delta - (idm_desired_gap(v, v_lead, p) / max(gap, 0.1)) ** 2)
    return max(acc, -p.max_decel)


@dataclass
class _Path:
    """One reactive vehicle's logged path: per log step, arc length (NaN where invalid)."""

    s_log: np.ndarray  # (T,) arc length at each log step, NaN where invalid
    s_knots: np.ndarray  # (K,) strictly increasing arc lengths of the path vertices
    xy: np.ndarray  # (K, 2)
    yaw: np.ndarray  # (K,) unwrapped
    length: float
    width: float

    def pose(self, s: float) -> tuple[np.ndarray, float]:
        """(xy (2,), yaw) at arc length ``s`` (held at the ends)."""
        x = np.interp(s, self.s_knots, self.xy[:, 0])
        y = np.interp(s, self.s_knots, self.xy[:, 1])
        return np.array([x, y]), float(np.interp(s, self.s_knots, self.yaw))

    def project(self, p: np.ndarray) -> tuple[float, float]:
        """(arc length, signed lateral offset) of point ``p`` (2,) on the path."""
        a, b = self.xy[:-1], self.xy[1:]
        d = b - a
        n2 = np.maximum((d * d).sum(1), 1e-12)
        u = np.clip(((p - a) * d).sum(1) / n2, 0.0, 1.0)
        q = a + u[:, None] * d
        dist = np.linalg.norm(p - q, axis=1)
        i = int(np.argmin(dist))
        cross = d[i, 0] * (p[1] - a[i, 1]) - d[i, 1] * (p[0] - a[i, 0])
        return float(self.s_knots[i] + u[i] * np.sqrt(n2[i])), float(np.sign(cross) * dist[i])


@dataclass
class _Follower:
    s: float
    v: float
    lagging: bool = False
    reacting_to: str | None = None


@dataclass
class ReactiveTraffic:
    """Log-following IDM vehicles for one scenario (see the module docstring).

    Build with :meth:`from_scenario`; call :meth:`after_step` after every ``env.step``.

    Attributes:
        paths: track id -> its logged path (reactive vehicles only).
        params: IDM constants.
        events: ``{step, agent_id, detail}`` the first time each vehicle slows down because of
            a leader (a leader that only holds back its acceleration is not reported).
    """

    paths: dict[str, _Path]
    params: IDMParams = field(default_factory=IDMParams)
    events: list = field(default_factory=list)
    _state: dict = field(default_factory=dict)
    _reported: set = field(default_factory=set)
    _step: int = 0

    @classmethod
    def from_scenario(cls, scenario: dict, params: IDMParams | None = None) -> "ReactiveTraffic":
        """Read the moving ``VEHICLE`` tracks of a ScenarioNet scenario dict (simulator frame)."""
        sdc = str(scenario["metadata"]["sdc_id"])
        paths = {}
        for tid, track in scenario["tracks"].items():
            if str(tid) == sdc or str(track.get("type", "")).upper() != "VEHICLE":
                continue
            st = track["state"]
            pos = np.asarray(st["position"], np.float64)[:, :2]
            head = np.asarray(st["heading"], np.float64).reshape(-1)
            valid = np.asarray(st["valid"]).astype(bool).reshape(-1) & np.isfinite(pos).all(1) & np.isfinite(head)
            steps = np.flatnonzero(valid)
            if len(steps) < 2:
                continue
            p = pos[steps]
            if np.linalg.norm(p.max(0) - p.min(0)) < MIN_PATH_M:
                continue
            cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
            keep = np.concatenate([[True], np.diff(cum) > 1e-3])
            s_log = np.full(len(valid), np.nan)
            s_log[steps] = cum
            lw = [float(np.nanmax(np.asarray(st.get(k, [np.nan]), np.float64))) for k in ("length", "width")]
            length, width = (max(lw), min(lw)) if all(np.isfinite(lw)) else (METADRIVE_EGO_LENGTH_M, METADRIVE_EGO_WIDTH_M)  # no logged box: MetaDrive's vehicle body
            if keep.sum() < 2:
                continue
            paths[str(tid)] = _Path(s_log, cum[keep], p[keep], np.unwrap(head[steps][keep]), length, width)
        return cls(paths, params or IDMParams())

    def _leader(self, tid: str, path: _Path, f: _Follower, leaders: list) -> tuple[float, float, str] | None:
        """Nearest leader ahead on the path: (gap m, leader speed along the path m/s, name)."""
        best = None
        for name, xy, vel, length, width in leaders:
            if name == tid:
                continue
            s_c, lat = path.project(xy)
            if s_c <= f.s or abs(lat) > 0.5 * (path.width + width) + LATERAL_MARGIN_M:
                continue
            if s_c >= path.s_knots[-1] - 1e-6 and np.linalg.norm(path.pose(path.s_knots[-1])[0] - xy) > 0.5 * (path.length + length):
                continue  # projects on the path's end point but lies beyond it
            gap = s_c - f.s - 0.5 * (path.length + length)
            _, yaw = path.pose(s_c)
            v_along = float(np.dot(vel, [np.cos(yaw), np.sin(yaw)]))
            if best is None or gap < best[0]:
                best = (gap, v_along, name)
        return best

    def after_step(self, env, step: int, ego_xy: np.ndarray, ego_vel: np.ndarray, ego_length: float, ego_width: float) -> None:
        """Advance every reactive vehicle present at log step ``step`` (the state MetaDrive just
        reached) and override the lagging ones in the simulator (see the module docstring).

        Args:
            env: the MetaDrive ``ScenarioEnv``.
            step: the episode step just reached (log index).
            ego_xy, ego_vel: the ego now (simulator frame, m and m/s). ego_length, ego_width: m.
        """
        self._step = step
        tm = env.engine.traffic_manager
        objs = {sid: tm.spawned_objects.get(name) for sid, name in tm.scenario_id_to_obj_id.items()}
        present = [tid for tid in self.paths if objs.get(tid) is not None and step < len(self.paths[tid].s_log)
                   and np.isfinite(self.paths[tid].s_log[step])]
        for tid in list(self._state):
            if tid not in present:
                del self._state[tid]
        leaders = [("ego", np.asarray(ego_xy, np.float64), np.asarray(ego_vel, np.float64), ego_length, ego_width)]
        for tid, f in self._state.items():
            if f.lagging:
                path = self.paths[tid]
                xy, yaw = path.pose(f.s)
                leaders.append((tid, xy, f.v * np.array([np.cos(yaw), np.sin(yaw)]), path.length, path.width))
        p = self.params
        updates = {}
        for tid in present:
            path = self.paths[tid]
            s_target = float(path.s_log[step])
            f = self._state.get(tid)
            if f is None:  # just appeared: on its log
                prev = path.s_log[step - 1] if step >= 1 and np.isfinite(path.s_log[step - 1]) else s_target
                updates[tid] = _Follower(s_target, (s_target - prev) / SIM_DT)
                continue
            prev_log = path.s_log[step - 1] if step >= 1 and np.isfinite(path.s_log[step - 1]) else s_target
            v0 = (s_target - prev_log) / SIM_DT  # the logged speed now
            v_log = max((s_target - f.s) / SIM_DT, 0.0)
            v_free = min(v_log, f.v + p.a_max * SIM_DT, v0 + CATCH_UP_MPS) if f.lagging else v_log
            v_new, reacting = v_free, None
            lead = self._leader(tid, path, f, leaders)
            if lead is not None:
                gap, v_lead, name = lead
                gap_if_log = gap - (v_free - v_lead) * SIM_DT
                if gap_if_log < idm_desired_gap(v_free, v_lead, p) or f.lagging:
                    v_idm = max(f.v + idm_acceleration(f.v, v0, gap, v_lead, p) * SIM_DT, 0.0)
                    if v_idm < v_new:
                        v_new, reacting = v_idm, (name, gap)
            s_new = min(f.s + v_new * SIM_DT, s_target)
            lagging = s_new < s_target - 1e-3
            updates[tid] = _Follower(s_new, v_new if lagging else v_log, lagging, reacting[0] if reacting else None)
            if reacting and v_new < f.v - 1e-3 and (tid, reacting[0]) not in self._reported:  # braking, not only held back
                self._reported.add((tid, reacting[0]))
                who = "the ego" if reacting[0] == "ego" else f"vehicle {reacting[0]} (braking itself)"
                self.events.append({"step": step, "agent_id": tid,
                                    "detail": f"VEHICLE {tid} braked for {who}: gap {reacting[1]:.1f} m, speed {f.v:.1f} -> {v_new:.1f} m/s"})
        self._state.update(updates)
        for tid, f in self._state.items():
            if f.lagging:
                xy, yaw = self.paths[tid].pose(f.s)
                obj = objs[tid]
                obj.set_position([float(xy[0]), float(xy[1])])
                obj.set_heading_theta(float(yaw))
                obj.set_velocity([np.cos(yaw), np.sin(yaw)], f.v)
                obj.set_angular_velocity(0.0)

    def lagging(self) -> dict[str, float]:
        """Track id -> metres behind its logged place at the last step, for the vehicles that
        braked and have not caught up yet."""
        return {tid: float(self.paths[tid].s_log[self._step] - f.s) for tid, f in self._state.items() if f.lagging}
