"""Closed-loop metrics of one rollout and of a run, NAVSIM/nuPlan style, and the sub-score
helpers the per-sample PDM score (:mod:`dsdrive.evaluation.pdm_score`) shares.

Sources: NAVSIM's PDM score (Dauner et al., "NAVSIM: Data-Driven Non-Reactive Autonomous Vehicle
Simulation and Benchmarking", NeurIPS 2024 D&B), which inherits its sub-metrics from the nuPlan
closed-loop score (Caesar et al., "nuPlan: A closed-loop ML-based planning benchmark for
autonomous vehicles", 2021; ``nuplan-devkit`` metrics). NAVSIM scores a 4 s trajectory tracked
against non-reactive logged agents (our version of that is ``dsdrive pdm-score``); here, as in
nuPlan's closed-loop score, each sub-score is taken over the whole closed-loop rollout (about
20 s at 10 Hz; S states), so these figures are *not* comparable with published PDMS.

Per scenario (all from :class:`dsdrive.evaluation.closed_loop.rollout.ScenarioRollout`, simulator frame):

* **route_completion** (RC): MetaDrive's ``navigation.route_completion`` at the last step (ego's
  longitudinal progress along the logged ego path / its length), clipped to [0, 1]. A route
  shorter than 2 m (a parked log) is complete when the ego ends within 2 m of the logged end.
* **arrival**: RC >= 0.95 (MetaDrive's ``_is_arrive_destination``) and the rollout ran to the end.
* **collision_vehicle / _pedestrian / _object**: any physics contact reported by MetaDrive
  (``crash_vehicle``; ``crash_human`` = pedestrians and cyclists; ``crash_object`` or
  ``crash_building`` = cones, barriers, static objects), whoever's fault.
* **off_road**: the ego footprint left the drivable area of the scenario's map at some step
  (DAC = 0; :mod:`dsdrive.evaluation.drivable_area`).
* **route_departure**: MetaDrive's ``out_of_road`` (> 4 m lateral from the logged route) at some
  step; ignored for routes shorter than 2 m (the lateral distance is undefined). Reported apart
  from ``off_road``: leaving the route on a drivable road is not leaving the road.
* **NC** (no at-fault collisions): 1; 0 if the ego box overlaps a vehicle, pedestrian or
  cyclist box; 0.5 if only static objects (cones, barriers, other); at-fault filter of nuPlan /
  NAVSIM: overlaps while the ego is stopped (< 0.05 m/s) or with an agent behind the ego's rear
  axle (rear-ended) are not the ego's fault. Minimum over the rollout.
* **DAC** (drivable area compliance): 1 if all four ego box corners stay inside the drivable
  area (:class:`dsdrive.evaluation.drivable_area.DrivableArea`) at every step, else 0; None when
  the scenario has no usable map (then PDMS is None too and ``notes`` says why).
* **TTC** (time to collision within bound): 0 if at any step, with the ego moving
  (>= 0.05 m/s), the ego box pushed forward at constant velocity by t in {0.3, 0.6, 0.9} s
  overlaps an agent box *in front of the ego* at its recorded state t later (NAVSIM's
  ``future_time_idcs = 0, 3, 6, 9`` at 0.1 s); else 1.
* **C** (comfort): 1 if, at every step, longitudinal acceleration in [-4.05, 2.40] m/s^2,
  |lateral acceleration| <= 4.89 m/s^2, |jerk| <= 4.13 m/s^3, |yaw rate| <= 0.95 rad/s,
  |yaw acceleration| <= 1.93 rad/s^2 (nuPlan ``ego_is_comfortable`` bounds); each derivative is
  a Savitzky-Golay derivative (window 15 steps, order 2, as nuPlan's ``approximate_derivatives``)
  of the previous one, starting from the driven positions/headings; else 0.
* **EP** (ego progress): ego progress along the route / the logged expert's progress over the
  same horizon, clipped to [0, 1]; 1 when the expert progresses less than 5 m (NAVSIM compares
  with PDM-Closed; the logged expert is our reference planner).
* **PDMS** = NC x DAC x (5 EP + 5 TTC + 2 C) / 12 (NAVSIM v1 weights).
* **tracking error** (the controller's, m): at every step, the driven ego position minus the
  plan in force at that time (the plan's poses, the ego's pose at planning time prepended,
  linear in time), split along (longitudinal, + = ahead) and across (lateral) the plan's
  direction; mean of the absolute value and max. **log deviation** (m): the same split of the
  driven position against the logged ego at the same time, in the logged heading.
* **events**: first step of each collision kind (with the agent id from the box test when
  found), leaving the drivable area, route departure, hard braking (longitudinal acceleration
  < -4.05 m/s^2), and in reactive traffic the first time each agent braked for the ego.

Run aggregates: means over scenarios that ran (``ok`` or ``failed``); a scenario whose planner
failed scores PDMS 0 and arrival False (a planner that errors fails the scene); ``rejected``
scenarios (MetaDrive could not load them) are listed and left out. Planner latency per call:
mean, p50, p95, max (ms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy.signal import savgol_filter

from dsdrive.constants import SIM_DT
from dsdrive.geometry import box_corners, global_to_ego

STOPPED_SPEED = 0.05
"""m/s; an ego slower than this is stopped (NAVSIM's ``stopped_speed_threshold`` is 5e-3)."""
TTC_TIMES_S = (0.3, 0.6, 0.9)
"""Forward-projection times of the TTC check (NAVSIM: steps 3, 6, 9 at 0.1 s; 0 is NC's)."""
COMFORT = dict(min_lon_accel=-4.05, max_lon_accel=2.40, max_abs_lat_accel=4.89, max_abs_jerk=4.13,
               max_abs_yaw_rate=0.95, max_abs_yaw_accel=1.93)
"""nuPlan ``ego_is_comfortable`` bounds (SI units)."""
EP_MIN_PROGRESS_M = 5.0
"""EP is 1 when the reference (logged expert) progresses less than this (NAVSIM)."""
PDMS_WEIGHTS = dict(ep=5.0, ttc=5.0, c=2.0)
STATIC_TYPES = ("TRAFFIC_CONE", "TRAFFIC_BARRIER", "OTHER")
SAVGOL_WINDOW = 15
"""Savitzky-Golay window (steps, 1.5 s) for comfort derivatives."""
SAVGOL_ORDER = 2
"""Savitzky-Golay polynomial order (nuPlan's ``poly_order``)."""


def _savgol_d1(x: np.ndarray, dt: float = SIM_DT) -> np.ndarray:
    """First time derivative (per second) of a signal (S, ...) sampled every ``dt`` s, by a Savitzky-Golay filter."""
    n = len(x)
    if n < 5:
        return np.zeros_like(x, dtype=np.float64)
    win = min(SAVGOL_WINDOW, n if n % 2 == 1 else n - 1)
    return savgol_filter(np.asarray(x, np.float64), win, min(SAVGOL_ORDER, win - 1), deriv=1, delta=dt, axis=0)


def comfort_signals(ego_xy: np.ndarray, ego_yaw: np.ndarray, dt: float = SIM_DT) -> dict[str, np.ndarray]:
    """Comfort signals from driven poses (any metric frame, one every ``dt`` s, 10 Hz by default):
    (S,) longitudinal and lateral acceleration (m/s^2), jerk magnitude (m/s^3), yaw rate (rad/s),
    yaw acceleration (rad/s^2). Each derivative is one Savitzky-Golay differentiation of the
    previous one (positions -> velocity -> acceleration -> jerk), which keeps the third derivative
    of 10 Hz logged positions out of the noise; the reported velocity is not used (logs zero it
    at their last step)."""
    yaw = np.unwrap(np.asarray(ego_yaw, np.float64))
    vel = _savgol_d1(ego_xy, dt)
    acc = _savgol_d1(vel, dt)
    jerk = _savgol_d1(acc, dt)
    yaw_rate = _savgol_d1(yaw, dt)
    c, s = np.cos(yaw), np.sin(yaw)
    return {
        "lon_accel": c * acc[:, 0] + s * acc[:, 1],
        "lat_accel": -s * acc[:, 0] + c * acc[:, 1],
        "jerk": np.linalg.norm(jerk, axis=1),
        "yaw_rate": yaw_rate,
        "yaw_accel": _savgol_d1(yaw_rate, dt),
    }


def comfort_bounds_ok(sig: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per nuPlan bound, (S,) bool: whether :func:`comfort_signals` output stays within it
    (:data:`COMFORT`). Keys: lon_accel, lat_accel, jerk, yaw_rate, yaw_accel."""
    return {
        "lon_accel": (sig["lon_accel"] >= COMFORT["min_lon_accel"]) & (sig["lon_accel"] <= COMFORT["max_lon_accel"]),
        "lat_accel": np.abs(sig["lat_accel"]) <= COMFORT["max_abs_lat_accel"],
        "jerk": sig["jerk"] <= COMFORT["max_abs_jerk"],
        "yaw_rate": np.abs(sig["yaw_rate"]) <= COMFORT["max_abs_yaw_rate"],
        "yaw_accel": np.abs(sig["yaw_accel"]) <= COMFORT["max_abs_yaw_accel"],
    }


def route_progress(route: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Arc length (m) of the projection of points (N, 2) on a polyline (R, 2) (0 for R < 2)."""
    if len(route) < 2:
        return np.zeros(len(xy))
    line = shapely.LineString(route)
    return shapely.line_locate_point(line, shapely.points(xy))


def progress_score(ego_progress: float, reference_progress: float) -> float:
    """EP: ``ego_progress / reference_progress`` clipped to [0, 1]; 1 when the reference moves
    less than :data:`EP_MIN_PROGRESS_M` (metres both)."""
    if reference_progress < EP_MIN_PROGRESS_M:
        return 1.0
    return float(np.clip(ego_progress / reference_progress, 0.0, 1.0))


def pdm_combine(nc: float, dac: float, ttc: float, comfort: float, ep: float) -> float:
    """PDMS = NC x DAC x (5 EP + 5 TTC + 2 C) / 12 (NAVSIM v1)."""
    w = PDMS_WEIGHTS
    return float(nc * dac * (w["ep"] * ep + w["ttc"] * ttc + w["c"] * comfort) / sum(w.values()))


@dataclass
class Overlap:
    """An ego-box / agent-box overlap at one step; ``at_fault`` per nuPlan/NAVSIM (see module docstring)."""

    step: int
    agent_id: str
    agent_type: str
    at_fault: bool


def box_overlaps(ego_xy: np.ndarray, ego_yaw: np.ndarray, speeds: np.ndarray, agents: list, length: float, width: float) -> list[Overlap]:
    """Ego-box overlaps with agent boxes at every step.

    Args:
        ego_xy: (S, 2) ego box centres (m). ego_yaw: (S,) rad. speeds: (S,) m/s.
        agents: S :class:`dsdrive.data.world_state.AgentState` (same frame; box centres).
        length, width: the ego box (m).

    Returns:
        Overlaps in step order; ``at_fault`` False while the ego is stopped or for an agent
        behind the ego's rear quarter (rear-ended).
    """
    out = []
    ego_polys = shapely.polygons(box_corners(ego_xy[:, 0], ego_xy[:, 1], length, width, ego_yaw))
    for s, ag in enumerate(agents):
        if len(ag.ids) == 0:
            continue
        near = np.linalg.norm(ag.xy - ego_xy[s], axis=1) < 0.5 * (np.hypot(ag.lwh[:, 0], ag.lwh[:, 1]) + np.hypot(length, width)) + 0.1
        if not near.any():
            continue
        idx = np.flatnonzero(near)
        polys = shapely.polygons(box_corners(ag.xy[idx, 0], ag.xy[idx, 1], ag.lwh[idx, 0], ag.lwh[idx, 1], ag.yaw[idx]))
        hit = shapely.intersects(polys, ego_polys[s])
        for i in idx[hit]:
            rel = global_to_ego(ag.xy[i][None], ego_xy[s], ego_yaw[s])[0]
            rear = rel[0] < -0.25 * length  # behind the rear axle region: rear-ended
            out.append(Overlap(s, ag.ids[i], ag.types[i], at_fault=bool(speeds[s] >= STOPPED_SPEED and not rear)))
    return out


def no_collision_score(overlaps: list[Overlap]) -> float:
    """NC from :func:`box_overlaps`: 0 for an at-fault overlap with a vehicle, pedestrian or
    cyclist, 0.5 if only with static objects, else 1."""
    nc = 1.0
    for o in overlaps:
        if o.at_fault:
            nc = min(nc, 0.5 if o.agent_type in STATIC_TYPES else 0.0)
    return nc


def ttc_violation(ego_xy: np.ndarray, ego_yaw: np.ndarray, ego_vel: np.ndarray, agents: list, length: float, width: float,
                  dt: float = SIM_DT) -> int | None:
    """First step with a TTC violation (see the module docstring), or None.

    Args:
        ego_xy: (S, 2) ego box centres (m). ego_yaw: (S,) rad. ego_vel: (S, 2) m/s.
        agents: S agent states, one every ``dt`` s (same frame).
        length, width: the ego box (m).
    """
    n = len(ego_xy)
    speeds = np.linalg.norm(ego_vel, axis=1)
    for s in range(n):
        if speeds[s] < STOPPED_SPEED:
            continue
        for t in TTC_TIMES_S:
            k = s + int(round(t / dt))
            if k >= n:
                break
            ag = agents[k]
            if len(ag.ids) == 0:
                continue
            p = ego_xy[s] + ego_vel[s] * t
            near = np.linalg.norm(ag.xy - p, axis=1) < 0.5 * (np.hypot(ag.lwh[:, 0], ag.lwh[:, 1]) + np.hypot(length, width))
            if not near.any():
                continue
            idx = np.flatnonzero(near)
            ahead = global_to_ego(ag.xy[idx], ego_xy[s], ego_yaw[s])[:, 0] > 0.0
            idx = idx[ahead]
            if len(idx) == 0:
                continue
            ego_poly = shapely.polygons(box_corners(p[0], p[1], length, width, ego_yaw[s]))
            polys = shapely.polygons(box_corners(ag.xy[idx, 0], ag.xy[idx, 1], ag.lwh[idx, 0], ag.lwh[idx, 1], ag.yaw[idx]))
            if shapely.intersects(polys, ego_poly).any():
                return s
    return None


def along_across(delta: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """(N, 2) offsets -> (N, 2) ``(longitudinal, lateral)`` in frames of ``heading`` (N,) rad."""
    c, s = np.cos(heading), np.sin(heading)
    return np.stack([c * delta[:, 0] + s * delta[:, 1], -s * delta[:, 0] + c * delta[:, 1]], 1)


def plan_tracking_error(sr) -> np.ndarray:
    """(K, 2) ``(longitudinal, lateral)`` error (m) of the driven ego against the plan in force,
    at every step after the first plan (see the module docstring); (0, 2) without plans."""
    if not sr.plans or len(sr.ego_xy) < 2:
        return np.zeros((0, 2))
    starts = [p.step for p in sr.plans]
    out = []
    for i, p in enumerate(sr.plans):
        end = starts[i + 1] if i + 1 < len(starts) else len(sr.ego_xy) - 1
        if p.step >= len(sr.ego_xy):
            break
        pts = np.vstack([sr.ego_xy[p.step], np.asarray(p.waypoints_world, np.float64)[:, :2]])
        t_knots = np.arange(len(pts)) * 0.5
        steps = np.arange(p.step + 1, min(end, len(sr.ego_xy) - 1) + 1)
        if len(steps) == 0:
            continue
        tau = (steps - p.step) * SIM_DT
        ref = np.stack([np.interp(tau, t_knots, pts[:, 0]), np.interp(tau, t_knots, pts[:, 1])], 1)
        seg = np.clip(np.searchsorted(t_knots, tau) - 1, 0, len(pts) - 2)
        d = pts[seg + 1] - pts[seg]
        heading = np.where(np.linalg.norm(d, axis=1) > 1e-3, np.arctan2(d[:, 1], d[:, 0]), sr.ego_yaw[p.step])
        out.append(along_across(sr.ego_xy[steps] - ref, heading))
    return np.concatenate(out) if out else np.zeros((0, 2))


def log_deviation(sr) -> np.ndarray:
    """(K, 2) ``(longitudinal, lateral)`` offset (m) of the driven ego from the logged ego at the
    same step, in the logged heading, over the steps where the log is valid."""
    n = min(len(sr.ego_xy), len(sr.log_xy))
    if n == 0:
        return np.zeros((0, 2))
    ok = np.asarray(sr.log_valid[:n], bool)
    return along_across(sr.ego_xy[:n][ok] - sr.log_xy[:n][ok], sr.log_yaw[:n][ok])


def _err_stats(prefix: str, err: np.ndarray) -> dict:
    if len(err) == 0:
        return {f"{prefix}_{k}": None for k in ("lon_mean", "lon_max", "lat_mean", "lat_max")}
    a = np.abs(err)
    return {f"{prefix}_lon_mean": float(a[:, 0].mean()), f"{prefix}_lon_max": float(a[:, 0].max()),
            f"{prefix}_lat_mean": float(a[:, 1].mean()), f"{prefix}_lat_max": float(a[:, 1].max())}


def scenario_metrics(sr) -> dict:
    """Metrics of one :class:`~dsdrive.evaluation.closed_loop.rollout.ScenarioRollout` (see the module docstring).

    Returns:
        dict of floats/bools plus ``events`` (list of {step, t, kind, detail}) and ``notes``
        (why a score is missing); for a ``rejected`` scenario only ``scene_id``, ``status``
        and ``failure``.
    """
    base = {"scene_id": sr.scene_id, "status": sr.status, "failure": sr.failure, "failure_step": sr.failure_step}
    if sr.status == "rejected" or len(sr.ego_xy) < 2:
        return base
    speeds = np.linalg.norm(sr.ego_vel, axis=1)
    route = sr.log_xy[sr.log_valid]
    route_len = float(np.linalg.norm(np.diff(route, axis=0), axis=1).sum()) if len(route) > 1 else 0.0
    if route_len < 2.0:
        rc = 1.0 if np.linalg.norm(sr.ego_xy[-1] - route[-1]) < 2.0 else 0.0
    else:
        rc = float(np.clip(np.nan_to_num(sr.md_route_completion[-1]), 0.0, 1.0))
    events, notes = [], list(getattr(sr, "notes", []) or [])

    def event(step: int, kind: str, detail: str) -> None:
        events.append({"step": int(step), "t": round(step * SIM_DT, 1), "kind": kind, "detail": detail})

    overlaps = box_overlaps(sr.ego_xy, sr.ego_yaw, speeds, sr.agents, sr.ego_length, sr.ego_width)
    names = {"crash_vehicle": "collision (vehicle)", "crash_human": "collision (pedestrian/cyclist)",
             "crash_object": "collision (object)", "crash_building": "collision (object)",
             "out_of_road": "route departure (> 4 m from route)"}
    for key, label in names.items():
        if key == "out_of_road" and route_len < 2.0:
            continue  # MetaDrive's lateral distance to a (near) zero-length route is meaningless
        f = sr.flags.get(key, np.zeros(0, bool))
        if f.any():
            step = int(np.argmax(f))
            who = next((f"{o.agent_type} {o.agent_id}" for o in overlaps if abs(o.step - step) <= 2), "")
            event(step, label, f"MetaDrive {key}" + (f" with {who}" if who else ""))
    nc = no_collision_score(overlaps)
    first_fault = next((o for o in overlaps if o.at_fault), None)
    if first_fault is not None:
        event(first_fault.step, "at-fault overlap", f"ego box overlaps {first_fault.agent_type} {first_fault.agent_id}")
    area = getattr(sr, "drivable_area", None)
    dac = None
    if area is not None:
        dac, first_out = area.compliance(sr.ego_xy, sr.ego_yaw, sr.ego_length, sr.ego_width)
        if first_out is not None:
            event(first_out, "off drivable area", "an ego box corner left the drivable area of the map")
    ttc_step = ttc_violation(sr.ego_xy, sr.ego_yaw, sr.ego_vel, sr.agents, sr.ego_length, sr.ego_width)
    ttc = 1.0 if ttc_step is None else 0.0
    sig = comfort_signals(sr.ego_xy, sr.ego_yaw)
    comfort = float(np.logical_and.reduce(list(comfort_bounds_ok(sig).values())).all())
    hard = sig["lon_accel"] < COMFORT["min_lon_accel"]
    if hard.any():
        s = int(np.argmax(hard))
        event(s, "hard braking", f"longitudinal acceleration {sig['lon_accel'][s]:.1f} m/s^2")
    for r in getattr(sr, "reactive_events", []) or []:
        event(r["step"], "traffic braked", r["detail"])
    n = len(sr.ego_xy)
    prog = route_progress(route, np.stack([sr.ego_xy[0], sr.ego_xy[-1]]))
    ego_prog = float(prog[1] - prog[0])
    log_end = min(n - 1, len(sr.log_xy) - 1)
    lp = route_progress(route, np.stack([sr.log_xy[0], sr.log_xy[log_end]]))
    ref_prog = float(lp[1] - lp[0])
    ep = progress_score(ego_prog, ref_prog)
    route_departure = bool(sr.flags.get("out_of_road", np.zeros(0, bool)).any()) and route_len >= 2.0
    if dac is None:
        pdms = None
        if not any(x.startswith("no drivable area") or "no drivable area" in x for x in notes):
            notes.append("no drivable area: DAC and PDMS not scored")
    else:
        pdms = pdm_combine(nc, dac, ttc, comfort, ep)
    failed = sr.status == "failed"
    lat = [p.latency_ms for p in sr.plans]
    stated = [p.explanation.get("consistent") for p in sr.plans if p.explanation.get("consistent") is not None]
    texts = [p for p in sr.plans if p.explanation.get("source") == "planner"]
    base.update({
        "steps": n - 1,
        "route_completion": rc,
        "arrival": bool(rc >= 0.95 and not failed),
        "collision_vehicle": bool(sr.flags["crash_vehicle"].any()),
        "collision_pedestrian": bool(sr.flags["crash_human"].any()),
        "collision_object": bool(sr.flags["crash_object"].any() or sr.flags["crash_building"].any()),
        "off_road": None if dac is None else dac == 0.0,
        "route_departure": route_departure,
        "nc": nc, "dac": dac, "ttc": ttc, "comfort": comfort, "ep": ep,
        "pdms": 0.0 if failed else pdms,
        "ego_progress_m": ego_prog, "expert_progress_m": ref_prog,
        "max_abs_lon_accel": float(np.abs(sig["lon_accel"]).max()), "max_jerk": float(sig["jerk"].max()),
        **_err_stats("tracking", plan_tracking_error(sr)),
        **_err_stats("log_dev", log_deviation(sr)),
        "latency_ms_mean": float(np.mean(lat)) if lat else None,
        "plans": len(sr.plans),
        "consistency": float(np.mean(stated)) if stated else None,
        "text_parse_rate": len(stated) / len(texts) if texts else None,
        "sim_steps_per_s": (n - 1) / sr.wall_s if sr.wall_s > 0 else None,
        "notes": notes,
        "events": sorted(events, key=lambda e: e["step"]),
    })
    return base


AGG_KEYS = ("route_completion", "arrival", "collision_vehicle", "collision_pedestrian", "collision_object",
            "off_road", "route_departure", "nc", "dac", "ttc", "comfort", "ep", "pdms",
            "tracking_lon_mean", "tracking_lat_mean", "log_dev_lon_mean", "log_dev_lat_mean")
AGG_MAX_KEYS = ("tracking_lon_max", "tracking_lat_max", "log_dev_lon_max", "log_dev_lat_max")


def aggregate(per_scenario: list[dict], latencies_ms: list[float]) -> dict:
    """Run-level metrics: means over ran scenarios (see module docstring; a None value, e.g. DAC
    without a map, is left out of its mean), maxima of the tracking-error maxima, counts,
    latency stats."""
    ran = [m for m in per_scenario if m["status"] in ("ok", "failed") and "steps" in m]
    out: dict = {"scenarios": len(per_scenario), "ran": len(ran),
                 "failed": sum(m["status"] == "failed" for m in per_scenario),
                 "rejected": sum(m["status"] == "rejected" for m in per_scenario)}
    for k in AGG_KEYS:
        vals = [float(m[k]) for m in ran if m.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    for k in AGG_MAX_KEYS:
        vals = [float(m[k]) for m in ran if m.get(k) is not None]
        out[k] = float(np.max(vals)) if vals else None
    cons = [m["consistency"] for m in ran if m.get("consistency") is not None]
    out["consistency"] = float(np.mean(cons)) if cons else None
    rates = [m["text_parse_rate"] for m in ran if m.get("text_parse_rate") is not None]
    out["text_parse_rate"] = float(np.mean(rates)) if rates else None
    if latencies_ms:
        lat = np.asarray(latencies_ms)
        out.update(latency_ms_mean=float(lat.mean()), latency_ms_p50=float(np.percentile(lat, 50)),
                   latency_ms_p95=float(np.percentile(lat, 95)), latency_ms_max=float(lat.max()))
    return out
