"""Training arguments of the text-trajectory VLA baseline (trl-style config: ``TrainingArguments`` + method fields).

The baseline (:mod:`dsdrive.student.text_trajectory_vla`) is the camera student's VLM fine-tuned by
supervised fine-tuning on the ground-truth trajectory written as text (GPT-Driver, arXiv 2310.01415;
EvoDriveVLA, arXiv 2603.09465). Groups (every field has ``metadata["help"]``):

* **Backbone**: ``backbone_path`` (a local Qwen2-VL-family folder or a cached hub id; None = the
  embedded tiny Qwen2.5-VL, ``tiny_hidden_size`` / ``tiny_layers`` / ``tiny_heads``, with a
  byte-level BPE of ``tokenizer_vocab_size`` trained on the training prompts and answers).
* **Inputs / answer**: ``cameras``, ``min_pixels`` / ``max_pixels`` (the camera student's fields and
  defaults), ``allow_missing_cameras``, ``prompt_version`` (``prompts/student/``),
  ``trajectory_version`` (``prompts/trajectory/``), ``max_new_tokens``.
* **LoRA / QLoRA**: ``use_lora`` (default true: LoRA on the language model's projections),
  ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``, ``quantization``
  (4bit / 8bit, needs ``use_lora``), ``vision_tower`` (frozen | lora | train; lora needs use_lora,
  train excludes it).

Validation (``__post_init__``, before any data or model is loaded; ``ValueError`` naming the field
and its value): camera names, pixel budget, LoRA sizes, quantization, vision-tower mode,
``max_new_tokens`` >= 1, and a ``backbone_path`` that is a local folder with config.json or a
cached hub id (:func:`dsdrive.training.distill_config.resolve_backbone_path`, offline).

Used by :mod:`dsdrive.training.text_trajectory_trainer` and :mod:`dsdrive.training.text_trajectory`
(``recipes/text_trajectory.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from dsdrive.annotation.reasoning import STUDENT_PROMPT_VERSION
from dsdrive.data.types import CAMERA_NAMES
from dsdrive.student.configuration_student import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, VISION_TOWER_MODES
from dsdrive.student.text_trajectory_vla import TRAJECTORY_TEMPLATE_VERSION, TextTrajectorySettings

DEFAULT_LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
"""The language model's attention and MLP projections (the camera student's 3B recipe)."""


@dataclass
class TextTrajectoryConfig(TrainingArguments):
    """``TrainingArguments`` plus the baseline's backbone, inputs and LoRA (module docstring).

    Raises:
        ValueError: on construction, for any out-of-range field (named with its value).
    """

    # backbone
    backbone_path: str | None = field(default=None, metadata={
        "help": "local Qwen2-VL-family folder or cached hub id; None = embedded tiny Qwen2.5-VL"})
    tiny_hidden_size: int = field(default=64, metadata={"help": "embedded tiny Qwen2.5-VL: text hidden size"})
    tiny_layers: int = field(default=2, metadata={"help": "embedded tiny Qwen2.5-VL: text decoder layers"})
    tiny_heads: int = field(default=4, metadata={"help": "embedded tiny Qwen2.5-VL: attention heads"})
    tokenizer_vocab_size: int = field(default=1024, metadata={"help": "byte-level BPE size trained on prompts + answers (tiny backbone only)"})
    # inputs and answer
    cameras: str = field(default=",".join(CAMERA_NAMES), metadata={"help": "comma-separated camera names read, in order"})
    min_pixels: int = field(default=DEFAULT_MIN_PIXELS, metadata={"help": "per-image pixel budget, lower bound (28 x 28 = one vision token)"})
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"help": "per-image pixel budget, upper bound"})
    allow_missing_cameras: bool = field(default=False, metadata={
        "help": "false: a missing camera is an error naming it; true: left out of the prompt"})
    prompt_version: str = field(default=STUDENT_PROMPT_VERSION, metadata={"help": "prompts/student/<version>.jinja (the camera student's prompt)"})
    trajectory_version: str = field(default=TRAJECTORY_TEMPLATE_VERSION, metadata={"help": "prompts/trajectory/<version>.jinja (answer format)"})
    max_new_tokens: int = field(default=96, metadata={"help": "generation cap when planning"})
    # LoRA / QLoRA
    use_lora: bool = field(default=True, metadata={"help": "LoRA on the language model (and the vision blocks with vision_tower lora)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(default=DEFAULT_LORA_TARGETS, metadata={"help": "comma-separated language-model Linear names"})
    quantization: str | None = field(default=None, metadata={"help": "QLoRA: '4bit' or '8bit' backbone (bitsandbytes); needs use_lora"})
    vision_tower: str = field(default="frozen", metadata={"help": "frozen | lora (qkv/proj adapters; needs use_lora) | train (full; without LoRA)"})
    # TrainingArguments defaults for this stage
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep every batch key (the collator makes them)"})
    prediction_loss_only: bool = field(default=True, metadata={"help": "evaluation reports the loss only"})

    def __post_init__(self):
        self._validate()
        super().__post_init__()
        on = getattr(self, "activation_checkpointing", None) or self.gradient_checkpointing  # transformers >= 5 / older name
        if on and not getattr(self, "activation_checkpointing_kwargs", None) and not self.gradient_checkpointing_kwargs:
            # frozen embeddings: a reentrant checkpoint's inputs would need requires_grad; the non-reentrant one does not
            self.gradient_checkpointing_kwargs = {"use_reentrant": False}
            if hasattr(self, "activation_checkpointing_kwargs"):
                self.activation_checkpointing_kwargs = self.gradient_checkpointing_kwargs

    def _validate(self) -> None:
        def bad(name, why):
            raise ValueError(f"TextTrajectoryConfig: {name}={getattr(self, name)!r} {why}")

        try:
            self.settings()
        except ValueError as e:
            raise ValueError(str(e).replace("TextTrajectorySettings", "TextTrajectoryConfig")) from None
        if self.vision_tower not in VISION_TOWER_MODES:
            bad("vision_tower", f"must be one of {VISION_TOWER_MODES}")
        if self.vision_tower == "lora" and not self.use_lora:
            bad("vision_tower", "needs use_lora true")
        if self.vision_tower == "train" and self.use_lora:
            bad("vision_tower", "cannot train the vision tower in full next to LoRA; use lora or frozen")
        if self.quantization not in (None, "4bit", "8bit"):
            bad("quantization", "must be null, '4bit' or '8bit'")
        if self.quantization and not self.use_lora:
            bad("quantization", "needs use_lora true (QLoRA trains adapters on the quantized backbone)")
        if self.use_lora:
            if self.lora_r < 1 or self.lora_alpha < 1:
                bad("lora_r", f"and lora_alpha={self.lora_alpha!r} must be >= 1")
            if not 0.0 <= self.lora_dropout < 1.0 or not math.isfinite(self.lora_dropout):
                bad("lora_dropout", "must be in [0, 1)")
            if not self.target_modules():
                bad("lora_target_modules", "names no module")
        for name in ("tiny_hidden_size", "tiny_layers", "tiny_heads", "tokenizer_vocab_size"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be >= 1")
        if self.tiny_hidden_size % self.tiny_heads:
            bad("tiny_hidden_size", f"must divide by tiny_heads={self.tiny_heads}")
        if self.backbone_path:
            from dsdrive.training.distill_config import resolve_backbone_path

            try:
                resolve_backbone_path(self.backbone_path)
            except ValueError as e:
                raise ValueError(str(e).replace("DistillConfig", "TextTrajectoryConfig")) from None

    def settings(self) -> TextTrajectorySettings:
        """The :class:`TextTrajectorySettings` saved with the checkpoint."""
        return TextTrajectorySettings([c.strip() for c in str(self.cameras).split(",") if c.strip()], int(self.min_pixels),
                                      int(self.max_pixels), bool(self.allow_missing_cameras), self.prompt_version,
                                      self.trajectory_version, int(self.max_new_tokens))

    def target_modules(self) -> list[str]:
        """``lora_target_modules`` as a list."""
        return [t.strip() for t in str(self.lora_target_modules).split(",") if t.strip()]


__all__ = ["DEFAULT_LORA_TARGETS", "TextTrajectoryConfig"]
