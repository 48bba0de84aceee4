"""Planner names -> planner classes, for command lines (``eval/open_loop.py --planner NAME``).

Each entry names a module and a class, imported only when asked for (the student pulls in
transformers). A class that needs trained weights exposes ``load(checkpoint_dir, **kw)``;
the others are built with ``Class(**kw)``. To add a planner, add one line to
:data:`PLANNERS` (the student will be ``"student"``, loaded with ``--checkpoint DIR``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from dsdrive.planners.base import Planner

PLANNERS: dict[str, tuple[str, str, bool]] = {
    # name: (module, class, needs a checkpoint)
    "constant_velocity": ("dsdrive.planners.constant_velocity", "ConstantVelocityPlanner", False),
    "constant_turn_rate": ("dsdrive.planners.constant_velocity", "ConstantTurnRatePlanner", False),
    "lane_following": ("dsdrive.planners.lane_priors", "LaneFollowingPlanner", False),  # the student's lane prior alone
    "lane_idm": ("dsdrive.planners.lane_priors", "LaneIDMPlanner", False),  # the student's lane-IDM prior alone
    "ego_mlp": ("dsdrive.planners.ego_mlp", "EgoMLPPlanner", True),
    "student": ("dsdrive.planners.student", "StudentPlanner", True),
    "student_checked": ("dsdrive.planners.student", "CheckedStudentPlanner", True),  # the student's modes through PDM-Closed's check
    "planning_teacher": ("dsdrive.planners.distilldrive_teacher", "PlanningTeacherPlanner", True),  # privileged (GT agent futures)
    "ground_truth": ("dsdrive.planners.log_future", "GroundTruthPlanner", False),  # privileged (the logged future)
    "log_waypoints": ("dsdrive.planners.log_future", "LogWaypointsPlanner", False),  # privileged (closed loop: the log)
    "pdm_closed": ("dsdrive.planners.pdm_closed", "PDMClosedPlanner", False),  # privileged (route, map; closed loop: the world)
    "text_trajectory_vla": ("dsdrive.planners.text_trajectory", "TextTrajectoryPlanner", True),  # VLM decoding waypoint text (baseline)
}


CHECKPOINT_OF: dict[str, str] = {"student_checked": "student"}
"""Planners that load another planner's checkpoints (``--cv-runs student_checked=CV_OUT/runs/student_idm_modes``)."""


def planner_names() -> list[str]:
    """Names accepted by :func:`load_planner`."""
    return list(PLANNERS)


def needs_checkpoint(name: str) -> bool:
    """Whether planner ``name`` is loaded from a checkpoint folder.

    Raises:
        KeyError: unknown name (lists the known ones).
    """
    if name not in PLANNERS:
        raise KeyError(f"unknown planner {name!r}; known planners: {', '.join(PLANNERS)}")
    return PLANNERS[name][2]


def load_planner(name: str, checkpoint: str | Path | None = None, **kw) -> Planner:
    """Build planner ``name``; ``checkpoint`` is the weights folder for trained planners.

    Raises:
        KeyError: unknown name.
        ValueError: a trained planner without ``checkpoint``, a checkpoint given to a planner
            that takes none, or a checkpoint folder that is missing or cannot be loaded as this
            planner (one line naming the planner and the folder, the cause appended).
    """
    with_checkpoint = needs_checkpoint(name)
    module_name, class_name, _ = PLANNERS[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    if with_checkpoint:
        if checkpoint is None:
            raise ValueError(f"planner {name!r} needs --checkpoint DIR (a folder written by its training script)")
        if not Path(checkpoint).is_dir():
            raise ValueError(f"--checkpoint {name}={checkpoint}: no such folder")
        try:
            return cls.load(checkpoint, **kw)
        except Exception as e:  # noqa: BLE001 - any loading failure becomes one line naming the folder
            cause = " ".join(str(e).split())[:300]
            raise ValueError(f"--checkpoint {name}={checkpoint}: not a {name} checkpoint ({type(e).__name__}: {cause})") from e
    if checkpoint is not None:
        raise ValueError(f"planner {name!r} takes no checkpoint (got {checkpoint})")
    return cls(**kw)


def parse_checkpoints(values: list[str], planners: list[str]) -> dict[str, str]:
    """``--checkpoint`` values -> {planner: dir}. ``NAME=DIR``, or a bare ``DIR`` when exactly one
    requested planner needs a checkpoint.

    Raises:
        ValueError: a bare ``DIR`` while several requested planners need a checkpoint.
    """
    out: dict[str, str] = {}
    trained = [p for p in planners if needs_checkpoint(p)]
    for v in values:
        name, sep, path = v.partition("=")
        if sep and name in planner_names():
            out[name] = path
        elif len(trained) == 1:
            out[trained[0]] = v
        else:
            raise ValueError(f"--checkpoint {v}: say which planner it is for (NAME=DIR); planners needing one: {trained}")
    return out
