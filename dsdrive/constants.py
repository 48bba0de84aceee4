"""Vehicle geometry and timing constants, defined once for every stage.

Units: metres, seconds. Boxes are (length along the heading, width across it).

Ego box. Every planning metric, risk rule, BEV raster and scene encoding uses the nuScenes ego
box (Renault Zoe, 4.084 m x 1.85 m), as UniAD, VAD and SparseDrive do in their collision metric.
The MetaDrive vehicle that drives in closed loop has its own body (``METADRIVE_EGO_*``): the
simulator's collision checks use that body, our metrics the nuScenes box.

Timing. Planning samples are keyframes at 2 Hz (``STEP_SECONDS``); the simulator steps at 10 Hz
(``SIM_DT``: MetaDrive's 0.02 s physics x decision_repeat 5, ScenarioNet's 10 Hz logs).
"""

from __future__ import annotations

EGO_LENGTH_M = 4.084
"""nuScenes ego box length (m), as in UniAD / VAD / SparseDrive's collision metric."""
EGO_WIDTH_M = 1.85
"""nuScenes ego box width (m)."""
EGO_CENTER_OFFSET_M = 0.5
"""Forward offset (m) from a waypoint (the ego reference point) to the ego box centre."""

METADRIVE_EGO_LENGTH_M = 4.515
"""Length (m) of MetaDrive's default ego vehicle body (closed loop only)."""
METADRIVE_EGO_WIDTH_M = 1.852
"""Width (m) of MetaDrive's default ego vehicle body (closed loop only)."""

STEP_SECONDS = 0.5
"""Spacing (s) of keyframes, ego history, ego future and agent futures (2 Hz, nuScenes)."""
HISTORY_STEPS = 4
"""Ego history poses at -2.0, -1.5, -1.0, -0.5 s."""
FUTURE_STEPS = 6
"""Ego future waypoints at +0.5 ... +3.0 s."""
AGENT_FUTURE_STEPS = 12
"""Agent future positions at +0.5 ... +6.0 s."""

SIM_DT = 0.1
"""Seconds per simulator step (MetaDrive: 0.02 s physics x decision_repeat 5; ScenarioNet 10 Hz)."""
