"""PV -> BEV matching (RSD alignment) and Diff_Risk on the real six-camera nuScenes keyframe."""

from __future__ import annotations

import numpy as np
import pytest

from dsdrive.annotation.schema import AgentRisk, Annotation, MetaAction
from dsdrive.data.camera import project_boxes_to_camera
from dsdrive.annotation.pv_bev_matching import align_annotation, diff_risk, match_objects
from helpers_vlm import NUSCENES_INFO, nuscenes_info, nuscenes_sample_0061

pytestmark = pytest.mark.skipif(not NUSCENES_INFO.exists(), reason=f"real nuScenes sample absent: {NUSCENES_INFO}")
SIZE = (1600, 900)


@pytest.fixture(scope="module")
def sample():
    return nuscenes_sample_0061()


def _projected_objects(sample):
    """DriveLM-style (camera, 2D box) of every visible GT box, and the agent id it came from."""
    objects, truth = [], []
    for cam in sample.inputs.cameras:
        b2d, vis = project_boxes_to_camera(sample.inputs.agents.boxes, cam.cam2ego, cam.intrinsics, SIZE)
        for j in np.flatnonzero(vis):
            objects.append((cam.name, tuple(b2d[j])))
            truth.append(sample.inputs.agents.ids[j])
    return objects, truth


def test_projected_boxes_match_back_to_their_agents(sample):
    objects, truth = _projected_objects(sample)
    assert len(objects) >= 30  # 69 boxes, most of them visible in some camera
    ids, methods, stats = match_objects(sample, objects, image_sizes={c.name: SIZE for c in sample.inputs.cameras})
    precision = np.mean([a == t for a, t in zip(ids, truth)])
    print(f"\nprojected GT boxes: {len(objects)} objects, precision {precision:.3f}, {stats.summary()}")
    assert precision == 1.0 and stats.matched_iou == len(objects) and set(methods) == {"iou"}


def test_devkit_boxes_and_unmatched_counting(sample):
    """The devkit's own 2D boxes (``cam_instances``: projected through ``lidar2cam``, which
    includes the ego motion between LiDAR and camera timestamps) matched to our agents; plus a
    fake box in empty sky, an unknown camera and an object without a box, all counted."""
    info = nuscenes_info()
    lidar_centres = np.array([i["bbox_3d"][:3] for i in info["instances"]])
    objects, truth = [], []
    for cam, insts in info["cam_instances"].items():
        l2c = np.asarray(info["images"][cam]["lidar2cam"])
        cam_centres = lidar_centres @ l2c[:3, :3].T + l2c[:3, 3]
        for inst in insts:
            c = np.asarray(inst["bbox_3d"][:3])  # camera frame, bottom centre: compare x and z
            j = int(np.argmin(np.hypot(cam_centres[:, 0] - c[0], cam_centres[:, 2] - c[2])))
            objects.append((cam, tuple(inst["bbox"])))
            truth.append(f"inst_{j}")
    n_real = len(objects)
    objects += [("CAM_FRONT", (700.0, 5.0, 760.0, 40.0)), ("CAM_TOP", (0.0, 0.0, 10.0, 10.0)), ("CAM_BACK", None)]
    ids, methods, stats = match_objects(sample, objects)
    correct = sum(a == t for a, t in zip(ids[:n_real], truth))
    matched = sum(a is not None for a in ids[:n_real])
    print(f"\ndevkit boxes: {n_real}, matched {matched}, precision {correct / max(matched, 1):.3f}, {stats.summary()}")
    assert matched >= 0.9 * n_real and correct / matched >= 0.95
    assert ids[n_real:] == [None, None, None]
    assert stats.unmatched["unknown camera"] == 1 and stats.unmatched["no camera/box"] == 1
    assert stats.unmatched["too far"] >= 1 and stats.objects == len(objects)
    assert stats.matched + sum(stats.unmatched.values()) == stats.objects


def _risk_annotation(sample_id, risks):
    return Annotation(
        sample_id=sample_id, teacher="t", prompt_version="p", scene_summary="s", explanation="e",
        meta_action=MetaAction(behaviour="STOP", speed="CONSTANT"), risks=risks,
    )


def test_align_annotation_and_diff_risk(sample):
    objects, truth = _projected_objects(sample)
    front = [(o, t) for o, t in zip(objects, truth) if o[0] == "CAM_FRONT"][:3]
    assert len(front) == 3
    risks = [AgentRisk(risk=0.9 - 0.3 * k, rank=k + 1, camera=o[0], box_2d=o[1], reason="r") for k, (o, _) in enumerate(front)]
    ann, stats = align_annotation(_risk_annotation(sample.sample_id, risks), sample)
    assert [r.agent_id for r in ann.risks] == [t for _, t in front] and stats.matched == 3
    # a second annotator: same top-1, the other two swapped, one extra agent
    ids = [t for _, t in front]
    assert "inst_60" not in ids
    other = _risk_annotation(sample.sample_id, [
        AgentRisk(agent_id=ids[0], risk=0.8, rank=1), AgentRisk(agent_id=ids[2], risk=0.5, rank=2),
        AgentRisk(agent_id=ids[1], risk=0.4, rank=3), AgentRisk(agent_id="inst_60", risk=0.2, rank=4),
    ])
    d = diff_risk([ann], [other])
    # |0.9-0.8|, |0.6-0.4|, |0.3-0.5|, |0-0.2| -> mean 0.175 ; tau over 3 shared = 1/3
    assert d["samples"] == 1 and d["mae"] == pytest.approx(0.175)
    assert d["kendall_tau"] == pytest.approx(1 / 3) and d["top1_agreement"] == 1.0
    assert diff_risk([ann], [ann])["mae"] == 0.0 and diff_risk([ann], [ann])["kendall_tau"] == pytest.approx(1.0)
