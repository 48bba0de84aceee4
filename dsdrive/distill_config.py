"""Training arguments of student distillation (trl-style config: ``TrainingArguments`` + method fields).

Groups (every field has ``metadata["help"]``):

* **Loss weights** (DSDrive lambda_wp / lambda_text, DistillDrive plan L1 + mode classification,
  RSD L_risk, GPT-Driver meta-action): ``waypoint_l1_weight``, ``mode_ce_weight``,
  ``reasoning_ce_weight``, ``risk_l1_weight``, ``meta_action_ce_weight``.
* **Student size**: backbone (``backbone_path`` or the embedded tiny Qwen2 ``tiny_*``), scene
  encoder, BEV grid, RiskHead, caps, text lengths.
* **LoRA / QLoRA**: ``use_lora``, ``lora_r``, ``lora_alpha``, ``lora_dropout``,
  ``lora_target_modules``, ``quantization``.

Used by :mod:`dsdrive.distill_trainer` and ``recipes/distill.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class DistillConfig(TrainingArguments):
    """TrainingArguments plus the student's loss weights, sizes and LoRA settings."""

    # loss weights
    waypoint_l1_weight: float = field(default=1.0, metadata={"help": "L1 on the best mode's waypoints (DistillDrive/DSDrive)"})
    mode_ce_weight: float = field(default=0.5, metadata={"help": "cross-entropy on the best-mode index among the command's 6 modes"})
    reasoning_ce_weight: float = field(default=1.0, metadata={"help": "token cross-entropy on the teacher chain-of-thought (DSDrive)"})
    risk_l1_weight: float = field(default=1.0, metadata={"help": "L_risk = ||R_pred - R_gt||_1 on the BEV risk map (RSD)"})
    meta_action_ce_weight: float = field(default=0.2, metadata={"help": "meta-action classification (behaviour x speed); 0 disables the term"})
    risk_footprint_weight: float = field(default=1.0, metadata={"help": "extra L1 weight on agent-footprint cells of the risk map"})
    # backbone
    backbone_path: str | None = field(default=None, metadata={"help": "local causal LM folder (Qwen2.5-0.5B-Instruct, Llama-3.2-1B); None = embedded tiny Qwen2"})
    tiny_hidden_size: int = field(default=128, metadata={"help": "embedded tiny Qwen2: hidden size"})
    tiny_layers: int = field(default=2, metadata={"help": "embedded tiny Qwen2: decoder layers"})
    tiny_heads: int = field(default=4, metadata={"help": "embedded tiny Qwen2: attention heads"})
    tokenizer_vocab_size: int = field(default=1024, metadata={"help": "byte-level BPE size trained on prompts + reasoning (tiny backbone only)"})
    # student heads / encoder
    scene_dim: int = field(default=64, metadata={"help": "scene encoder and BEV feature width"})
    scene_layers: int = field(default=2, metadata={"help": "scene transformer encoder layers"})
    max_agents: int = field(default=32, metadata={"help": "nearest agents kept as scene tokens"})
    max_map: int = field(default=48, metadata={"help": "nearest map polylines kept as scene tokens"})
    bev_size: int = field(default=32, metadata={"help": "BEV grid cells per side (x [-16, 48) m, y [-32, 32) m)"})
    risk_layers: int = field(default=1, metadata={"help": "RiskHead deformable-attention blocks"})
    risk_points: int = field(default=4, metadata={"help": "sampling points per head in the RiskHead"})
    max_prompt_tokens: int = field(default=256, metadata={"help": "prompt truncation length"})
    max_reasoning_tokens: int = field(default=256, metadata={"help": "reasoning truncation length"})
    # LoRA / QLoRA
    use_lora: bool = field(default=False, metadata={"help": "LoRA on the backbone; heads and scene encoder train in full"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (LMDrive/DSDrive: 16)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (LMDrive/DSDrive: 32)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(default="q_proj,v_proj", metadata={"help": "comma-separated backbone Linear names"})
    quantization: str | None = field(default=None, metadata={"help": "QLoRA: '4bit' or '8bit' backbone (bitsandbytes); needs use_lora"})
    # TrainingArguments defaults suited to the student
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep every batch key (the student reads them all)"})
    prediction_loss_only: bool = field(default=True, metadata={"help": "evaluation reports losses only"})
    label_names: list[str] | None = field(default_factory=lambda: ["ego_future"], metadata={"help": "batch keys that count as labels"})

    def __post_init__(self):
        super().__post_init__()
        if self.quantization is not None and not self.use_lora:
            raise ValueError(f"DistillConfig: quantization={self.quantization!r} needs use_lora=True (QLoRA)")

    def loss_weights(self) -> dict[str, float]:
        """The ``StudentConfig.loss_weights`` dict."""
        return {"waypoint_l1": self.waypoint_l1_weight, "mode_ce": self.mode_ce_weight, "reasoning_ce": self.reasoning_ce_weight,
                "risk_l1": self.risk_l1_weight, "meta_action_ce": self.meta_action_ce_weight}

    def student_config_kwargs(self) -> dict:
        """Keyword arguments of :class:`dsdrive.student.StudentConfig` (all but the backbone)."""
        return dict(scene_dim=self.scene_dim, scene_layers=self.scene_layers, max_agents=self.max_agents, max_map=self.max_map,
                    bev_height=self.bev_size, bev_width=self.bev_size, risk_layers=self.risk_layers, risk_points=self.risk_points,
                    risk_footprint_weight=self.risk_footprint_weight, use_meta_action_head=self.meta_action_ce_weight > 0,
                    loss_weights=self.loss_weights())
