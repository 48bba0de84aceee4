"""Which agents a VLM annotator is told about, and the short names it sees for them.

The text context of a VLM prompt (:mod:`dsdrive.annotation.annotators.vlm_common`) and the BEV
image drawn for samples without cameras (:mod:`dsdrive.annotation.bev_render`) must list the
same agents under the same names, so both read them from here (this module imports neither).
"""

from __future__ import annotations

import numpy as np

from dsdrive.data.types import PlanningSample

MAX_CONTEXT_AGENTS = 12
"""Nearest agents listed in the text context (and drawn with ids on a BEV image)."""


def nearest_agents(sample: PlanningSample, k: int = MAX_CONTEXT_AGENTS) -> list[int]:
    """Indices of the ``k`` agents nearest to the ego (distance of the box centre from the
    origin of the ego frame, metres), nearest first; fewer when the sample has fewer agents."""
    boxes = sample.inputs.agents.boxes
    if len(boxes) == 0:
        return []
    return list(np.argsort(np.hypot(boxes[:, 0], boxes[:, 1]))[:k])


def agent_alias(rank: int) -> str:
    """Short name of the ``rank``-th nearest agent (``A1``, ``A2`` ...) used in prompts and on BEV
    images instead of long track ids; answers are mapped back to the real ids."""
    return f"A{rank + 1}"
