"""RSD's perspective-view (PV) -> BEV lift: camera patch features sampled onto the student's BEV grid.

RSD (arXiv 2511.14499) projects the camera features of its planner to BEV before the RiskHead.
The lift here is Simple-BEV's parameter-free one (Harley et al., "Simple-BEV: What Really Matters
for Multi-Sensor BEV Perception?", ICRA 2023), whose projected reference points are also those of
BEVFormer's spatial cross-attention (Li et al., ECCV 2022): every BEV cell centre is raised to a
few heights, each 3D point is projected into every camera with its calibration, the camera's
feature map is sampled bilinearly where the point lands in front of the camera and inside the
image, the samples are averaged over the cameras that see the point, and the height axis is
folded into the channels (Simple-BEV's BEV compressor then mixes them: :class:`LiftedBev`).
Nothing in the lift itself is learnt: depth is not estimated, a feature is spread along its ray.

Frames and conventions (as :mod:`dsdrive.data.camera`):

* ego frame of the current time: x forward, y left, z up, metres; the BEV grid is
  :class:`dsdrive.student.bev.BevGrid` (rows index x, columns index y);
* camera frame: x right, y down, z forward; ``cam2ego`` (4, 4) maps camera -> ego;
* ``intrinsics`` (3, 3) are those of the image **as the vision tower sees it** (after the
  processor's resize to the pixel budget: :func:`scale_intrinsics`); pixel (0, 0) is the top-left
  corner of the top-left pixel, u right, v down;
* a feature map of ``(h, w)`` cells covers its ``(W, H)``-pixel image exactly, cell ``(i, j)``
  spanning pixels ``[j W/w, (j+1) W/w) x [i H/h, (i+1) H/h)`` (Qwen2-VL: one merged vision token
  per 28 x 28 pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dsdrive.data.camera import NEAR_PLANE_M
from dsdrive.student.bev import BevGrid

MIN_FOCAL_PX = 1.0
"""A pinhole whose focal length is at most this many pixels is a placeholder (DriveLM keyframes
carry identity matrices: no calibration), never a real camera (nuScenes: 800-1270 px)."""


def scale_intrinsics(intrinsics: np.ndarray, original_size: tuple[int, int], resized_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics of an image resized from ``original_size`` to ``resized_size`` (both (W, H) pixels).

    A resize maps pixel coordinates ``u' = u * W'/W``, ``v' = v * H'/H`` (corner convention), so
    the first row of K scales by ``W'/W`` and the second by ``H'/H`` (the aspect ratio may change
    slightly: Qwen2-VL's ``smart_resize`` rounds each side to a multiple of 28 pixels).

    Returns:
        (3, 3) float32.
    """
    sx = resized_size[0] / original_size[0]
    sy = resized_size[1] / original_size[1]
    return (np.diag([sx, sy, 1.0]) @ np.asarray(intrinsics, np.float64)).astype(np.float32)


def is_calibrated(intrinsics: np.ndarray, cam2ego: np.ndarray) -> bool:
    """True when ``intrinsics`` (3, 3) and ``cam2ego`` (4, 4) describe a real camera: all finite,
    focal lengths above :data:`MIN_FOCAL_PX`, and a rotation block that is orthonormal with
    determinant +1 (within 1e-3). DriveLM's identity placeholders fail (focal 1 px)."""
    k, t = np.asarray(intrinsics, np.float64), np.asarray(cam2ego, np.float64)
    if k.shape != (3, 3) or t.shape != (4, 4) or not (np.isfinite(k).all() and np.isfinite(t).all()):
        return False
    if k[0, 0] <= MIN_FOCAL_PX or k[1, 1] <= MIN_FOCAL_PX:
        return False
    r = t[:3, :3]
    return bool(np.allclose(r @ r.T, np.eye(3), atol=1e-3) and abs(np.linalg.det(r) - 1.0) < 1e-3)


def bev_reference_points(grid: BevGrid, heights: torch.Tensor) -> torch.Tensor:
    """(Z, H, W, 3) ego-frame points: every BEV cell centre (x, y) at every height z (metres)."""
    xy = torch.from_numpy(grid.cell_centres()).to(heights)
    z = heights[:, None, None, None].expand(-1, grid.height, grid.width, 1)
    return torch.cat([xy[None].expand(len(heights), -1, -1, -1), z], -1)


@dataclass
class SamplingGrid:
    """Where the BEV reference points land in every camera (B batch, N cameras, Z heights).

    Attributes:
        pixels: (B, N, Z, H, W, 2) u, v in pixels of the resized image.
        normalized: (B, N, Z, H, W, 2) the same location in ``grid_sample`` coordinates of the
            (padded) feature map, ``align_corners=False``, kept at least half a cell inside the
            camera's own map (replicate padding at the image border).
        valid: (B, N, Z, H, W) bool: in front of the camera (depth > near plane), inside the image,
            and the camera present and calibrated.
    """

    pixels: torch.Tensor
    normalized: torch.Tensor
    valid: torch.Tensor


def sampling_grid(grid: BevGrid, heights: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor, image_size: torch.Tensor,
                  feature_size: torch.Tensor, padded_size: tuple[int, int], camera_valid: torch.Tensor,
                  near: float = NEAR_PLANE_M) -> SamplingGrid:
    """Project the BEV reference points into every camera (BEVFormer's reference points).

    Args:
        grid: the BEV grid (ego frame).
        heights: (Z,) metres above the ego origin.
        intrinsics: (B, N, 3, 3) of the resized images (:func:`scale_intrinsics`).
        cam2ego: (B, N, 4, 4) camera -> ego.
        image_size: (B, N, 2) resized image (W, H), pixels.
        feature_size: (B, N, 2) feature map (w, h), cells; it covers the whole image.
        padded_size: (h_max, w_max) of the padded feature tensor the grid will sample.
        camera_valid: (B, N) bool, cameras with an image and a calibration.
        near: near-plane distance, metres.

    Returns:
        :class:`SamplingGrid`.
    """
    pts = bev_reference_points(grid, heights.to(device=cam2ego.device, dtype=cam2ego.dtype))  # (Z, H, W, 3)
    ego2cam = torch.linalg.inv(cam2ego)  # (B, N, 4, 4)
    pc = torch.einsum("bnij,zhwj->bnzhwi", ego2cam[..., :3, :3], pts) + ego2cam[..., None, None, None, :3, 3]
    depth = pc[..., 2]
    proj = torch.einsum("bnij,bnzhwj->bnzhwi", intrinsics.to(pc.dtype), pc)
    uv = proj[..., :2] / depth.clamp(min=near)[..., None]
    size = image_size.to(pc.dtype)[:, :, None, None, None, :]
    inside = (uv >= 0).all(-1) & (uv < size).all(-1)
    valid = (depth > near) & inside & camera_valid[:, :, None, None, None]
    fsize = feature_size.to(pc.dtype)[:, :, None, None, None, :]
    # continuous feature-map cells; within half a cell of the image border the edge cell's value is
    # taken (replicate padding), never a blend with the zero padding around the map
    cells = torch.minimum((uv / size * fsize).clamp(min=0.5), fsize - 0.5)
    pad = torch.tensor([padded_size[1], padded_size[0]], dtype=pc.dtype, device=pc.device)
    normalized = cells / pad * 2.0 - 1.0
    return SamplingGrid(pixels=uv, normalized=normalized, valid=valid)


def lift_to_bev(features: torch.Tensor, feature_size: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor,
                image_size: torch.Tensor, camera_valid: torch.Tensor, grid: BevGrid, heights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Simple-BEV lift of per-camera feature maps onto the BEV grid (parameter-free, differentiable in ``features``).

    Args:
        features: (B, N, C, h_max, w_max) per-camera feature maps, zero-padded at the bottom/right
            where a camera's map is smaller than the batch maximum (sampled in float32).
        feature_size: (B, N, 2) each map's real (w, h), cells.
        intrinsics, cam2ego, image_size, camera_valid: see :func:`sampling_grid`.
        grid: the BEV grid; heights: (Z,) metres.

    Returns:
        ``bev`` (B, Z*C, H, W): per height, the mean over the cameras that see the point of the
        bilinear samples (0 where no camera sees it), heights stacked along channels (height-major);
        ``count`` (B, Z, H, W): how many cameras see each point (float).
    """
    b, n, c, hp, wp = features.shape
    sg = sampling_grid(grid, heights, intrinsics.float(), cam2ego.float(), image_size, feature_size, (hp, wp), camera_valid)
    z, h, w = sg.valid.shape[2:]
    loc = sg.normalized.reshape(b * n, z, h * w, 2)  # float32: bf16 would round the sampling locations
    sampled = F.grid_sample(features.float().reshape(b * n, c, hp, wp), loc, mode="bilinear", padding_mode="zeros", align_corners=False)
    valid = sg.valid.reshape(b, n, 1, z, h * w).float()
    total = (sampled.reshape(b, n, c, z, h * w) * valid).sum(1)  # (B, C, Z, HW)
    count = valid.sum(1)  # (B, 1, Z, HW)
    bev = (total / count.clamp(min=1.0)).permute(0, 2, 1, 3).reshape(b, z * c, h, w)
    return bev.to(features.dtype), count.reshape(b, z, h, w)


class LiftedBev(nn.Module):
    """Vision tokens -> lifted BEV features (B, C, H, W) for the RiskHead (RSD's PV -> BEV).

    A linear map takes the vision tower's (merged) patch features from the LLM width to ``dim``,
    :func:`lift_to_bev` lifts them (Z heights), and Simple-BEV's compressor mixes heights and
    channels: a 1x1 convolution over [Z*dim lifted features, log(1 + camera count) per height],
    then a 3x3 convolution (GELU between).

    Args:
        in_dim: width of the patch features (the VLM's LLM hidden size for Qwen2-VL).
        dim: BEV width C (the RiskHead's).
        num_heights: Z.
    """

    def __init__(self, in_dim: int, dim: int, num_heights: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.compress = nn.Sequential(nn.Conv2d(num_heights * (dim + 1), dim, 1), nn.GELU(), nn.Conv2d(dim, dim, 3, padding=1))

    def forward(self, features: torch.Tensor, feature_size: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor,
                image_size: torch.Tensor, camera_valid: torch.Tensor, grid: BevGrid, heights: torch.Tensor) -> torch.Tensor:
        """features (B, N, h_max, w_max, in_dim) (padded), the rest as :func:`lift_to_bev` -> (B, dim, H, W)."""
        f = self.proj(features).permute(0, 1, 4, 2, 3)  # (B, N, C, h, w)
        bev, count = lift_to_bev(f, feature_size, intrinsics, cam2ego, image_size, camera_valid, grid, heights)
        return self.compress(torch.cat([bev, torch.log1p(count).to(bev.dtype)], 1))


__all__ = ["scale_intrinsics", "is_calibrated", "bev_reference_points", "SamplingGrid", "sampling_grid", "lift_to_bev", "LiftedBev"]
