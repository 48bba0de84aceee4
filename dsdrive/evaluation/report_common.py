"""What the open-loop and closed-loop HTML reports share: page layout, jinja2 set-up, BEV drawing.

Both reports are self-contained static pages rendered with jinja2 from templates that extend
``dsdrive/evaluation/templates/base.html.j2`` (one stylesheet, one page skeleton); plots are
matplotlib figures (Agg backend) saved as PNG. The drawing helpers here take coordinates in
whichever metric frame the caller plots in (the closed-loop report: the simulator frame; the
open-loop report: the ego frame of the sample, x forward, y left) and never convert frames.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from dsdrive.geometry import box_corners

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
"""Folder of the shared templates (``base.html.j2``)."""
AGENT_COLORS = {"VEHICLE": "#1f77b4", "PEDESTRIAN": "#d62728", "CYCLIST": "#9467bd",
                "TRAFFIC_CONE": "#ff7f0e", "TRAFFIC_BARRIER": "#8c564b", "OTHER": "#7f7f7f"}
"""Fill colour per agent type (:data:`dsdrive.data.types.AGENT_TYPES`)."""
MAP_STYLE = {"lane_centerline": dict(color="#dddddd", lw=0.6), "lane_divider": dict(color="#aaaaaa", lw=0.8, ls="--"),
             "road_edge": dict(color="#444444", lw=1.0), "ped_crossing": dict(color="#88aa88", lw=0.8)}
"""matplotlib line style per map polyline type (:data:`dsdrive.data.types.MAP_TYPES`)."""


def fmt(value, digits: int = 3) -> str:
    """Table cell text: ``-`` for None/undefined, yes/no for booleans, ``digits`` decimals for floats."""
    import jinja2

    if value is None or isinstance(value, jinja2.Undefined):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_environment(*template_dirs: str | Path):
    """jinja2 environment over ``template_dirs`` then the shared :data:`TEMPLATE_DIR`, autoescaped,
    with the ``fmt`` filter (:func:`fmt`)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader([str(d) for d in (*template_dirs, TEMPLATE_DIR)]), autoescape=True)
    env.filters["fmt"] = fmt
    return env


def new_figure(size: tuple[float, float] = (7.5, 7.5), dpi: int = 90):
    """(fig, ax) from matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, dpi=dpi)


def figure_png_bytes(fig) -> bytes:
    """The figure as PNG bytes (after ``tight_layout``); the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def figure_png_base64(fig) -> str:
    """The figure as a base64 PNG string (for a ``data:image/png;base64,`` URI); the figure is closed."""
    return base64.b64encode(figure_png_bytes(fig)).decode("ascii")


def square_view(points: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Square axis limits around (P, 2) points (m) grown by ``margin`` (m): (lo (2,), hi (2,))."""
    lo, hi = points.min(0) - margin, points.max(0) + margin
    span = float((hi - lo).max())
    mid = (lo + hi) / 2
    return mid - span / 2, mid + span / 2


def draw_map(ax, types: list[str], polylines, lo: np.ndarray, hi: np.ndarray, zorder: int = 1) -> None:
    """Draw the map polylines ((P, 2) m each, with their :data:`MAP_STYLE` type) that have a point
    inside the view ``[lo, hi]``."""
    for t, line in zip(types, polylines):
        line = np.asarray(line)
        if ((line >= lo) & (line <= hi)).all(1).any():
            ax.plot(line[:, 0], line[:, 1], zorder=zorder, **MAP_STYLE.get(t, {}))


def draw_boxes(ax, types: list[str], x, y, length, width, yaw, alpha: float = 0.6, zorder: int = 3, **kw) -> None:
    """Fill oriented boxes (centre x, y, length, width in m, yaw in rad; arrays of N) coloured by agent type."""
    corners = box_corners(*(np.atleast_1d(v) for v in (x, y, length, width, yaw)))
    for typ, c in zip(types, corners):
        ax.fill(c[:, 0], c[:, 1], color=AGENT_COLORS.get(typ, "#777"), alpha=alpha, zorder=zorder, **kw)


def outline_box(ax, x: float, y: float, length: float, width: float, yaw: float, **kw) -> None:
    """Draw the outline of one oriented box (centre x, y, m; length, width, m; yaw rad); ``kw`` go to ``ax.plot``."""
    c = box_corners(x, y, length, width, yaw)
    c = np.vstack([c, c[:1]])
    ax.plot(c[:, 0], c[:, 1], **kw)


def jsonable(x):
    """Nested dicts/lists/tuples with numpy scalars and non-finite floats made JSON-safe (NaN, inf -> None)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x
