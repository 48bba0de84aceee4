"""Training arguments of student distillation (trl-style config: ``TrainingArguments`` + method fields).

Groups (every field has ``metadata["help"]``):

* **Loss weights** (DSDrive lambda_wp / lambda_text, DistillDrive plan L1 + mode classification,
  RSD L_risk, GPT-Driver meta-action): ``waypoint_l1_weight``, ``mode_ce_weight``,
  ``reasoning_ce_weight``, ``risk_l1_weight``, ``meta_action_ce_weight``.
* **VAE interaction** (DistillDrive's conditional VAE in the student, ``StudentConfig.planning_cvae``):
  ``planning_cvae`` (default false), ``cvae_kl_weight`` (1.0, the paper's; finite and >= 0).
* **Student size**: backbone (``backbone_path`` or the embedded tiny Qwen2 ``tiny_*``), scene
  encoder, BEV grid, RiskHead, caps, text lengths.
* **Ego-status ablation**: ``use_ego_status`` (default true); ``--use_ego_status false`` trains a
  student that never reads the ego status or history (``StudentConfig.use_ego_status``).
* **Sequence order**: ``sequence_order`` (``plan_first``, the default, or ``reasoning_first``:
  [scene][prompt][reasoning][queries], the plan reads the chain-of-thought; ``StudentConfig.sequence_order``).
  The student's ``max_new_tokens`` (reasoning generated before a reasoning-first plan) is set to
  ``max_reasoning_tokens``, the longest reasoning it is trained on.
* **Scene inputs / camera student** (:class:`dsdrive.student.camera_student.CameraStudentArguments`):
  ``scene_inputs`` (objects | cameras | both), ``cameras``, ``min_pixels`` / ``max_pixels``,
  ``lift_heights``, ``allow_missing_cameras``, ``vision_tower`` (frozen | lora | train).
* **LoRA / QLoRA**: ``use_lora``, ``lora_r``, ``lora_alpha``, ``lora_dropout``,
  ``lora_target_modules``, ``quantization``.
* **Planning KD** (DistillDrive, :mod:`dsdrive.training.planning_kd`): ``planning_kd_teacher`` (off when
  empty), ``planning_kd_cache``, ``kd_feature_weight`` (0.5), ``kd_mode_kl_weight``,
  ``kd_regression_weight`` (0, as published); weights finite and >= 0, the teacher a folder with
  ``config.json``.
* **Token KD** (:mod:`dsdrive.training.token_kd`): ``token_kd_weight`` (0 = off, the baseline loss
  exactly), ``teacher_logprobs`` (the annotations folder holding the annotator's cached top-k;
  needed when the weight is > 0), ``token_kd_divergence`` (forward_kl | reverse_kl | jsd),
  ``token_kd_beta`` (JSD, in (0, 1)), ``token_kd_temperature`` (> 0, loss x T^2),
  ``token_kd_tail`` (renormalize | bucket; bucket needs T = 1), ``token_kd_cross_tokenizer``
  (none = a tokenizer mismatch is an error; uld); ``tokenizer_path`` gives the embedded tiny
  student the annotator's tokenizer instead of training one.
  ``teacher_tokens_target`` (default false): learn the annotator's own cached tokens even at weight 0
  (the hard-label SFT arm of a token-KD comparison, on exactly the same text).
* **EvoDriveVLA hidden-state KD** (:mod:`dsdrive.training.query_hidden_kd`): ``query_hidden_kd_weight``
  (0 = off, the baseline loss exactly; EvoDriveVLA: 0.2) on the planning queries' final hidden
  states, ``query_hidden_kd_teacher`` (a same-shape student checkpoint folder, needed when > 0).
* **Reasoning template** (:mod:`dsdrive.annotation.reasoning`): ``reasoning_template`` (``v1``, the
  default: Scene, Key objects, Plan, Why; ``v2``: the ``Plan:`` meta-action line first), a version
  file under ``prompts/reasoning/``.
* **Perception noise** (:mod:`dsdrive.data.perception_noise`): ``perception_noise`` (``none`` = off;
  ``default``, ``heavy`` or a YAML file): the training inputs pass through the noise model, a fresh
  seeded draw per epoch; targets and the held-out evaluation stay on the ground truth.

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

from transformers import TrainingArguments

from dsdrive.student.backbone import resolve_backbone_path  # noqa: F401 (re-exported: recipes and configs import it from here)
from dsdrive.data.paths import PROMPTS_DIR
from dsdrive.student.camera_student import CameraStudentArguments
from dsdrive.student.lane_prior import IDM_MIN_SPEED_MPS
from dsdrive.student.waypoint_head import WAYPOINT_PRIORS

ANNOTATION_COLUMN = "annotation"
"""Dataset column holding the teacher annotation JSON (:mod:`dsdrive.data.dataset`)."""


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
class DistillConfig(CameraStudentArguments, TrainingArguments):
    """TrainingArguments plus the student's loss weights, sizes and LoRA settings.

    Loss-weight rule: each ``*_weight`` loss term (and ``risk_footprint_weight``) must be finite and
    >= 0, and the weights of the terms the student has (``cvae_kl`` only with ``planning_cvae``) must
    sum to a positive total; 0 disables a term.

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
    cvae_kl_weight: float = field(default=1.0, metadata={"help": "KL(posterior || prior) of the planning-query conditional VAE (DistillDrive: 1.0); read with planning_cvae only"})
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
    init_from: str | None = field(default=None, metadata={"help": "warm start: a saved student checkpoint folder (e.g. pretrained on MetaDrive procedural scenes) whose weights, tokenizer and planning vocabulary replace the fresh ones; its architecture must match this recipe's"})
    head_learning_rate_scale: float = field(default=1.0, metadata={"help": "the waypoint head's parameters (planning residual, mode classifier, prior blend) learn at learning_rate x this (1: one rate for all, as before)"})
    waypoint_prior_fit: bool = field(default=False, metadata={"help": "with waypoint_prior kinematic: fit the prior blend on the training samples before training (default false: start uniform, the k-fold-measured setting)"})
    waypoint_prior: str = field(default="cv_gate", metadata={"help": "waypoint head base: 'cv_gate' (anchors pulled towards constant velocity), 'kinematic' (zero-initialised residual over a learned blend of CV, CTRV and lane following), 'kinematic_idm' (the same + PDM-Closed's IDM along the command's lane) or 'idm_modes' (each mode a lane-IDM proposal at its own target speed + a residual)"})
    idm_prior_min_speed: float = field(default=IDM_MIN_SPEED_MPS, metadata={"help": "waypoint_prior kinematic_idm: lowest target speed (m/s) of the lane IDM prior (0: it never leaves a stop)"})
    planning_cvae: bool = field(default=False, metadata={"help": "DistillDrive's conditional VAE op on the 18 planning queries (posterior from the ground-truth ego future in training, prior at inference; KL weight cvae_kl_weight)"})
    use_ego_status: bool = field(default=True, metadata={"help": "false = ego-status ablation (AD-MLP; Li et al. CVPR 2024): the student never reads ego status or history"})
    sequence_order: str = field(default="plan_first", metadata={"help": "plan_first = [scene][prompt][queries][reasoning] (plan in one pass); reasoning_first = [scene][prompt][reasoning][queries] (DSDrive: the plan reads the generated reasoning)"})
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
    # token-level KD of the reasoning from an annotator's cached top-k log-probs (dsdrive.training.token_kd); off at weight 0
    token_kd_weight: float = field(default=0.0, metadata={"help": "weight of the token-level KD term on the reasoning tokens; 0 = off"})
    teacher_logprobs: str | None = field(default=None, metadata={"help": "annotations folder with the annotator's logprobs-rank*.safetensors (dsdrive annotate --logprobs K)"})
    token_kd_divergence: str = field(default="forward_kl", metadata={"help": "forward_kl (Hinton 2015), reverse_kl, or jsd (GKD generalised JSD with token_kd_beta)"})
    token_kd_beta: float = field(default=0.5, metadata={"help": "generalised JSD interpolation in (0, 1) (trl convention; jsd only)"})
    token_kd_temperature: float = field(default=1.0, metadata={"help": "softmax temperature T of both sides; the term is scaled by T^2"})
    token_kd_tail: str = field(default="renormalize", metadata={"help": "mass outside the cached top-k: renormalize over the top-k, or bucket (one tail bucket; T = 1 only)"})
    token_kd_cross_tokenizer: str = field(default="none", metadata={"help": "none = an annotator tokenizer unlike the student's is an error; uld = Universal Logit Distillation (sorted top-k probabilities, positions by index)"})
    # EvoDriveVLA hidden-state KD on the planning queries (dsdrive.training.query_hidden_kd); off at weight 0
    query_hidden_kd_weight: float = field(default=0.0, metadata={"help": "SmoothL1(student, teacher) on the planning queries' final hidden states (EvoDriveVLA: 0.2); 0 = off"})
    query_hidden_kd_teacher: str | None = field(default=None, metadata={"help": "frozen student checkpoint of the same shape (needed when query_hidden_kd_weight > 0)"})
    tokenizer_path: str | None = field(default=None, metadata={"help": "embedded tiny backbone: load this tokenizer (e.g. the hf-llm annotator's folder) instead of training one"})
    teacher_tokens_target: bool = field(default=False, metadata={"help": "learn the annotator's own tokens from --teacher_logprobs even at token_kd_weight 0 (hard-label SFT on the very text token KD distils; false = the rendered annotation)"})
    # the reasoning template the student learns (prompts/reasoning/<version>.jinja; dsdrive.annotation.reasoning)
    reasoning_template: str = field(default="v1", metadata={"help": "reasoning template version: v1 = Scene, Key objects, Plan, Why; v2 = the Plan (meta-action) line first"})
    # training-time perception noise on the inputs (dsdrive.data.perception_noise); none = off
    perception_noise: str = field(default="none", metadata={"help": "none | default | heavy | FILE.yaml: train on inputs seen through the perception noise model, a fresh draw per epoch (held-out evaluation stays on ground truth)"})
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
        active = {k: v for k, v in self.loss_weights().items() if k != "cvae_kl" or self.planning_cvae}
        if sum(active.values()) <= 0:
            raise ValueError(f"DistillConfig: loss weights {active} sum to 0; at least one must be > 0")
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
        if self.sequence_order not in ("plan_first", "reasoning_first"):
            bad("sequence_order", "must be 'plan_first' or 'reasoning_first'")
        if not 0.0 <= self.waypoint_cv_gate_init < 1.0:
            bad("waypoint_cv_gate_init", "must be in [0, 1)")
        if self.init_from is not None and not (Path(self.init_from) / "config.json").is_file():
            bad("init_from", "must be a student checkpoint folder with a config.json (dsdrive distill --output_dir)")
        if self.init_from is not None and self.scene_inputs != "objects":
            bad("init_from", "warm start is for the object-token student (scene_inputs objects)")
        if self.waypoint_prior not in WAYPOINT_PRIORS:
            bad("waypoint_prior", f"must be one of {WAYPOINT_PRIORS}")
        if not self.head_learning_rate_scale > 0:
            bad("head_learning_rate_scale", "must be > 0")
        if not self.idm_prior_min_speed >= 0:
            bad("idm_prior_min_speed", "must be >= 0 (m/s)")
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
        if not isinstance(self.token_kd_weight, (int, float)) or not math.isfinite(self.token_kd_weight) or self.token_kd_weight < 0:
            bad("token_kd_weight", "must be a finite number >= 0")
        if self.token_kd_divergence not in ("forward_kl", "reverse_kl", "jsd"):
            bad("token_kd_divergence", "must be 'forward_kl', 'reverse_kl' or 'jsd'")
        if not 0.0 < self.token_kd_beta < 1.0:
            bad("token_kd_beta", "must lie in (0, 1)")
        if not (isinstance(self.token_kd_temperature, (int, float)) and math.isfinite(self.token_kd_temperature) and self.token_kd_temperature > 0):
            bad("token_kd_temperature", "must be a finite number > 0")
        if self.token_kd_tail not in ("renormalize", "bucket"):
            bad("token_kd_tail", "must be 'renormalize' or 'bucket'")
        if self.token_kd_tail == "bucket" and self.token_kd_temperature != 1.0:
            bad("token_kd_tail", f"'bucket' needs token_kd_temperature 1 (the cached tail mass is known at T = 1 only), got {self.token_kd_temperature}")
        if self.token_kd_cross_tokenizer not in ("none", "uld"):
            bad("token_kd_cross_tokenizer", "must be 'none' or 'uld'")
        if self.token_kd_weight > 0 and not self.teacher_logprobs:
            bad("teacher_logprobs", f"must name an annotations folder with cached log-probs when token_kd_weight={self.token_kd_weight} > 0")
        if self.teacher_logprobs and self.token_kd_weight > 0 and not Path(self.teacher_logprobs).is_dir():
            bad("teacher_logprobs", "is not a folder (the dsdrive annotate --out folder)")
        if self.tokenizer_path and not Path(self.tokenizer_path).is_dir():
            bad("tokenizer_path", "is not a folder with tokenizer files")
        if self.teacher_tokens_target and not (self.teacher_logprobs and Path(self.teacher_logprobs).is_dir()):
            bad("teacher_logprobs", "must name the annotations folder with cached log-probs when teacher_tokens_target is true")
        if not (PROMPTS_DIR / "reasoning" / f"{self.reasoning_template}.jinja").is_file():
            bad("reasoning_template", f"has no template {PROMPTS_DIR / 'reasoning' / (str(self.reasoning_template) + '.jinja')}")
        if self.tokenizer_path and self.backbone_path:
            bad("tokenizer_path", "is for the embedded tiny backbone; a backbone_path brings its own tokenizer")
        if self.perception_noise != "none":  # a preset or a YAML file; ValueError names the file, field and value
            from dsdrive.data.perception_noise import load_perception_noise

            try:
                load_perception_noise(self.perception_noise)
            except ValueError as exc:
                raise ValueError(f"DistillConfig: perception_noise={self.perception_noise!r}: {exc}") from None
        qw = self.query_hidden_kd_weight
        if not isinstance(qw, (int, float)) or not math.isfinite(qw) or qw < 0:
            bad("query_hidden_kd_weight", "must be a finite number >= 0")
        if qw > 0 and not (self.query_hidden_kd_teacher and (Path(self.query_hidden_kd_teacher) / "config.json").is_file()):
            bad("query_hidden_kd_teacher", f"must be a student checkpoint folder (with config.json) when query_hidden_kd_weight={qw} > 0")
        if self.planning_kd_teacher and not (Path(self.planning_kd_teacher) / "config.json").is_file():
            bad("planning_kd_teacher", "is not a PlanningTeacher checkpoint folder (no config.json); train one with recipes/planning_teacher.py")

    def loss_weights(self) -> dict[str, float]:
        """The ``StudentConfig.loss_weights`` dict."""
        return {"waypoint_l1": self.waypoint_l1_weight, "mode_ce": self.mode_ce_weight, "reasoning_ce": self.reasoning_ce_weight,
                "risk_l1": self.risk_l1_weight, "meta_action_ce": self.meta_action_ce_weight, "cvae_kl": self.cvae_kl_weight}

    def student_config_kwargs(self) -> dict:
        """Keyword arguments of :class:`dsdrive.student.StudentConfig` (all but the backbone)."""
        return dict(scene_dim=self.scene_dim, scene_layers=self.scene_layers, max_agents=self.max_agents, max_map=self.max_map,
                    bev_height=self.bev_size, bev_width=self.bev_size, risk_layers=self.risk_layers, risk_points=self.risk_points,
                    risk_footprint_weight=self.risk_footprint_weight, use_meta_action_head=self.meta_action_ce_weight > 0,
                    waypoint_cv_gate_init=self.waypoint_cv_gate_init, waypoint_prior=self.waypoint_prior, idm_prior_min_speed=self.idm_prior_min_speed, plan_selection=self.plan_selection,
                    use_ego_status=self.use_ego_status, planning_cvae=self.planning_cvae, sequence_order=self.sequence_order, max_new_tokens=self.max_reasoning_tokens,
                    loss_weights=self.loss_weights(), **self.camera_config_kwargs())
