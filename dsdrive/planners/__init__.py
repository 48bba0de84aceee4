"""Planners behind one interface: ``compute_trajectory(inputs) -> waypoints``."""

from dsdrive.planners.base import Planner

__all__ = ["Planner"]
