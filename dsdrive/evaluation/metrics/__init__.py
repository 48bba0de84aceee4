"""Evaluation metrics. Open-loop planning: L2 and collision rate (ST-P3 and UniAD protocols)."""

from dsdrive.constants import EGO_CENTER_OFFSET_M, EGO_LENGTH_M, EGO_WIDTH_M  # re-exported (public API)
from dsdrive.evaluation.metrics.planning import (
    HORIZON_STEPS,
    PROTOCOLS,
    FutureAgentBoxes,
    PerSampleMetrics,
    boxes_overlap,
    complete_future_mask,
    evaluate_trajectories,
    summarize,
    summarize_by_command,
)
from dsdrive.geometry import trajectory_yaw  # re-exported (public API)

__all__ = [
    "EGO_CENTER_OFFSET_M",
    "EGO_LENGTH_M",
    "EGO_WIDTH_M",
    "HORIZON_STEPS",
    "PROTOCOLS",
    "FutureAgentBoxes",
    "PerSampleMetrics",
    "boxes_overlap",
    "complete_future_mask",
    "evaluate_trajectories",
    "summarize",
    "summarize_by_command",
    "trajectory_yaw",
]
