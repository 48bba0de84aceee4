"""dsdrive.data.camera on the real nuScenes keyframe ``shared/data/nuscenes-sample-0061``.

The info pickle (mmdetection3d v1.1 layout) holds, per camera, ``cam2img`` (K), ``cam2ego``
(the static rig calibration) and ``lidar2cam`` (the devkit's full chain lidar -> ego(t_lidar)
-> global -> ego(t_cam) -> camera, so it includes the ego motion between the LiDAR sweep and
the camera exposure), 69 boxes ``bbox_3d`` = [x, y, z(centre), l, w, h, yaw] in the LiDAR frame
and ``cam_instances`` with the devkit-projected box centres ``center_2d`` and 2D boxes.

The ego drives at ~9.2 m/s and the cameras fire up to 43 ms before the LiDAR timestamp, so the
ego moves up to 0.4 m in between: lidar -> ego -> camera through the *static* ``cam2ego`` and
``lidar2cam`` disagree by many pixels (reported, asserted only for the camera 0.5 ms apart).
Compensating the ego translation with the ego velocity logged in the ScenarioNet copy of the
same scene brings them within 1.5 px (the rest is the ego's pitch change over those 35 ms,
~0.06 deg, which a 2D track cannot give).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsdrive.data.camera import box3d_corners, box_iou_2d, project_boxes_to_camera, project_points
from dsdrive.data.safe_pickle import load_pickle
from dsdrive.data.types import CAMERA_NAMES

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE_DIR = DATA / "nuscenes-sample-0061"
INFO = SAMPLE_DIR / "n015-2018-07-24-11-22-45+0800.pkl"
SCENARIONET_0061 = DATA / "nuscenes-mini-scenarionet" / "sd_nuscenes_v1.0-mini_scene-0061.pkl"
IMAGE_SIZE = (1600, 900)

pytestmark = pytest.mark.skipif(not INFO.exists(), reason=f"real nuScenes sample absent: {INFO}")


@pytest.fixture(scope="module")
def info() -> dict:
    return load_pickle(INFO)["data_list"][0]


def _lidar_boxes(info: dict) -> np.ndarray:
    return np.array([inst["bbox_3d"] for inst in info["instances"]], dtype=np.float64)


def _lidar_to_ego_boxes(boxes: np.ndarray, lidar2ego: np.ndarray) -> np.ndarray:
    """LiDAR-frame boxes -> ego frame (the LiDAR is mounted ~90 deg yawed, nearly level)."""
    out = boxes.copy()
    out[:, :3] = boxes[:, :3] @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
    out[:, 6] = boxes[:, 6] + np.arctan2(lidar2ego[1, 0], lidar2ego[0, 0])
    return out


def test_box3d_corners_axis_aligned():
    c = box3d_corners(np.array([[1.0, 2.0, 3.0, 4.0, 2.0, 1.0, 0.0]]))[0]
    assert c.shape == (8, 3)
    np.testing.assert_allclose(c[0], [3.0, 3.0, 2.5])  # front-left bottom
    np.testing.assert_allclose(c[6], [-1.0, 1.0, 3.5])  # rear-right top
    rot = box3d_corners(np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, np.pi / 2]]))[0]
    np.testing.assert_allclose(rot[0, :2], [-1.0, 2.0], atol=1e-12)  # front now points to +y
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        box3d_corners(np.zeros((3, 6)))


def test_box_iou_2d():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], dtype=float)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10]], dtype=float)
    iou = box_iou_2d(a, b)
    np.testing.assert_allclose(iou, [[50 / 150, 1.0], [0.0, 0.0]])


def test_image_sizes_are_1600x900(info):
    from PIL import Image

    for cam in CAMERA_NAMES:
        with Image.open(SAMPLE_DIR / info["images"][cam]["img_path"]) as im:
            assert im.size == IMAGE_SIZE, (cam, im.size)


def test_centres_match_devkit_center_2d(info):
    """Box centres through lidar2cam land on the devkit's own ``center_2d`` (< 0.01 px)."""
    centres = _lidar_boxes(info)[:, :3]
    for cam in CAMERA_NAMES:
        c = info["images"][cam]
        uv, depth = project_points(centres, np.linalg.inv(c["lidar2cam"]), np.array(c["cam2img"]))
        for ci in info["cam_instances"][cam]:
            err = np.linalg.norm(uv[depth > 0] - np.array(ci["center_2d"]), axis=1).min()
            assert err < 0.01, (cam, ci["center_2d"], err)
        inside = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 1600) & (uv[:, 1] >= 0) & (uv[:, 1] < 900)
        assert inside.sum() <= len(info["cam_instances"][cam])


def test_box_visibility_across_six_cameras(info):
    """Every box is visible (>= 25 % of its silhouette) in some camera; the
    per-camera sets with any overlap match the devkit's ``cam_instances`` counts."""
    boxes = _lidar_boxes(info)
    n_pts = np.array([inst["num_lidar_pts"] for inst in info["instances"]])
    labels = np.array([inst["bbox_label_3d"] for inst in info["instances"]])
    seen = np.zeros((len(boxes), len(CAMERA_NAMES)), dtype=bool)
    for k, cam in enumerate(CAMERA_NAMES):
        c = info["images"][cam]
        cam2lidar, K = np.linalg.inv(c["lidar2cam"]), np.array(c["cam2img"])
        b2d, vis = project_boxes_to_camera(boxes, cam2lidar, K, IMAGE_SIZE)
        seen[:, k] = vis
        assert np.all(b2d[vis, 0] >= 0) and np.all(b2d[vis, 2] <= 1600)
        assert np.all(b2d[vis, 1] >= 0) and np.all(b2d[vis, 3] <= 900)
        _, any_overlap = project_boxes_to_camera(boxes, cam2lidar, K, IMAGE_SIZE, min_visible_fraction=1e-9)
        any_overlap &= labels >= 0  # cam_instances hold the 10 detection classes only
        assert any_overlap.sum() == len(info["cam_instances"][cam]), cam
        # 2D boxes of boxes wholly in front of the camera match the devkit's (same hull rule);
        # not exactly: nuScenes boxes are gravity-aligned, bbox_3d keeps only the yaw in the
        # LiDAR frame, which is tilted ~1.2 deg with the ego (a 10 m bus shifts ~20 px).
        corners_z = (box3d_corners(boxes) @ np.asarray(c["lidar2cam"])[:3, :3].T + np.asarray(c["lidar2cam"])[:3, 3])[..., 2]
        front = any_overlap & (corners_z > 0.1).all(axis=1)
        ref = np.array([ci["bbox"] for ci in info["cam_instances"][cam]])
        if front.any():
            iou = box_iou_2d(b2d[front], ref).max(axis=1)
            assert iou.min() > 0.85, (cam, iou.min())
    # all 69 boxes (3 have no LiDAR point) are visible in at least one camera; 14 in two.
    assert seen.any(axis=1).all(), (np.flatnonzero(~seen.any(axis=1)), n_pts[~seen.any(axis=1)])
    assert (seen.sum(axis=1) == 2).sum() >= 10


def test_static_rig_vs_lidar2cam_and_motion_compensation(info):
    """lidar -> ego -> camera via cam2ego vs lidar2cam directly, for box centres in the image."""
    lidar2ego = np.array(info["lidar_points"]["lidar2ego"])
    boxes_lidar = _lidar_boxes(info)
    boxes_ego = _lidar_to_ego_boxes(boxes_lidar, lidar2ego)
    ego2global = np.array(info["ego2global"])
    velocity_global = None
    if SCENARIONET_0061.exists():
        track = load_pickle(SCENARIONET_0061)["tracks"]["ego"]["state"]
        velocity_global = np.array([*track["velocity"][0][:2], 0.0])
    for cam in CAMERA_NAMES:
        c = info["images"][cam]
        K, cam2ego = np.array(c["cam2img"]), np.array(c["cam2ego"])
        uv_a, depth = project_points(boxes_lidar[:, :3], np.linalg.inv(c["lidar2cam"]), K)
        uv_b, _ = project_points(boxes_ego[:, :3], cam2ego, K)
        inside = (depth > 1.0) & (np.abs(uv_a[:, 0] - 800) < 800) & (np.abs(uv_a[:, 1] - 450) < 450)
        if not inside.any():
            continue
        dt = c["timestamp"] - info["timestamp"]
        static_err = np.linalg.norm(uv_a - uv_b, axis=1)[inside].max()
        if abs(dt) < 1e-3:
            assert static_err < 1.0, (cam, static_err)
        if velocity_global is not None:
            # ego(t_cam) in ego(t_lidar): constant-velocity shift by v * dt (rotation over
            # <= 43 ms at this yaw rate is < 0.01 deg and is ignored).
            shift = np.eye(4)
            shift[:3, 3] = ego2global[:3, :3].T @ velocity_global * dt
            uv_c, _ = project_points(boxes_ego[:, :3], shift @ cam2ego, K)
            comp_err = np.linalg.norm(uv_a - uv_c, axis=1)[inside].max()
            assert comp_err < 2.0, (cam, dt, static_err, comp_err)
            if abs(dt) > 5e-3:
                assert comp_err < 0.2 * static_err, (cam, dt, static_err, comp_err)


def test_overlay_on_cam_front(info, tmp_path):
    """Draw the projected 2D boxes on CAM_FRONT (for a visual check; written to tmp_path only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    c = info["images"]["CAM_FRONT"]
    b2d, vis = project_boxes_to_camera(_lidar_boxes(info), np.linalg.inv(c["lidar2cam"]), np.array(c["cam2img"]), IMAGE_SIZE)
    fig, ax = plt.subplots(figsize=(16, 9), dpi=50)
    ax.imshow(Image.open(SAMPLE_DIR / c["img_path"]))
    for x1, y1, x2, y2 in b2d[vis]:
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=2))
    ax.set_axis_off()
    out = tmp_path / "cam_front_boxes.png"
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    assert vis.sum() >= 40 and out.stat().st_size > 10_000
