"""PV -> BEV alignment of VLM-named objects (RSD, arXiv 2511.14499) and the Diff_Risk check.

A VLM names objects in the perspective view (PV): a camera + a 2D box in that image's pixels
(:class:`dsdrive.annotation.schema.KeyObject` / :class:`AgentRisk`). RSD supervises its BEV RiskHead
with per-object risk, so each named object must be tied to a ground-truth agent of the sample.
RSD projects PV detections to BEV and matches by nearest neighbour; with ground-truth 3D boxes
and calibration we do it the other way round, exactly:

1. project every agent box (ego frame) into the named camera with
   :func:`dsdrive.data.camera.project_boxes_to_camera` (near-plane clipping, >= 25 % of the
   silhouette inside the image = visible);
2. **IoU match**: pairs (object, visible agent) with IoU >= :data:`IOU_THRESHOLD` (0.3), taken
   greedily by IoU, one agent per object and one object per agent and camera (an agent
   seen by two cameras may be named once in each);
3. **centre fallback** for the objects left: the visible, still free agent whose projected box
   centre is nearest to the object's box centre, if that distance is <=
   :data:`CENTRE_FRACTION` (0.5) x the diagonal of the object's box;
4. everything else is **unmatched** and counted by reason (no camera/box, unknown camera, no
   visible agent, too far).

Diff_Risk (the consistency of two risk annotations) is defined once in
:mod:`dsdrive.evaluation.metrics.risk` and re-exported here as :func:`diff_risk`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from dsdrive.annotation.schema import Annotation
from dsdrive.evaluation.metrics.risk import diff_risk  # noqa: F401  (re-export)
from dsdrive.data.camera import box_iou_2d, project_boxes_to_camera
from dsdrive.data.types import PlanningSample

IOU_THRESHOLD = 0.3
"""Minimum 2D IoU between a named box and a projected agent box for an IoU match."""
CENTRE_FRACTION = 0.5
"""Centre fallback radius as a fraction of the named box's diagonal (pixels / pixels)."""


@dataclass
class MatchStats:
    """Counts of a matching run; ``unmatched`` maps reason -> count."""

    objects: int = 0
    matched_iou: int = 0
    matched_centre: int = 0
    unmatched: Counter = field(default_factory=Counter)

    @property
    def matched(self) -> int:
        """Objects matched to an agent, by IoU or by the centre fallback."""
        return self.matched_iou + self.matched_centre

    def add(self, other: "MatchStats") -> None:
        """Accumulate another call's counts into this one."""
        self.objects += other.objects
        self.matched_iou += other.matched_iou
        self.matched_centre += other.matched_centre
        self.unmatched.update(other.unmatched)

    def summary(self) -> dict:
        """The counts as a JSON-ready dict (objects, matched by IoU / centre, unmatched by reason)."""
        return {
            "objects": self.objects, "matched": self.matched, "matched_iou": self.matched_iou,
            "matched_centre": self.matched_centre, "unmatched": dict(self.unmatched),
        }


def _image_size(sample: PlanningSample, camera: str, cache: dict) -> tuple[int, int]:
    if camera not in cache:
        cam = next(c for c in sample.inputs.cameras if c.name == camera)
        with Image.open(cam.image_path) as im:
            cache[camera] = im.size
    return cache[camera]


def match_objects(
    sample: PlanningSample,
    objects: list[tuple[str | None, tuple[float, float, float, float] | None]],
    iou_threshold: float = IOU_THRESHOLD,
    centre_fraction: float = CENTRE_FRACTION,
    image_sizes: dict[str, tuple[int, int]] | None = None,
) -> tuple[list[str | None], list[str], MatchStats]:
    """Match PV objects (camera, 2D box) to the sample's agents (see the module docstring).

    Args:
        sample: the sample; agents' boxes in the ego frame (x forward, y left, z up, metres),
            cameras with ``intrinsics`` and ``cam2ego``.
        objects: ``(camera, (x1, y1, x2, y2) pixels of the original image)`` per object.
        iou_threshold, centre_fraction: see :data:`IOU_THRESHOLD`, :data:`CENTRE_FRACTION`.
        image_sizes: camera -> (W, H) pixels; read from the image files when absent.

    Returns:
        ``agent_ids`` (one per object, None = unmatched), ``methods`` (``iou`` / ``centre`` /
        the unmatched reason) and the :class:`MatchStats`.
    """
    sizes = dict(image_sizes or {})
    cams = {c.name: c for c in sample.inputs.cameras}
    boxes = np.asarray(sample.inputs.agents.boxes, dtype=np.float64).reshape(-1, 7)
    ids: list[str | None] = [None] * len(objects)
    methods = [""] * len(objects)
    stats = MatchStats(objects=len(objects))
    taken: set[tuple[str, int]] = set()  # (camera, agent index)
    proj: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pairs = []  # (iou, object index, agent index)
    for k, (camera, box) in enumerate(objects):
        if camera is None or box is None:
            methods[k] = "no camera/box"
        elif camera not in cams:
            methods[k] = "unknown camera"
        else:
            if camera not in proj:
                c = cams[camera]
                proj[camera] = project_boxes_to_camera(boxes, c.cam2ego, c.intrinsics, _image_size(sample, camera, sizes))
            b2d, vis = proj[camera]
            if not vis.any():
                methods[k] = "no visible agent"
                continue
            iou = box_iou_2d(np.asarray(box, dtype=np.float64)[None], np.nan_to_num(b2d))[0]
            for j in np.flatnonzero(vis & (iou >= iou_threshold)):
                pairs.append((float(iou[j]), k, int(j)))
    for _, k, j in sorted(pairs, reverse=True):
        if ids[k] is None and (objects[k][0], j) not in taken:
            ids[k], methods[k] = sample.inputs.agents.ids[j], "iou"
            taken.add((objects[k][0], j))
            stats.matched_iou += 1
    for k, (camera, box) in enumerate(objects):
        if ids[k] is not None or methods[k]:
            continue
        b2d, vis = proj[camera]
        free = np.array([vis[j] and (camera, j) not in taken for j in range(len(vis))], dtype=bool)
        x1, y1, x2, y2 = box
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        dist = np.hypot((b2d[:, 0] + b2d[:, 2]) / 2 - centre[0], (b2d[:, 1] + b2d[:, 3]) / 2 - centre[1])
        dist = np.where(free, np.nan_to_num(dist, nan=np.inf), np.inf)
        j = int(np.argmin(dist)) if len(dist) else -1
        if j >= 0 and dist[j] <= centre_fraction * np.hypot(x2 - x1, y2 - y1):
            ids[k], methods[k] = sample.inputs.agents.ids[j], "centre"
            taken.add((camera, j))
            stats.matched_centre += 1
        else:
            methods[k] = "too far" if free.any() else "no visible agent"
    for k in range(len(objects)):
        if ids[k] is None:
            stats.unmatched[methods[k]] += 1
    return ids, methods, stats


def align_annotation(annotation: Annotation, sample: PlanningSample, **kwargs) -> tuple[Annotation, MatchStats]:
    """Fill ``agent_id`` of an annotation's camera-named risks and key objects by PV -> BEV matching.

    Entries that already carry an ``agent_id`` (BEV prompts) are kept as they are and not counted.
    Risks and key objects are matched separately (each list one-to-one); ``kwargs`` go to
    :func:`match_objects`. Returns a new annotation and the summed statistics.
    """
    stats = MatchStats()
    update = {}
    for name in ("risks", "key_objects"):
        items = list(getattr(annotation, name))
        todo = [i for i, it in enumerate(items) if it.agent_id is None]
        ids, _, st = match_objects(sample, [(items[i].camera, items[i].box_2d) for i in todo], **kwargs)
        stats.add(st)
        for i, aid in zip(todo, ids):
            if aid is not None:
                j = sample.inputs.agents.ids.index(aid)
                extra = {"position": tuple(float(v) for v in sample.inputs.agents.boxes[j, :2])} if name == "key_objects" else {}
                items[i] = items[i].model_copy(update={"agent_id": aid, **extra})
        update[name] = items
    return annotation.model_copy(update=update), stats
