"""Training arguments of the DistillDrive planning teacher (trl-style config: ``TrainingArguments`` + method fields).

DistillDrive (ICCV 2025, arXiv 2508.05402) stage 0 trains the privileged planning teacher
(ground-truth agents, agent futures and map in; no cameras) with weight decay 1e-3, gradient
clipping at norm 25, cosine decay, batch 48 per GPU x 8 GPUs, lr 6e-4 with SOAP, 30 epochs
(facts in ``shared/research/distilldrive.md``). SOAP is not a dependency here, so the optimiser is
AdamW (their stage-1 "adamax" config also runs AdamW); the defaults below keep the recipe's
clipping, decay and schedule at a CPU-sized batch and step count. Nothing here is a label-writing
annotator: this is the planner distilled at feature level.

Groups (every field has ``metadata["help"]``):

* **Optimisation** (``TrainingArguments`` fields with DistillDrive stage-0 defaults):
  ``max_steps`` (300), ``per_device_train_batch_size`` (16), ``learning_rate`` (6e-4),
  ``weight_decay`` (1e-3), ``max_grad_norm`` (25), ``lr_scheduler_type`` (cosine, no warm-up),
  ``optim`` (adamw_torch), ``seed`` (0), ``logging_steps`` (1: one log entry per step),
  ``save_strategy`` ("no"; set "steps" + ``save_steps`` for resumable checkpoints),
  ``ddp_static_graph`` (True: DDP allows the DQN state-optimisation loss, which runs its Q-network
  on the predicted and the ground-truth status outside ``forward``, to use parameters twice).
* **Teacher size** (:class:`dsdrive.distilldrive.PlanningTeacherConfig`): ``hidden_dim``,
  ``agent_layers``, ``num_heads``, ``ffn_dim``, ``num_layers``, ``pos_feats``, ``dropout``,
  ``max_agents``, ``map_classes``, ``use_ego_history``; the ego's own kinematics
  (``ego_kinematics``, ``kinematic_prior``, ``prior_gate``, ``plan_selection``, ``status_weight``;
  :mod:`dsdrive.distilldrive.kinematic_prior`, defaults = the published teacher).
* **Loss variant**: ``cls_variant`` ("label" = stage0_label, "distribution" =
  stage0_distribution), ``dqn_weight`` (0 = no DQN module), ``use_cvae``.

Validation (``__post_init__``, before any data or model is loaded; ``ValueError`` naming the
field and its value): sizes are integers >= 1 and ``hidden_dim`` divides by ``num_heads``;
``dropout`` in [0, 1); ``dqn_weight`` finite and >= 0; ``cls_variant`` is "label" or
"distribution"; ``map_classes`` a non-empty subset of :data:`dsdrive.data.types.MAP_TYPES`;
``max_steps`` >= 1 or -1 with ``num_train_epochs`` > 0; ``learning_rate`` > 0.

Used by :mod:`dsdrive.training.planning_teacher_trainer` and :mod:`dsdrive.training.planning_teacher`
(``dsdrive planning-teacher``, ``recipes/planning_teacher.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from dsdrive.data.types import MAP_TYPES

TEACHER_SIZE_FIELDS = ("hidden_dim", "agent_layers", "num_heads", "ffn_dim", "num_layers", "pos_feats", "max_agents")
"""Integer size fields that must be >= 1."""


@dataclass
class PlanningTeacherTrainingConfig(TrainingArguments):
    """``TrainingArguments`` plus the planning teacher's size and loss variant (see the module docstring).

    Raises:
        ValueError: on construction, for any out-of-range field (named with its value).
    """

    # teacher size (DistillDrive: 256 / 4 / 8 / 1024 / 2)
    hidden_dim: int = field(default=256, metadata={"help": "feature size D (DistillDrive: 256)"})
    agent_layers: int = field(default=4, metadata={"help": "agent time-encoder layers (DistillDrive: 4)"})
    num_heads: int = field(default=8, metadata={"help": "attention heads (DistillDrive: 8)"})
    ffn_dim: int = field(default=1024, metadata={"help": "FFN width (DistillDrive: 1024)"})
    num_layers: int = field(default=2, metadata={"help": "agent/ego/map interaction layers (DistillDrive: 2)"})
    pos_feats: int = field(default=64, metadata={"help": "sine features per coordinate (DistillDrive: 64)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout in [0, 1) (DistillDrive: 0.1)"})
    max_agents: int = field(default=150, metadata={"help": "nearest agents kept within 55 m (DistillDrive: 150)"})
    map_classes: str = field(default="lane_centerline,lane_divider,road_edge,ped_crossing",
                             metadata={"help": f"comma-separated map classes read, a subset of {','.join(MAP_TYPES)}"})
    use_ego_history: bool = field(default=True, metadata={"help": "temp_gnn: ego queries attend to the 4 past ego poses"})
    # the ego's own kinematics (dsdrive.distilldrive.kinematic_prior; defaults = the published teacher)
    ego_kinematics: bool = field(default=False, metadata={"help": "ego queries also embed the current ego status (vx, vy, ax, ay, yaw rate) and history"})
    kinematic_prior: str = field(default="none", metadata={"help": "'none', 'cv' or 'ctrv': modes = anchor pulled to the ego's own rollout + a zero-initialised residual"})
    prior_gate: float = field(default=1.0, metadata={"help": "pull of each anchor towards the kinematic prior, in [0, 1] (1: every mode starts at the prior)"})
    plan_selection: str = field(default="argmax", metadata={"help": "'argmax' (DistillDrive) or 'expected' (softmax-weighted mean of the rescored command modes)"})
    status_weight: float = field(default=2.0, metadata={"help": "ego-status L1 weight (DistillDrive: 2.0)"})
    # loss variant
    cls_variant: str = field(default="label", metadata={"help": "'label' (stage0_label: one-hot focal) or 'distribution' (stage0_distribution: soft top-3 KL)"})
    dqn_weight: float = field(default=0.0, metadata={"help": "DQN state-optimisation loss weight; 0 = no DQN module (stage0_label)"})
    use_cvae: bool = field(default=False, metadata={"help": "add the conditional VAE op (DistillDrive stage 2; off in stage 0)"})
    # TrainingArguments with DistillDrive stage-0 defaults
    output_dir: str | None = field(default="outputs/ckpt/planning_teacher", metadata={"help": "checkpoint folder to write"})
    max_steps: int = field(default=300, metadata={"help": "optimiser steps (-1: train num_train_epochs epochs)"})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "samples per step and device (DistillDrive: 48 per GPU x 8)"})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "samples per evaluation batch"})
    learning_rate: float = field(default=6e-4, metadata={"help": "peak lr, cosine decay to 0 (DistillDrive stage 0: 6e-4)"})
    weight_decay: float = field(default=1e-3, metadata={"help": "AdamW weight decay (DistillDrive: 1e-3)"})
    max_grad_norm: float = field(default=25.0, metadata={"help": "gradient clipping norm (DistillDrive: 25)"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "learning-rate schedule (DistillDrive: cosine)"})
    optim: str = field(default="adamw_torch", metadata={"help": "optimiser (DistillDrive: SOAP, not a dependency here; AdamW)"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation, batch order and the k-means vocabularies"})
    logging_steps: float = field(default=1, metadata={"help": "log every N steps (1: train_log.json has every step)"})
    save_strategy: str = field(default="no", metadata={"help": "'no', 'steps' or 'epoch'; 'steps' + save_steps writes resumable checkpoint-N folders"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep every sample field (the collator reads whole samples)"})
    ddp_static_graph: bool | None = field(default=True, metadata={"help": "DDP static graph: the DQN loss runs its Q-network twice outside forward()"})

    def __post_init__(self):
        self._validate()
        super().__post_init__()

    def _validate(self) -> None:
        """Field checks (see the module docstring). Raises ValueError naming the field and value."""
        def bad(name: str, why: str):
            raise ValueError(f"PlanningTeacherTrainingConfig: {name}={getattr(self, name)!r} {why}")

        for k in TEACHER_SIZE_FIELDS:
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                bad(k, "must be an integer >= 1")
        if self.hidden_dim % self.num_heads:
            bad("hidden_dim", f"must be divisible by num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            bad("dropout", "must be in [0, 1)")
        if not isinstance(self.dqn_weight, (int, float)) or not math.isfinite(self.dqn_weight) or self.dqn_weight < 0:
            bad("dqn_weight", "must be a finite number >= 0")
        if self.cls_variant not in ("label", "distribution"):
            bad("cls_variant", "must be 'label' or 'distribution'")
        classes = self.map_class_list()
        if not classes or any(c not in MAP_TYPES for c in classes):
            bad("map_classes", f"must be a non-empty comma-separated subset of {','.join(MAP_TYPES)}")
        if self.max_steps == 0 or self.max_steps < -1:
            bad("max_steps", "must be >= 1 (or -1 to train num_train_epochs epochs)")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            bad("num_train_epochs", "must be > 0 when max_steps is -1")
        if not self.learning_rate > 0:
            bad("learning_rate", "must be > 0")
        if self.kinematic_prior not in ("none", "cv", "ctrv"):
            bad("kinematic_prior", "must be 'none', 'cv' or 'ctrv'")
        if not 0.0 <= self.prior_gate <= 1.0:
            bad("prior_gate", "must be in [0, 1]")
        if self.plan_selection not in ("argmax", "expected"):
            bad("plan_selection", "must be 'argmax' or 'expected'")
        if not math.isfinite(self.status_weight) or self.status_weight < 0:
            bad("status_weight", "must be a finite number >= 0")

    def map_class_list(self) -> list[str]:
        """``map_classes`` as a list (empty entries dropped)."""
        return [c.strip() for c in self.map_classes.split(",") if c.strip()]

    def teacher_config_kwargs(self) -> dict:
        """Keyword arguments of :class:`dsdrive.distilldrive.PlanningTeacherConfig` (the rest keeps its DistillDrive defaults)."""
        return {"hidden_dim": self.hidden_dim, "agent_layers": self.agent_layers, "num_heads": self.num_heads, "ffn_dim": self.ffn_dim,
                "num_layers": self.num_layers, "pos_feats": self.pos_feats, "dropout": self.dropout, "max_agents": self.max_agents,
                "map_classes": self.map_class_list(), "use_ego_history": self.use_ego_history, "cls_variant": self.cls_variant,
                "dqn_weight": self.dqn_weight, "use_cvae": self.use_cvae, "seed": self.seed,
                "ego_kinematics": self.ego_kinematics, "kinematic_prior": self.kinematic_prior, "prior_gate": self.prior_gate,
                "plan_selection": self.plan_selection, "status_weight": self.status_weight}
