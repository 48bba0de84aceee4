"""Per-sample reference implementation of the planning metrics with shapely polygons.

Written loop-by-loop in the shape of SparseDrive's ``planning_eval.py`` (one sample, one step,
one agent at a time; ``Polygon.intersects``), independently of the vectorised code in
:mod:`dsdrive.evaluation.metrics.planning`, which must agree with it exactly on collision indicators and
to 1e-6 m on L2. Slow: for tests and ``eval/bench_metrics.py`` only.

Frames and units: ego frame of the current time (x forward, y left), metres, radians.
"""

from __future__ import annotations

import math

import numpy as np
from shapely import affinity
from shapely.geometry import Polygon, box

from dsdrive.constants import EGO_CENTER_OFFSET_M, EGO_LENGTH_M, EGO_WIDTH_M
from dsdrive.data.types import FUTURE_STEPS, PlanningSample
from dsdrive.evaluation.metrics.planning import PerSampleMetrics
from dsdrive.geometry import STATIONARY_DISPLACEMENT_M


def reference_yaw(traj: list[tuple[float, float]]) -> list[float]:
    """Yaw (rad) per waypoint of one trajectory [(x, y)] * T, written out step by step as an
    independent check of :func:`dsdrive.geometry.trajectory_yaw` (start yaw 0)."""
    (x0, y0), (xn, yn) = traj[0], traj[-1]
    if math.hypot(xn - x0, yn - y0) < STATIONARY_DISPLACEMENT_M:
        return [0.0] * len(traj)
    pts = [(0.0, 0.0)] + list(traj)  # the current ego position precedes the first waypoint
    yaws = []
    for i in range(1, len(pts)):
        before = pts[i - 1]  # central difference; the last waypoint uses the backward one
        after = pts[i + 1] if i + 1 < len(pts) else pts[i]
        yaws.append(math.atan2(after[1] - before[1], after[0] - before[0]))
    return yaws


def oriented_box(x: float, y: float, length: float, width: float, yaw: float) -> Polygon:
    """Shapely rectangle of a box centred at (x, y) with its length along ``yaw``."""
    rect = box(-length / 2.0, -width / 2.0, length / 2.0, width / 2.0)
    return affinity.translate(affinity.rotate(rect, yaw, origin=(0.0, 0.0), use_radians=True), x, y)


def reference_collisions(traj: list[tuple[float, float]], sample: PlanningSample) -> list[bool]:
    """Per-step ego-box collisions of one trajectory with the sample's future agent boxes."""
    yaws = reference_yaw(traj)
    agents = sample.inputs.agents
    fut, fmask = sample.targets.agent_futures, sample.targets.agent_future_masks
    out = []
    for t, ((x, y), yaw) in enumerate(zip(traj, yaws)):
        cx = x + EGO_CENTER_OFFSET_M * math.cos(yaw)
        cy = y + EGO_CENTER_OFFSET_M * math.sin(yaw)
        ego = oriented_box(cx, cy, EGO_LENGTH_M, EGO_WIDTH_M, yaw)
        hit = False
        for a in range(len(agents)):
            if not fmask[a, t]:
                continue
            ax, ay, ayaw = (float(v) for v in fut[a, t])
            other = oriented_box(ax, ay, float(agents.boxes[a, 3]), float(agents.boxes[a, 4]), ayaw)
            if ego.intersects(other):
                hit = True
                break
        out.append(hit)
    return out


def reference_evaluate(pred: np.ndarray, samples: list[PlanningSample]) -> PerSampleMetrics:
    """Per-sample loop equivalent of :func:`dsdrive.evaluation.metrics.planning.evaluate_trajectories`.

    Args:
        pred: (B, 6, >=2) ego-frame planned waypoints (m).
        samples: B samples with complete ground-truth futures.
    """
    l2_rows, coll_rows, gt_rows = [], [], []
    for p, s in zip(pred, samples):
        traj = [(float(p[t, 0]), float(p[t, 1])) for t in range(FUTURE_STEPS)]
        gt = [(float(s.targets.ego_future[t, 0]), float(s.targets.ego_future[t, 1])) for t in range(FUTURE_STEPS)]
        l2_rows.append([math.hypot(a[0] - b[0], a[1] - b[1]) for a, b in zip(traj, gt)])
        gt_coll = reference_collisions(gt, s)
        coll = reference_collisions(traj, s)
        coll_rows.append([c and not g for c, g in zip(coll, gt_coll)])
        gt_rows.append(gt_coll)
    shape = (len(samples), FUTURE_STEPS)
    return PerSampleMetrics(
        sample_ids=[s.sample_id for s in samples],
        commands=[s.inputs.command for s in samples],
        l2=np.array(l2_rows, dtype=np.float64).reshape(shape),
        collision=np.array(coll_rows, dtype=bool).reshape(shape),
        gt_collision=np.array(gt_rows, dtype=bool).reshape(shape),
    )
