"""PlanningSample list -> padded tensors for the DistillDrive planning teacher.

DistillDrive's stage-0 teacher ("DLP") reads ground-truth annotations only: agent boxes with
their **ground-truth futures** (privileged) and the vectorised map. It never sees a camera, and
the ego status and command are not inputs: the status is a regression target and the DQN state,
the command selects 6 of the 18 planning modes. :func:`build_teacher_batch` reads exactly these
fields of a :class:`dsdrive.data.types.PlanningSample` and nothing else (``inputs.cameras`` and
``inputs.ego_history`` are never touched; a test checks this).

Frame and units: ego frame of the current time (x forward, y left), metres, m/s, radians.

Conversions from dsdrive's contract (decisions, documented here once):

* Agents: all classes of :data:`dsdrive.data.types.AGENT_TYPES`, filtered to a 55 m circle around the
  ego and the ``max_agents`` (150) nearest, as in DistillDrive.
* Agent time steps: 13 tokens, t = 0 is the current box, t = 1..12 the GT future at 0.5 s.
  Per step 9 channels ``offset(2), velocity(2), cos/sin(yaw)(2), length, width, valid``.
  *Fixed quirk*: the public code forms "velocity" as offset / 0.1 s although steps are 0.5 s
  apart; here velocity = offset / 0.5 s (m/s), and t = 0 uses the annotated box velocity.
* Map: DistillDrive's 3 classes map to ours as ped_crossing -> ``ped_crossing``,
  divider -> ``lane_divider``, boundary -> ``road_edge``. ``lane_centerline`` (which their
  MapTR-style annotation lacks) is kept as a 4th class by default because ScenarioNet-nuScenes
  carries centrelines and few boundaries; ``map_classes`` in the config drops it if wanted.
  ROI 60 m long x 30 m wide (|x| <= 30, |y| <= 15), at most 50 polylines (nearest first).
* Ego history (``use_ego_history``): DistillDrive's teacher runs on consecutive frames with an
  instance queue (``DLPInstanceQueue``, queue length 4 at 2 Hz) whose previous ego anchors and
  agent anchors are projected into the current frame and attended by ``temp_gnn``; that is where
  its ego motion comes from. (With the teacher's ``ego_kinematics`` / ``kinematic_prior``
  switches, :mod:`dsdrive.distilldrive.kinematic_prior`, the model also reads ``status`` below as
  its current kinematics; the batch itself is the same.) A keyframe here carries the same information for the ego as
  ``inputs.ego_history`` (4 past poses at -2.0 ... -0.5 s in the current ego frame), so the
  batch holds it as ``ego_history`` tokens ``x, y, cos, sin, valid`` (zeros where invalid).
  Agent histories are not in the contract, so agents have no temporal tokens. The
  ego *status* (CAN bus, or the queue's previous predicted status) is never an input.
* Ego status: DistillDrive's 10-d CAN-bus vector ``accel(3), rot_rate(3), vel(3), steer(1)`` is
  built from our 6 fields as ``[ax, ay, 0, 0, 0, yaw_rate, vx, vy, 0, steering]``; the three
  zeros (az, roll rate, pitch rate, vz) are always masked out, the others carry our mask.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from dsdrive.data.types import (
    AGENT_FUTURE_STEPS,
    AGENT_TYPES,
    COMMANDS,
    FUTURE_STEPS,
    HISTORY_STEPS,
    MAP_POINTS,
    MAP_TYPES,
    STEP_SECONDS,
    PlanningSample,
)

AGENT_STEP_CHANNELS = 9
"""Per-step agent channels: offset x, y; velocity x, y; cos, sin yaw; length; width; valid."""
MAP_SEGMENT_CHANNELS = 6
"""Per-segment map channels: start x, y and end x, y relative to the polyline midpoint; unit direction."""
EGO_HISTORY_CHANNELS = 5
"""Per-step ego-history channels: x, y (m, current ego frame), cos, sin of heading, valid."""
STATUS_DIM = 10
"""DistillDrive's ego status: accel (3), rotation rate (3), velocity (3), steering (1)."""
STATUS_FROM_OURS = (2, 3, None, None, None, 4, 0, 1, None, 5)
"""Index into ``EGO_STATUS_FIELDS`` (vx, vy, ax, ay, yaw_rate, steering) per 10-d slot, None = absent."""
STATUS_VX = 6
"""Slot of the forward velocity in the 10-d status."""


@dataclass
class TeacherBatch:
    """Padded tensors of B samples (ego frame, metres, m/s, radians).

    Attributes:
        sample_ids: B ids.
        agent_steps: (B, N, 13, 9) per-step agent channels (see :data:`AGENT_STEP_CHANNELS`).
        agent_pos: (B, N, 2) current agent centre x, y.
        agent_yaw: (B, N) current yaw.
        agent_size: (B, N, 2) length, width.
        agent_class: (B, N) long index into :data:`AGENT_TYPES`.
        agent_mask: (B, N) bool, True for real agents.
        agent_future: (B, N, 12, 2) GT future displacement from the current centre.
        agent_future_mask: (B, N, 12) bool.
        map_segments: (B, M, 19, 6) polyline segments (see :data:`MAP_SEGMENT_CHANNELS`).
        map_mid: (B, M, 2) polyline midpoint (point 10 of 20).
        map_class: (B, M) long index into the config's ``map_classes``.
        map_mask: (B, M) bool.
        command: (B,) long index into :data:`COMMANDS`.
        ego_future: (B, 6, 2) GT ego waypoints (cumulative), the planning target.
        ego_future_mask: (B, 6) bool.
        status: (B, 10) DistillDrive ego status (see :data:`STATUS_FROM_OURS`); a target only.
        status_mask: (B, 10) bool.
        ego_history: (B, 4, 5) past ego poses (see :data:`EGO_HISTORY_CHANNELS`); all zeros when
            built with ``use_ego_history=False``.
    """

    sample_ids: list[str]
    agent_steps: torch.Tensor
    agent_pos: torch.Tensor
    agent_yaw: torch.Tensor
    agent_size: torch.Tensor
    agent_class: torch.Tensor
    agent_mask: torch.Tensor
    agent_future: torch.Tensor
    agent_future_mask: torch.Tensor
    map_segments: torch.Tensor
    map_mid: torch.Tensor
    map_class: torch.Tensor
    map_mask: torch.Tensor
    command: torch.Tensor
    ego_future: torch.Tensor
    ego_future_mask: torch.Tensor
    status: torch.Tensor
    status_mask: torch.Tensor
    ego_history: torch.Tensor

    def to(self, device: torch.device | str) -> TeacherBatch:
        """Move every tensor to ``device``."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return TeacherBatch(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in kw.items()})

    def __len__(self) -> int:
        return len(self.sample_ids)


def status10(ego_status: np.ndarray, ego_status_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Our (6,) ego status + mask -> DistillDrive's (10,) status + mask (zeros where absent)."""
    out, mask = np.zeros(STATUS_DIM, np.float32), np.zeros(STATUS_DIM, bool)
    for slot, src in enumerate(STATUS_FROM_OURS):
        if src is not None:
            out[slot] = float(ego_status[src])
            mask[slot] = bool(ego_status_mask[src])
    return out, mask


def _agent_arrays(sample: PlanningSample, max_agents: int, radius: float) -> dict:
    agents, tg = sample.inputs.agents, sample.targets
    boxes = np.asarray(agents.boxes, np.float32).reshape(-1, 7)
    n = len(boxes)
    fut = np.asarray(tg.agent_futures, np.float32).reshape(n, AGENT_FUTURE_STEPS, 3)
    fmask = np.asarray(tg.agent_future_masks, bool).reshape(n, AGENT_FUTURE_STEPS)
    dist = np.hypot(boxes[:, 0], boxes[:, 1])
    keep = np.where(dist <= radius)[0]
    keep = keep[np.argsort(dist[keep], kind="stable")][:max_agents]
    boxes, fut, fmask = boxes[keep], fut[keep], fmask[keep]
    vel = np.asarray(agents.velocities, np.float32).reshape(-1, 2)[keep]
    cls = np.array([AGENT_TYPES.index(agents.types[i]) if agents.types[i] in AGENT_TYPES else AGENT_TYPES.index("OTHER") for i in keep], np.int64)
    k = len(keep)
    pos = np.concatenate([boxes[:, None, :2], fut[:, :, :2]], axis=1)  # (k, 13, 2)
    yaw = np.concatenate([boxes[:, None, 6], fut[:, :, 2]], axis=1)  # (k, 13)
    valid = np.concatenate([np.ones((k, 1), bool), fmask], axis=1)
    step_valid = valid.copy()
    step_valid[:, 1:] &= valid[:, :-1]
    offset = np.zeros((k, AGENT_FUTURE_STEPS + 1, 2), np.float32)
    offset[:, 1:] = np.where(step_valid[:, 1:, None], pos[:, 1:] - pos[:, :-1], 0.0)
    velocity = offset / STEP_SECONDS
    velocity[:, 0] = vel
    steps = np.concatenate(
        [offset, velocity, np.cos(yaw)[..., None], np.sin(yaw)[..., None],
         np.repeat(boxes[:, None, 3:5], AGENT_FUTURE_STEPS + 1, axis=1), step_valid[..., None]],
        axis=-1,
    ).astype(np.float32)
    steps[~valid] = 0.0
    disp = np.where(fmask[..., None], fut[:, :, :2] - boxes[:, None, :2], 0.0)
    return {"steps": steps, "pos": boxes[:, :2], "yaw": boxes[:, 6], "size": boxes[:, 3:5], "cls": cls, "fut": disp, "fmask": fmask}


def _map_arrays(sample: PlanningSample, map_classes: tuple[str, ...], max_polylines: int, roi: tuple[float, float]) -> dict:
    mp = sample.inputs.map
    pts = np.asarray(mp.points, np.float32).reshape(-1, MAP_POINTS, 2)
    for t in mp.types:
        if t not in MAP_TYPES:
            raise ValueError(f"sample {sample.sample_id}: field map.types has {t!r}, expected one of {MAP_TYPES}")
    sel = np.array([t in map_classes for t in mp.types], bool) if len(pts) else np.zeros(0, bool)
    inside = (np.abs(pts[..., 0]) <= roi[0]) & (np.abs(pts[..., 1]) <= roi[1])
    keep = np.where(sel & inside.any(axis=1))[0] if len(pts) else np.zeros(0, np.int64)
    near = np.hypot(pts[keep, :, 0], pts[keep, :, 1]).min(axis=1) if len(keep) else np.zeros(0)
    keep = keep[np.argsort(near, kind="stable")][:max_polylines]
    p = pts[keep]
    mid = p[:, MAP_POINTS // 2]
    rel = p - mid[:, None]
    d = rel[:, 1:] - rel[:, :-1]
    unit = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-6)
    seg = np.concatenate([rel[:, :-1], rel[:, 1:], unit], axis=-1).astype(np.float32)
    cls = np.array([map_classes.index(mp.types[i]) for i in keep], np.int64)
    return {"seg": seg, "mid": mid.astype(np.float32), "cls": cls}


def build_teacher_batch(
    samples: list[PlanningSample],
    map_classes: tuple[str, ...] = MAP_TYPES,
    max_agents: int = 150,
    agent_radius: float = 55.0,
    max_polylines: int = 50,
    map_roi: tuple[float, float] = (30.0, 15.0),
    use_ego_history: bool = True,
) -> TeacherBatch:
    """Collate samples into a :class:`TeacherBatch` (agents, map, GT futures, status target).

    Reads ``inputs.agents``, ``inputs.map``, ``inputs.command``, ``inputs.ego_status(_mask)``
    (as a target), ``inputs.ego_history(_mask)`` (only if ``use_ego_history``) and ``targets``;
    never ``inputs.cameras``. Padding rows are zero with mask False; N and M are at least 1.

    Raises:
        ValueError: empty ``samples``; an unknown command or map type (naming sample and field).
    """
    if not samples:
        raise ValueError("build_teacher_batch: no samples")
    agents = [_agent_arrays(s, max_agents, agent_radius) for s in samples]
    maps = [_map_arrays(s, tuple(map_classes), max_polylines, map_roi) for s in samples]
    b = len(samples)
    n = max(1, max(len(a["cls"]) for a in agents))
    m = max(1, max(len(x["cls"]) for x in maps))
    T, S = AGENT_FUTURE_STEPS, MAP_POINTS - 1
    out = {
        "agent_steps": np.zeros((b, n, T + 1, AGENT_STEP_CHANNELS), np.float32), "agent_pos": np.zeros((b, n, 2), np.float32),
        "agent_yaw": np.zeros((b, n), np.float32), "agent_size": np.zeros((b, n, 2), np.float32),
        "agent_class": np.zeros((b, n), np.int64), "agent_mask": np.zeros((b, n), bool),
        "agent_future": np.zeros((b, n, T, 2), np.float32), "agent_future_mask": np.zeros((b, n, T), bool),
        "map_segments": np.zeros((b, m, S, MAP_SEGMENT_CHANNELS), np.float32), "map_mid": np.zeros((b, m, 2), np.float32),
        "map_class": np.zeros((b, m), np.int64), "map_mask": np.zeros((b, m), bool),
        "command": np.zeros(b, np.int64), "ego_future": np.zeros((b, FUTURE_STEPS, 2), np.float32),
        "ego_future_mask": np.zeros((b, FUTURE_STEPS), bool),
        "status": np.zeros((b, STATUS_DIM), np.float32), "status_mask": np.zeros((b, STATUS_DIM), bool),
        "ego_history": np.zeros((b, HISTORY_STEPS, EGO_HISTORY_CHANNELS), np.float32),
    }
    for i, (s, a, mp) in enumerate(zip(samples, agents, maps)):
        k = len(a["cls"])
        out["agent_steps"][i, :k], out["agent_pos"][i, :k], out["agent_yaw"][i, :k] = a["steps"], a["pos"], a["yaw"]
        out["agent_size"][i, :k], out["agent_class"][i, :k], out["agent_mask"][i, :k] = a["size"], a["cls"], True
        out["agent_future"][i, :k], out["agent_future_mask"][i, :k] = a["fut"], a["fmask"]
        j = len(mp["cls"])
        out["map_segments"][i, :j], out["map_mid"][i, :j], out["map_class"][i, :j], out["map_mask"][i, :j] = mp["seg"], mp["mid"], mp["cls"], True
        cmd = s.inputs.command
        if cmd not in COMMANDS:
            raise ValueError(f"sample {s.sample_id}: field inputs.command is {cmd!r}, expected one of {COMMANDS}")
        out["command"][i] = COMMANDS.index(cmd)
        fmask = np.asarray(s.targets.ego_future_mask, bool)
        out["ego_future"][i] = np.where(fmask[:, None], np.asarray(s.targets.ego_future, np.float32)[:, :2], 0.0)
        out["ego_future_mask"][i] = fmask
        if use_ego_history:
            hist = np.asarray(s.inputs.ego_history, np.float32).reshape(HISTORY_STEPS, 3)
            hmask = np.asarray(s.inputs.ego_history_mask, bool).reshape(HISTORY_STEPS)
            rows = np.concatenate([hist[:, :2], np.cos(hist[:, 2:3]), np.sin(hist[:, 2:3]), np.ones((HISTORY_STEPS, 1))], axis=-1)
            out["ego_history"][i] = np.where(hmask[:, None], rows, 0.0)
        out["status"][i], out["status_mask"][i] = status10(np.asarray(s.inputs.ego_status), np.asarray(s.inputs.ego_status_mask))
    return TeacherBatch(sample_ids=[s.sample_id for s in samples], **{k: torch.from_numpy(v) for k, v in out.items()})
