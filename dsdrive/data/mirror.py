"""Left-right mirroring of a planning sample (data augmentation).

A mirrored sample is the same keyframe seen in a mirror along the ego's x axis: every ego-frame
y becomes -y and every heading -heading, so a left turn becomes a right turn. Applied to inputs
and targets alike (the agents and their futures and the map polylines move with the ego), it
doubles the samples and balances LEFT and RIGHT commands (the 8 nuScenes-mini scenes have
almost no right turns). Traffic also changes side: nuScenes' Boston drives on the right and
Singapore on the left, so a mirrored Boston scene looks like Singapore traffic and vice versa;
the ``mirrored`` tag lets evaluation leave these copies out (it does by default).

Exact transform, ego frame (x forward, y left, metres, radians counter-clockwise):

* ``ego_history``, ``ego_future``, ``agent_futures`` (..., 3) ``x, y, heading``: y -> -y, heading -> -heading;
* ``ego_status`` over ``EGO_STATUS_FIELDS`` (vx, vy, ax, ay, yaw_rate, steering): vy, ay,
  yaw_rate and steering change sign (the masks are unchanged);
* agent boxes ``x, y, z, l, w, h, yaw``: y -> -y, yaw -> -yaw; agent velocities: vy -> -vy;
* map polylines (M, 20, 2): y -> -y (point order kept);
* command: LEFT <-> RIGHT, STRAIGHT stays;
* ``sample_id`` gets :data:`MIRROR_SUFFIX` (and loses it when mirrored back), ``mirrored`` flips;
  scene, source, map name, time and the ego-source tags are kept.

Negation is exact in floating point, so mirroring twice gives back the sample bit for bit
(angles are negated, not re-wrapped: a heading of pi becomes -pi, the same direction).
"""

from __future__ import annotations

import numpy as np

from dsdrive.data.types import (
    EGO_STATUS_FIELDS,
    Agents,
    MapPolylines,
    PlanningInputs,
    PlanningSample,
    PlanningTargets,
)

MIRROR_SUFFIX = "_mirror"
"""Appended to the ``sample_id`` of a mirrored copy, so originals and copies never collide."""
MIRRORED_COMMAND = {"LEFT": "RIGHT", "RIGHT": "LEFT", "STRAIGHT": "STRAIGHT"}
"""The navigation command of the mirrored sample."""
STATUS_SIGN = np.array([-1.0 if f in ("vy", "ay", "yaw_rate", "steering") else 1.0 for f in EGO_STATUS_FIELDS], np.float32)
"""(6,) per-field sign of the mirrored ego status over ``EGO_STATUS_FIELDS``: lateral velocity,
lateral acceleration, yaw rate and steering flip."""


def _flip_poses(poses: np.ndarray) -> np.ndarray:
    """(..., 3) ``x, y, heading`` -> ``x, -y, -heading`` (float32)."""
    out = np.array(poses, np.float32, copy=True)
    out[..., 1:3] = -out[..., 1:3]
    return out


def mirrored_sample_id(sample_id: str, mirrored: bool) -> str:
    """The id after mirroring a sample whose ``mirrored`` flag is ``mirrored``: add
    :data:`MIRROR_SUFFIX` to an original, remove it from a mirrored copy.

    Raises:
        ValueError: ``mirrored`` is True but ``sample_id`` does not end with the suffix.
    """
    if not mirrored:
        return sample_id + MIRROR_SUFFIX
    if not sample_id.endswith(MIRROR_SUFFIX):
        raise ValueError(f"sample {sample_id!r}: field 'mirrored' is True but the id lacks the suffix {MIRROR_SUFFIX!r}")
    return sample_id[: -len(MIRROR_SUFFIX)]


def mirror_sample(sample: PlanningSample) -> PlanningSample:
    """The left-right mirror image of ``sample`` (a new object; the input is not changed).

    Args:
        sample: a planning sample in its ego frame (x forward, y left, m); shapes as in
            :mod:`dsdrive.data.types`: history (4, 3), status (6,), future (6, 3), agents (N, 7) /
            (N, 2) / futures (N, 12, 3), map (M, 20, 2).

    Returns:
        The mirrored sample (see the module docstring for every field), ``mirrored`` flipped.

    Raises:
        ValueError: the sample has cameras (an image cannot be mirrored by its metadata) or an
            annotation (its reasoning text and per-side labels would no longer match: mirror
            before annotating), or a command outside LEFT / RIGHT / STRAIGHT; the message names
            the sample and the field.
    """
    i, t = sample.inputs, sample.targets
    if i.cameras:
        raise ValueError(f"sample {i.sample_id!r}: field 'cameras' holds {len(i.cameras)} cameras; "
                         "a camera sample cannot be mirrored (its images would not match)")
    if sample.annotation is not None:
        raise ValueError(f"sample {i.sample_id!r}: field 'annotation' is set; mirror samples before annotating them "
                         "(the reasoning text and left/right labels would not match the mirrored scene)")
    if i.command not in MIRRORED_COMMAND:
        raise ValueError(f"sample {i.sample_id!r}: field 'command' is {i.command!r}, expected one of {tuple(MIRRORED_COMMAND)}")
    boxes = np.array(i.agents.boxes, np.float32, copy=True)
    boxes[:, 1], boxes[:, 6] = -boxes[:, 1], -boxes[:, 6]
    velocities = np.array(i.agents.velocities, np.float32, copy=True)
    velocities[:, 1] = -velocities[:, 1]
    points = np.array(i.map.points, np.float32, copy=True)
    points[..., 1] = -points[..., 1]
    inputs = PlanningInputs(
        sample_id=mirrored_sample_id(i.sample_id, sample.mirrored),
        scene_id=i.scene_id,
        ego_history=_flip_poses(i.ego_history),
        ego_history_mask=np.array(i.ego_history_mask, bool, copy=True),
        ego_status=(np.asarray(i.ego_status, np.float32) * STATUS_SIGN).astype(np.float32),
        ego_status_mask=np.array(i.ego_status_mask, bool, copy=True),
        command=MIRRORED_COMMAND[i.command],
        agents=Agents(list(i.agents.ids), list(i.agents.types), boxes, velocities),
        map=MapPolylines(list(i.map.types), points),
        cameras=[],
    )
    targets = PlanningTargets(
        ego_future=_flip_poses(t.ego_future),
        ego_future_mask=np.array(t.ego_future_mask, bool, copy=True),
        agent_futures=_flip_poses(t.agent_futures),
        agent_future_masks=np.array(t.agent_future_masks, bool, copy=True),
    )
    return PlanningSample(sample.source, sample.map_name, sample.timestamp, inputs, targets, None,
                          ego_source=sample.ego_source, ego_track_id=sample.ego_track_id, mirrored=not sample.mirrored)
