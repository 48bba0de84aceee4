"""Bird's-eye-view (BEV) image of a planning sample, for VLM annotators on samples without cameras.

ScenarioNet / MetaDrive samples carry no images; a VLM annotator is shown this rendering instead
(the idea of drawing the scene for a VLM follows VLM-AD's annotated images and the BEV inputs
of GPT-Driver-style prompting). Drawn with matplotlib's object API (no pyplot state, so it is
safe in worker threads):

* the ego vehicle: a red box at the centre, pointing up: the ego box of :mod:`dsdrive.constants`
  (4.084 x 1.85 m, centred :data:`~dsdrive.constants.EGO_CENTER_OFFSET_M` ahead of the origin as
  in the collision metric);
* agents: blue oriented boxes (orange for pedestrians/cyclists); the
  :data:`dsdrive.annotation.scene_context.MAX_CONTEXT_AGENTS` nearest are labelled with the short
  aliases ``A1``, ``A2`` ... (nearest first) that the prompt lists and the answers use;
* map polylines: grey (lane centrelines dashed, road edges black, crossings green).

Image axes: up = ego +x (forward), left = ego +y (left); the view spans ``±range_m`` metres.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from dsdrive.annotation.scene_context import MAX_CONTEXT_AGENTS, agent_alias, nearest_agents
from dsdrive.constants import EGO_CENTER_OFFSET_M, EGO_LENGTH_M, EGO_WIDTH_M
from dsdrive.data.types import PlanningSample
from dsdrive.geometry import box_corners

_MAP_STYLE = {
    "lane_centerline": dict(color="0.6", linestyle="--", linewidth=0.8),
    "lane_divider": dict(color="0.5", linewidth=1.0),
    "road_edge": dict(color="black", linewidth=1.5),
    "ped_crossing": dict(color="tab:green", linewidth=1.0),
}


def _to_image_axes(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ego-frame (..., 2) metres -> plot coordinates (u = -y to the right, v = x up)."""
    return -xy[..., 1], xy[..., 0]


def render_bev(sample: PlanningSample, size_px: int = 448, range_m: float = 50.0, label_agents: int | None = None) -> Image.Image:
    """Render a sample as a square RGB BEV image.

    Args:
        sample: the sample (ego frame: x forward, y left, metres); only its inputs are drawn
            (no future), so the image can be shown to any annotator.
        size_px: width = height of the image, pixels.
        range_m: half-width of the view, metres.
        label_agents: how many of the nearest agents get their id drawn (default
            :data:`dsdrive.annotation.scene_context.MAX_CONTEXT_AGENTS`).

    Returns:
        A ``size_px`` x ``size_px`` RGB :class:`PIL.Image.Image`.

    Raises:
        ValueError: ``size_px`` < 32 or ``range_m`` <= 0.
    """
    if size_px < 32 or range_m <= 0:
        raise ValueError(f"render_bev: size_px={size_px} must be >= 32 and range_m={range_m} > 0")
    fig = Figure(figsize=(size_px / 100, size_px / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-range_m, range_m)
    ax.set_ylim(-range_m, range_m)
    ax.set_aspect("equal")
    ax.axis("off")
    inp = sample.inputs
    for kind, pts in zip(inp.map.types, inp.map.points):
        u, v = _to_image_axes(np.asarray(pts))
        ax.plot(u, v, **_MAP_STYLE.get(kind, dict(color="0.6", linewidth=0.8)))
    boxes = np.asarray(inp.agents.boxes, dtype=np.float64).reshape(-1, 7)
    if len(boxes):
        corners = box_corners(boxes[:, 0], boxes[:, 1], boxes[:, 3], boxes[:, 4], boxes[:, 6])
        for kind, c in zip(inp.agents.types, corners):
            u, v = _to_image_axes(c)
            colour = "tab:orange" if kind in ("PEDESTRIAN", "CYCLIST") else "tab:blue"
            ax.fill(u, v, color=colour, alpha=0.7, linewidth=0)
        labelled = nearest_agents(sample, MAX_CONTEXT_AGENTS if label_agents is None else label_agents)
        for rank, i in enumerate(labelled):
            u, v = _to_image_axes(boxes[i, :2])
            if abs(u) < range_m and abs(v) < range_m:
                ax.text(u + 1.0, v + 1.0, agent_alias(rank), fontsize=6, color="navy", clip_on=True)
    ego = box_corners(EGO_CENTER_OFFSET_M, 0.0, EGO_LENGTH_M, EGO_WIDTH_M, 0.0)
    u, v = _to_image_axes(ego)
    ax.fill(u, v, color="tab:red")
    ax.annotate("", xy=(0, 4.0), xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="tab:red"))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("RGB")


def save_bev_png(sample: PlanningSample, path, **kwargs) -> None:
    """Write :func:`render_bev` of ``sample`` to ``path`` as PNG (kwargs go to :func:`render_bev`)."""
    render_bev(sample, **kwargs).save(path, format="PNG")
