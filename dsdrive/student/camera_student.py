"""Distillation settings and construction of the camera student (VLM backbone + the shared heads).

:class:`CameraStudentArguments` is the group of ``DistillConfig`` fields that choose what the
student reads (``scene_inputs``) and, for a camera student, which cameras, at which pixel budget,
how the PV -> BEV lift samples (``lift_heights``), whether a missing camera is an error, and how
the vision tower trains. :func:`build_camera_student` makes the model and processor the distill
stage (:mod:`dsdrive.training.distill`) trains:

* ``backbone_path`` set: a local Qwen2-VL-family checkpoint (Qwen2.5-VL-3B-Instruct, EvoDriveVLA's
  student size) with its processor (tokenizer + image processor), optionally 4-bit (QLoRA);
* otherwise the embedded tiny Qwen2.5-VL (:func:`dsdrive.student.tiny_vl.build_tiny_qwen_vl`) with a
  byte-level BPE trained on the training scenes' prompts and reasoning.

Run as (see recipes/configs/tiny-vl/distill.yaml):
    accelerate launch recipes/distill.py --config recipes/configs/tiny-vl/distill.yaml
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from dsdrive.data.types import CAMERA_NAMES
from dsdrive.student.configuration_student import (
    DEFAULT_LIFT_HEIGHTS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    SCENE_INPUTS,
    VISION_TOWER_MODES,
)


def _floats(text: str) -> list[float]:
    return [float(v) for v in str(text).split(",") if v.strip()]


def _names(text: str) -> list[str]:
    return [v.strip() for v in str(text).split(",") if v.strip()]


@dataclass
class CameraStudentArguments:
    """What the student reads; a mixin of ``DistillConfig`` (every field has ``metadata["help"]``).

    Raises:
        ValueError: on construction, for an unknown ``scene_inputs`` / ``vision_tower`` / camera
            name, an empty or non-numeric ``lift_heights``, a pixel budget outside
            ``0 < min_pixels <= max_pixels``, or ``vision_tower`` lora without ``use_lora`` / train
            with it (naming the field and value).
    """

    scene_inputs: str = field(default="objects", metadata={
        "help": "objects (agent/map tokens) | cameras (VLM reads the images; no ground-truth box is read) | both"})
    cameras: str = field(default=",".join(CAMERA_NAMES), metadata={"help": "comma-separated camera names read, in order"})
    min_pixels: int = field(default=DEFAULT_MIN_PIXELS, metadata={"help": "per-image pixel budget, lower bound (28 x 28 = one vision token)"})
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"help": "per-image pixel budget, upper bound"})
    lift_heights: str = field(default=",".join(str(h) for h in DEFAULT_LIFT_HEIGHTS), metadata={
        "help": "comma-separated heights (m, ego frame) of the PV -> BEV lift's reference points"})
    allow_missing_cameras: bool = field(default=False, metadata={
        "help": "false: a sample missing a camera (or its image) is an error naming it; true: that camera is masked"})
    vision_tower: str = field(default="frozen", metadata={
        "help": "frozen | lora (adapters on the vision blocks' qkv/proj; needs use_lora) | train (full; without LoRA)"})

    def __post_init__(self):
        self._validate_camera_fields()
        if hasattr(super(), "__post_init__"):  # TrainingArguments, when mixed into DistillConfig
            super().__post_init__()

    def _validate_camera_fields(self) -> None:
        def bad(name, why):
            raise ValueError(f"DistillConfig: {name}={getattr(self, name)!r} {why}")

        if self.scene_inputs not in SCENE_INPUTS:
            bad("scene_inputs", f"must be one of {SCENE_INPUTS}")
        if self.vision_tower not in VISION_TOWER_MODES:
            bad("vision_tower", f"must be one of {VISION_TOWER_MODES}")
        names = _names(self.cameras)
        if not names or any(n not in CAMERA_NAMES for n in names) or len(set(names)) != len(names):
            bad("cameras", f"must name distinct cameras among {CAMERA_NAMES}")
        try:
            heights = _floats(self.lift_heights)
        except ValueError:
            heights = []
        if not heights:
            bad("lift_heights", "must be comma-separated numbers (metres), at least one")
        if not (isinstance(self.min_pixels, int) and isinstance(self.max_pixels, int) and 0 < self.min_pixels <= self.max_pixels):
            bad("min_pixels", f"and max_pixels={self.max_pixels!r} must be integers with 0 < min_pixels <= max_pixels")
        if self.scene_inputs != "objects":
            if self.vision_tower == "lora" and not getattr(self, "use_lora", False):
                bad("vision_tower", "needs use_lora true (LoRA adapters on the vision tower)")
            if self.vision_tower == "train" and getattr(self, "use_lora", False):
                bad("vision_tower", "cannot train the vision tower in full next to LoRA; use lora or frozen")

    def camera_config_kwargs(self) -> dict:
        """Keyword arguments of :class:`~dsdrive.student.configuration_student.StudentConfig`."""
        return dict(scene_inputs=self.scene_inputs, cameras=_names(self.cameras), min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                    lift_heights=_floats(self.lift_heights), allow_missing_cameras=self.allow_missing_cameras, vision_tower=self.vision_tower)


def build_camera_student(args, train):
    """The camera student and its processor for distillation (module docstring).

    Args:
        args: the ``DistillConfig`` (a :class:`CameraStudentArguments` with ``scene_inputs`` not
            ``objects``; backbone, tiny sizes, seed, quantization, text lengths).
        train: the training PlanningSamples (the planning vocabulary, and the tiny tokenizer's corpus).

    Returns:
        ``(StudentModel, StudentProcessor)``; with ``vision_tower`` frozen the vision tower has no
        trainable parameter.

    Raises:
        ValueError: the backbone at ``backbone_path`` is not a supported VLM.
    """
    from transformers import AutoProcessor

    from dsdrive.distilldrive.planning_vocabulary import PlanningVocabulary
    from dsdrive.student.backbone import load_backbone, resolve_backbone_path
    from dsdrive.student.lora import freeze_vision_tower
    from dsdrive.student.modeling_student import StudentModel
    from dsdrive.student.processing_student import StudentProcessor
    from dsdrive.student.tiny_vl import build_tiny_qwen_vl
    from dsdrive.student.tokenizer import student_corpus

    if args.backbone_path:
        path = resolve_backbone_path(args.backbone_path)
        vl_processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        if args.quantization and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # 4-bit weights load onto the current device
        torch.manual_seed(args.seed)
        backbone = load_backbone(path, quantization=args.quantization)
        name = args.backbone_path
    else:
        heads = args.tiny_heads
        backbone, vl_processor = build_tiny_qwen_vl(None, args.min_pixels, args.max_pixels, corpus=student_corpus(train),
                                                    vocab_size=args.tokenizer_vocab_size, seed=args.seed, hidden_size=args.tiny_hidden_size,
                                                    layers=args.tiny_layers, heads=heads, kv_heads=2 if heads % 2 == 0 else heads)
        name = "embedded-tiny-qwen2.5-vl"
    tokenizer = vl_processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = StudentModel.from_backbone(backbone, vocabulary=PlanningVocabulary.fit(train, seed=args.seed), backbone_name_or_path=name,
                                       **args.student_config_kwargs())
    freeze_vision_tower(model)
    processor = StudentProcessor(tokenizer, model.config, args.max_prompt_tokens, args.max_reasoning_tokens,
                                 image_processor=vl_processor.image_processor)
    return model, processor


__all__ = ["CameraStudentArguments", "build_camera_student"]
