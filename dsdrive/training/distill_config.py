"""Training arguments of student distillation (trl-style config: ``TrainingArguments`` + method fields).

Groups (every field has ``metadata["help"]``):

* **Loss weights** (DSDrive lambda_wp / lambda_text, DistillDrive plan L1 + mode classification,
  RSD L_risk, GPT-Driver meta-action): ``waypoint_l1_weight``, ``mode_ce_weight``,
  ``reasoning_ce_weight``, ``risk_l1_weight``, ``meta_action_ce_weight``.
* **Student size**: backbone (``backbone_path`` or the embedded tiny Qwen2 ``tiny_*``), scene
  encoder, BEV grid, RiskHead, caps, text lengths.
* **Ego-status ablation**: ``use_ego_status`` (default true); ``--use_ego_status false`` trains a
  student that never reads the ego status or history (``StudentConfig.use_ego_status``).
* **LoRA / QLoRA**: ``use_lora``, ``lora_r``, ``lora_alpha``, ``lora_dropout``,
  ``lora_target_modules``, ``quantization``.
* **Planning KD** (DistillDrive, :mod:`dsdrive.training.planning_kd`): ``planning_kd_teacher`` (off when
  empty), ``planning_kd_cache``, ``kd_feature_weight`` (0.5), ``kd_mode_kl_weight``,
  ``kd_regression_weight`` (0, as published); weights finite and >= 0, the teacher a folder with
  ``config.json``.

Validation (``__post_init__``, before any model or data is loaded; ``ValueError`` naming the
field and its value):

* every loss weight is finite and >= 0, and the weights sum to a positive total (all zero
  would train nothing); a term with weight 0 is switched off;
* ``max_steps`` is -1 (train ``num_train_epochs`` > 0 epochs) or >= 1;
* ``backbone_path`` is None, a local folder with a ``config.json``, or a Hugging Face repo id
  already in the local cache (no network is used; :func:`resolve_backbone_path`);
* ``quantization`` is None, ``"4bit"`` or ``"8bit"`` and needs ``use_lora``; LoRA rank, alpha,
  dropout and target modules, student sizes and text lengths are in range.

Data-dependent checks (annotation column present when ``reasoning_ce_weight`` or
``risk_l1_weight`` > 0) are in :func:`check_annotations`, called by ``recipes/distill.py``.

Used by :mod:`dsdrive.training.distill_trainer` and ``recipes/distill.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import snapshot_download
from transformers import TrainingArguments

ANNOTATION_COLUMN = "annotation"
"""Dataset column holding the teacher annotation JSON (:mod:`dsdrive.data.dataset`)."""


def resolve_backbone_path(value: str) -> Path:
    """A local folder for ``backbone_path``: the folder itself, or a cached Hugging Face snapshot.

    Args:
        value: a local folder with ``config.json`` or a repo id such as ``Qwen/Qwen2.5-0.5B-Instruct``
            whose snapshot is already in the local Hugging Face cache (offline: nothing is downloaded).

    Raises:
        ValueError: neither, naming the field and value.
    """
    p = Path(value).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ValueError(f"DistillConfig: backbone_path={value!r} is a folder without config.json (expected a saved causal LM)")
        return p
    if not p.exists() and value.count("/") == 1 and not value.startswith((".", "/", "~")):
        try:
            snap = Path(snapshot_download(value, local_files_only=True))
        except Exception:  # noqa: BLE001 - any miss (not cached, bad id) gets the same clear error
            snap = None
        if snap is not None and (snap / "config.json").is_file():
            return snap
        raise ValueError(f"DistillConfig: backbone_path={value!r} is neither a local folder nor a Hugging Face repo in the local "
                         f"cache (offline); run `huggingface-cli download {value}` or pass a local folder")
    raise ValueError(f"DistillConfig: backbone_path={value!r} does not exist (expected a local causal LM folder with config.json)")


def check_annotations(column_names: list[str], annotations: list, data_path: str, cfg: "DistillConfig") -> None:
    """Fail before training when annotation-driven loss terms have nothing to learn from.

    Args:
        column_names: the dataset's columns; annotations: the training samples' annotation values
            (None = unannotated); data_path: dataset folder (for the message); cfg: the config.

    Raises:
        ValueError: ``reasoning_ce_weight`` or ``risk_l1_weight`` > 0 and the dataset has no
            ``annotation`` column or no annotated training sample (names the column, file and weights).
    """
    need = {k: v for k, v in (("reasoning_ce_weight", cfg.reasoning_ce_weight), ("risk_l1_weight", cfg.risk_l1_weight)) if v > 0}
    if not need:
        return
    fix = "annotate it with `dsdrive annotate` or set " + " and ".join(f"--{k} 0" for k in need)
    if ANNOTATION_COLUMN not in column_names:
        raise ValueError(f"{data_path}: dataset has no {ANNOTATION_COLUMN!r} column but {need} > 0; {fix}")
    if not any(a for a in annotations):
        raise ValueError(f"{data_path}: column {ANNOTATION_COLUMN!r} is empty for all {len(annotations)} training samples but {need} > 0; {fix}")


@dataclass
class DistillConfig(TrainingArguments):
    """TrainingArguments plus the student's loss weights, sizes and LoRA settings.

    Loss-weight rule: each of the five ``*_weight`` terms (and ``risk_footprint_weight``) must be
    finite and >= 0, and the five loss weights must sum to a positive total; 0 disables a term.

    Raises:
        ValueError: on construction, for any out-of-range field (named with its value); see the
            module docstring for the full list.
    """

    # loss weights
    waypoint_l1_weight: float = field(default=1.0, metadata={"help": "L1 on the best mode's waypoints (DistillDrive/DSDrive)"})
    mode_ce_weight: float = field(default=0.5, metadata={"help": "cross-entropy on the best-mode index among the command's 6 modes"})
    reasoning_ce_weight: float = field(default=1.0, metadata={"help": "token cross-entropy on the teacher chain-of-thought (DSDrive)"})
    risk_l1_weight: float = field(default=1.0, metadata={"help": "L_risk = ||R_pred - R_gt||_1 on the BEV risk map (RSD)"})
    meta_action_ce_weight: float = field(default=0.2, metadata={"help": "meta-action classification (behaviour x speed); 0 disables the term"})
    risk_footprint_weight: float = field(default=1.0, metadata={"help": "extra weight of the L1 (+ BCE) terms on agent-footprint cells of the risk map"})
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
    plan_selection: str = field(default="best", metadata={"help": "student plan: 'best' mode or 'expected' (score-weighted mean of the modes)"})
    waypoint_cv_gate_init: float = field(default=0.5, metadata={"help": "initial pull of each planning mode towards the ego's constant-velocity rollout, in [0, 1)"})
    use_ego_status: bool = field(default=True, metadata={"help": "false = ego-status ablation (AD-MLP; Li et al. CVPR 2024): the student never reads ego status or history"})
    max_prompt_tokens: int = field(default=256, metadata={"help": "prompt truncation length"})
    max_reasoning_tokens: int = field(default=256, metadata={"help": "reasoning truncation length"})
    # LoRA / QLoRA
    use_lora: bool = field(default=False, metadata={"help": "LoRA on the backbone; heads and scene encoder train in full"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (LMDrive/DSDrive: 16)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (LMDrive/DSDrive: 32)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(default="q_proj,v_proj", metadata={"help": "comma-separated backbone Linear names"})
    quantization: str | None = field(default=None, metadata={"help": "QLoRA: '4bit' or '8bit' backbone (bitsandbytes); needs use_lora"})
    # planning KD from the frozen DistillDrive planning teacher (dsdrive.training.planning_kd); off unless planning_kd_teacher is set
    planning_kd_teacher: str | None = field(default=None, metadata={"help": "PlanningTeacher checkpoint folder; None/empty = planning KD off"})
    planning_kd_cache: str | None = field(default=None, metadata={"help": "teacher-output cache folder (built once, resumable); None = OUTPUT_DIR/planning_kd_cache"})
    kd_feature_weight: float = field(default=0.5, metadata={"help": "MSE(adapter(student plan queries), teacher plan queries) (DistillDrive, 0.5)"})
    kd_mode_kl_weight: float = field(default=0.0, metadata={"help": "KL(teacher || student) mode distribution within each command's 6 modes (0 as published)"})
    kd_regression_weight: float = field(default=0.0, metadata={"help": "L1 between student and teacher waypoints of all 18 modes (0 as published)"})
    # TrainingArguments defaults suited to the student
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep every batch key (the student reads them all)"})
    prediction_loss_only: bool = field(default=True, metadata={"help": "evaluation reports losses only"})
    label_names: list[str] | None = field(default_factory=lambda: ["ego_future"], metadata={"help": "batch keys that count as labels"})

    def __post_init__(self):
        self._validate()
        super().__post_init__()

    def _validate(self) -> None:
        """Field checks (see the module docstring). Raises ValueError naming the field and value."""
        def bad(name, why):
            raise ValueError(f"DistillConfig: {name}={getattr(self, name)!r} {why}")

        weights = {f"{k}_weight": v for k, v in self.loss_weights().items()} | {"risk_footprint_weight": self.risk_footprint_weight}
        for k, v in weights.items():
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(k, "must be a finite number >= 0")
        if sum(self.loss_weights().values()) <= 0:
            raise ValueError(f"DistillConfig: loss weights {self.loss_weights()} sum to 0; at least one must be > 0")
        if self.max_steps == 0 or self.max_steps < -1:
            bad("max_steps", "must be >= 1 (or -1 to train num_train_epochs epochs)")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            bad("num_train_epochs", "must be > 0 when max_steps is -1")
        if self.quantization not in (None, "4bit", "8bit"):
            bad("quantization", "must be null, '4bit' or '8bit'")
        if self.quantization is not None and not self.use_lora:
            raise ValueError(f"DistillConfig: quantization={self.quantization!r} needs use_lora=True (QLoRA)")
        if self.quantization is not None and not self.backbone_path:
            bad("quantization", "needs a backbone_path (the embedded tiny Qwen2 is not quantized)")
        if self.backbone_path:
            resolve_backbone_path(self.backbone_path)
        positive = ["tiny_hidden_size", "tiny_layers", "tiny_heads", "tokenizer_vocab_size", "scene_dim", "scene_layers", "max_agents",
                    "max_map", "bev_size", "risk_layers", "risk_points", "max_prompt_tokens", "max_reasoning_tokens"]
        if self.use_lora:
            positive += ["lora_r", "lora_alpha"]
        for k in positive:
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                bad(k, "must be an integer >= 1")
        if self.tiny_hidden_size % self.tiny_heads:
            bad("tiny_hidden_size", f"must be divisible by tiny_heads={self.tiny_heads}")
        if self.plan_selection not in ("best", "expected"):
            bad("plan_selection", "must be 'best' or 'expected'")
        if not 0.0 <= self.waypoint_cv_gate_init < 1.0:
            bad("waypoint_cv_gate_init", "must be in [0, 1)")
        if not 0.0 <= self.lora_dropout < 1.0:
            bad("lora_dropout", "must be in [0, 1)")
        if self.use_lora and not [t for t in self.lora_target_modules.split(",") if t.strip()]:
            bad("lora_target_modules", "must name at least one backbone Linear (e.g. q_proj,v_proj)")
        if not self.learning_rate > 0:
            bad("learning_rate", "must be > 0")
        for k in ("kd_feature_weight", "kd_mode_kl_weight", "kd_regression_weight"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(k, "must be a finite number >= 0")
        if self.planning_kd_teacher and not (Path(self.planning_kd_teacher) / "config.json").is_file():
            bad("planning_kd_teacher", "is not a PlanningTeacher checkpoint folder (no config.json); train one with recipes/planning_teacher.py")

    def loss_weights(self) -> dict[str, float]:
        """The ``StudentConfig.loss_weights`` dict."""
        return {"waypoint_l1": self.waypoint_l1_weight, "mode_ce": self.mode_ce_weight, "reasoning_ce": self.reasoning_ce_weight,
                "risk_l1": self.risk_l1_weight, "meta_action_ce": self.meta_action_ce_weight}

    def student_config_kwargs(self) -> dict:
        """Keyword arguments of :class:`dsdrive.student.StudentConfig` (all but the backbone)."""
        return dict(scene_dim=self.scene_dim, scene_layers=self.scene_layers, max_agents=self.max_agents, max_map=self.max_map,
                    bev_height=self.bev_size, bev_width=self.bev_size, risk_layers=self.risk_layers, risk_points=self.risk_points,
                    risk_footprint_weight=self.risk_footprint_weight, use_meta_action_head=self.meta_action_ce_weight > 0,
                    waypoint_cv_gate_init=self.waypoint_cv_gate_init, plan_selection=self.plan_selection,
                    use_ego_status=self.use_ego_status, loss_weights=self.loss_weights())
