"""Closed-loop metrics of one rollout and of a run, NAVSIM/nuPlan style.

Sources: NAVSIM's PDM score (Dauner et al., "NAVSIM: Data-Driven Non-Reactive Autonomous Vehicle
Simulation and Benchmarking", NeurIPS 2024 D&B), which inherits its sub-metrics from the nuPlan
closed-loop score (Caesar et al., "nuPlan: A closed-loop ML-based planning benchmark for
autonomous vehicles", 2021; ``nuplan-devkit`` metrics). NAVSIM scores a 4 s *open-loop*
trajectory; here, as in nuPlan's closed-loop score, each sub-score is taken over the whole
closed-loop rollout (about 20 s at 10 Hz; S states).

Per scenario (all from :class:`dsdrive.evaluation.closed_loop.rollout.ScenarioRollout`, simulator frame):

* **route_completion** (RC): MetaDrive's ``navigation.route_completion`` at the last step (ego's
  longitudinal progress along the logged ego path / its length), clipped to [0, 1]. A route
  shorter than 2 m (a parked log) is complete when the ego ends within 2 m of the logged end.
* **arrival**: RC >= 0.95 (MetaDrive's ``_is_arrive_destination``) and the rollout ran to the end.
* **collision_vehicle / _pedestrian / _object**: any physics contact reported by MetaDrive
  (``crash_vehicle``; ``crash_human`` = pedestrians and cyclists; ``crash_object`` or
  ``crash_building`` = cones, barriers, static objects).
* **off_road**: MetaDrive's ``out_of_road`` (> 4 m lateral from the route; ignored for routes
  shorter than 2 m, where the lateral distance is undefined) at any step, or DAC = 0.
* **NC** (no at-fault collisions): 1; 0 if the ego box overlaps a vehicle, pedestrian or
  cyclist box; 0.5 if only static objects (cones, barriers, other); at-fault filter of nuPlan /
  NAVSIM: overlaps while the ego is stopped (< 0.05 m/s) or with an agent behind the ego's rear
  axle (rear-ended) are not the ego's fault. Minimum over the rollout.
* **DAC** (drivable area compliance): 1 if all four ego box corners stay inside the drivable
  area at every step, else 0. Drivable area: the even-odd fill of the closed ``boundary_*``
  rings (ScenarioNet's nuScenes drivable-area outline) united with lane polygons; without rings,
  lane polygons united with lane centrelines buffered 1.75 m.
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
* **events**: first step of each collision kind (with the agent id from the box test when
  found), off-road, hard braking (longitudinal acceleration < -4.05 m/s^2).

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


def drivable_area(map_cache) -> shapely.Geometry | None:
    """The drivable area of a scenario's map (see the module docstring); None without map data."""
    if map_cache is None:
        return None
    rings = []
    for line in getattr(map_cache, "boundary_rings", []) or []:
        if len(line) >= 4 and np.linalg.norm(line[0] - line[-1]) < 0.5:
            rings.append(shapely.make_valid(shapely.Polygon(line)))
    region = None
    for p in sorted(rings, key=lambda g: -g.area):  # even-odd fill: nested rings are holes
        region = p if region is None else shapely.symmetric_difference(region, p)
    parts = [shapely.make_valid(shapely.Polygon(p)) for p in map_cache.lane_polygons if len(p) >= 3]
    if region is None:
        parts += [shapely.LineString(line).buffer(1.75) for t, line in zip(map_cache.types, map_cache.polylines) if t == "lane_centerline"]
    else:
        parts.append(region)
    if not parts:
        return None
    return shapely.union_all(parts)


def _savgol_d1(x: np.ndarray) -> np.ndarray:
    """First time derivative (per second) of a 10 Hz signal (S, ...) by a Savitzky-Golay filter."""
    n = len(x)
    if n < 5:
        return np.zeros_like(x, dtype=np.float64)
    win = min(SAVGOL_WINDOW, n if n % 2 == 1 else n - 1)
    return savgol_filter(np.asarray(x, np.float64), win, min(SAVGOL_ORDER, win - 1), deriv=1, delta=SIM_DT, axis=0)


def comfort_signals(ego_xy: np.ndarray, ego_yaw: np.ndarray) -> dict[str, np.ndarray]:
    """Comfort signals from the driven poses (simulator frame, 10 Hz): (S,) longitudinal and
    lateral acceleration (m/s^2), jerk magnitude (m/s^3), yaw rate (rad/s), yaw acceleration
    (rad/s^2). Each derivative is one Savitzky-Golay differentiation of the previous one
    (positions -> velocity -> acceleration -> jerk), which keeps the third derivative of 10 Hz
    logged positions out of the noise; the reported velocity is not used (logs zero it at their
    last step)."""
    yaw = np.unwrap(np.asarray(ego_yaw, np.float64))
    vel = _savgol_d1(ego_xy)
    acc = _savgol_d1(vel)
    jerk = _savgol_d1(acc)
    yaw_rate = _savgol_d1(yaw)
    c, s = np.cos(yaw), np.sin(yaw)
    return {
        "lon_accel": c * acc[:, 0] + s * acc[:, 1],
        "lat_accel": -s * acc[:, 0] + c * acc[:, 1],
        "jerk": np.linalg.norm(jerk, axis=1),
        "yaw_rate": yaw_rate,
        "yaw_accel": _savgol_d1(yaw_rate),
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


def _route_progress(route: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Arc length (m) of the projection of points (N, 2) on a polyline (R, 2)."""
    if len(route) < 2:
        return np.zeros(len(xy))
    line = shapely.LineString(route)
    return shapely.line_locate_point(line, shapely.points(xy))


def _ego_boxes(xy: np.ndarray, yaw: np.ndarray, length: float, width: float) -> np.ndarray:
    return shapely.polygons(box_corners(xy[:, 0], xy[:, 1], length, width, yaw))


@dataclass
class _Overlap:
    step: int
    agent_id: str
    agent_type: str
    at_fault: bool


def _overlaps(sr, ego_polys: np.ndarray, speeds: np.ndarray) -> list[_Overlap]:
    out = []
    for s, ag in enumerate(sr.agents):
        if len(ag.ids) == 0:
            continue
        near = np.linalg.norm(ag.xy - sr.ego_xy[s], axis=1) < 0.5 * (np.hypot(ag.lwh[:, 0], ag.lwh[:, 1]) + np.hypot(sr.ego_length, sr.ego_width)) + 0.1
        if not near.any():
            continue
        idx = np.flatnonzero(near)
        polys = shapely.polygons(box_corners(ag.xy[idx, 0], ag.xy[idx, 1], ag.lwh[idx, 0], ag.lwh[idx, 1], ag.yaw[idx]))
        hit = shapely.intersects(polys, ego_polys[s])
        for i in idx[hit]:
            rel = global_to_ego(ag.xy[i][None], sr.ego_xy[s], sr.ego_yaw[s])[0]
            rear = rel[0] < -0.25 * sr.ego_length  # behind the rear axle region: rear-ended
            out.append(_Overlap(s, ag.ids[i], ag.types[i], at_fault=speeds[s] >= STOPPED_SPEED and not rear))
    return out


def _ttc_violation(sr, speeds: np.ndarray) -> int | None:
    """First step with a TTC violation (see module docstring), or None."""
    n = len(sr.ego_xy)
    for s in range(n):
        if speeds[s] < STOPPED_SPEED:
            continue
        for t in TTC_TIMES_S:
            k = s + int(round(t / SIM_DT))
            if k >= n:
                break
            ag = sr.agents[k]
            if len(ag.ids) == 0:
                continue
            p = sr.ego_xy[s] + sr.ego_vel[s] * t
            near = np.linalg.norm(ag.xy - p, axis=1) < 0.5 * (np.hypot(ag.lwh[:, 0], ag.lwh[:, 1]) + np.hypot(sr.ego_length, sr.ego_width))
            if not near.any():
                continue
            idx = np.flatnonzero(near)
            ahead = global_to_ego(ag.xy[idx], sr.ego_xy[s], sr.ego_yaw[s])[:, 0] > 0.0
            idx = idx[ahead]
            if len(idx) == 0:
                continue
            ego_poly = shapely.polygons(box_corners(p[0], p[1], sr.ego_length, sr.ego_width, sr.ego_yaw[s]))
            polys = shapely.polygons(box_corners(ag.xy[idx, 0], ag.xy[idx, 1], ag.lwh[idx, 0], ag.lwh[idx, 1], ag.yaw[idx]))
            if shapely.intersects(polys, ego_poly).any():
                return s
    return None


def scenario_metrics(sr) -> dict:
    """Metrics of one :class:`~dsdrive.evaluation.closed_loop.rollout.ScenarioRollout` (see the module docstring).

    Returns:
        dict of floats/bools plus ``events`` (list of {step, t, kind, detail}); for a
        ``rejected`` scenario only ``scene_id``, ``status`` and ``failure``.
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
    events = []

    def event(step: int, kind: str, detail: str) -> None:
        events.append({"step": int(step), "t": round(step * SIM_DT, 1), "kind": kind, "detail": detail})

    ego_polys = _ego_boxes(sr.ego_xy, sr.ego_yaw, sr.ego_length, sr.ego_width)
    overlaps = _overlaps(sr, ego_polys, speeds)
    names = {"crash_vehicle": "collision (vehicle)", "crash_human": "collision (pedestrian/cyclist)",
             "crash_object": "collision (object)", "crash_building": "collision (object)", "out_of_road": "off-road (> 4 m from route)"}
    for key, label in names.items():
        if key == "out_of_road" and route_len < 2.0:
            continue  # MetaDrive's lateral distance to a (near) zero-length route is meaningless
        f = sr.flags.get(key, np.zeros(0, bool))
        if f.any():
            step = int(np.argmax(f))
            who = next((f"{o.agent_type} {o.agent_id}" for o in overlaps if abs(o.step - step) <= 2), "")
            event(step, label, f"MetaDrive {key}" + (f" with {who}" if who else ""))
    nc = 1.0
    for o in overlaps:
        if o.at_fault:
            nc = min(nc, 0.5 if o.agent_type in STATIC_TYPES else 0.0)
    first_fault = next((o for o in overlaps if o.at_fault), None)
    if first_fault is not None:
        event(first_fault.step, "at-fault overlap", f"ego box overlaps {first_fault.agent_type} {first_fault.agent_id}")
    area = drivable_area(sr.map)
    dac = None
    if area is not None:
        corners = box_corners(sr.ego_xy[:, 0], sr.ego_xy[:, 1], sr.ego_length, sr.ego_width, sr.ego_yaw)
        inside = shapely.contains_xy(area, corners[..., 0], corners[..., 1]).all(axis=1)
        dac = float(inside.all())
        if not inside.all():
            event(int(np.argmin(inside)), "off drivable area", "an ego box corner left the drivable area")
    ttc_step = _ttc_violation(sr, speeds)
    ttc = 1.0 if ttc_step is None else 0.0
    sig = comfort_signals(sr.ego_xy, sr.ego_yaw)
    ok = np.logical_and.reduce(list(comfort_bounds_ok(sig).values()))
    comfort = float(ok.all())
    hard = sig["lon_accel"] < COMFORT["min_lon_accel"]
    if hard.any():
        s = int(np.argmax(hard))
        event(s, "hard braking", f"longitudinal acceleration {sig['lon_accel'][s]:.1f} m/s^2")
    n = len(sr.ego_xy)
    prog = _route_progress(route, np.stack([sr.ego_xy[0], sr.ego_xy[-1]]))
    ego_prog = float(prog[1] - prog[0])
    log_end = min(n - 1, len(sr.log_xy) - 1)
    lp = _route_progress(route, np.stack([sr.log_xy[0], sr.log_xy[log_end]]))
    ref_prog = float(lp[1] - lp[0])
    ep = 1.0 if ref_prog < EP_MIN_PROGRESS_M else float(np.clip(ego_prog / ref_prog, 0.0, 1.0))
    md_off = bool(sr.flags.get("out_of_road", np.zeros(0, bool)).any()) and route_len >= 2.0
    off_road = md_off or dac == 0.0
    dac_v = 1.0 if dac is None else dac
    pdms = nc * dac_v * (PDMS_WEIGHTS["ep"] * ep + PDMS_WEIGHTS["ttc"] * ttc + PDMS_WEIGHTS["c"] * comfort) / sum(PDMS_WEIGHTS.values())
    failed = sr.status == "failed"
    lat = [p.latency_ms for p in sr.plans]
    stated = [p.explanation.get("consistent") for p in sr.plans if p.explanation.get("consistent") is not None]
    base.update({
        "steps": n - 1,
        "route_completion": rc,
        "arrival": bool(rc >= 0.95 and not failed),
        "collision_vehicle": bool(sr.flags["crash_vehicle"].any()),
        "collision_pedestrian": bool(sr.flags["crash_human"].any()),
        "collision_object": bool(sr.flags["crash_object"].any() or sr.flags["crash_building"].any()),
        "off_road": off_road,
        "nc": nc, "dac": dac, "ttc": ttc, "comfort": comfort, "ep": ep,
        "pdms": 0.0 if failed else pdms,
        "ego_progress_m": ego_prog, "expert_progress_m": ref_prog,
        "max_abs_lon_accel": float(np.abs(sig["lon_accel"]).max()), "max_jerk": float(sig["jerk"].max()),
        "latency_ms_mean": float(np.mean(lat)) if lat else None,
        "plans": len(sr.plans),
        "consistency": float(np.mean(stated)) if stated else None,
        "sim_steps_per_s": (n - 1) / sr.wall_s if sr.wall_s > 0 else None,
        "events": sorted(events, key=lambda e: e["step"]),
    })
    return base


AGG_KEYS = ("route_completion", "arrival", "collision_vehicle", "collision_pedestrian", "collision_object",
            "off_road", "nc", "dac", "ttc", "comfort", "ep", "pdms")


def aggregate(per_scenario: list[dict], latencies_ms: list[float]) -> dict:
    """Run-level metrics: means over ran scenarios (see module docstring), counts, latency stats."""
    ran = [m for m in per_scenario if m["status"] in ("ok", "failed") and "steps" in m]
    out: dict = {"scenarios": len(per_scenario), "ran": len(ran),
                 "failed": sum(m["status"] == "failed" for m in per_scenario),
                 "rejected": sum(m["status"] == "rejected" for m in per_scenario)}
    for k in AGG_KEYS:
        vals = [float(m[k]) for m in ran if m.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    cons = [m["consistency"] for m in ran if m.get("consistency") is not None]
    out["consistency"] = float(np.mean(cons)) if cons else None
    if latencies_ms:
        lat = np.asarray(latencies_ms)
        out.update(latency_ms_mean=float(lat.mean()), latency_ms_p50=float(np.percentile(lat, 50)),
                   latency_ms_p95=float(np.percentile(lat, 95)), latency_ms_max=float(lat.max()))
    return out
