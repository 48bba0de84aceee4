"""The camera student's vision-language backbone: camera images -> vision tokens, patch features, 3D positions.

A camera student (``StudentConfig.scene_inputs`` ``cameras`` or ``both``) has an
``AutoModelForImageTextToText`` backbone of the Qwen2-VL family (Qwen2-VL, Qwen2.5-VL: the reference
is Qwen2.5-VL, Bai et al. 2025, EvoDriveVLA's student). This module holds what the student needs
from it on both sides:

* **processor side** (:func:`encode_cameras` per sample, :func:`collate_cameras` per batch): the
  sample's camera images, in ``StudentConfig.cameras`` order, are sized for the model
  (``qwen_vl_utils.smart_resize`` to the pixel budget, sides multiples of 28 pixels) and their
  intrinsics rescaled to the resized image (:func:`dsdrive.student.pv_bev_lift.scale_intrinsics`);
  the pixels are decoded only when a batch is made (JPEG draft decoding as the VLM annotators do,
  :class:`dsdrive.annotation.annotators.vlm_common.ImageSource`) and turned into patches by the
  VLM's image processor;
* **model side** (:func:`image_features`, :func:`image_sequence`): the vision tower's merged patch
  features, one per 28 x 28 pixels, reshaped to each camera's (h, w) token grid (what the LLM reads
  AND what the PV -> BEV lift samples), and the image section of the LLM sequence
  ``[<|vision_start|> camera tokens <|vision_end|>] x cameras`` with Qwen2-VL's multimodal RoPE
  positions (temporal, row, column) for image tokens and (p, p, p) for text tokens.

Another VLM family needs its own version of these two functions (its patch grid geometry and
position scheme); :func:`check_vision_backbone` refuses it with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from qwen_vl_utils import smart_resize

from dsdrive.annotation.annotators.vlm_common import ImageSource
from dsdrive.data.types import PlanningInputs
from dsdrive.student.pv_bev_lift import is_calibrated, scale_intrinsics

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
"""``config.model_type`` of the vision-language backbones the camera student supports."""
CAMERA_KEYS = ("pixel_values", "image_grid_thw", "camera_intrinsics", "camera_cam2ego", "camera_image_size", "camera_mask", "camera_calibrated")
"""Batch keys of the camera inputs (:func:`collate_cameras` of :func:`encode_cameras` items)."""


def check_vision_backbone(model) -> None:
    """Raise ``ValueError`` unless ``model`` is a Qwen2-VL-family ``...ForConditionalGeneration``
    (naming its model_type and the supported ones)."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES or not hasattr(model, "get_image_features"):
        raise ValueError(f"camera student: backbone model_type {model_type!r} ({type(model).__name__}) is not supported; "
                         f"expected an AutoModelForImageTextToText of {SUPPORTED_MODEL_TYPES}")


def token_pixels(image_processor) -> int:
    """Pixels per side of one LLM vision token: patch size x merge size (28 for Qwen2-VL)."""
    return int(image_processor.patch_size) * int(image_processor.merge_size)


def set_pixel_budget(image_processor, min_pixels: int, max_pixels: int) -> None:
    """Make the image processor resize to ``[min_pixels, max_pixels]`` per image (dict or SizeDict)."""
    size = image_processor.size
    if isinstance(size, dict):
        size.update(shortest_edge=min_pixels, longest_edge=max_pixels)
    else:  # transformers >= 5: a SizeDict
        size.shortest_edge, size.longest_edge = min_pixels, max_pixels
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if hasattr(image_processor, name):
            setattr(image_processor, name, value)


def encode_cameras(inputs: PlanningInputs, config, image_processor) -> dict:
    """The camera inputs of one sample, in ``config.cameras`` order (N cameras), without pixels.

    Only the image headers are read here (size, format); the pixels are decoded when a batch is
    made (:func:`collate_cameras`), so a dataset encoded once (``EncodedSamples``) holds no image
    and data-loader workers do the decoding.

    Args:
        inputs: the sample's PlanningInputs (``cameras``: image path, intrinsics, cam2ego).
        config: a :class:`~dsdrive.student.configuration_student.StudentConfig` (cameras, pixel
            budget, ``allow_missing_cameras``).
        image_processor: the VLM's image processor (Qwen2VLImageProcessor): its patch and merge sizes.

    Returns:
        ``camera_images``: per camera ``(camera, path, (W, H) resized)`` or None when missing;
        ``camera_intrinsics`` (N, 3, 3) float32 of the resized images, ``camera_cam2ego`` (N, 4, 4),
        ``camera_image_size`` (N, 2) resized (W, H) pixels (``smart_resize``: sides multiples of
        28, area within the budget), ``camera_mask`` (N,) bool image present, ``camera_calibrated``
        (N,) bool (a real calibration, :func:`dsdrive.student.pv_bev_lift.is_calibrated`). A missing
        camera (allowed by the config) is masked, with identity calibration; an uncalibrated one is
        read by the LLM but not lifted (identity calibration in the tensors).

    Raises:
        ValueError: a camera of ``config.cameras`` is not among the sample's cameras, or no camera
            has an image (naming the sample and camera).
        FileNotFoundError: a camera's image file does not exist (naming the sample, camera, path);
            with ``allow_missing_cameras`` both become a mask instead (except "no camera at all").
    """
    sid = inputs.sample_id
    factor = token_pixels(image_processor)
    by_name = {c.name: c for c in inputs.cameras}
    sources: dict[str, ImageSource] = {}
    for name in config.cameras:
        if name not in by_name:
            if not config.allow_missing_cameras:
                raise ValueError(f"sample {sid}: camera {name} is missing (the sample has {sorted(by_name) or 'no cameras'}); "
                                 "set allow_missing_cameras to mask it")
            continue
        try:
            sources[name] = ImageSource.from_file(name, by_name[name].image_path)
        except FileNotFoundError as exc:
            if not config.allow_missing_cameras:
                raise FileNotFoundError(f"sample {sid}: {exc}") from exc
    if not sources:
        raise ValueError(f"sample {sid}: none of the cameras {config.cameras} has an image")
    images, intr, c2e, sizes, mask, calib = [], [], [], [], [], []
    for name in config.cameras:
        src = sources.get(name)
        ok = src is not None and is_calibrated(by_name[name].intrinsics, by_name[name].cam2ego)
        if src is None:
            images.append(None)
            sizes.append(None)
        else:
            w, h = src.size
            rh, rw = smart_resize(h, w, factor=factor, min_pixels=config.min_pixels, max_pixels=config.max_pixels)
            images.append((name, str(src.path), (rw, rh)))
            sizes.append((rw, rh))
        mask.append(src is not None)
        calib.append(ok)
        intr.append(scale_intrinsics(by_name[name].intrinsics, src.size, sizes[-1]) if ok else np.eye(3, dtype=np.float32))
        c2e.append(np.asarray(by_name[name].cam2ego, np.float32) if ok else np.eye(4, dtype=np.float32))
    ref = next(s for s in sizes if s is not None)  # a missing camera's placeholder takes the first present size
    return {
        "camera_images": images,
        "camera_intrinsics": np.stack(intr).astype(np.float32),
        "camera_cam2ego": np.stack(c2e).astype(np.float32),
        "camera_image_size": np.asarray([s or ref for s in sizes], np.float32),
        "camera_mask": np.asarray(mask, bool),
        "camera_calibrated": np.asarray(calib, bool),
    }


def collate_cameras(items: list[dict], image_processor) -> dict[str, torch.Tensor]:
    """Decode and batch the cameras of B :func:`encode_cameras` dicts.

    Every image is decoded at its resized size (JPEG draft decoding, bicubic resize:
    :meth:`~dsdrive.annotation.annotators.vlm_common.ImageSource.load`; a missing camera is a black
    placeholder, masked) and the image processor turns the B*N images (sample-major) into patches.

    Returns:
        ``pixel_values`` (patches of all images, D) float32, ``image_grid_thw`` (B*N, 3) long
        (t, h, w patches), and ``camera_intrinsics`` / ``camera_cam2ego`` / ``camera_image_size`` /
        ``camera_mask`` / ``camera_calibrated`` stacked (B, N, ...).

    Raises:
        OSError: an image cannot be decoded (naming the camera and file).
        RuntimeError: the image processor made other patch grids than the encoded sizes (its pixel
            budget differs from the config's).
    """
    from PIL import Image

    images, sizes = [], []
    for x in items:
        for entry, size in zip(x["camera_images"], x["camera_image_size"]):
            size = (int(size[0]), int(size[1]))
            if entry is None:
                images.append(Image.new("RGB", size))
            else:
                name, path, resized = entry
                images.append(ImageSource(name, resized, Path(path)).load(resized))
            sizes.append(size)
    out = image_processor(images=images, return_tensors="np")
    grid = np.asarray(out["image_grid_thw"], np.int64)
    patch = int(image_processor.patch_size)
    expected = np.array([[1, h // patch, w // patch] for w, h in sizes], np.int64)
    if not np.array_equal(grid, expected):
        raise RuntimeError(f"collate_cameras: the image processor made patch grids {grid.tolist()} where the encoded sizes give "
                           f"{expected.tolist()} (its pixel budget differs from the student config's)")
    return {
        "pixel_values": torch.from_numpy(np.asarray(out["pixel_values"], np.float32)),
        "image_grid_thw": torch.from_numpy(grid),
        **{k: torch.from_numpy(np.stack([x[k] for x in items])) for k in CAMERA_KEYS[2:]},
    }


def image_features(backbone, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> list[torch.Tensor]:
    """The vision tower's merged patch features of each image: a list of (h, w, D) tensors (h x w
    LLM tokens per image, row-major; D = the LLM hidden size), in ``image_grid_thw`` order."""
    out = backbone.get_image_features(pixel_values=pixel_values, image_grid_thw=image_grid_thw, return_dict=True)
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    merge = int(backbone.config.vision_config.spatial_merge_size)
    grids = image_grid_thw.tolist()
    if torch.is_tensor(feats):  # older transformers: one concatenated tensor
        feats = torch.split(feats, [t * h * w // merge**2 for t, h, w in grids])
    return [f.reshape(h // merge, w // merge, -1) for f, (_, h, w) in zip(feats, grids)]


@dataclass
class ImageSequence:
    """The image section of the LLM sequence of a batch and the patch features for the lift.

    Attributes:
        embeds: (B, Li, D) ``[<|vision_start|> tokens <|vision_end|>]`` per present camera, padded.
        mask: (B, Li) bool, real tokens.
        positions: (3, B, Li) multimodal RoPE positions (temporal, row, column); 0 on padding.
        text_start: (B,) long, the position of the first text token after the images.
        features: (B, N, h_max, w_max, D) per-camera token grids (zero-padded) for the lift.
        feature_size: (B, N, 2) each grid's (w, h) in tokens.
    """

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    text_start: torch.Tensor
    features: torch.Tensor
    feature_size: torch.Tensor


def image_sequence(feats: list[torch.Tensor], camera_mask: torch.Tensor, camera_embed: torch.Tensor, start_embed: torch.Tensor,
                   end_embed: torch.Tensor) -> ImageSequence:
    """Assemble the image section of B samples x N cameras (Qwen2-VL layout and positions).

    Each present camera contributes ``<|vision_start|>`` (text position p), its h x w tokens (each
    plus the learned embedding of its camera) at positions (p+1, p+1+row, p+1+col), and
    ``<|vision_end|>`` at p+1+max(h, w), as ``get_rope_index`` of Qwen2-VL numbers them; the next
    camera starts after it. Missing cameras (``camera_mask`` False) contribute nothing.

    Args:
        feats: B*N tensors (h, w, D), sample-major (:func:`image_features`).
        camera_mask: (B, N) bool; camera_embed: (N, D); start_embed, end_embed: (D,).
    """
    b, n = camera_mask.shape
    device, dtype = start_embed.device, start_embed.dtype
    rows, poss, starts = [], [], []
    for i in range(b):
        parts, pos, p = [], [], 0
        for j in range(n):
            if not bool(camera_mask[i, j]):
                continue
            f = feats[i * n + j]
            h, w = f.shape[:2]
            parts += [start_embed[None], (f.reshape(h * w, -1).to(dtype) + camera_embed[j].to(dtype)), end_embed[None]]
            r, c = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
            img = torch.stack([torch.zeros(h * w, dtype=torch.long, device=device), r.flatten(), c.flatten()]) + p + 1
            pos += [torch.full((3, 1), p, dtype=torch.long, device=device), img,
                    torch.full((3, 1), p + 1 + max(h, w), dtype=torch.long, device=device)]
            p += 2 + max(h, w)
        rows.append(torch.cat(parts))
        poss.append(torch.cat(pos, 1))
        starts.append(p)
    length = max(r.shape[0] for r in rows)
    embeds = torch.zeros(b, length, rows[0].shape[1], dtype=dtype, device=device)
    mask = torch.zeros(b, length, dtype=torch.bool, device=device)
    positions = torch.zeros(3, b, length, dtype=torch.long, device=device)
    for i, (r, q) in enumerate(zip(rows, poss)):
        embeds[i, : len(r)] = r
        mask[i, : len(r)] = True
        positions[:, i, : len(r)] = q
    hmax = max(f.shape[0] for f in feats)
    wmax = max(f.shape[1] for f in feats)
    grid = torch.zeros(b, n, hmax, wmax, feats[0].shape[-1], dtype=feats[0].dtype, device=device)
    size = torch.zeros(b, n, 2, device=device)
    for k, f in enumerate(feats):
        i, j = divmod(k, n)
        grid[i, j, : f.shape[0], : f.shape[1]] = f
        size[i, j] = torch.tensor([f.shape[1], f.shape[0]], dtype=size.dtype)
    return ImageSequence(embeds, mask, positions, torch.tensor(starts, device=device), grid, size)


__all__ = ["SUPPORTED_MODEL_TYPES", "CAMERA_KEYS", "check_vision_backbone", "token_pixels", "set_pixel_budget", "encode_cameras",
           "collate_cameras", "image_features", "ImageSequence", "image_sequence"]
