"""RSD's PV -> BEV lift (dsdrive.student.pv_bev_lift) with the real calibration of nuScenes sample 0061.

The reference is dsdrive.data.camera.project_points (float64, the original 1600 x 900 image), scaled
to the image the vision tower sees. The lift gets its intrinsics and image sizes from the student's
own camera encoder (encode_cameras + the VLM image processor), so the rescaling to the pixel budget
is part of what is checked. Each check is also run on a corrupted rig (cam2ego inverted, x / y
swapped, intrinsics not rescaled) and must then fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_vlm import NUSCENES_INFO, nuscenes_sample_0061
from PIL import Image

from dsdrive.data.camera import NEAR_PLANE_M, project_boxes_to_camera, project_points
from dsdrive.student.bev import BevGrid
from dsdrive.student.configuration_student import StudentConfig
from dsdrive.student.pv_bev_lift import is_calibrated, lift_to_bev, sampling_grid, scale_intrinsics
from dsdrive.student.vision_backbone import encode_cameras, set_pixel_budget

pytestmark = pytest.mark.skipif(not NUSCENES_INFO.is_file(), reason=f"real nuScenes sample not found at {NUSCENES_INFO}")

GRID = BevGrid()  # the student's default: x [-16, 48), y [-32, 32), 32 x 32 cells of 2 m


@pytest.fixture(scope="module")
def rig():
    from transformers import Qwen2VLImageProcessor

    sample = nuscenes_sample_0061()
    cfg = StudentConfig(scene_inputs="cameras", min_pixels=28 * 28 * 16, max_pixels=28 * 28 * 64)
    ip = Qwen2VLImageProcessor()
    set_pixel_budget(ip, cfg.min_pixels, cfg.max_pixels)
    enc = encode_cameras(sample.inputs, cfg, ip)
    cams = {c.name: c for c in sample.inputs.cameras}
    cams = [cams[n] for n in cfg.cameras]
    sizes = [Image.open(c.image_path).size for c in cams]
    t = {k: torch.from_numpy(np.asarray(v))[None] for k, v in enc.items() if k != "camera_images"}
    t["feature_size"] = t["camera_image_size"] / 28  # one merged vision token per 28 x 28 pixels: (w, h) tokens
    boxes = np.asarray(sample.inputs.agents.boxes, np.float64)
    return sample, cams, sizes, t, boxes


def reference(cams, sizes, resized, points):
    """Per camera: pixel of each ego point in the resized image, and whether it is seen there."""
    uvs, oks = [], []
    for cam, (w, h), (rw, rh) in zip(cams, sizes, resized):
        uv, depth = project_points(points, cam.cam2ego, cam.intrinsics)
        uv = uv * np.array([rw / w, rh / h])
        ok = (depth > NEAR_PLANE_M) & np.all(np.nan_to_num(uv, nan=-1.0) >= 0, -1) & (uv[:, 0] < rw) & (uv[:, 1] < rh)
        uvs.append(uv)
        oks.append(ok)
    return np.stack(uvs), np.stack(oks)


def agreement(rig, intrinsics, cam2ego, swap_xy=False):
    """Over every GT box (and heights z - 0.5, z, z + 0.5), among the (point, camera) pairs that the lift
    or the reference sees: the fraction where both see it and the lift's reference point of a BEV cell
    centred on the box centre is the reference pixel within 0.5 px; and the pairs the reference sees."""
    sample, cams, sizes, t, boxes = rig
    resized = t["camera_image_size"][0].numpy()
    hits = seen = total = 0
    for x, y, z, *_ in boxes:
        gx, gy = (y, x) if swap_xy else (x, y)
        cell = BevGrid(gx - 1.0, gx + 1.0, gy - 1.0, gy + 1.0, 1, 1)
        heights = torch.tensor([z - 0.5, z, z + 0.5], dtype=torch.float64)
        sg = sampling_grid(cell, heights, intrinsics.double(), cam2ego.double(), t["camera_image_size"], t["feature_size"],
                           (16, 16), t["camera_mask"])
        uv_ref, ok_ref = reference(cams, sizes, resized, np.stack([np.full(3, x), np.full(3, y), heights.numpy()], -1))
        uv, ok = sg.pixels[0, :, :, 0, 0].numpy(), sg.valid[0, :, :, 0, 0].numpy()  # (N, Z, 2), (N, Z)
        close = np.linalg.norm(np.nan_to_num(uv - uv_ref, nan=1e9), axis=-1) < 0.5
        hits += int((ok & ok_ref & close).sum())
        seen += int(ok_ref.sum())
        total += int((ok | ok_ref).sum())
    return hits / max(total, 1), seen


def test_processor_rescales_intrinsics_and_keeps_the_calibration(rig):
    sample, cams, sizes, t, _ = rig
    for n, (cam, (w, h)) in enumerate(zip(cams, sizes)):
        rw, rh = t["camera_image_size"][0, n].tolist()
        assert rw % 28 == 0 and rh % 28 == 0 and rw * rh <= 28 * 28 * 64 and (rw, rh) != (w, h)
        np.testing.assert_allclose(t["camera_intrinsics"][0, n].numpy(), scale_intrinsics(cam.intrinsics, (w, h), (rw, rh)), rtol=1e-6)
        np.testing.assert_array_equal(t["camera_cam2ego"][0, n].numpy(), cam.cam2ego)
        assert is_calibrated(cam.intrinsics, cam.cam2ego)
    assert t["camera_mask"].all() and t["camera_calibrated"].all()
    assert not is_calibrated(np.eye(3), np.eye(4))  # DriveLM's placeholders


def test_reference_points_project_like_the_camera_model_from_every_camera(rig):
    _, _, _, t, boxes = rig
    frac, seen = agreement(rig, t["camera_intrinsics"], t["camera_cam2ego"])
    assert frac == 1.0
    assert seen >= 100  # of 69 boxes x 3 heights x 6 cameras, the ones a camera really sees
    # the same check on a corrupted rig fails: it cannot pass by construction
    assert agreement(rig, t["camera_intrinsics"], torch.linalg.inv(t["camera_cam2ego"]))[0] < 0.8
    assert agreement(rig, t["camera_intrinsics"], t["camera_cam2ego"], swap_xy=True)[0] < 0.8
    sample, cams, sizes, _, _ = rig
    unscaled = torch.stack([torch.from_numpy(np.asarray(c.intrinsics, np.float32)) for c in cams])[None]
    assert agreement(rig, unscaled, t["camera_cam2ego"])[0] < 0.8


def _coordinate_features(t, pad=(2, 3)):
    """Per camera, a (2, h, w) map whose token (i, j) holds its own centre (u, v) in resized pixels,
    zero-padded by ``pad`` rows / columns (so the padded normalisation is exercised)."""
    fs = t["feature_size"][0].long()
    hmax, wmax = int(fs[:, 1].max()) + pad[0], int(fs[:, 0].max()) + pad[1]
    feats = torch.zeros(1, len(fs), 2, hmax, wmax, dtype=torch.float64)
    for n, (w, h) in enumerate(fs.tolist()):
        rw, rh = t["camera_image_size"][0, n].tolist()
        jj, ii = torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy")
        feats[0, n, 0, :h, :w] = (jj + 0.5) * rw / w
        feats[0, n, 1, :h, :w] = (ii + 0.5) * rh / h
    return feats


def _footprint_cells(boxes):
    """(box index, row, col) of the default-grid cell under each box centre inside the grid."""
    out = []
    for k, (x, y, *_) in enumerate(boxes):
        if GRID.x_min <= x < GRID.x_max and GRID.y_min <= y < GRID.y_max:
            out.append((k, int((x - GRID.x_min) // GRID.dx), int((y - GRID.y_min) // GRID.dy)))
    return out


def lifted_box_hits(rig, intrinsics, cam2ego):
    """For every GT box centre in the grid and every camera that really sees its cell's reference point
    (at the box's height, away from the image border): the lift of a coordinate-valued feature map,
    that camera alone, at the cell under the box centre. Returns (pairs, pairs where the lifted value
    is the reference pixel within 0.5 px, pairs where it falls inside the box's projected 2D box)."""
    sample, cams, sizes, t, boxes = rig
    feats = _coordinate_features(t)
    resized = t["camera_image_size"][0].numpy()
    token = (resized / t["feature_size"][0].numpy())[:, None, :]
    pairs = exact = inside = 0
    for k, i, j in _footprint_cells(boxes):
        centre = GRID.cell_centres()[i, j]
        z = boxes[k, 2]
        uv_ref, ok_ref = reference(cams, sizes, resized, np.array([[centre[0], centre[1], z]]))
        interior = ok_ref & np.all((uv_ref >= token / 2) & (uv_ref <= resized[:, None] - token / 2), -1)
        for n in np.flatnonzero(interior[:, 0]):
            only = torch.zeros_like(t["camera_mask"])
            only[0, n] = True
            bev, count = lift_to_bev(feats, t["feature_size"], intrinsics, cam2ego, t["camera_image_size"], only, GRID,
                                     torch.tensor([z], dtype=torch.float64))
            got = bev[0, :, i, j].numpy()
            pairs += 1
            exact += int(count[0, 0, i, j] == 1 and np.linalg.norm(got - uv_ref[n, 0]) < 0.5)
            cam, (w, h), (rw, rh) = cams[n], sizes[n], resized[n]
            b2d, vis = project_boxes_to_camera(boxes[k : k + 1], cam.cam2ego, cam.intrinsics, (w, h), min_visible_fraction=0.0)
            b2d = b2d[0] * np.array([rw / w, rh / h, rw / w, rh / h])
            footprint = _inside_footprint(boxes[k], centre)
            if footprint:  # the cell centre is on the box's footprint: its pixel is inside the box's image
                inside += int(b2d[0] - 0.5 <= got[0] <= b2d[2] + 0.5 and b2d[1] - 0.5 <= got[1] <= b2d[3] + 0.5)
            else:
                inside += 1
    return pairs, exact, inside


def _inside_footprint(box, xy):
    x, y, _, length, width, _, yaw = box
    d = np.asarray(xy, np.float64) - np.array([x, y])
    u = np.cos(yaw) * d[0] + np.sin(yaw) * d[1]
    v = -np.sin(yaw) * d[0] + np.cos(yaw) * d[1]
    return abs(u) <= length / 2 and abs(v) <= width / 2


def test_a_box_centre_lands_in_the_bev_cell_under_its_footprint(rig):
    _, _, _, t, boxes = rig
    pairs, exact, inside = lifted_box_hits(rig, t["camera_intrinsics"].double(), t["camera_cam2ego"].double())
    assert pairs >= 20 and exact == pairs and inside == pairs
    # corrupted rigs put the features of another place into the cell
    assert lifted_box_hits(rig, t["camera_intrinsics"].double(), torch.linalg.inv(t["camera_cam2ego"].double()))[1] < pairs // 2
    sample, cams, sizes, _, _ = rig
    unscaled = torch.stack([torch.from_numpy(np.asarray(c.intrinsics, np.float64)) for c in cams])[None]
    assert lifted_box_hits(rig, unscaled, t["camera_cam2ego"].double())[1] < pairs // 2


def test_lift_averages_over_the_cameras_that_see_a_point_and_masks_the_rest(rig):
    _, cams, sizes, t, _ = rig
    feats = torch.ones(1, 6, 3, 8, 12, dtype=torch.float64)
    feats[:, :, 1] = torch.arange(6, dtype=torch.float64)[:, None, None]  # channel 1 = the camera index
    heights = torch.tensor([0.5, 1.5], dtype=torch.float64)
    bev, count = lift_to_bev(feats, t["feature_size"], t["camera_intrinsics"].double(), t["camera_cam2ego"].double(),
                             t["camera_image_size"], t["camera_mask"], GRID, heights)
    assert bev.shape == (1, 2 * 3, 32, 32) and count.shape == (1, 2, 32, 32)
    pts = np.concatenate([np.concatenate([GRID.cell_centres().reshape(-1, 2), np.full((1024, 1), h)], 1) for h in (0.5, 1.5)])
    _, ok = reference(cams, sizes, t["camera_image_size"][0].numpy(), pts)
    np.testing.assert_array_equal(count[0].reshape(-1).numpy(), ok.sum(0))
    seen = count[0, 0] > 0
    assert 0.3 < float(seen.float().mean()) < 1.0  # the rig sees much of the grid, not the ego's own cell
    ones = bev[0, 0][seen]  # channel 0 of height 0.5: 1 wherever a camera sees the point, 0 elsewhere
    assert torch.allclose(ones, torch.ones_like(ones)) and float(bev[0, 0][~seen].abs().max()) == 0.0
    # the camera-index channel is the mean of the indices of the cameras that see the point
    mean_idx = (ok[:, :1024] * np.arange(6)[:, None]).sum(0) / np.maximum(ok[:, :1024].sum(0), 1)
    np.testing.assert_allclose(bev[0, 1].reshape(-1).numpy(), mean_idx, atol=1e-5)  # sampled in float32
    # a camera masked out (missing, or without calibration) contributes nothing
    mask = t["camera_mask"].clone()
    mask[0, 0] = False
    _, count2 = lift_to_bev(feats, t["feature_size"], t["camera_intrinsics"].double(), t["camera_cam2ego"].double(),
                            t["camera_image_size"], mask, GRID, heights)
    np.testing.assert_array_equal(count2[0].reshape(-1).numpy(), ok[1:].sum(0))

