"""LoRA / QLoRA on the student's backbone with peft; the heads and scene encoder train in full.

LoRA (Hu et al., 2021) adapters go on the backbone's attention projections only (DSDrive's
LMDrive template: r 16, alpha 32 on q/v); QLoRA (Dettmers et al., 2023) additionally loads the
backbone in 4-bit NF4 (:func:`dsdrive.student.backbone.load_backbone` with ``quantization="4bit"``,
CUDA only). Everything that is not the backbone (scene encoder, scene projector, planning
queries, waypoint head, RiskHead, meta-action head) is listed in peft's ``modules_to_save``, so
it is trained in full AND saved in every adapter checkpoint (a resumed run loses nothing).
The final deployable student is ``merge_lora(model).save_pretrained(dir)``: a plain
:class:`~dsdrive.student.modeling_student.StudentModel` with the adapters merged.
"""

from __future__ import annotations

import re
from typing import Sequence

from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

from dsdrive.student.modeling_student import StudentModel

FULL_TRAIN_MODULES = ("scene_encoder", "scene_proj", "planning_queries", "waypoint_head", "risk_head", "meta_action_head")
"""Student submodules trained in full next to the LoRA adapters (peft ``modules_to_save``)."""


def apply_lora(model: StudentModel, r: int = 16, alpha: int = 32, dropout: float = 0.05,
               target_modules: Sequence[str] = ("q_proj", "v_proj"), quantization: str | None = None) -> PeftModel:
    """Wrap a StudentModel with LoRA adapters on ``backbone.*.<target_modules>``.

    Args:
        model: the student; for QLoRA its backbone must already be quantized (load it with
            ``load_backbone(path, quantization="4bit")`` and ``StudentModel.from_backbone``).
        r, alpha, dropout: LoRA rank, scaling numerator, dropout.
        target_modules: backbone Linear names (Qwen2/Llama: q_proj, k_proj, v_proj, o_proj,
            gate_proj, up_proj, down_proj).
        quantization: None, ``"4bit"`` or ``"8bit"``: must match how the backbone was loaded;
            enables ``peft.prepare_model_for_kbit_training``.

    Returns:
        The PeftModel; LoRA weights and :data:`FULL_TRAIN_MODULES` are trainable, the backbone's
        base weights frozen.

    Raises:
        ValueError: quantization requested but the backbone is not quantized (or the reverse),
            or no backbone module matches ``target_modules``.
    """
    quantized = bool(getattr(model.backbone, "is_quantized", False) or getattr(model.backbone, "is_loaded_in_4bit", False)
                     or getattr(model.backbone, "is_loaded_in_8bit", False))
    if quantization is not None and not quantized:
        raise ValueError(f"apply_lora: quantization={quantization!r} but the backbone is not quantized; load it with "
                         "dsdrive.student.backbone.load_backbone(path, quantization=...) first")
    if quantization is None and quantized:
        raise ValueError("apply_lora: the backbone is quantized; pass quantization='4bit' or '8bit' (QLoRA)")
    pattern = r"backbone\..*\.(" + "|".join(re.escape(t) for t in target_modules) + r")$"
    names = [n for n, _ in model.named_modules() if re.match(pattern, n)]
    if not names:
        raise ValueError(f"apply_lora: no backbone module matches target_modules={list(target_modules)}")
    if quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    to_save = [m for m in FULL_TRAIN_MODULES if getattr(model, m, None) is not None]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, modules_to_save=to_save, bias="none")
    return get_peft_model(model, config)


def merge_lora(model: PeftModel) -> StudentModel:
    """Merge the adapters into the backbone and unwrap the fully trained modules -> plain StudentModel."""
    return model.merge_and_unload()
