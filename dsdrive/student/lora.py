"""LoRA / QLoRA on the student's backbone with peft; the heads and scene encoder train in full.

LoRA (Hu et al., 2021) adapters go on the backbone's attention projections only (DSDrive's
LMDrive template: r 16, alpha 32 on q/v); QLoRA (Dettmers et al., 2023) additionally loads the
backbone in 4-bit NF4 (:func:`dsdrive.student.backbone.load_backbone` with ``quantization="4bit"``;
bitsandbytes >= 0.48 also runs it on CPU) and prepares it with :func:`prepare_kbit_model`, which
keeps the frozen, unquantised embedding matrices in bf16 (peft's ``prepare_model_for_kbit_training``
would cast them to fp32: 519 instead of 260 MiB at the Qwen2.5-0.5B shape, for nothing).
Everything that is not the backbone (scene encoder, scene projector, planning
queries, waypoint head, RiskHead, meta-action head) is listed in peft's ``modules_to_save``, so
it is trained in full AND saved in every adapter checkpoint (a resumed run loses nothing).
The final deployable student is ``merge_lora(model).save_pretrained(dir)``: a plain
:class:`~dsdrive.student.modeling_student.StudentModel` with the adapters merged.

Camera student (vision-language backbone): the LLM adapters go on the language model only
(``backbone.model.language_model.*``); the vision tower follows ``StudentConfig.vision_tower``:
``frozen`` (no adapter, no gradient), ``lora`` (adapters on every vision block's attention ``qkv``
and ``proj``: :data:`VISION_LORA_TARGETS`) or ``train`` (full training; only without LoRA,
:func:`freeze_vision_tower` is then a no-op).
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from dsdrive.student.modeling_student import StudentModel

FULL_TRAIN_MODULES = ("scene_encoder", "scene_proj", "planning_queries", "planning_cvae", "waypoint_head", "risk_head", "meta_action_head")
"""Student submodules trained in full next to the LoRA adapters (peft ``modules_to_save``)."""
CAMERA_TRAIN_MODULES = ("ego_encoder", "camera_embed", "bev_lift")
"""A camera student's own submodules, also trained in full next to the adapters (``ego_encoder``
replaces ``scene_encoder`` when no object is read)."""
VISION_LORA_TARGETS = ("qkv", "proj")
"""Vision-tower Linear names (Qwen2-VL blocks' attention) that get LoRA with ``vision_tower: lora``."""
VISION_TOWER_PREFIX = "backbone.model.visual"
"""Where a Qwen2-VL-family backbone keeps its vision tower (patch embedding, blocks, merger)."""


def freeze_vision_tower(model: StudentModel) -> int:
    """``requires_grad = False`` on the vision tower of a camera student whose
    ``config.vision_tower`` is ``frozen``; returns the number of parameters frozen (0 otherwise)."""
    if not model.config.reads_cameras or model.config.vision_tower != "frozen":
        return 0
    frozen = 0
    for name, p in model.named_parameters():
        if name.startswith(VISION_TOWER_PREFIX + "."):
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def _cast_input_to_weight(module, args):
    return (args[0].to(module.weight.dtype), *args[1:])


def prepare_kbit_model(model: torch.nn.Module, backbone) -> int:
    """Prepare a model around a 4/8-bit backbone for QLoRA; the frozen embeddings stay in bf16.

    What peft's ``prepare_model_for_kbit_training`` (without gradient checkpointing) does: every
    parameter is frozen and every unquantised fp16 / bf16 parameter (norms, biases, a vision
    tower's patch embedding) is cast to fp32; except that ``backbone``'s input embedding and output
    embedding (the same matrix when tied) keep their loaded dtype. bitsandbytes never quantises
    them; frozen, they gain nothing from fp32, and they are the largest unquantised tensors
    (vocabulary x hidden: 151,936 x 896 = 136 M parameters at the Qwen2.5-0.5B shape, 311 M at
    Qwen2.5-VL-3B). The output embedding gets a forward pre-hook casting its input (fp32 hidden
    states) to its weight dtype, so its logits are bf16 (the caller upcasts them for the loss, as
    :class:`~dsdrive.student.modeling_student.StudentModel` does). On CPU the kept matrices are
    copied into memory of their own: loaded from a bf16 checkpoint they are views into its memory
    map, which would keep the whole checkpoint (every page read while quantising) resident.

    Args:
        model: the module to prepare (the StudentModel, or the VLM itself); changed in place.
        backbone: the quantized transformers model inside it (``get_input_embeddings`` /
            ``get_output_embeddings``).

    Returns:
        The number of embedding parameters kept in their loaded dtype (a tied matrix counted once).
    """
    keep = {}
    for emb in (backbone.get_input_embeddings(), backbone.get_output_embeddings()):
        if emb is not None:
            keep.update({id(p): p for p in emb.parameters()})
    for p in model.parameters():
        p.requires_grad_(False)
        if p.dtype in (torch.float16, torch.bfloat16) and type(p).__name__ != "Params4bit" and id(p) not in keep:
            p.data = p.data.to(torch.float32)
    for p in keep.values():
        if p.device.type == "cpu":  # own the memory: a view into the memory-mapped checkpoint would keep all of it mapped
            p.data = p.data.clone()
    head = backbone.get_output_embeddings()
    if head is not None and head.weight.dtype != torch.float32:
        head.register_forward_pre_hook(_cast_input_to_weight)
    return sum(p.numel() for p in keep.values() if p.dtype != torch.float32)


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
            enables :func:`prepare_kbit_model` (peft's preparation, embeddings kept in bf16).

    Returns:
        The PeftModel; LoRA weights and :data:`FULL_TRAIN_MODULES` are trainable, the backbone's
        base weights frozen. A camera student's LLM adapters stay in its language model; its
        vision blocks get adapters on :data:`VISION_LORA_TARGETS` when ``config.vision_tower`` is ``lora``.

    Raises:
        ValueError: quantization requested but the backbone is not quantized (or the reverse),
            no backbone module matches ``target_modules``, or ``vision_tower`` is ``train`` (a
            vision tower trained in full next to LoRA is not supported: use ``lora`` or ``frozen``).
    """
    quantized = bool(getattr(model.backbone, "is_quantized", False) or getattr(model.backbone, "is_loaded_in_4bit", False)
                     or getattr(model.backbone, "is_loaded_in_8bit", False))
    if quantization is not None and not quantized:
        raise ValueError(f"apply_lora: quantization={quantization!r} but the backbone is not quantized; load it with "
                         "dsdrive.student.backbone.load_backbone(path, quantization=...) first")
    if quantization is None and quantized:
        raise ValueError("apply_lora: the backbone is quantized; pass quantization='4bit' or '8bit' (QLoRA)")
    pattern = r"backbone\..*\.(" + "|".join(re.escape(t) for t in target_modules) + r")$"
    if model.config.reads_cameras:  # the LLM's adapters stay out of the vision tower (its MLP names are the LLM's)
        if model.config.vision_tower == "train":
            raise ValueError("apply_lora: vision_tower='train' (full training) cannot be combined with LoRA; use 'lora' or 'frozen'")
        pattern = r"backbone\.model\.language_model\..*\.(" + "|".join(re.escape(t) for t in target_modules) + r")$"
        if model.config.vision_tower == "lora":
            pattern = f"(?:{pattern})|(?:" + re.escape(VISION_TOWER_PREFIX) + r"\.blocks\..*\.(" + "|".join(VISION_LORA_TARGETS) + r")$)"
    names = [n for n, _ in model.named_modules() if re.match(pattern, n)]
    if not names:
        raise ValueError(f"apply_lora: no backbone module matches target_modules={list(target_modules)}")
    if quantization is not None:
        prepare_kbit_model(model, model.backbone)
    to_save = [m for m in FULL_TRAIN_MODULES + CAMERA_TRAIN_MODULES if getattr(model, m, None) is not None]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, modules_to_save=to_save, bias="none")
    return get_peft_model(model, config)


def merge_lora(model: PeftModel) -> StudentModel:
    """Merge the adapters into the backbone and unwrap the fully trained modules -> plain StudentModel."""
    return model.merge_and_unload()
