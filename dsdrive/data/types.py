"""The planning sample: the one data contract of dsdrive (see ``shared/DESIGN.md``).

Every builder (ScenarioNet, nuScenes, MetaDrive, a simulator's live state) produces
:class:`PlanningSample`; every planner, teacher and metric consumes it.

Conventions, everywhere in this module:

* Units: metres, seconds, radians, m/s, m/s^2, rad/s.
* **Ego frame**: x forward, y left, origin at the ego pose of the current time (nuScenes
  ego_pose; a ScenarioNet track's position), heading 0 along +x, angles counter-clockwise.
* Time grid: history at -2.0, -1.5, -1.0, -0.5 s; future at +0.5 ... +3.0 s (2 Hz, the nuScenes
  planning convention); agent futures at +0.5 ... +6.0 s.

What a planner may see and what it must predict are separate types, following navsim's
``AgentInput`` / ``Scene`` split: :class:`PlanningInputs` holds no future value at all, and
:class:`PlanningTargets` holds the ground-truth future. A planner's signature takes
``PlanningInputs`` only, so a future value cannot leak into a prompt or a feature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsdrive.constants import AGENT_FUTURE_STEPS, FUTURE_STEPS, HISTORY_STEPS, STEP_SECONDS  # noqa: F401 (re-exported: the contract)

MAP_POINTS = 20
"""Points per map polyline after arc-length resampling."""

COMMANDS = ("LEFT", "RIGHT", "STRAIGHT")
"""Navigation commands; multi-mode heads index their command groups in this order
(always index through this tuple, never with literals)."""
COMMAND_LATERAL_THRESHOLD_M = 2.0
"""Command rule: lateral offset y at +3 s >= 2 m -> LEFT, <= -2 m -> RIGHT, else STRAIGHT."""

AGENT_TYPES = ("VEHICLE", "PEDESTRIAN", "CYCLIST", "TRAFFIC_CONE", "TRAFFIC_BARRIER", "OTHER")
"""Agent classes (ScenarioNet's vocabulary plus OTHER); nuScenes categories map onto these."""
MAP_TYPES = ("lane_centerline", "lane_divider", "road_edge", "ped_crossing")
"""Map polyline classes."""
EGO_STATUS_FIELDS = ("vx", "vy", "ax", "ay", "yaw_rate", "steering")
"""Ego status vector, in the ego frame at the current time: velocity (m/s), acceleration
(m/s^2), yaw rate (rad/s, counter-clockwise positive), steering angle (rad, from the nuScenes
CAN bus where present). ``ego_status_mask`` says which entries are real measurements."""
EGO_SOURCES = ("recorded_ego", "agent", "on_policy")
"""Whose viewpoint a sample takes (:attr:`PlanningSample.ego_source`): the vehicle that recorded
the log, another logged vehicle taken as the ego (LAV, Chen & Kraehenbuehl, CVPR 2022,
"Learning from All Vehicles"; ``data_builders/scenarionet.py``), or the student's own simulated
ego in a closed-loop rollout, labelled by PDM-Closed (DAgger, :mod:`dsdrive.training.dagger`)."""
CAMERA_NAMES = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)


def command_from_future(ego_future_xy: np.ndarray) -> str:
    """Navigation command from the lateral offset of the last future waypoint (VAD/SparseDrive).

    Args:
        ego_future_xy: (6, 2) or (6, 3) ego-frame future, metres; the last row is +3.0 s.

    Returns:
        ``"LEFT"`` if y >= 2 m, ``"RIGHT"`` if y <= -2 m, else ``"STRAIGHT"``.
    """
    y = float(np.asarray(ego_future_xy)[-1, 1])
    if y >= COMMAND_LATERAL_THRESHOLD_M:
        return "LEFT"
    if y <= -COMMAND_LATERAL_THRESHOLD_M:
        return "RIGHT"
    return "STRAIGHT"


def _f32(a: Any, shape_tail: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, *shape_tail), dtype=np.float32)
    return arr.reshape(-1, *shape_tail) if shape_tail else arr


@dataclass
class Agents:
    """Other road users at the current time, in the ego frame.

    Attributes:
        ids: N track ids (strings, stable within a scene).
        types: N classes from :data:`AGENT_TYPES`.
        boxes: (N, 7) float32 ``x, y, z, length, width, height, yaw`` (m, rad); yaw relative
            to the ego heading.
        velocities: (N, 2) float32 ``vx, vy`` in the ego frame (m/s).
    """

    ids: list[str]
    types: list[str]
    boxes: np.ndarray
    velocities: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> "Agents":
        """No agents: (0, 7) boxes, (0, 2) velocities."""
        return cls([], [], np.zeros((0, 7), np.float32), np.zeros((0, 2), np.float32))


@dataclass
class MapPolylines:
    """Map elements in the ego frame.

    Attributes:
        types: M classes from :data:`MAP_TYPES`.
        points: (M, 20, 2) float32 polyline points (m), resampled at equal arc length.
    """

    types: list[str]
    points: np.ndarray

    def __len__(self) -> int:
        return len(self.types)

    @classmethod
    def empty(cls) -> "MapPolylines":
        """No polylines: (0, 20, 2) points."""
        return cls([], np.zeros((0, MAP_POINTS, 2), np.float32))


@dataclass
class Camera:
    """One camera of a sample.

    Attributes:
        name: camera channel, e.g. ``CAM_FRONT``.
        image_path: absolute path of the image file.
        intrinsics: (3, 3) float32 pinhole matrix (pixels).
        cam2ego: (4, 4) float32 transform from the camera frame (x right, y down, z forward)
            to the ego frame of this sample.
    """

    name: str
    image_path: str
    intrinsics: np.ndarray
    cam2ego: np.ndarray


@dataclass
class PlanningInputs:
    """Everything a planner may see at the current time. No future value is stored here.

    Attributes:
        sample_id: unique id of the keyframe.
        scene_id: scene (log) the keyframe belongs to.
        ego_history: (4, 3) float32 ``x, y, heading`` at -2.0 ... -0.5 s, ego frame.
        ego_history_mask: (4,) bool, False where the history is before the log start.
        ego_status: (6,) float32 over :data:`EGO_STATUS_FIELDS`.
        ego_status_mask: (6,) bool, True where the field is a real measurement.
        command: navigation command from :data:`COMMANDS`.
        agents: current agents (no futures).
        map: current map polylines.
        cameras: the camera rig, when the source has images.
    """

    sample_id: str
    scene_id: str
    ego_history: np.ndarray
    ego_history_mask: np.ndarray
    ego_status: np.ndarray
    ego_status_mask: np.ndarray
    command: str
    agents: Agents
    map: MapPolylines
    cameras: list[Camera] = field(default_factory=list)

    @property
    def speed(self) -> float:
        """Current ego speed (m/s)."""
        return float(np.hypot(self.ego_status[0], self.ego_status[1]))


@dataclass
class PlanningTargets:
    """The ground-truth future of a keyframe. Only teachers, losses and metrics read it.

    Attributes:
        ego_future: (6, 3) float32 ``x, y, heading`` at +0.5 ... +3.0 s, ego frame.
        ego_future_mask: (6,) bool, False past the end of the log.
        agent_futures: (N, 12, 3) float32 ``x, y, heading`` of each agent in
            :attr:`PlanningInputs.agents` order at +0.5 ... +6.0 s, ego frame of the current time.
        agent_future_masks: (N, 12) bool.
    """

    ego_future: np.ndarray
    ego_future_mask: np.ndarray
    agent_futures: np.ndarray
    agent_future_masks: np.ndarray


@dataclass
class PlanningSample:
    """One keyframe: metadata, planner inputs, ground-truth targets, optional annotation.

    The provenance tags (``ego_source``, ``ego_track_id``, ``mirrored``) are metadata like
    ``source``: they sit here, not in :class:`PlanningInputs`, so no planner reads them.
    Evaluation scores only original samples (:attr:`augmented` False) unless told otherwise.

    Attributes:
        source: ``nuscenes``, ``scenarionet:nuscenes``, ``scenarionet:waymo``, ``metadrive`` ...
        map_name: map/location name (e.g. ``boston-seaport``).
        timestamp: seconds since the log start.
        annotation: an annotator's annotation as a dict of :class:`dsdrive.annotation.schema.Annotation`
            fields, or None.
        ego_source: ``recorded_ego`` (the vehicle that recorded the log), ``agent`` (another
            logged vehicle taken as the ego, LAV) or ``on_policy`` (a state the student visited in
            closed loop, DAgger); see :data:`EGO_SOURCES`.
        ego_track_id: the log's track id of the vehicle taken as the ego (ScenarioNet's
            ``sdc_id`` for the recorded ego); ``""`` when the source has no track ids.
        mirrored: True for a left-right mirrored copy (:func:`dsdrive.data.mirror.mirror_sample`).

    Raises:
        ValueError: ``ego_source`` outside :data:`EGO_SOURCES` (names the sample and value).
    """

    source: str
    map_name: str
    timestamp: float
    inputs: PlanningInputs
    targets: PlanningTargets
    annotation: dict | None = None
    ego_source: str = "recorded_ego"
    ego_track_id: str = ""
    mirrored: bool = False

    def __post_init__(self) -> None:
        if self.ego_source not in EGO_SOURCES:
            raise ValueError(f"PlanningSample {self.inputs.sample_id!r}: field 'ego_source' is {self.ego_source!r}, "
                             f"expected one of {EGO_SOURCES}")
        self.mirrored = bool(self.mirrored)

    @property
    def augmented(self) -> bool:
        """True for a sample that is not the recorded log as driven: another vehicle as the ego, or mirrored."""
        return self.ego_source != "recorded_ego" or self.mirrored

    @property
    def sample_id(self) -> str:
        """The keyframe id (``inputs.sample_id``)."""
        return self.inputs.sample_id

    @property
    def scene_id(self) -> str:
        """The scene id (``inputs.scene_id``)."""
        return self.inputs.scene_id

    # ----------------------------------------------------------------- row (Arrow) conversion
    def to_row(self) -> dict:
        """Flat dict of Python lists matching :func:`dsdrive.data.dataset.planning_features`."""
        i, t = self.inputs, self.targets
        return {
            "sample_id": i.sample_id,
            "scene_id": i.scene_id,
            "source": self.source,
            "map_name": self.map_name,
            "timestamp": float(self.timestamp),
            "ego_source": self.ego_source,
            "ego_track_id": self.ego_track_id,
            "mirrored": bool(self.mirrored),
            "ego_history": np.asarray(i.ego_history, np.float32).tolist(),
            "ego_history_mask": np.asarray(i.ego_history_mask, bool).tolist(),
            "ego_status": np.asarray(i.ego_status, np.float32).tolist(),
            "ego_status_mask": np.asarray(i.ego_status_mask, bool).tolist(),
            "command": i.command,
            "ego_future": np.asarray(t.ego_future, np.float32).tolist(),
            "ego_future_mask": np.asarray(t.ego_future_mask, bool).tolist(),
            "agent_ids": list(i.agents.ids),
            "agent_types": list(i.agents.types),
            "agent_boxes": np.asarray(i.agents.boxes, np.float32).tolist(),
            "agent_velocities": np.asarray(i.agents.velocities, np.float32).tolist(),
            "agent_futures": np.asarray(t.agent_futures, np.float32).tolist(),
            "agent_future_masks": np.asarray(t.agent_future_masks, bool).tolist(),
            "map_types": list(i.map.types),
            "map_points": np.asarray(i.map.points, np.float32).tolist(),
            "cameras": [
                {
                    "name": c.name,
                    "image_path": c.image_path,
                    "intrinsics": np.asarray(c.intrinsics, np.float32).tolist(),
                    "cam2ego": np.asarray(c.cam2ego, np.float32).tolist(),
                }
                for c in i.cameras
            ],
            "annotation": json.dumps(self.annotation) if self.annotation is not None else None,
        }

    @classmethod
    def from_row(cls, row: dict) -> "PlanningSample":
        """Inverse of :meth:`to_row` (accepts lists or numpy arrays). A row written before the
        provenance tags existed (no ``ego_source`` / ``ego_track_id`` / ``mirrored``) loads as the
        recorded ego, track id ``""``, not mirrored."""
        n = len(row["agent_ids"])
        agents = Agents(
            ids=list(row["agent_ids"]),
            types=list(row["agent_types"]),
            boxes=_f32(row["agent_boxes"], (7,)).reshape(n, 7),
            velocities=_f32(row["agent_velocities"], (2,)).reshape(n, 2),
        )
        m = len(row["map_types"])
        map_ = MapPolylines(
            types=list(row["map_types"]),
            points=_f32(row["map_points"], (MAP_POINTS, 2)).reshape(m, MAP_POINTS, 2),
        )
        cameras = [
            Camera(
                name=c["name"],
                image_path=c["image_path"],
                intrinsics=np.asarray(c["intrinsics"], np.float32).reshape(3, 3),
                cam2ego=np.asarray(c["cam2ego"], np.float32).reshape(4, 4),
            )
            for c in (row.get("cameras") or [])
        ]
        inputs = PlanningInputs(
            sample_id=row["sample_id"],
            scene_id=row["scene_id"],
            ego_history=np.asarray(row["ego_history"], np.float32).reshape(HISTORY_STEPS, 3),
            ego_history_mask=np.asarray(row["ego_history_mask"], bool).reshape(HISTORY_STEPS),
            ego_status=np.asarray(row["ego_status"], np.float32).reshape(len(EGO_STATUS_FIELDS)),
            ego_status_mask=np.asarray(row["ego_status_mask"], bool).reshape(len(EGO_STATUS_FIELDS)),
            command=row["command"],
            agents=agents,
            map=map_,
            cameras=cameras,
        )
        targets = PlanningTargets(
            ego_future=np.asarray(row["ego_future"], np.float32).reshape(FUTURE_STEPS, 3),
            ego_future_mask=np.asarray(row["ego_future_mask"], bool).reshape(FUTURE_STEPS),
            agent_futures=_f32(row["agent_futures"], (AGENT_FUTURE_STEPS, 3)).reshape(n, AGENT_FUTURE_STEPS, 3),
            agent_future_masks=np.asarray(row["agent_future_masks"], bool).reshape(n, AGENT_FUTURE_STEPS),
        )
        ann = row.get("annotation")
        return cls(
            source=row["source"],
            map_name=row["map_name"],
            timestamp=float(row["timestamp"]),
            inputs=inputs,
            targets=targets,
            annotation=json.loads(ann) if isinstance(ann, str) else ann,
            ego_source=row.get("ego_source") or "recorded_ego",
            ego_track_id=row.get("ego_track_id") or "",
            mirrored=bool(row.get("mirrored") or False),
        )
